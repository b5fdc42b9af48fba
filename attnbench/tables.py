"""The aggregate tables: runs, per-epoch rows, kernels and parity gathered from the run
folders, and the summary and comparison tables computed with `stats`.

Only finished runs (status ok) enter statistics; every run is listed. The analysis
settings (baseline, alpha, TOST margin) come from the config; their defaults are the
schema's, read through `attnbench.config`, never copied here.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attnbench import config, io, stats

RUN_PATH = re.compile(r"(?P<backend>[^/\\]+)[/\\]seed(?P<seed>\d+)[/\\][^/\\]+$")


@dataclass(frozen=True)
class Metric:
    """A run-level quantity compared across backends; `better` orders the headline."""

    key: str
    label: str
    unit: str
    better: str  # "lower" | "higher"
    accuracy: bool = False

    @property
    def heading(self) -> str:
        """'label (unit)', or the label alone for unitless metrics: axis and column titles."""
        return f"{self.label} ({self.unit})" if self.unit else self.label


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


# --------------------------------------------------------------------------- #
# Settings


@cache
def _schema_analysis() -> tuple[tuple[str, Any], ...]:
    props = config.load_schema()["properties"]["analysis"]["properties"]
    return tuple((key, spec["default"]) for key, spec in props.items())


def analysis_defaults() -> dict[str, Any]:
    """The `analysis` defaults of the config schema, the one place they are written."""
    return dict(_schema_analysis())


def analysis_settings(params: Mapping[str, Any] | str) -> dict[str, Any]:
    """baseline, alpha and tost_margin from the rule's params (JSON text or dict).

    Accepts the whole config or its `analysis` section; missing keys take the schema's
    defaults.
    """
    value = json.loads(params) if isinstance(params, str) else dict(params)
    value = {**analysis_defaults(), **value.get("analysis", value)}
    return {
        "baseline": value["baseline"],
        "alpha": float(value["alpha"]),
        "tost_margin": float(value["tost_margin"]),
    }


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


def _read_csv(path: str | Path) -> pd.DataFrame:
    """A CSV, or an empty frame for an empty or absent file (a run that did not train)."""
    return io.read_csv(path, missing_ok=True)  # a damaged file is a one-line UserError


def load_runs(metrics_paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per (backend, seed) with every metrics.json key flattened, failures included."""
    rows = []
    for path in metrics_paths:
        data = io.read_json(path, keys=("backend", "seed", "status"))
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
        frame = _read_csv(path)
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
    frames = [frame for frame in map(_read_csv, paths) if not frame.empty]
    if not frames:
        return pd.DataFrame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # all-NaN columns of skipped backends
        return pd.concat(frames, ignore_index=True)


def read_table(path: str | Path) -> pd.DataFrame:
    """A table written by `aggregate`; an empty file is an empty frame."""
    return io.read_csv(path)


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
# The tables


def _values(runs: pd.DataFrame, backend: str, key: str) -> np.ndarray:
    if runs.empty or key not in runs:
        return np.array([])
    return stats.clean(runs.loc[runs["backend"] == backend, key])


def summarize(
    runs: pd.DataFrame,
    baseline: str,
    alpha: float | None = None,
    metrics: Sequence[Metric] = METRICS,
) -> pd.DataFrame:
    """Per backend and metric: n, mean, sd, t-interval, and the ratio to the baseline (Fieller).

    `alpha` None takes the schema's default.
    """
    alpha = analysis_defaults()["alpha"] if alpha is None else alpha
    ok = ok_runs(runs)
    rows = []
    for backend in backend_order(runs, baseline):
        n_runs = int((runs["backend"] == backend).sum())
        n_ok = int((ok["backend"] == backend).sum())
        for metric in metrics:
            x = _values(ok, backend, metric.key)
            d = stats.describe(x, 1 - alpha)
            if backend == baseline:
                ratio = (1.0, math.nan, math.nan) if len(x) else (math.nan,) * 3
            else:
                ratio = stats.fieller_ratio(x, _values(ok, baseline, metric.key), alpha)
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
                    "ci_method": stats.CI_METHOD,
                    "baseline": baseline,
                    "ratio": ratio[0],
                    "ratio_ci_low": ratio[1],
                    "ratio_ci_high": ratio[2],
                    "ratio_method": stats.RATIO_METHOD,
                }
            )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def compare(
    runs: pd.DataFrame,
    baseline: str,
    alpha: float | None = None,
    tost_margin: float | None = None,
    metrics: Sequence[Metric] = METRICS,
) -> pd.DataFrame:
    """Each backend against the baseline: Welch difference, Holm p, Hedges' g, TOST on accuracy.

    Holm's family is the set of backends compared on one metric (one question per metric);
    the TOST p-values are Holm-adjusted the same way before `equivalence` is decided.
    `alpha` and `tost_margin` None take the schema's defaults.
    """
    defaults = analysis_defaults()
    alpha = defaults["alpha"] if alpha is None else alpha
    tost_margin = defaults["tost_margin"] if tost_margin is None else tost_margin
    ok = ok_runs(runs)
    rows = []
    for metric in metrics:
        base = _values(ok, baseline, metric.key)
        for backend in backend_order(runs, baseline):
            if backend == baseline:
                continue
            x = _values(ok, backend, metric.key)
            w = stats.welch(x, base, alpha)
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
                    "ci_method": stats.DIFF_METHOD,
                    "hedges_g": stats.hedges_g(x, base),
                    "tost_margin": tost_margin if metric.accuracy else math.nan,
                    "tost_p": stats.tost(x, base, tost_margin) if metric.accuracy else math.nan,
                    "note": note,
                }
            )
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    table["p_holm"] = np.nan
    table["tost_p_holm"] = np.nan
    for _, index in table.groupby("metric", sort=False).groups.items():
        table.loc[index, "p_holm"] = stats.holm(table.loc[index, "p"])
        table.loc[index, "tost_p_holm"] = stats.holm(table.loc[index, "tost_p"])
    table["significant"] = [bool(p < alpha) if np.isfinite(p) else None for p in table["p_holm"]]
    accuracy = {m.key: m.accuracy for m in metrics}
    table["equivalence"] = [
        stats.equivalence_label(tp, p, alpha) if accuracy[m] else ""
        for tp, p, m in zip(table["tost_p_holm"], table["p_holm"], table["metric"], strict=True)
    ]
    return table[COMPARISON_COLUMNS]


def aggregate(
    metrics: Iterable[str | Path],
    results: Iterable[str | Path],
    parity: Iterable[str | Path],
    kernels: Iterable[str | Path],
    analysis: Mapping[str, Any] | str,
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
