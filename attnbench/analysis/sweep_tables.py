"""The sweep's tables: one row per point, a summary per (cell, backend), the paired
wall-time ratios, the largest batches.

Wall time comes from the paired timing (rule sweep_paired, `attnbench.timing.paired`):
every backend of a cell trained in one process, in interleaved blocks, its ratio of mean
step times to the baseline with a paired 95% interval (`attnbench.timing.paired_stats`). The
summary's `wall_ratio*` columns are that summary's ratio and interval as they are, and
`step_speedup*` their reciprocals (baseline / backend, the direction of the other
speed-ups); `fastest` is the shortest paired wall time. A cell without paired timing (a
compile mode, sweep.paired off) states no wall-time ratio and says why (`wall_status`,
`wall_reason`). GPU-time speed-up and memory saving are against the baseline in the same
cell over points with status ok: the median of the repeats, with the range of the
same-seed ratios beside the GPU-time one. A cell whose baseline did not finish has no
speed-up; an OOM is a status, never a missing row.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from attnbench import grid, io
from attnbench.timing import paired_stats

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
# The paired summary's columns in the sweep summary, as wall_<column>.
WALL = {
    "wall_ratio": "ratio", "wall_ratio_ci_low": "ratio_ci_low",
    "wall_ratio_ci_high": "ratio_ci_high", "wall_halfwidth_pct": "halfwidth_pct",
    "wall_resolved": "resolved", "wall_blocks": "blocks", "wall_block_cv": "block_cv",
    "wall_ms_per_step": "ms_per_step",
}  # fmt: skip
SUMMARY_COLUMNS = [
    *CELL, "backend", "points", "ok", "oom", "status", *MEDIANS, "step_ms_cv_pct",
    *WALL, "wall_status", "wall_reason", "step_speedup", "step_speedup_lo", "step_speedup_hi",
    "gpu_speedup", "gpu_speedup_lo", "gpu_speedup_hi", "memory_saving_pct", "fastest",
]  # fmt: skip
# sweep_paired.csv: every cell's paired summary (attnbench.timing.paired_stats), with its cell.
PAIRED_COLUMNS = [*CELL, *paired_stats.SUMMARY_COLUMNS]
BASELINE_STATUS = "baseline"  # wall_status of the baseline's own row: ratio 1 by definition
SKIPPED = "skipped"
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
    return frame["model_name"].map(grid.scale_rank)


def _paired_ratios(cell: pd.DataFrame, backend: str, baseline: str, column: str) -> pd.Series:
    """baseline / backend per repeat (same seed), over repeats where both finished."""
    ok = cell[cell["status"] == "ok"]
    base = ok[ok["backend"] == baseline].set_index("rep")[column]
    other = ok[ok["backend"] == backend].set_index("rep")[column]
    joined = pd.concat([base, other], axis=1, keys=["b", "o"]).dropna()
    joined = joined[joined["o"] > 0]
    return joined["b"] / joined["o"]


def paired_cell(summary_: pd.DataFrame, point: Mapping[str, Any]) -> pd.DataFrame:
    """A cell's paired summary (paired_stats.summarize) with its cell columns in front."""
    frame = summary_.copy()
    for i, column in enumerate(CELL):
        frame.insert(i, column, point[column])
    return frame[PAIRED_COLUMNS]


def paired_frame(
    paths: Iterable[str | os.PathLike],
    points: pd.DataFrame,
    baseline: str,
    skips: Mapping[str, str | None],
) -> pd.DataFrame:
    """sweep_paired.csv: the paired-timed cells' summaries, then a `skipped` row per
    backend of every cell whose compile mode `skips` gives a reason for (with it)."""
    frames = [io.read_csv(p) for p in paths]
    rows = []
    if not points.empty:
        for key, cell in points.groupby(CELL, sort=False, dropna=False):
            reason = skips.get(str(dict(zip(CELL, key, strict=True))["compile"]))
            if not reason:
                continue
            for backend in dict.fromkeys(cell["backend"]):
                if backend != baseline:
                    rows.append(
                        {**dict(zip(CELL, key, strict=True)), "arm": backend, "baseline": baseline,
                         "comparison": paired_stats.BACKEND_COMPARISON, "status": SKIPPED,
                         "reason": reason, "blocks": 0}
                    )  # fmt: skip
    frames = [f for f in [*frames, pd.DataFrame(rows)] if not f.empty]
    if not frames:
        return pd.DataFrame(columns=PAIRED_COLUMNS)
    frame = pd.concat(frames, ignore_index=True).reindex(columns=PAIRED_COLUMNS)
    order = frame.assign(_s=_scale_key(frame)).sort_values(
        ["_s", "model_name", "imgsz", "batch", "compile"], kind="stable"
    )
    return order.drop(columns="_s").reset_index(drop=True)


