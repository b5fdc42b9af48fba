"""The sweep's tables: one row per point, a summary per (cell, backend), the largest batches.

Speed-up and memory saving are against the sweep's baseline in the same cell (model,
imgsz, batch, compile), over points with status ok: the median of the repeats, and the
range of the paired (same-seed) ratios beside it. A cell whose baseline did not finish
has no speed-up; an OOM is a status, never a missing row.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from attnbench import io, sweep

CELL = ["model_name", "scale", "imgsz", "batch", "compile"]
POINT_COLUMNS = [
    *CELL, "backend", "rep", "seed", "status", "reason", "run_order", "planned_position",
    "first_in_process", "started", "finished", "device", "device_name", "dtype", "deterministic",
    "step_ms_median", "step_ms_p10", "step_ms_p90", "steps_timed", "steady_images_per_s",
    "host_step_ms_median", "gpu_ms_per_step", "attention_ms_per_step", "launches_per_step",
    "data_wait_ms_per_step", "gpu_busy_fraction", "attention_share_of_gpu", "max_step_saving_pct",
    "profiled_steps", "provenance_matched", "dispatched", "window_provenance_matched",
    "peak_alloc_mb", "peak_reserved_mb", "peak_device_used_mb", "gpu_util_mean",
    "host_peak_rss_mb", "setup_s", "point_s", "torch", "cuda", "cudnn", "flash_attn",
    "ultralytics", "point_id",
]  # fmt: skip
MEDIANS = {
    "step_ms": "step_ms_median",
    "gpu_ms": "gpu_ms_per_step",
    "attention_ms": "attention_ms_per_step",
    "gpu_busy_fraction": "gpu_busy_fraction",
    "attention_share_of_gpu": "attention_share_of_gpu",
    "max_step_saving_pct": "max_step_saving_pct",
    "peak_alloc_mb": "peak_alloc_mb",
    "peak_reserved_mb": "peak_reserved_mb",
    "peak_device_used_mb": "peak_device_used_mb",
    "images_per_s": "steady_images_per_s",
}
SUMMARY_COLUMNS = [
    *CELL, "backend", "points", "ok", "oom", "status", *MEDIANS, "step_ms_cv_pct",
    "step_speedup", "step_speedup_lo", "step_speedup_hi", "gpu_speedup", "gpu_speedup_lo",
    "gpu_speedup_hi", "memory_saving_pct", "fastest",
]  # fmt: skip
MAX_BATCH_COLUMNS = [
    "model_name", "scale", "imgsz", "backend", "status", "reason", "max_batch", "first_oom",
    "limited_by", "probes", "peak_alloc_mb_at_max", "max_batch_ratio", "dtype", "device_name",
]  # fmt: skip


def _row(result: Mapping[str, Any], columns: Iterable[str]) -> dict[str, Any]:
    prov = result.get("provenance") or {}
    row = {c: result.get(c) for c in columns}
    row["provenance_matched"] = prov.get("matched")
    row["dispatched"] = prov.get("dispatched")
    return row


def results_frame(paths: Iterable[str | os.PathLike], columns: list[str]) -> pd.DataFrame:
    """One row per result JSON (a sweep point, an inference job) in `columns`, with whether
    its provenance matched and what it dispatched to."""
    rows = [_row(io.read_json(p, keys=("status", "backend", "model_name")), columns) for p in paths]
    return pd.DataFrame(rows, columns=columns)


def points_frame(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """sweep.csv: every point's metrics.json, one row each, in the order the points ran."""
    frame = results_frame(paths, POINT_COLUMNS)
    if frame.empty:
        return frame
    return frame.sort_values(["started", "point_id"], kind="stable").reset_index(drop=True)


def _scale_key(frame: pd.DataFrame) -> pd.Series:
    return frame["model_name"].map(sweep.scale_rank)


def _paired_ratios(cell: pd.DataFrame, backend: str, baseline: str, column: str) -> pd.Series:
    """baseline / backend per repeat (same seed), over repeats where both finished."""
    ok = cell[cell["status"] == "ok"]
    base = ok[ok["backend"] == baseline].set_index("rep")[column]
    other = ok[ok["backend"] == backend].set_index("rep")[column]
    joined = pd.concat([base, other], axis=1, keys=["b", "o"]).dropna()
    joined = joined[joined["o"] > 0]
    return joined["b"] / joined["o"]


