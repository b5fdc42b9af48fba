"""The aggregate tables: runs, per-epoch rows, kernels and parity gathered from the run
folders, and the summary, comparison, drift and replica tables computed from them.

`aggregate` is what the rule writes. The pieces live in `metric_catalog` (the metrics),
`analysis_config` (the settings), `run_table` (loading and selecting runs),
`arm_summary`, `comparisons` and `drift_replica`; their public names are re-exported
here for the report, plots and scripts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench import intermediates
from attnbench.analysis.arm_summary import SUMMARY_COLUMNS, summarize
from attnbench.analysis.comparisons import COMPARISON_COLUMNS, PAIRED_NOTE, compare, threshold_for
from attnbench.analysis.drift_replica import (
    DRIFT_COLUMNS,
    DRIFT_METHOD,
    IDENTITY_KEYS,
    REPLICA_COLUMNS,
    RESULTS_TIMING_COLUMNS,
    drift,
    replica_identity,
)
from attnbench.analysis.metric_catalog import COMPARED, FAMILIES, METRIC_BY_KEY, METRICS, Metric
from attnbench.analysis.run_table import (
    RUN_PATH,
    SHARED_GPU_EXCLUDED,
    SHARED_GPU_NOTE,
    add_order,
    backend_order,
    concat_csvs,
    has_finished,
    is_control,
    load_epochs,
    load_runs,
    ok_runs,
    read_table,
    shared_gpu,
    without_shared_times,
)
from attnbench.analysis.settings import analysis_defaults, analysis_settings
from attnbench.train import schedule

__all__ = [
    "COMPARED", "COMPARISON_COLUMNS", "DRIFT_COLUMNS", "DRIFT_METHOD", "FAMILIES",
    "IDENTITY_KEYS", "METRICS", "METRIC_BY_KEY", "PAIRED_NOTE", "REPLICA_COLUMNS",
    "RESULTS_TIMING_COLUMNS", "RUN_PATH", "SHARED_GPU_EXCLUDED", "SHARED_GPU_NOTE",
    "SUMMARY_COLUMNS", "Metric", "add_order", "aggregate", "analysis_defaults",
    "analysis_settings", "backend_order", "compare", "concat_csvs", "drift", "has_finished",
    "is_control", "load_epochs", "load_runs", "ok_runs", "read_table", "replica_identity",
    "shared_gpu", "summarize", "threshold_for", "without_shared_times",
]  # fmt: skip


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
        "kernels": concat_csvs(kernels, intermediates.KERNELS),
        "parity": concat_csvs(parity, intermediates.PARITY),
    }
