"""The inference tables: one row per job, the largest image size each backend fits, agreement.

Speed-up and memory saving are against the baseline backend in the same (model, imgsz,
batch, compile) cell; `compile_speedup` is against the same backend uncompiled. A job that
ran out of memory keeps its row (status oom) and has no latency.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import pandas as pd

from attnbench import grid, io
from attnbench.analysis.sweep_tables import results_frame

CELL = ["model_name", "scale", "imgsz", "batch", "compile"]
JOB_COLUMNS = [
    *CELL, "backend", "status", "reason", "dtype", "dtype_note", "weights",
    "latency_ms_median", "latency_ms_p10", "latency_ms_p90", "latency_ms_mean", "iterations",
    "images_per_s", "wall_images_per_s", "speedup", "compile_speedup", "gpu_ms_per_call",
    "attention_ms_per_call", "attention_share_of_gpu", "launches_per_call", "peak_alloc_mb",
    "peak_reserved_mb", "peak_device_used_mb", "model_alloc_mb", "memory_saving_pct",
    "provenance_matched", "dispatched", "attention_calls", "planned_position", "started",
    "warmup_s", "job_s", "device", "device_name", "torch", "cuda", "cudnn", "flash_attn",
    "ultralytics", "id",
]  # fmt: skip
MAX_IMGSZ_COLUMNS = [
    "model_name", "scale", "batch", "compile", "backend", "largest_imgsz", "first_oom_imgsz",
    "limited_by", "imgsizes", "statuses", "peak_alloc_mb_at_largest",
]  # fmt: skip
AGREEMENT_COLUMNS = [
    "model_name", "backend", "baseline", "status", "reason", "passed", "map50_95", "map50_95_diff",
    "map50", "map50_diff", "boxes_ref", "boxes", "matched", "matched_share", "pair_iou_median",
    "pair_iou_min", "images", "imgsz", "conf", "match_iou", "map_tolerance", "min_matched_share",
    "dtype", "dtype_note", "weights", "device", "device_name", "note",
]  # fmt: skip


def _order(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    keyed = frame.assign(_s=frame["model_name"].map(grid.scale_rank))
    return keyed.sort_values(["_s", *by], kind="stable").drop(columns="_s").reset_index(drop=True)


def _numbers(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce")


def jobs_frame(paths: Iterable[str | os.PathLike], baseline: str) -> pd.DataFrame:
    """inference.csv: every job's JSON, one row each, with its effects against the baseline."""
    frame = results_frame(paths, JOB_COLUMNS)
    if frame.empty:
        return frame
    ok = frame["status"] == "ok"
    latency = _numbers(frame["latency_ms_median"]).where(ok)
    peak = _numbers(frame["peak_alloc_mb"]).where(ok)
    for _, cell in frame.groupby(CELL, sort=False, dropna=False):
        base = cell.index[(cell["backend"] == baseline) & ok[cell.index]]
        if len(base):
            b = base[0]
            frame.loc[cell.index, "speedup"] = latency[b] / latency[cell.index]
            if pd.notna(peak[b]) and peak[b] > 0:
                frame.loc[cell.index, "memory_saving_pct"] = 100.0 * (
                    1 - peak[cell.index] / peak[b]
                )
    for _, same in frame.groupby(["model_name", "imgsz", "batch", "backend"], sort=False):
        off = same.index[(same["compile"] == "off") & ok[same.index]]
        if len(off):
            frame.loc[same.index, "compile_speedup"] = latency[off[0]] / latency[same.index]
    order = ["imgsz", "batch", "compile", "backend"]
    return _order(frame, ["model_name", *order])


def max_imgsz(jobs: pd.DataFrame) -> pd.DataFrame:
    """The largest image size that ran per (model, compile, backend) at the grid's smallest batch.

    `limited_by` is `memory` when a larger size ran out of memory, `grid` when every size
    tried ran (the true limit is above the grid), `none fits` when none ran.
    """
    if jobs.empty:
        return pd.DataFrame(columns=MAX_IMGSZ_COLUMNS)
    batch = int(_numbers(jobs["batch"]).min())
    rows = []
    at_batch = jobs[_numbers(jobs["batch"]) == batch]
    for (model, scale, comp, backend), group in at_batch.groupby(
        ["model_name", "scale", "compile", "backend"], sort=False
    ):
        group = group.assign(_i=_numbers(group["imgsz"])).sort_values("_i")
        ok = group[group["status"] == "ok"]
        largest = int(ok["_i"].max()) if len(ok) else None
        above = group[(group["status"] == "oom") & (group["_i"] > (largest or 0))]
        first_oom = int(above["_i"].min()) if len(above) else None
        if largest is None:
            limited = "none fits" if group["status"].eq("oom").any() else "none ran"
        else:
            limited = "memory" if first_oom is not None else "grid"
        at_largest = ok[ok["_i"] == largest]["peak_alloc_mb"] if largest else pd.Series([])
        rows.append(
            {
                "model_name": model, "scale": scale, "batch": batch, "compile": comp,
                "backend": backend, "largest_imgsz": largest, "first_oom_imgsz": first_oom,
                "limited_by": limited,
                "imgsizes": " ".join(str(int(i)) for i in group["_i"]),
                "statuses": " ".join(group["status"].astype(str)),
                "peak_alloc_mb_at_largest": at_largest.iloc[0] if len(at_largest) else None,
            }
        )  # fmt: skip
    frame = pd.DataFrame(rows, columns=MAX_IMGSZ_COLUMNS)
    return _order(frame, ["model_name", "compile", "backend"])


def agreement_frame(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """inference_agreement.csv: one row per (model, backend), the baseline's own row included."""
    rows = []
    for path in paths:
        doc = io.read_json(path, keys=("model_name", "baseline", "backends"))
        shared = {k: doc.get(k) for k in AGREEMENT_COLUMNS if k in doc and k != "backends"}
        for entry in doc["backends"]:
            rows.append({c: {**shared, **entry}.get(c) for c in AGREEMENT_COLUMNS})
    frame = pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)
    return frame if frame.empty else _order(frame, ["model_name"])


def write(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """A table as CSV, atomically (an empty table keeps its header)."""
    with io.atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
