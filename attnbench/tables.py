"""The aggregate tables: runs, per-epoch rows, kernels and parity gathered from the run
folders, and the summary and comparison tables computed with `stats`.

Only finished runs (status ok) enter statistics; every run is listed. The analysis
settings (baseline, alpha, TOST margin) come from the config; their defaults are the
schema's, read through `attnbench.config`, never copied here.
"""

from __future__ import annotations

import copy
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

from attnbench import config, io, schedule, stats

RUN_PATH = re.compile(r"(?P<backend>[^/\\]+)[/\\]seed(?P<seed>\d+)[/\\][^/\\]+$")


@dataclass(frozen=True)
class Metric:
    """A run-level quantity; `better` orders the headline, `kind` picks its practical
    threshold (time: relative, memory: MiB, accuracy: the TOST margin) and `family` its
    Holm family. Metrics without a family are described per arm but not compared."""

    key: str
    label: str
    unit: str
    better: str  # "lower" | "higher"
    kind: str = "time"  # "time" | "memory" | "accuracy" | "ratio"
    family: str = ""

    @property
    def accuracy(self) -> bool:
        return self.kind == "accuracy"

    @property
    def compared(self) -> bool:
        return bool(self.family)

    @property
    def heading(self) -> str:
        """'label (unit)', or the label alone for unitless metrics: axis and column titles."""
        return f"{self.label} ({self.unit})" if self.unit else self.label


# Holm families: one question each (is memory different? GPU time? step time? ...).
FAMILIES = {
    "memory": "peak memory (allocated, reserved, device, host RSS)",
    "gpu_time": "GPU time per step (all kernels; attention kernels)",
    "step_time": "steady-state step time and throughput",
    "epoch_time": "epoch times and throughput (validation and checkpoints included)",
    "accuracy": "accuracy (mAP50, mAP50-95)",
}

METRICS: tuple[Metric, ...] = (
    Metric("peak_alloc_mb", "peak GPU memory allocated", "MB", "lower", "memory", "memory"),
    Metric("peak_reserved_mb", "peak GPU memory reserved", "MB", "lower", "memory", "memory"),
    Metric("peak_device_used_mb", "peak device memory used", "MB", "lower", "memory", "memory"),
    Metric("host_peak_rss_mb", "peak host RSS", "MB", "lower", "memory", "memory"),
    Metric("gpu_ms_per_step", "GPU time per step", "ms", "lower", "time", "gpu_time"),
    Metric("attention_ms_per_step", "attention GPU time per step", "ms", "lower", "time", "gpu_time"),
    Metric("step_ms_median", "median step time", "ms", "lower", "time", "step_time"),
    Metric("steady_images_per_s", "steady-state throughput", "images/s", "higher", "time", "step_time"),
    Metric("epoch_loop_s", "epoch-loop time", "s", "lower", "time", "epoch_time"),
    Metric("epoch_time_s", "median epoch time", "s", "lower", "time", "epoch_time"),
    Metric("images_per_s", "training throughput", "images/s", "higher", "time", "epoch_time"),
    Metric("mAP50", "mAP50", "", "higher", "accuracy", "accuracy"),
    Metric("mAP50_95", "mAP50-95", "", "higher", "accuracy", "accuracy"),
    # Described per arm (the regime), not compared.
    Metric("host_step_ms_median", "host time per step", "ms", "lower"),
    Metric("gpu_busy_fraction", "GPU-busy fraction of a step", "", "higher", "ratio"),
    Metric("attention_share_of_gpu", "attention share of GPU time", "", "lower", "ratio"),
    Metric("max_step_saving_pct", "Amdahl ceiling: most a free attention saves", "%", "lower", "ratio"),
    Metric("launches_per_step", "kernel launches per step", "", "lower", "ratio"),
    Metric("data_wait_ms_per_step", "data wait per step", "ms", "lower"),
)  # fmt: skip
METRIC_BY_KEY = {m.key: m for m in METRICS}
COMPARED = tuple(m for m in METRICS if m.compared)

