"""Tables and statistics over the training runs: every number the report states comes from here.

Methods (stated in the tables too, so a reader of a CSV alone knows them):
- mean CI: Student t-interval on the ok runs of one backend;
- difference to the baseline: Welch's t-test and its CI (scipy), Holm-adjusted over the
  backends compared on one metric (statsmodels), Hedges' g with the exact small-sample
  correction;
- ratio to the baseline: Fieller's interval for a ratio of two independent means, with
  Welch-Satterthwaite degrees of freedom at the estimate;
- equivalence (accuracy): TOST with unequal variances (statsmodels), margin from config.
Fewer than two usable runs on either side gives NaN, never an exception.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import special
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_ind

CI_METHOD = "t-interval"
DIFF_METHOD = "Welch t"
RATIO_METHOD = "Fieller (Welch df)"
RUN_PATH = re.compile(r"(?P<backend>[^/\\]+)[/\\]seed(?P<seed>\d+)[/\\][^/\\]+$")


@dataclass(frozen=True)
class Metric:
    """A run-level quantity compared across backends; `better` orders the headline."""

    key: str
    label: str
    unit: str
    better: str  # "lower" | "higher"
    accuracy: bool = False


METRICS: tuple[Metric, ...] = (
    Metric("epoch_loop_s", "epoch-loop time", "s", "lower"),
    Metric("epoch_time_s", "median epoch time", "s", "lower"),
    Metric("images_per_s", "training throughput", "images/s", "higher"),
    Metric("peak_alloc_mb", "peak GPU memory allocated", "MB", "lower"),
    Metric("peak_reserved_mb", "peak GPU memory reserved", "MB", "lower"),
    Metric("peak_device_used_mb", "peak device memory used", "MB", "lower"),
    Metric("host_peak_rss_mb", "peak host RSS", "MB", "lower"),
    Metric("mAP50", "mAP50", "", "higher", accuracy=True),
    Metric("mAP50_95", "mAP50-95", "", "higher", accuracy=True),
)
METRIC_BY_KEY = {m.key: m for m in METRICS}


# --------------------------------------------------------------------------- #
# Gathering files into tables


def _flatten(data: dict[str, Any]) -> dict[str, Any]:
    """One run, one CSV row: `provenance.fwd_kernels`-style keys one level deep, and any
    deeper list or dict (kernel counts, epoch times) kept as JSON text, not one column each."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            for sub, inner in value.items():
                flat[f"{key}.{sub}"] = _cell(inner)
        else:
            flat[key] = _cell(value)
    return flat


def _cell(value: Any) -> Any:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=isinstance(value, dict))
    return value


def _run_id(path: str | Path) -> tuple[str | None, int | None]:
    match = RUN_PATH.search(str(path))
    if not match:
        return None, None
    return match["backend"], int(match["seed"])


def load_runs(metrics_paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per (backend, seed) with every metrics.json key flattened, failures included."""
    rows = []
    for path in metrics_paths:
        data = json.loads(Path(path).read_text())
        backend, seed = _run_id(path)
        data.setdefault("backend", backend)
        data.setdefault("seed", seed)
        data.setdefault("status", "unknown")
        rows.append(_flatten(data))
    runs = pd.DataFrame(rows)
    if runs.empty:
        return pd.DataFrame(columns=["backend", "seed", "status", *METRIC_BY_KEY])
    for key in METRIC_BY_KEY:
        if key not in runs:
            runs[key] = np.nan
        runs[key] = pd.to_numeric(runs[key], errors="coerce")
    first = ["backend", "seed", "status", "reason"]
    cols = [c for c in first if c in runs] + [c for c in runs if c not in first]
    return runs[cols].reset_index(drop=True)


def load_epochs(
    results_paths: Iterable[str | Path], runs: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Every run's Ultralytics results.csv rows, long, with backend, seed and status columns."""
    frames = []
    for path in results_paths:
        backend, seed = _run_id(path)
        try:
            frame = pd.read_csv(path)
        except (pd.errors.EmptyDataError, FileNotFoundError):
            continue  # a run that did not train leaves an empty results.csv
        if frame.empty:
            continue
        frame.columns = [str(c).strip() for c in frame.columns]  # older versions pad names
        frame.insert(0, "seed", seed)
        frame.insert(0, "backend", backend)
        frames.append(frame)
    epochs = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["backend", "seed", "epoch"])
    )
    if runs is not None and not runs.empty:
        status = runs[["backend", "seed", "status"]].copy()
        status["seed"] = pd.to_numeric(status["seed"], errors="coerce")
        epochs["seed"] = pd.to_numeric(epochs["seed"], errors="coerce")
        epochs = epochs.merge(status, on=["backend", "seed"], how="left")
        cols = ["backend", "seed", "status"]
        epochs = epochs[cols + [c for c in epochs if c not in cols]]
    return epochs


