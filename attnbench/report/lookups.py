"""Lookups on the aggregate tables that the report's narrative and sections share: the
metrics that answer the question, a row by its keys, a metric's rows with numbers, and
the arms compared against the baseline.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from attnbench.analysis import tables

# The metrics that answer the question, in the headline's order.
MEMORY = "peak_alloc_mb"
GPU_TIME = "gpu_ms_per_step"
ATTENTION_TIME = "attention_ms_per_step"
STEP = "step_ms_median"
SPEED = "epoch_loop_s"  # the speed of runs without step keys (older metrics files)
ACCURACY = "mAP50_95"


def row_where(table: pd.DataFrame, **where: Any) -> pd.Series | None:
    """The first row whose columns equal `where`, or None (also for a missing column)."""
    if table is None or table.empty:
        return None
    mask = pd.Series(True, index=table.index)
    for key, value in where.items():
        if key not in table:
            return None
        mask &= table[key] == value
    hits = table[mask]
    return None if hits.empty else hits.iloc[0]


def finite_rows(table: pd.DataFrame, metric: str, column: str = "mean") -> pd.DataFrame:
    """The rows of `metric` whose `column` holds a number (empty for a missing table)."""
    if table is None or table.empty or "metric" not in table:
        return pd.DataFrame()
    rows = table[table["metric"] == metric]
    return rows[pd.to_numeric(rows[column], errors="coerce").notna()]


def compared_arms(comparisons: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The comparison rows of a metric that have something to compare (no A/A control)."""
    rows = finite_rows(comparisons, metric, "diff")
    if not rows.empty and "replica" in rows:
        rows = rows[~rows["replica"].astype(str).str.lower().isin(["true", "1"])]
    return rows


def truthy(value: Any) -> bool:
    """Whether a CSV cell says true (True, 'true', 1, '1.0')."""
    return str(value).lower() in ("true", "1", "1.0")


def on_cpu(runs: pd.DataFrame) -> bool:
    """Whether no finished run used a CUDA device (the times are then the CPU's)."""
    ok = tables.ok_runs(runs)
    return "device" in ok and not ok["device"].astype(str).str.startswith("cuda").any()


def speed_metric(comparisons: pd.DataFrame, summary: pd.DataFrame) -> str:
    """Median step time where runs recorded it, else the epoch-loop time of older runs."""
    return STEP if not finite_rows(summary, STEP).empty else SPEED
