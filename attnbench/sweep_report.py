"""The sweep's section of the HTML report: a context for report/sweep.html.j2.

`context` returns None when the sweep did not run, so the report shows no section.
The main template includes the section with `{% if sweep %}{% include "sweep.html.j2" %}{% endif %}`
and its `table` macro draws the tables.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import pandas as pd

from attnbench import io
from attnbench.formatting import blank, na_text, num, yes_no
from attnbench.section_report import by_stem, figures, inputs, optional_table, status_counts

PLOTS = (
    ("sweep_speedup", "Speed-up and memory saving by model scale",
     "Step time and GPU time of each backend against the baseline in the same cell, and its peak memory saving."),
    ("sweep_gpu_busy", "GPU-busy fraction by model scale",
     "GPU time per step over step time: near 1 the step is GPU-bound and a faster kernel shortens it; far below 1 the host hides it."),
    ("sweep_max_batch", "Largest batch that trains",
     "Largest batch for which training steps fit in memory, per backend and image size (doubling, then bisection)."),
    ("sweep_fastest", "Fastest backend",
     "The backend with the shortest median step time in each cell, with its speed-up against the baseline."),
)  # fmt: skip
SUMMARY_COLUMNS = [
    "model_name", "imgsz", "batch", "compile", "backend", "status", "step_ms", "step_speedup",
    "step_speedup_lo", "step_speedup_hi", "gpu_ms", "gpu_speedup", "attention_share_of_gpu",
    "gpu_busy_fraction", "peak_alloc_mb", "memory_saving_pct", "fastest",
]  # fmt: skip
MAX_BATCH_COLUMNS = [
    "model_name", "imgsz", "backend", "status", "max_batch", "first_oom", "limited_by", "probes",
    "max_batch_ratio", "peak_alloc_mb_at_max",
]  # fmt: skip


def _fastest(points: pd.DataFrame, summary: pd.DataFrame, baseline: str) -> list[str]:
    """One sentence per setting: which backend won where, and by how much at most."""
    sentences = []
    if summary.empty:
        return sentences
    winners = summary[summary["fastest"].astype(str).str.lower() == "true"]
    for (imgsz, batch, comp), cells in winners.groupby(["imgsz", "batch", "compile"], sort=True):
        names = ", ".join(f"{r.model_name}: {r.backend}" for r in cells.itertuples())
        where = f"imgsz {imgsz}, batch {batch}" + ("" if comp == "off" else f", compile {comp}")
        sentences.append(f"Fastest at {where}: {names}.")
    ooms = points[points["status"] == "oom"] if "status" in points else points.iloc[0:0]
    if len(ooms):
        sentences.append(
            f"{len(ooms)} point(s) ran out of memory (status oom, kept in the tables, left out of medians)."
        )
    return sentences


def context(tables: Iterable[str | os.PathLike], plots: Iterable[str | os.PathLike],
            baseline: str, data_uri) -> dict[str, Any] | None:  # fmt: skip
    """What sweep.html.j2 shows; None without a sweep (no sweep.csv among `tables`)."""
    from attnbench.formatting import text_table

    found = by_stem(tables)
    if "sweep" not in found:
        return None
    points = io.read_csv(found["sweep"])
    if points.empty:
        return None
    summary = optional_table(found, "sweep_summary")
    max_batch = optional_table(found, "sweep_max_batch")
    return {
        "baseline": baseline,
        "n_points": len(points),
        "status": status_counts(points),
        "models": list(dict.fromkeys(points["model_name"])),
        "device": next(iter(points["device_name"].dropna()), "unknown"),
        "findings": _fastest(points, summary, baseline),
        "summary_table": text_table(
            summary,
            columns=SUMMARY_COLUMNS,
            formats={"status": na_text, "compile": na_text, "fastest": yes_no},
            row_class=lambda r: "sig" if str(r.get("fastest")).lower() == "true" else "",
        ),
        "max_batch_table": text_table(
            max_batch,
            columns=MAX_BATCH_COLUMNS,
            formats={"status": na_text, "limited_by": blank},
            row_class=lambda r: "" if r.get("status") == "ok" else "failed",
        ),
        "points_table": text_table(
            points,
            columns=[
                "model_name",
                "imgsz",
                "batch",
                "compile",
                "backend",
                "rep",
                "status",
                "run_order",
                "step_ms_median",
                "gpu_ms_per_step",
                "peak_alloc_mb",
                "reason",
            ],
            formats={"status": na_text, "compile": na_text, "reason": blank},
            default=num,
            row_class=lambda r: "" if r.get("status") == "ok" else "failed",
        ),  # fmt: skip
        "plots": figures(PLOTS, plots, data_uri),
    }


def section_inputs(enabled: bool) -> dict[str, list[str]]:
    """The report rule's extra inputs when the sweep runs (tables and plots), else none."""
    return inputs(enabled, ("sweep", "sweep_summary", "sweep_max_batch"), PLOTS)