def summary(points: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """One row per (cell, backend): medians of ok repeats, and the effect against `baseline`."""
    if points.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    rows = []
    for key, cell in points.groupby(CELL, sort=False, dropna=False):
        base = cell[(cell["backend"] == baseline) & (cell["status"] == "ok")]
        base_step = _median(base["step_ms_median"])
        base_gpu = _median(base["gpu_ms_per_step"])
        base_peak = _median(base["peak_alloc_mb"])
        for backend, group in cell.groupby("backend", sort=False):
            ok = group[group["status"] == "ok"]
            statuses = group["status"].value_counts()
            row = dict(zip(CELL, key, strict=True))
            row.update(
                backend=backend,
                points=len(group),
                ok=int(statuses.get("ok", 0)),
                oom=int(statuses.get("oom", 0)),
                status=", ".join(f"{n} {s}" for s, n in statuses.sort_index().items()),
            )
            for name, column in MEDIANS.items():
                row[name] = _median(ok[column])
            steps = pd.to_numeric(ok["step_ms_median"], errors="coerce").dropna()
            row["step_ms_cv_pct"] = (
                float(100 * steps.std(ddof=1) / steps.mean()) if len(steps) > 1 else None
            )
            for prefix, base_value, column in (
                ("step", base_step, "step_ms_median"),
                ("gpu", base_gpu, "gpu_ms_per_step"),
            ):
                value = row["step_ms" if prefix == "step" else "gpu_ms"]
                ratios = _paired_ratios(cell, backend, baseline, column)
                row[f"{prefix}_speedup"] = _ratio(base_value, value)
                row[f"{prefix}_speedup_lo"] = float(ratios.min()) if len(ratios) else None
                row[f"{prefix}_speedup_hi"] = float(ratios.max()) if len(ratios) else None
            peak = row["peak_alloc_mb"]
            row["memory_saving_pct"] = (
                100.0 * (1 - peak / base_peak) if peak is not None and base_peak else None
            )
            rows.append(row)
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    frame["fastest"] = False
    for _, cell in frame.groupby(CELL, sort=False, dropna=False):
        times = pd.to_numeric(cell["step_ms"], errors="coerce")
        if times.notna().any():
            frame.loc[times.idxmin(), "fastest"] = True
    order = frame.assign(_s=_scale_key(frame)).sort_values(
        ["_s", "model_name", "imgsz", "batch", "compile"], kind="stable"
    )
    return order.drop(columns="_s").reset_index(drop=True)


def _median(values: pd.Series) -> float | None:
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    return float(numbers.median()) if len(numbers) else None


def _ratio(base: float | None, value: float | None) -> float | None:
    if base is None or value is None or not value or np.isnan(base) or np.isnan(value):
        return None
    return float(base / value)


def max_batch_frame(paths: Iterable[str | os.PathLike], baseline: str) -> pd.DataFrame:
    """sweep_max_batch.csv: one row per (model, imgsz, backend) search."""
    rows = []
    for path in paths:
        doc = io.read_json(path, keys=("status", "backend", "model_name"))
        probes = doc.get("probes") or []
        at_max = [
            p for p in probes if p.get("batch") == doc.get("max_batch") and p["status"] == "ok"
        ]
        rows.append(
            {
                **{c: doc.get(c) for c in MAX_BATCH_COLUMNS},
                "probes": len(probes),
                "peak_alloc_mb_at_max": at_max[-1].get("peak_alloc_mb") if at_max else None,
            }
        )
    frame = pd.DataFrame(rows, columns=MAX_BATCH_COLUMNS)
    if frame.empty:
        return frame
    for _, group in frame.groupby(["model_name", "imgsz"]):
        base = group.loc[group["backend"] == baseline, "max_batch"].dropna()
        if len(base) and base.iloc[0]:
            frame.loc[group.index, "max_batch_ratio"] = pd.to_numeric(
                group["max_batch"], errors="coerce"
            ) / float(base.iloc[0])
    frame = frame.assign(_s=_scale_key(frame)).sort_values(["_s", "imgsz", "backend"])
    return frame.drop(columns="_s").reset_index(drop=True)


def concat_csv(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """The per-backend kernel or parity CSVs of the sweep, as one table."""
    frames = [io.read_csv(p) for p in paths]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """A table as CSV, atomically (an empty table keeps its header)."""
    with io.atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