SUMMARY_COLUMNS = [
    "backend", "metric", "label", "unit", "family", "replica", "runs", "runs_ok", "runs_oom",
    "runs_unavailable", "runs_other", "n", "mean", "sd", "ci_low", "ci_high", "identical",
    "confidence", "ci_method", "baseline", "ratio", "ratio_ci_low", "ratio_ci_high",
    "ratio_method", "runs_shared_gpu",
]  # fmt: skip
COMPARISON_COLUMNS = [
    "backend", "baseline", "metric", "label", "unit", "family", "replica", "design", "n",
    "n_baseline", "seeds", "mean", "mean_baseline", "diff", "diff_pct", "diff_ci_low",
    "diff_ci_high", "confidence", "ci_method", "identical", "sd_diff", "t", "df", "p",
    "p_holm", "significant", "p_perm", "p_perm_holm", "perm_method", "hedges_g", "ratio",
    "ratio_ci_low", "ratio_ci_high", "ratio_method", "mde", "mde_pct", "power",
    "seeds_needed", "threshold", "threshold_rule", "verdict", "tost_margin", "tost_ci_low",
    "tost_ci_high", "tost_p", "tost_p_holm", "equivalence", "drift_p", "diff_drift_adjusted",
    "diff_drift_adjusted_ci_low", "diff_drift_adjusted_ci_high", "note",
]  # fmt: skip
DRIFT_COLUMNS = [
    "metric", "label", "unit", "family", "n", "arms", "slope_per_run", "slope_ci_low",
    "slope_ci_high", "confidence", "p", "p_holm", "significant", "slope_pct_per_run",
    "drift_pct_over_study", "slope_within_blocks", "slope_within_blocks_ci_low",
    "slope_within_blocks_ci_high", "p_within_blocks", "p_within_blocks_holm",
    "significant_within_blocks", "method", "note",
]  # fmt: skip
REPLICA_COLUMNS = [
    "baseline", "replica", "seed", "status", "status_replica", "epochs_compared",
    "results_columns_compared", "results_identical", "results_differing",
    "results_max_abs_diff", "metrics_compared", "metrics_identical", "metrics_differing",
    "bit_identical",
]  # fmt: skip
# metrics.json numbers that a deterministic run reproduces exactly (times never do).
IDENTITY_KEYS = ("precision", "recall", "mAP50", "mAP50_95", "peak_alloc_mb", "peak_reserved_mb")
# results.csv columns that are wall-clock, not computation.
RESULTS_TIMING_COLUMNS = ("epoch", "time")
DRIFT_METHOD = "OLS: value ~ arm + run_order; within blocks: + seed block"
PAIRED_NOTE = (
    "paired by seed: each seed is a block of interleaved runs, so drift between blocks "
    "cancels in the differences"
)


# --------------------------------------------------------------------------- #
# Settings


def _defaults(spec: Mapping[str, Any]) -> Any:
    """A schema node's default, with the defaults of an object's properties filled in."""
    value = copy.deepcopy(spec.get("default"))
    if spec.get("type") == "object" and "properties" in spec:
        value = dict(value or {})
        for key, sub in spec["properties"].items():
            if key not in value and ("default" in sub or sub.get("type") == "object"):
                value[key] = _defaults(sub)
    return value


@cache
def _schema_analysis() -> str:
    return json.dumps(_defaults(config.load_schema()["properties"]["analysis"]))


def analysis_defaults() -> dict[str, Any]:
    """The `analysis` defaults of the config schema, the one place they are written."""
    return json.loads(_schema_analysis())


def analysis_settings(params: Mapping[str, Any] | str) -> dict[str, Any]:
    """The `analysis` settings from the rule's params (JSON text or dict).

    Accepts the whole config or its `analysis` section; missing keys take the schema's
    defaults. Top-level `backends` and `seeds`, when given, come along (the design that
    `planned_order` is computed from).
    """
    value = json.loads(params) if isinstance(params, str) else dict(params)
    section = value.get("analysis", value)
    defaults = analysis_defaults()
    merged = {**defaults, **section}
    merged["thresholds"] = {**defaults["thresholds"], **(section.get("thresholds") or {})}
    out = {
        "baseline": merged["baseline"],
        "alpha": float(merged["alpha"]),
        "tost_margin": float(merged["tost_margin"]),
        "replica": bool(merged["replica"]),
        "order_seed": int(merged["order_seed"]),
        "thresholds": {k: float(v) for k, v in merged["thresholds"].items()},
    }
    for key in ("backends", "seeds"):
        if key in value and "analysis" in value:
            out[key] = list(value[key])
    return out


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
    """Only finished runs enter statistics; oom/unavailable ones are reported, not averaged.
    A shared-GPU run enters without its times (`without_shared_times`)."""
    if runs.empty or "status" not in runs:
        return runs.iloc[0:0]
    return without_shared_times(runs[runs["status"] == "ok"])


