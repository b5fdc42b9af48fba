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

from attnbench.report import section_report
from attnbench.report.formatting import blank, fmt_ratio, interval, is_finite, na_text, num, yes_no
from attnbench.sweep import plan as sweep

PLOTS = section_report.section_figures("sweep")
COLUMNS = section_report.section_columns("sweep")
SUMMARY_COLUMNS = COLUMNS["summary"]
PAIRED_COLUMNS = COLUMNS["paired"]
MAX_BATCH_COLUMNS = COLUMNS["max_batch"]


def _fastest(points: pd.DataFrame, summary: pd.DataFrame, baseline: str) -> list[str]:
    """One sentence per setting: which backend won where, and by how much at most."""
    sentences = []
    if summary.empty:
        return sentences
    winners = summary[summary["fastest"].astype(str).str.lower() == "true"]
    for (imgsz, batch, comp), cells in winners.groupby(["imgsz", "batch", "compile"], sort=True):
        names = ", ".join(f"{r.model_name}: {r.backend}" for r in cells.itertuples())
        sentences.append(f"Fastest by paired wall time at {_where(imgsz, batch, comp)}: {names}.")
    ooms = points[points["status"] == "oom"] if "status" in points else points.iloc[0:0]
    if len(ooms):
        sentences.append(
            f"{len(ooms)} point(s) ran out of memory (status oom, kept in the tables, left out of medians)."
        )
    return sentences


def _where(imgsz, batch, comp) -> str:
    return f"imgsz {imgsz}, batch {batch}" + ("" if comp == "off" else f", compile {comp}")


def _wall(paired: pd.DataFrame) -> list[str]:
    """One sentence per cell: each backend's paired wall-time ratio with its interval, or
    why it has none (oom, unavailable, skipped: the reason)."""
    sentences = []
    if paired.empty:
        return sentences
    for key, cell in paired.groupby(["model_name", "imgsz", "batch", "compile"], sort=False):
        model, imgsz, batch, comp = key
        parts, reasons = [], set()
        for r in cell.itertuples():
            if r.status == "ok" and is_finite(r.ratio):
                ci = interval(r.ratio_ci_low, r.ratio_ci_high, fmt_ratio)
                parts.append(f"{r.arm} {fmt_ratio(r.ratio)} {ci} over {num(r.blocks)} rounds")
            elif r.status == "skipped":
                reasons.add(str(r.reason))
            else:
                parts.append(f"{r.arm} {r.status} ({blank(r.reason)})")
        baseline = cell["baseline"].iloc[0]
        text = f"{model}, {_where(imgsz, batch, comp)}: "
        if parts:
            text += f"wall time against {baseline} (paired, 95% CI): " + "; ".join(parts)
        if reasons:
            text += ("; " if parts else "") + "no paired timing: " + "; ".join(sorted(reasons))
        sentences.append(text + ".")
    return sentences


def context(tables: Iterable[str | os.PathLike], plots: Iterable[str | os.PathLike],
            baseline: str, data_uri) -> dict[str, Any] | None:  # fmt: skip
    """What sweep.html.j2 shows; None without a sweep (no sweep.csv among `tables`)."""
    from attnbench.report.formatting import text_table

    found = section_report.section_tables(
        tables, "sweep", "sweep_summary", "sweep_paired", "sweep_max_batch"
    )
    if found is None:
        return None
    points, summary, paired, max_batch = found
    timed = paired[paired["status"] != "skipped"] if not paired.empty else paired
    return {
        "baseline": baseline,
        "n_points": len(points),
        "status": section_report.status_counts(points),
        "models": list(dict.fromkeys(points["model_name"])),
        "device": next(iter(points["device_name"].dropna()), "unknown"),
        "findings": _fastest(points, summary, baseline),
        # The wall-time statement: paired ratios with their intervals, per cell.
        "wall": _wall(paired),
        "paired_ran": not timed.empty,
        "steps_per_block": num(next(iter(timed["steps_per_block"].dropna()), None))
        if not timed.empty
        else None,
        "paired_table": text_table(
            paired,
            columns=PAIRED_COLUMNS,
            formats={
                "status": na_text,
                "compile": na_text,
                "reason": blank,
                "resolved": yes_no,
                "ratio": fmt_ratio,
                "ratio_ci_low": fmt_ratio,
                "ratio_ci_high": fmt_ratio,
            },
            row_class=lambda r: "" if r.get("status") == "ok" else "failed",
        ),
        "summary_table": text_table(
            summary,
            columns=SUMMARY_COLUMNS,
            formats={
                "status": na_text,
                "compile": na_text,
                "fastest": yes_no,
                "wall_status": na_text,
                "wall_ratio": fmt_ratio,
                "wall_ratio_ci_low": fmt_ratio,
                "wall_ratio_ci_high": fmt_ratio,
            },
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
            columns=COLUMNS["points"],
            formats={"status": na_text, "compile": na_text, "reason": blank},
            default=num,
            row_class=lambda r: "" if r.get("status") == "ok" else "failed",
        ),  # fmt: skip
        "plots": section_report.figures(PLOTS, plots, data_uri),
    }


def section_inputs(enabled: bool) -> dict[str, list[str]]:
    """The report rule's extra inputs when the sweep runs (tables and plots), else none."""
    return sweep.report_inputs(enabled)
