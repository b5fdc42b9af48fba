"""The inference section of the HTML report: a context for report/inference.html.j2.

`context` returns None when the inference benchmark did not run, so the report shows no
section. The main template includes it with
`{% if inference %}{% include "inference.html.j2" %}{% endif %}` and its `table` macro
draws the tables.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import pandas as pd

from attnbench.inference import plan as inference
from attnbench.report import section_report
from attnbench.report.formatting import blank, na_text, num, yes_no

PLOTS = section_report.section_figures("inference")
COLUMNS = section_report.section_columns("inference")
JOB_COLUMNS = COLUMNS["jobs"]
MAX_IMGSZ_COLUMNS = COLUMNS["max_imgsz"]
AGREEMENT_COLUMNS = COLUMNS["agreement"]


def published(jobs: pd.DataFrame) -> list[dict[str, Any]]:
    """The published T4 TensorRT figures beside this run's YOLO12n, imgsz 640, batch 1 rows."""
    rows = [{**p, "measured_here": False} for p in inference.PUBLISHED]
    if jobs.empty:
        return rows
    here = jobs[
        (jobs["model_name"] == "yolo12n")
        & (pd.to_numeric(jobs["imgsz"], errors="coerce") == 640)
        & (pd.to_numeric(jobs["batch"], errors="coerce") == 1)
        & (jobs["status"] == "ok")
    ]
    for r in here.itertuples():
        runtime = f"PyTorch {r.torch}, {r.dtype}, {r.backend}" + (
            "" if r.compile == "off" else f", torch.compile {r.compile}"
        )
        rows.append({"source": "this run", "model": "yolo12n", "imgsz": 640, "batch": 1,
                     "latency_ms": r.latency_ms_median, "hardware": r.device_name,
                     "runtime": runtime, "measured_here": True})  # fmt: skip
    return rows


def findings(jobs: pd.DataFrame, max_imgsz: pd.DataFrame, agreement: pd.DataFrame) -> list[str]:
    """Sentences for the section's list: fastest per cell, limits, agreement."""
    out = []
    ok = jobs[jobs["status"] == "ok"].copy()
    if len(ok):
        ok["lat"] = pd.to_numeric(ok["latency_ms_median"], errors="coerce")
        for (model, batch, comp), cells in ok.groupby(
            ["model_name", "batch", "compile"], sort=False
        ):
            best = cells.loc[cells.groupby("imgsz")["lat"].idxmin()]
            where = f"{model}, batch {batch}" + ("" if comp == "off" else f", compile {comp}")
            names = ", ".join(
                f"{int(r.imgsz)}: {r.backend} ({num(r.lat)} ms)" for r in best.itertuples()
            )
            out.append(f"Fastest at {where} by image size: {names}.")
    ooms = jobs[jobs["status"] == "oom"]
    if len(ooms):
        out.append(f"{len(ooms)} job(s) ran out of memory (status oom, kept in the tables).")
    limited = max_imgsz[max_imgsz["limited_by"] == "memory"] if len(max_imgsz) else max_imgsz
    for r in limited.itertuples():
        out.append(f"{r.model_name} with {r.backend} ({r.compile}) fits batch {r.batch} up to "
                   f"imgsz {r.largest_imgsz}; {int(r.first_oom_imgsz)} runs out of memory.")  # fmt: skip
    if len(agreement):
        checked = agreement[agreement["passed"].notna()]
        failed = checked[checked["passed"].astype(str).str.lower() != "true"]
        out.append(
            f"Prediction agreement: {len(checked) - len(failed)} of {len(checked)} backend(s) "
            "within tolerance of the baseline"
            + (f"; outside it: {', '.join(failed['backend'])}." if len(failed) else ".")
        )
    return out


def context(tables: Iterable[str | os.PathLike], plots: Iterable[str | os.PathLike],
            data_uri) -> dict[str, Any] | None:  # fmt: skip
    """What inference.html.j2 shows; None without an inference run (no inference.csv)."""
    from attnbench.report.formatting import text_table

    found = section_report.section_tables(
        tables, "inference", "inference_max_imgsz", "inference_agreement"
    )
    if found is None:
        return None
    jobs, max_imgsz, agreement = found
    failed = lambda r: "" if r.get("status") == "ok" else "failed"  # noqa: E731
    return {
        "n_jobs": len(jobs),
        "status": section_report.status_counts(jobs),
        "models": list(dict.fromkeys(jobs["model_name"])),
        "device": next(iter(jobs["device_name"].dropna()), "unknown"),
        "dtypes": ", ".join(sorted(set(jobs["dtype"].dropna().astype(str)))),
        "dtype_notes": sorted(set(jobs["dtype_note"].dropna().astype(str))),
        "findings": findings(jobs, max_imgsz, agreement),
        "published": published(jobs),
        "jobs_table": text_table(
            jobs, columns=JOB_COLUMNS,
            formats={"status": na_text, "compile": na_text, "dtype": na_text, "dispatched": blank,
                     "reason": blank, "backend": na_text, "model_name": na_text},
            row_class=failed,
        ),
        "max_imgsz_table": text_table(
            max_imgsz, columns=MAX_IMGSZ_COLUMNS,
            formats={"limited_by": blank, "statuses": blank, "compile": na_text},
            row_class=lambda r: "failed" if r.get("limited_by") == "memory" else "",
        ),
        "agreement_table": text_table(
            agreement, columns=AGREEMENT_COLUMNS,
            formats={"status": na_text, "passed": yes_no, "note": blank, "dtype": na_text},
            row_class=lambda r: "failed" if str(r.get("passed")).lower() == "false" else "",
        ),
        "plots": section_report.figures(PLOTS, plots, data_uri),
    }  # fmt: skip


def section_inputs(enabled: bool) -> dict[str, list[str]]:
    """The report rule's extra inputs when inference runs (tables and plots), else none."""
    return inference.report_inputs(enabled)