# What another job on the same GPU changes (train.jobs_per_gpu > 1): every time and rate,
# the GPU-busy ratios made of them, and NVML's device memory and utilisation, which count
# every process on the device. Accuracy and per-process memory (torch's peaks, host RSS)
# stay; so do launches per step (a count).
SHARED_GPU_EXCLUDED = (
    *(m.key for m in METRICS if m.kind == "time"),
    "gpu_busy_fraction", "attention_share_of_gpu", "max_step_saving_pct",
    "peak_device_used_mb", "step_ms_p10", "step_ms_p90", "gpu_util_mean", "gpu_util_median",
    "data_wait_fraction", "epoch_times_s", "train_epoch_times_s",
)  # fmt: skip
SHARED_GPU_NOTE = "shared-GPU run(s) (train.jobs_per_gpu > 1): their times left out"


def shared_gpu(runs: pd.DataFrame) -> pd.Series:
    """Which runs shared their GPU by design (metrics.json `shared_gpu`, also as CSV text)."""
    if "shared_gpu" not in runs:
        return pd.Series(False, index=runs.index)
    return runs["shared_gpu"].map(lambda v: str(v).strip().lower() in ("true", "1", "1.0"))


def without_shared_times(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` with the SHARED_GPU_EXCLUDED values of shared-GPU runs blanked (NaN)."""
    shared = shared_gpu(runs)
    if not shared.any():
        return runs
    runs = runs.copy()
    for key in SHARED_GPU_EXCLUDED:
        if key not in runs:
            continue
        if key in METRIC_BY_KEY or pd.api.types.is_numeric_dtype(runs[key]):
            runs[key] = pd.to_numeric(runs[key], errors="coerce").astype(float).where(~shared)
        else:  # JSON text (epoch_times_s)
            runs[key] = runs[key].astype(object).where(~shared, None)
    return runs


def _shared_left_out(runs: pd.DataFrame, arms: Sequence[str], key: str) -> int:
    """How many ok runs of `arms` lost their value of `key` to the shared-GPU rule."""
    if key not in SHARED_GPU_EXCLUDED or runs.empty or "status" not in runs:
        return 0
    mine = runs["backend"].isin(list(arms)) & (runs["status"] == "ok")
    return int((mine & shared_gpu(runs)).sum())


def backend_order(runs: pd.DataFrame, baseline: str | None = None) -> list[str]:
    """Arms in the order the workflow lists them, baseline first, then its replica."""
    order = list(dict.fromkeys(runs["backend"].dropna())) if "backend" in runs else []
    if baseline is not None:
        for name in (schedule.replica_name(baseline), baseline):
            if name in order:
                order.remove(name)
                order.insert(0, name)
    return order


def is_control(arm: str, baseline: str) -> bool:
    """The A/A control: the baseline's replica (same kernel, its own job)."""
    return arm == schedule.replica_name(baseline)


def add_order(
    runs: pd.DataFrame,
    order_seed: int = 0,
    arms: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
) -> pd.DataFrame:
    """`run_order`: rank of `started` over the study's runs (1-based, blank without it);
    `planned_order`: the position a train job recorded, else the position in
    `schedule.planned_order` for these arms and seeds (those seen in `runs` if not given)."""
    runs = runs.copy()
    if runs.empty:
        runs["run_order"] = pd.Series(dtype=float)
        runs["planned_order"] = pd.Series(dtype=float)
        return runs
    started = (
        pd.to_datetime(runs["started"], utc=True, errors="coerce", format="ISO8601")
        if "started" in runs
        else pd.Series(pd.NaT, index=runs.index)
    )
    runs["run_order"] = started.rank(method="first")
    arms = list(arms) if arms is not None else list(dict.fromkeys(runs["backend"].dropna()))
    seen = pd.to_numeric(runs["seed"], errors="coerce")
    seeds = list(seeds) if seeds is not None else sorted(int(x) for x in seen.dropna().unique())
    plan = {job: i + 1 for i, job in enumerate(schedule.planned_order(order_seed, arms, seeds))}
    computed = pd.Series(
        [
            plan.get((b, int(x)), math.nan) if np.isfinite(x) else math.nan
            for b, x in zip(runs["backend"], seen, strict=True)
        ],
        index=runs.index,
    )
    # A position the train job recorded itself wins: it is the plan the run ran under.
    if "planned_order" in runs:
        computed = pd.to_numeric(runs["planned_order"], errors="coerce").fillna(computed)
    runs["planned_order"] = computed
    return runs


# --------------------------------------------------------------------------- #
# The tables


def _values(runs: pd.DataFrame, backend: str, key: str) -> np.ndarray:
    if runs.empty or key not in runs:
        return np.array([])
    return stats.clean(runs.loc[runs["backend"] == backend, key])


def _by_seed(runs: pd.DataFrame, backend: str, key: str) -> pd.Series:
    """An arm's finite values of `key`, indexed by seed (ok runs only)."""
    if runs.empty or key not in runs:
        return pd.Series(dtype=float)
    mine = runs[runs["backend"] == backend]
    values = pd.to_numeric(mine[key], errors="coerce")
    seeds = pd.to_numeric(mine["seed"], errors="coerce")
    series = pd.Series(values.to_numpy(), index=seeds.to_numpy())
    series = series[np.isfinite(series.to_numpy()) & np.isfinite(series.index.to_numpy(float))]
    return series[~series.index.duplicated(keep="first")].sort_index()


def _status_counts(runs: pd.DataFrame, backend: str) -> dict[str, int]:
    status = runs.loc[runs["backend"] == backend, "status"].astype(str)
    ok, oom, unavailable = (int((status == s).sum()) for s in ("ok", "oom", "unavailable"))
    return {
        "runs": len(status),
        "runs_ok": ok,
        "runs_oom": oom,
        "runs_unavailable": unavailable,
        "runs_other": len(status) - ok - oom - unavailable,
    }


def _identical(x: np.ndarray) -> bool:
    """Two values or more, all equal (up to float rounding): a deterministic metric."""
    return len(x) >= 2 and float(np.ptp(x)) <= 1e-12 * max(1.0, float(np.max(np.abs(x))))


def summarize(
    runs: pd.DataFrame,
    baseline: str,
    alpha: float | None = None,
    metrics: Sequence[Metric] = METRICS,
) -> pd.DataFrame:
    """Per arm and metric: run counts by status, n, mean, sd, t-interval, whether the
    value is identical across seeds (then no interval), and the ratio to the baseline
    (Fieller for independent means). `alpha` None takes the schema's default.
    """
    alpha = analysis_defaults()["alpha"] if alpha is None else alpha
    ok = ok_runs(runs)
    rows = []
    for backend in backend_order(runs, baseline):
        counts = _status_counts(runs, backend)
        for metric in metrics:
            x = _values(ok, backend, metric.key)
            d = stats.describe(x, 1 - alpha)
            same = _identical(x)
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
                    "family": metric.family,
                    "replica": is_control(backend, baseline),
                    **counts,
                    **d,
                    "identical": same,
                    "confidence": 1 - alpha,
                    "ci_method": "identical across seeds" if same else stats.CI_METHOD,
                    "baseline": baseline,
                    "ratio": ratio[0],
                    "ratio_ci_low": ratio[1],
                    "ratio_ci_high": ratio[2],
                    "ratio_method": stats.RATIO_METHOD,
                    "runs_shared_gpu": _shared_left_out(runs, [backend], metric.key),
                }
            )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def threshold_for(
    metric: Metric, baseline_mean: float, thresholds: Mapping[str, float], tost_margin: float
) -> tuple[float, str]:
    """The practical threshold of a metric in its own unit, and the rule it comes from."""
    if metric.kind == "memory":
        value = float(thresholds["memory_mib"])
        return value, f"{value:g} MiB"
    if metric.kind == "accuracy":
        return tost_margin, f"±{tost_margin:g} (tost_margin)"
    if metric.kind == "time" and np.isfinite(baseline_mean):
        rel = float(thresholds["time_rel"])
        return rel * abs(baseline_mean), f"{100 * rel:g}% of the baseline mean"
    return math.nan, ""


def _paired_row(x: pd.Series, y: pd.Series, alpha: float, margin: float | None) -> dict[str, Any]:
    """Statistics of arm x against baseline y over the seeds both have."""
    p = stats.paired(x, y, alpha)
    eq = stats.paired(x, y, 2 * alpha)
    row: dict[str, Any] = {
        "design": "paired",
        "n": p["n"],
        "n_baseline": p["n"],
        "mean": float(x.mean()),
        "mean_baseline": float(y.mean()),
        **{k: p[k] for k in ("diff", "diff_ci_low", "diff_ci_high", "sd_diff", "t", "df", "p")},
        "identical": p["identical"],
        "ci_method": stats.EXACT_METHOD if p["identical"] else stats.PAIRED_METHOD,
        "hedges_g": stats.hedges_g(x, y),
        "mde": stats.mde_paired(p["n"], p["sd_diff"], alpha),
        "seeds_needed": stats.seeds_needed_paired(p["diff"], p["sd_diff"], alpha),
        "_eq": (eq["diff_ci_low"], eq["diff_ci_high"]),
    }
    row["p_perm"], row["perm_method"] = (
        (math.nan, "") if p["identical"] else stats.sign_flip(x.to_numpy() - y.to_numpy())
    )
    row["ratio"], row["ratio_ci_low"], row["ratio_ci_high"] = stats.paired_fieller(x, y, alpha)
    row["ratio_method"] = stats.PAIRED_RATIO_METHOD
    if margin is not None:
        row.update(stats.paired_tost(x, y, margin, alpha))
    return row


def _welch_row(x: np.ndarray, y: np.ndarray, alpha: float, margin: float | None) -> dict[str, Any]:
    """Statistics of independent samples x against y (no seed in common to pair by)."""
    w = stats.welch(x, y, alpha)
    eq = stats.welch(x, y, 2 * alpha)
    same = _identical(x) and _identical(y)
    sd1 = float(np.std(x, ddof=1)) if len(x) >= 2 else math.nan
    sd2 = float(np.std(y, ddof=1)) if len(y) >= 2 else math.nan
    row: dict[str, Any] = {
        "design": "welch",
        "n": len(x),
        "n_baseline": len(y),
        "mean": float(np.mean(x)) if len(x) else math.nan,
        "mean_baseline": float(np.mean(y)) if len(y) else math.nan,
        **{k: w[k] for k in ("diff", "diff_ci_low", "diff_ci_high", "t", "df", "p")},
        "sd_diff": math.nan,
        "identical": same,
        "ci_method": "identical in every run: exact difference" if same else stats.DIFF_METHOD,
        "hedges_g": stats.hedges_g(x, y),
        "mde": stats.mde_welch(len(x), len(y), sd1, sd2, alpha),
        "seeds_needed": stats.seeds_needed_welch(w["diff"], sd1, sd2, alpha),
        "p_perm": math.nan,
        "perm_method": "",
        "_eq": (eq["diff_ci_low"], eq["diff_ci_high"]),
    }
    row["ratio"], row["ratio_ci_low"], row["ratio_ci_high"] = stats.fieller_ratio(x, y, alpha)
    row["ratio_method"] = stats.RATIO_METHOD
    if margin is not None:
        row.update(stats.welch_tost(x, y, margin, alpha))
    return row


def compare(
    runs: pd.DataFrame,
    baseline: str,
    alpha: float | None = None,
    tost_margin: float | None = None,
    metrics: Sequence[Metric] = COMPARED,
    thresholds: Mapping[str, float] | None = None,
    drift_table: pd.DataFrame | None = None,
    adjusted: Mapping[tuple[str, str], tuple[float, float, float]] | None = None,
) -> pd.DataFrame:
    """Every arm against the baseline, paired by seed wherever two seeds or more pair up.

    Paired rows: mean difference with its t-interval, paired t and exact sign-flip p,
    paired Fieller ratio, paired TOST on accuracy. Welch only where pairing is impossible
    (fewer than two seeds with an ok run on both sides). Every row carries the minimum
    detectable effect at 80% power, the seeds that would resolve the observed difference,
    and a practical verdict against `thresholds`. A difference equal in every pair is
    `identical`: the exact difference, no test. Holm runs within each metric family, the
    A/A control (the baseline's replica) in families of its own. Where `drift_table`
    shows a significant drift for a metric, `adjusted` gives the drift-adjusted
    difference (see `drift`). None arguments take the schema's defaults.
    """
    defaults = analysis_defaults()
    alpha = defaults["alpha"] if alpha is None else alpha
    tost_margin = defaults["tost_margin"] if tost_margin is None else tost_margin
    thresholds = {**defaults["thresholds"], **(thresholds or {})}
    drift_p = {}
    if drift_table is not None and not drift_table.empty:
        drift_p = dict(zip(drift_table["metric"], drift_table["p_within_blocks"], strict=True))
    ok = ok_runs(runs)
    rows = []
    for metric in metrics:
        if not metric.compared:
            continue
        base = _by_seed(ok, baseline, metric.key)
        margin = tost_margin if metric.accuracy else None
        for backend in backend_order(runs, baseline):
            if backend == baseline:
                continue
            mine = _by_seed(ok, backend, metric.key)
            common = mine.index.intersection(base.index)
            notes = []
            if len(common) >= 2:
                row = _paired_row(mine[common], base[common], alpha, margin)
                notes.append(PAIRED_NOTE)
                unpaired = sorted(set(mine.index).symmetric_difference(base.index))
                if unpaired:
                    seeds = ", ".join(str(int(s)) for s in unpaired)
                    notes.append(f"seed(s) {seeds} left out: no ok run on both sides")
                seeds_used = common
            else:
                row = _welch_row(mine.to_numpy(), base.to_numpy(), alpha, margin)
                if not (len(mine) and len(base)):
                    row["design"] = ""  # nothing to compare
                seeds_used = mine.index.union(base.index)
                if len(mine) and len(base):
                    notes.append(
                        f"Welch: pairing impossible ({len(common)} seed(s) with an ok run on "
                        "both sides)"
                    )
                if len(mine) < 2 or len(base) < 2:
                    notes.append(
                        f"fewer than 2 usable runs ({backend}: {len(mine)}, "
                        f"{baseline}: {len(base)})"
                    )
                elif not row["identical"] and np.isnan(row["p"]):
                    notes.append("no variance in either group")
            left_out = _shared_left_out(runs, [backend, baseline], metric.key)
            if left_out:
                notes.append(f"{left_out} {SHARED_GPU_NOTE}")
            if row["identical"]:
                notes.append(f"identical across {row['n']} seeds: the exact difference")
            eq_ci = row.pop("_eq")
            threshold, rule = threshold_for(metric, row["mean_baseline"], thresholds, tost_margin)
            diff, mean_base = row["diff"], row["mean_baseline"]
            mde = row["mde"]
            finite_base = np.isfinite(mean_base) and mean_base != 0
            row.update(
                backend=backend,
                baseline=baseline,
                metric=metric.key,
                label=metric.label,
                unit=metric.unit,
                replica=is_control(backend, baseline),
                family=metric.family + (" (A/A)" if is_control(backend, baseline) else ""),
                seeds=" ".join(str(int(s)) for s in seeds_used),
                diff_pct=100 * diff / abs(mean_base) if finite_base else math.nan,
                confidence=1 - alpha,
                mde_pct=100 * mde / abs(mean_base) if finite_base else math.nan,
                power=stats.POWER,
                threshold=threshold,
                threshold_rule=rule,
                verdict=stats.practical_verdict(
                    diff,
                    (row["diff_ci_low"], row["diff_ci_high"]),
                    eq_ci,
                    threshold,
                    row["identical"],
                ),
                tost_margin=tost_margin if metric.accuracy else math.nan,
                drift_p=drift_p.get(metric.key, math.nan),
                note="; ".join(notes),
            )
            fixed = (adjusted or {}).get((metric.key, backend))
            if fixed is not None and drift_p.get(metric.key, math.nan) < alpha:
                row.update(
                    diff_drift_adjusted=fixed[0],
                    diff_drift_adjusted_ci_low=fixed[1],
                    diff_drift_adjusted_ci_high=fixed[2],
                )
            rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    table = table.reindex(columns=COMPARISON_COLUMNS)
    for col in ("p_holm", "p_perm_holm", "tost_p_holm"):
        table[col] = np.nan
    for _, index in table.groupby("family", sort=False).groups.items():
        table.loc[index, "p_holm"] = stats.holm(table.loc[index, "p"])
        table.loc[index, "p_perm_holm"] = stats.holm(table.loc[index, "p_perm"])
        table.loc[index, "tost_p_holm"] = stats.holm(table.loc[index, "tost_p"])
    table["significant"] = [bool(p < alpha) if np.isfinite(p) else None for p in table["p_holm"]]
    accuracy = {m.key: m.accuracy for m in metrics}
    table["equivalence"] = [
        _equivalence(r, tost_margin, alpha) if accuracy[r["metric"]] else ""
        for _, r in table.iterrows()
    ]
    return table[COMPARISON_COLUMNS]


def _equivalence(row: pd.Series, margin: float, alpha: float) -> str:
    if bool(row["identical"]) and np.isfinite(row["diff"]):
        return "equivalent" if abs(row["diff"]) < margin else "different"
    return stats.equivalence_label(row["tost_p_holm"], row["p_holm"], alpha)


# --------------------------------------------------------------------------- #
# Drift over run order, and the A/A control


def _ols(data: pd.DataFrame, key: str, arms: Sequence[str], blocks: bool) -> tuple[Any, str]:
    """OLS of `key` on arm dummies (first arm the reference), seed-block dummies when
    `blocks`, and run_order; (fit, '') or (None, why not)."""
    import statsmodels.api as sm

    columns = {"const": np.ones(len(data))}
    for arm in arms[1:]:
        columns[arm] = (data["backend"] == arm).to_numpy(float)
    if blocks:
        for seed in sorted(data["seed"].unique())[1:]:
            columns[f"seed {seed:g}"] = (data["seed"] == seed).to_numpy(float)
    columns["run_order"] = data["run_order"].to_numpy(float)
    x = pd.DataFrame(columns)
    y = data[key].to_numpy(float)
    if len(y) < x.shape[1] + 1:
        return None, "too few runs for a slope beside the arm (and block) means"
    if np.linalg.matrix_rank(x.to_numpy()) < x.shape[1]:
        return None, "run order confounded with arm or seed block"
    fit = sm.OLS(y, x).fit()
    if fit.ssr <= 1e-20 * max(1.0, float(np.sum(y**2))):
        return None, "no residual variance (identical values within arms)"
    return fit, ""


def drift(
    runs: pd.DataFrame,
    baseline: str,
    alpha: float | None = None,
    metrics: Sequence[Metric] = COMPARED,
) -> tuple[pd.DataFrame, dict[tuple[str, str], tuple[float, float, float]]]:
    """Per metric, the slope of the value against `run_order` (ok runs), by OLS.

    `slope_per_run`: value ~ arm + run_order, the drift over the whole study (between
    seed blocks too, where a seed's own effect, e.g. on accuracy, also shows).
    `slope_within_blocks`: value ~ arm + seed block + run_order, the drift inside seed
    blocks: the only drift left in a paired difference. Its arm coefficients are the
    drift-adjusted differences from the baseline, returned per (metric, arm) with their
    (1 - alpha) interval.
    """
    alpha = analysis_defaults()["alpha"] if alpha is None else alpha
    ok = ok_runs(runs)
    rows, adjusted = [], {}
    for metric in metrics:
        row: dict[str, Any] = {
            "metric": metric.key,
            "label": metric.label,
            "unit": metric.unit,
            "family": metric.family,
            "confidence": 1 - alpha,
            "method": DRIFT_METHOD,
            "note": "",
            "n": 0,
            "arms": 0,
        }
        rows.append(row)
        if metric.key not in ok or "run_order" not in ok:
            row["note"] = "no run order or no values"
            continue
        data = pd.DataFrame(
            {
                "backend": ok["backend"],
                "seed": pd.to_numeric(ok["seed"], errors="coerce"),
                "run_order": pd.to_numeric(ok["run_order"], errors="coerce"),
                metric.key: pd.to_numeric(ok[metric.key], errors="coerce"),
            }
        ).dropna()
        arms = backend_order(data, baseline)
        row.update(n=len(data), arms=len(arms))
        fit, why = _ols(data, metric.key, arms, blocks=False)
        if fit is None:
            row["note"] = why
            continue
        ci = fit.conf_int(alpha)
        slope, p = float(fit.params["run_order"]), float(fit.pvalues["run_order"])
        mean = float(data[metric.key].mean())
        span = float(data["run_order"].max() - data["run_order"].min())
        row.update(
            slope_per_run=slope,
            slope_ci_low=float(ci.loc["run_order", 0]),
            slope_ci_high=float(ci.loc["run_order", 1]),
            p=p,
            slope_pct_per_run=100 * slope / abs(mean) if mean else math.nan,
            drift_pct_over_study=100 * slope * span / abs(mean) if mean else math.nan,
        )
        within, why = _ols(data, metric.key, arms, blocks=True)
        if within is None:
            row["note"] = f"within seed blocks: {why}"
            continue
        ci = within.conf_int(alpha)
        p_within = float(within.pvalues["run_order"])
        row.update(
            slope_within_blocks=float(within.params["run_order"]),
            slope_within_blocks_ci_low=float(ci.loc["run_order", 0]),
            slope_within_blocks_ci_high=float(ci.loc["run_order", 1]),
            p_within_blocks=p_within,
        )
        if arms and arms[0] == baseline:
            for arm in arms[1:]:
                adjusted[(metric.key, arm)] = (
                    float(within.params[arm]),
                    float(ci.loc[arm, 0]),
                    float(ci.loc[arm, 1]),
                )
    table = pd.DataFrame(rows).reindex(columns=DRIFT_COLUMNS)
    # One question per table (does anything drift?): Holm over its metrics.
    table["p_holm"] = stats.holm(table["p"])
    table["p_within_blocks_holm"] = stats.holm(table["p_within_blocks"])
    table["significant"] = [bool(p < alpha) if np.isfinite(p) else None for p in table["p_holm"]]
    table["significant_within_blocks"] = [
        bool(p < alpha) if np.isfinite(p) else None for p in table["p_within_blocks_holm"]
    ]
    return table[DRIFT_COLUMNS], adjusted


def _same(a: Any, b: Any) -> bool:
    """Equal numbers, or both missing."""
    x, y = pd.to_numeric(pd.Series([a, b]), errors="coerce")
    return bool((np.isnan(x) and np.isnan(y)) or x == y)


def replica_identity(runs: pd.DataFrame, epochs: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per seed: were the baseline's run and its replica's bit-identical as recorded?

    Compares every results.csv column but wall-clock ones (epoch by epoch) and the
    metrics.json numbers a deterministic run reproduces (`IDENTITY_KEYS`).
    """
    replica = schedule.replica_name(baseline)
    if runs.empty or replica not in set(runs["backend"]):
        return pd.DataFrame(columns=REPLICA_COLUMNS)
    seeds = pd.to_numeric(runs["seed"], errors="coerce")
    rows = []
    for seed in sorted(seeds[runs["backend"] == replica].dropna().unique()):
        pick = {a: runs[(runs["backend"] == a) & (seeds == seed)] for a in (baseline, replica)}
        status = {a: (f["status"].iloc[0] if len(f) else "missing") for a, f in pick.items()}
        row: dict[str, Any] = {
            "baseline": baseline,
            "replica": replica,
            "seed": int(seed),
            "status": status[baseline],
            "status_replica": status[replica],
        }
        rows.append(row)
        if status[baseline] != "ok" or status[replica] != "ok":
            continue
        a, b = pick[baseline].iloc[0], pick[replica].iloc[0]
        keys = [k for k in IDENTITY_KEYS if k in a.index and not (pd.isna(a[k]) and pd.isna(b[k]))]
        differing = [k for k in keys if not _same(a[k], b[k])]
        row.update(
            metrics_compared=len(keys),
            metrics_identical=not differing,
            metrics_differing="; ".join(differing),
        )
        if not epochs.empty and "seed" in epochs:
            es = pd.to_numeric(epochs["seed"], errors="coerce")
            ea = epochs[(epochs["backend"] == baseline) & (es == seed)].reset_index(drop=True)
            eb = epochs[(epochs["backend"] == replica) & (es == seed)].reset_index(drop=True)
            skip = {"backend", "seed", "status", *RESULTS_TIMING_COLUMNS}
            cols = [c for c in ea.columns if c not in skip and c in eb.columns]
            if len(ea) and len(ea) == len(eb):
                va = ea[cols].apply(pd.to_numeric, errors="coerce").to_numpy(float)
                vb = eb[cols].apply(pd.to_numeric, errors="coerce").to_numpy(float)
                equal = (va == vb) | (np.isnan(va) & np.isnan(vb))
                gap = np.abs(va - vb)
                row.update(
                    epochs_compared=len(ea),
                    results_columns_compared=len(cols),
                    results_identical=bool(equal.all()),
                    results_differing="; ".join(
                        c for c, same in zip(cols, equal.all(axis=0), strict=True) if not same
                    ),
                    results_max_abs_diff=float(np.nanmax(gap)) if np.isfinite(gap).any() else 0.0,
                )
            elif len(ea) or len(eb):
                row.update(
                    epochs_compared=min(len(ea), len(eb)),
                    results_identical=False,
                    results_differing=f"epoch count {len(ea)} vs {len(eb)}",
                )
        parts = [row.get("metrics_identical"), row.get("results_identical")]
        row["bit_identical"] = all(parts) if all(p is not None for p in parts) else None
    return pd.DataFrame(rows).reindex(columns=REPLICA_COLUMNS)


def aggregate(
    metrics: Iterable[str | Path],
    results: Iterable[str | Path],
    parity: Iterable[str | Path],
    kernels: Iterable[str | Path],
    analysis: Mapping[str, Any] | str,
) -> dict[str, pd.DataFrame]:
    """Everything the `aggregate` rule writes, keyed by its output names."""
    settings = analysis_settings(analysis)
    baseline, alpha = settings["baseline"], settings["alpha"]
    arms = None
    if "backends" in settings:
        arms = schedule.arms(settings["backends"], baseline, settings["replica"])
    runs = add_order(load_runs(metrics), settings["order_seed"], arms, settings.get("seeds"))
    first = ["backend", "seed", "status", "reason", "run_order", "planned_order", "started"]
    runs = runs[[c for c in first if c in runs] + [c for c in runs if c not in first]]
    epochs = load_epochs(results, runs)
    drift_table, adjusted = drift(runs, baseline, alpha)
    return {
        "runs": runs,
        "summary": summarize(runs, baseline, alpha),
        "comparisons": compare(
            runs,
            baseline,
            alpha,
            settings["tost_margin"],
            thresholds=settings["thresholds"],
            drift_table=drift_table,
            adjusted=adjusted,
        ),
        "drift": drift_table,
        "replica": replica_identity(runs, epochs, baseline),
        "epochs": epochs,
        "kernels": concat_csvs(kernels),
        "parity": concat_csvs(parity),
    }