def concat_csvs(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate per-backend CSVs (parity, kernels); empty files are skipped."""
    frames = []
    for path in paths:
        try:
            frame = pd.read_csv(path)
        except (pd.errors.EmptyDataError, FileNotFoundError):
            continue
        if not frame.empty:
            frames.append(frame)
    if not frames:
        return pd.DataFrame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # all-NaN columns of skipped backends
        return pd.concat(frames, ignore_index=True)


def read_table(path: str | Path) -> pd.DataFrame:
    """A table written by `aggregate`; an empty file is an empty frame."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def ok_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Only finished runs enter statistics; oom/unavailable ones are reported, not averaged."""
    if runs.empty or "status" not in runs:
        return runs.iloc[0:0]
    return runs[runs["status"] == "ok"]


def backend_order(runs: pd.DataFrame, baseline: str | None = None) -> list[str]:
    """Backends in the order the workflow lists them, baseline first."""
    order = list(dict.fromkeys(runs["backend"].dropna())) if "backend" in runs else []
    if baseline in order:
        order.remove(baseline)
        order.insert(0, baseline)
    return order


# --------------------------------------------------------------------------- #
# Statistics on two small samples


def _clean(values: Iterable[float]) -> np.ndarray:
    arr = np.asarray(pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce"), float)
    return arr[np.isfinite(arr)]


def describe(values: Iterable[float], confidence: float = 0.95) -> dict[str, float]:
    """n, mean, sd and the t-interval of the mean; NaN where n is too small."""
    x = _clean(values)
    n = len(x)
    mean = float(np.mean(x)) if n else math.nan
    sd = float(np.std(x, ddof=1)) if n >= 2 else math.nan
    low = high = math.nan
    if n >= 2:
        if sd == 0:
            low = high = mean
        else:
            low, high = sps.t.interval(confidence, df=n - 1, loc=mean, scale=sps.sem(x))
    return {"n": n, "mean": mean, "sd": sd, "ci_low": float(low), "ci_high": float(high)}


def t_interval(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float]:
    """The t-interval of the mean, as (low, high); used by plots to match the tables."""
    d = describe(values, confidence)
    return d["ci_low"], d["ci_high"]


def welch(a: Iterable[float], b: Iterable[float], alpha: float = 0.05) -> dict[str, float]:
    """Welch's t-test of mean(a) - mean(b) with its (1 - alpha) CI."""
    x, y = _clean(a), _clean(b)
    out = dict.fromkeys(("diff", "diff_ci_low", "diff_ci_high", "t", "df", "p"), math.nan)
    if len(x):
        out["diff"] = float(np.mean(x) - np.mean(y)) if len(y) else math.nan
    if len(x) < 2 or len(y) < 2 or np.var(x) + np.var(y) == 0:
        return out
    res = sps.ttest_ind(x, y, equal_var=False)
    ci = res.confidence_interval(1 - alpha)
    out.update(
        diff_ci_low=float(ci.low),
        diff_ci_high=float(ci.high),
        t=float(res.statistic),
        df=float(res.df),
        p=float(res.pvalue),
    )
    return out


def hedges_g(a: Iterable[float], b: Iterable[float]) -> float:
    """Standardised mean difference (a - b) / pooled sd, bias-corrected with the exact J."""
    x, y = _clean(a), _clean(b)
    n1, n2 = len(x), len(y)
    if n1 < 2 or n2 < 2:
        return math.nan
    dof = n1 + n2 - 2
    pooled = ((n1 - 1) * np.var(x, ddof=1) + (n2 - 1) * np.var(y, ddof=1)) / dof
    if pooled == 0:
        return math.nan
    d = (np.mean(x) - np.mean(y)) / math.sqrt(pooled)
    j = math.exp(special.gammaln(dof / 2) - special.gammaln((dof - 1) / 2)) / math.sqrt(dof / 2)
    return float(j * d)


def fieller_ratio(
    a: Iterable[float], b: Iterable[float], alpha: float = 0.05
) -> tuple[float, float, float]:
    """mean(a) / mean(b) with Fieller's (1 - alpha) interval for independent samples.

    Fieller inverts the t-test of mean(a) - r * mean(b) = 0, so the interval is exact under
    normality and asymmetric like a ratio should be. Degrees of freedom: Welch-Satterthwaite
    at the estimate. The interval is NaN when it is unbounded (mean(b) not clearly non-zero).
    """
    x, y = _clean(a), _clean(b)
    if not len(x) or not len(y) or np.mean(y) == 0:
        return math.nan, math.nan, math.nan
    ma, mb = float(np.mean(x)), float(np.mean(y))
    ratio = ma / mb
    if len(x) < 2 or len(y) < 2:
        return ratio, math.nan, math.nan
    va, vb = np.var(x, ddof=1) / len(x), np.var(y, ddof=1) / len(y)
    if va + vb == 0:
        return ratio, math.nan, math.nan  # like Welch: no variance, no interval
    rvb = ratio**2 * vb
    df = (va + rvb) ** 2 / (va**2 / (len(x) - 1) + rvb**2 / (len(y) - 1))
    t = sps.t.ppf(1 - alpha / 2, df)
    denom = mb**2 - t**2 * vb
    if denom <= 0:
        return ratio, math.nan, math.nan
    disc = (ma * mb) ** 2 - denom * (ma**2 - t**2 * va)
    root = math.sqrt(max(disc, 0.0))
    return ratio, float((ma * mb - root) / denom), float((ma * mb + root) / denom)


def tost(a: Iterable[float], b: Iterable[float], margin: float) -> float:
    """TOST p-value that |mean(a) - mean(b)| < margin (Welch variances); NaN if untestable."""
    x, y = _clean(a), _clean(b)
    if len(x) < 2 or len(y) < 2 or np.var(x) + np.var(y) == 0:
        return math.nan
    p, _, _ = ttost_ind(x, y, -margin, margin, usevar="unequal")
    return float(p)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values; NaNs stay NaN and do not count towards the family."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    mask = np.isfinite(p)
    if mask.any():
        out[mask] = multipletests(p[mask], method="holm")[1]
    return out


def equivalence_label(tost_p: float, p: float, alpha: float) -> str:
    """Turn the two tests into the wording the report uses."""
    if np.isfinite(tost_p) and tost_p < alpha:
        return "equivalent"
    if np.isfinite(p) and p < alpha:
        return "different"
    return "not shown"


# --------------------------------------------------------------------------- #
# The tables


def _values(runs: pd.DataFrame, backend: str, key: str) -> np.ndarray:
    if runs.empty or key not in runs:
        return np.array([])
    return _clean(runs.loc[runs["backend"] == backend, key])


def summarize(
    runs: pd.DataFrame,
    baseline: str,
    alpha: float = 0.05,
    metrics: Sequence[Metric] = METRICS,
) -> pd.DataFrame:
    """Per backend and metric: n, mean, sd, t-interval, and the ratio to the baseline (Fieller)."""
    ok = ok_runs(runs)
    rows = []
    for backend in backend_order(runs, baseline):
        n_runs = int((runs["backend"] == backend).sum())
        n_ok = int((ok["backend"] == backend).sum())
        for metric in metrics:
            x = _values(ok, backend, metric.key)
            d = describe(x, 1 - alpha)
            if backend == baseline:
                ratio = (1.0, math.nan, math.nan) if len(x) else (math.nan,) * 3
            else:
                ratio = fieller_ratio(x, _values(ok, baseline, metric.key), alpha)
            rows.append(
                {
                    "backend": backend,
                    "metric": metric.key,
                    "label": metric.label,
                    "unit": metric.unit,
                    "runs": n_runs,
                    "runs_ok": n_ok,
                    **d,
                    "confidence": 1 - alpha,
                    "ci_method": CI_METHOD,
                    "baseline": baseline,
                    "ratio": ratio[0],
                    "ratio_ci_low": ratio[1],
                    "ratio_ci_high": ratio[2],
                    "ratio_method": RATIO_METHOD,
                }
            )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


SUMMARY_COLUMNS = [
    "backend", "metric", "label", "unit", "runs", "runs_ok", "n", "mean", "sd", "ci_low",
    "ci_high", "confidence", "ci_method", "baseline", "ratio", "ratio_ci_low", "ratio_ci_high",
    "ratio_method",
]  # fmt: skip
COMPARISON_COLUMNS = [
    "backend", "baseline", "metric", "label", "n", "n_baseline", "mean", "mean_baseline",
    "diff", "diff_ci_low", "diff_ci_high", "confidence", "ci_method", "t", "df", "p", "p_holm",
    "significant", "hedges_g", "tost_margin", "tost_p", "tost_p_holm", "equivalence", "note",
]  # fmt: skip


def compare(
    runs: pd.DataFrame,
    baseline: str,
    alpha: float = 0.05,
    tost_margin: float = 0.01,
    metrics: Sequence[Metric] = METRICS,
) -> pd.DataFrame:
    """Each backend against the baseline: Welch difference, Holm p, Hedges' g, TOST on accuracy.

    Holm's family is the set of backends compared on one metric (one question per metric);
    the TOST p-values are Holm-adjusted the same way before `equivalence` is decided.
    """
    ok = ok_runs(runs)
    rows = []
    for metric in metrics:
        base = _values(ok, baseline, metric.key)
        for backend in backend_order(runs, baseline):
            if backend == baseline:
                continue
            x = _values(ok, backend, metric.key)
            w = welch(x, base, alpha)
            note = ""
            if len(x) < 2 or len(base) < 2:
                note = f"fewer than 2 usable runs ({backend}: {len(x)}, {baseline}: {len(base)})"
            elif np.isnan(w["p"]):
                note = "no variance in either group"
            rows.append(
                {
                    "backend": backend,
                    "baseline": baseline,
                    "metric": metric.key,
                    "label": metric.label,
                    "n": len(x),
                    "n_baseline": len(base),
                    "mean": float(np.mean(x)) if len(x) else math.nan,
                    "mean_baseline": float(np.mean(base)) if len(base) else math.nan,
                    **{k: w[k] for k in ("diff", "diff_ci_low", "diff_ci_high", "t", "df", "p")},
                    "confidence": 1 - alpha,
                    "ci_method": DIFF_METHOD,
                    "hedges_g": hedges_g(x, base),
                    "tost_margin": tost_margin if metric.accuracy else math.nan,
                    "tost_p": tost(x, base, tost_margin) if metric.accuracy else math.nan,
                    "note": note,
                }
            )
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    table["p_holm"] = np.nan
    table["tost_p_holm"] = np.nan
    for _, index in table.groupby("metric", sort=False).groups.items():
        table.loc[index, "p_holm"] = holm(table.loc[index, "p"])
        table.loc[index, "tost_p_holm"] = holm(table.loc[index, "tost_p"])
    table["significant"] = [bool(p < alpha) if np.isfinite(p) else None for p in table["p_holm"]]
    accuracy = {m.key: m.accuracy for m in metrics}
    table["equivalence"] = [
        equivalence_label(tp, p, alpha) if accuracy[m] else ""
        for tp, p, m in zip(table["tost_p_holm"], table["p_holm"], table["metric"], strict=True)
    ]
    return table[COMPARISON_COLUMNS]


def analysis_settings(params: dict[str, Any] | str) -> dict[str, Any]:
    """baseline, alpha and tost_margin from the rule's params (JSON text or dict), defaulted."""
    value = json.loads(params) if isinstance(params, str) else dict(params)
    value = value.get("analysis", value)
    return {
        "baseline": value.get("baseline", "eager"),
        "alpha": float(value.get("alpha", 0.05)),
        "tost_margin": float(value.get("tost_margin", 0.01)),
    }


def aggregate(
    metrics: Iterable[str | Path],
    results: Iterable[str | Path],
    parity: Iterable[str | Path],
    kernels: Iterable[str | Path],
    analysis: dict[str, Any] | str,
) -> dict[str, pd.DataFrame]:
    """Everything the `aggregate` rule writes, keyed by its output names."""
    settings = analysis_settings(analysis)
    runs = load_runs(metrics)
    return {
        "runs": runs,
        "summary": summarize(runs, settings["baseline"], settings["alpha"]),
        "comparisons": compare(
            runs, settings["baseline"], settings["alpha"], settings["tost_margin"]
        ),
        "epochs": load_epochs(results, runs),
        "kernels": concat_csvs(kernels),
        "parity": concat_csvs(parity),
    }
