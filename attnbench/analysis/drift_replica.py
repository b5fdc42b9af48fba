"""Checks on the study itself: drift of each metric over run order (OLS), and whether the
baseline's replica (the A/A control) reproduced it bit for bit."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from attnbench import stats
from attnbench.analysis.metric_catalog import COMPARED, Metric
from attnbench.analysis.run_table import backend_order, ok_runs
from attnbench.analysis.settings import analysis_defaults
from attnbench.train import schedule

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
