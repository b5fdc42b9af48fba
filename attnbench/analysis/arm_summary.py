"""The per-arm summary table: run counts by status, mean, sd and t-interval of each
metric, and the ratio to the baseline."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from attnbench import stats
from attnbench.analysis.metric_catalog import METRICS, Metric
from attnbench.analysis.run_table import backend_order, is_control, ok_runs, shared_left_out
from attnbench.analysis.settings import analysis_defaults

SUMMARY_COLUMNS = [
    "backend", "metric", "label", "unit", "family", "replica", "runs", "runs_ok", "runs_oom",
    "runs_unavailable", "runs_other", "n", "mean", "sd", "ci_low", "ci_high", "identical",
    "confidence", "ci_method", "baseline", "ratio", "ratio_ci_low", "ratio_ci_high",
    "ratio_method", "runs_shared_gpu",
]  # fmt: skip


def _values(runs: pd.DataFrame, backend: str, key: str) -> np.ndarray:
    if runs.empty or key not in runs:
        return np.array([])
    return stats.clean(runs.loc[runs["backend"] == backend, key])


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


def identical(x: np.ndarray) -> bool:
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
            same = identical(x)
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
                    "runs_shared_gpu": shared_left_out(runs, [backend], metric.key),
                }
            )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
