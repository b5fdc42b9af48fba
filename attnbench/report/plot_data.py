"""What the report's figures draw, taken from the aggregate tables: the confidence level the
tables used, a summary row's interval as error bars, and the per-step time breakdown.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from attnbench.analysis import tables


def confidence_of(summary: pd.DataFrame) -> float:
    """The confidence level the tables used (1 - analysis.alpha), so figures say the same;
    the schema's default level when the table does not say."""
    if "confidence" in summary and summary["confidence"].notna().any():
        return float(summary["confidence"].dropna().iloc[0])
    return 1 - tables.analysis_defaults()["alpha"]


def ci_label(confidence: float) -> str:
    """The level as figures print it: 0.95 -> '95%'."""
    return f"{100 * confidence:g}%"


def error_bars(row: pd.Series) -> list[list[float]] | None:
    """A summary row's t-interval as matplotlib's asymmetric error bars; None without one."""
    low, high, mean = row["ci_low"], row["ci_high"], row["mean"]
    if not (np.isfinite(low) and np.isfinite(high)):
        return None
    return [[mean - low], [high - mean]]


BREAKDOWN_PARTS = (
    ("attention_ms", "attention GPU time"),
    ("other_gpu_ms", "other GPU time"),
    ("host_ms", "host time not overlapped by the GPU"),
)


def step_breakdown_frame(runs: pd.DataFrame, baseline: str | None = None) -> pd.DataFrame:
    """Per arm, medians over ok seeds: attention GPU ms, other GPU ms and host ms not
    overlapped by the GPU (step - GPU time, floored at 0) of one training step."""
    keys = ("attention_ms_per_step", "gpu_ms_per_step", "step_ms_median")
    columns = ["backend", "n", "step_ms", *(k for k, _ in BREAKDOWN_PARTS)]
    ok = tables.ok_runs(runs)
    if ok.empty or not set(keys) <= set(ok):
        return pd.DataFrame(columns=columns)
    rows = []
    for backend in tables.backend_order(runs, baseline):
        mine = ok[ok["backend"] == backend][list(keys)].apply(pd.to_numeric, errors="coerce")
        mine = mine.dropna()
        if mine.empty:
            continue
        attention, gpu, step = (float(mine[k].median()) for k in keys)
        rows.append(
            {
                "backend": backend,
                "n": len(mine),
                "step_ms": step,
                "attention_ms": min(attention, gpu),
                "other_gpu_ms": max(gpu - attention, 0.0),
                "host_ms": max(step - gpu, 0.0),
            }
        )
    return pd.DataFrame(rows, columns=columns)