def _wall(paired: pd.DataFrame | None, key: tuple, backend: str, baseline: str) -> dict:
    """The wall_* columns of a (cell, backend) from its paired summary row."""
    out: dict[str, Any] = dict.fromkeys([*WALL, "wall_status", "wall_reason"])
    if backend == baseline:
        out.update(wall_ratio=1.0, wall_ratio_ci_low=1.0, wall_ratio_ci_high=1.0,
                   wall_status=BASELINE_STATUS)  # fmt: skip
        return out
    found = pd.DataFrame() if paired is None or paired.empty else paired
    for column, value in zip(CELL, key, strict=True):
        if found.empty:
            break
        found = found[found[column].astype(str) == str(value)]
    if not found.empty:
        found = found[(found["arm"] == backend) & (found["baseline"] == baseline)]
    if found.empty:
        out.update(wall_status="missing", wall_reason="no paired timing of this cell and backend")
        return out
    row = found.iloc[0]
    out.update({name: _value(row[column]) for name, column in WALL.items()})
    out.update(wall_status=row["status"], wall_reason=_value(row["reason"]))
    return out


def _value(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value


def _inverse(value: Any) -> float | None:
    number = pd.to_numeric(value, errors="coerce")
    return float(1 / number) if pd.notna(number) and number > 0 else None


def summary(
    points: pd.DataFrame, baseline: str, paired: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per (cell, backend): medians of ok repeats, the paired wall-time ratio of
    `paired` (sweep_paired.csv) and the effects against `baseline`."""
    if points.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    rows = []
    for key, cell in points.groupby(CELL, sort=False, dropna=False):
        base = cell[(cell["backend"] == baseline) & (cell["status"] == "ok")]
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
            row.update(_wall(paired, key, backend, baseline))
            ok_wall = row["wall_status"] in ("ok", BASELINE_STATUS)
            # Wall time: the paired ratio's reciprocal; the interval's ends swap places.
            row["step_speedup"] = _inverse(row["wall_ratio"]) if ok_wall else None
            row["step_speedup_lo"] = _inverse(row["wall_ratio_ci_high"]) if ok_wall else None
            row["step_speedup_hi"] = _inverse(row["wall_ratio_ci_low"]) if ok_wall else None
            ratios = _paired_ratios(cell, backend, baseline, "gpu_ms_per_step")
            row["gpu_speedup"] = _ratio(base_gpu, row["gpu_ms"])
            row["gpu_speedup_lo"] = float(ratios.min()) if len(ratios) else None
            row["gpu_speedup_hi"] = float(ratios.max()) if len(ratios) else None
            peak = row["peak_alloc_mb"]
            row["memory_saving_pct"] = (
                100.0 * (1 - peak / base_peak) if peak is not None and base_peak else None
            )
            rows.append(row)
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    frame["fastest"] = False
    for _, cell in frame.groupby(CELL, sort=False, dropna=False):
        # The shortest paired wall time (the baseline's ratio is 1), where another backend
        # of the cell has one; unpaired step times between runs do not resolve a winner.
        ok = cell[cell["wall_status"].isin(["ok", BASELINE_STATUS])]
        ratios = pd.to_numeric(ok["wall_ratio"], errors="coerce")
        if (ok["wall_status"] == "ok").any() and ratios.notna().any():
            frame.loc[ratios.idxmin(), "fastest"] = True
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
