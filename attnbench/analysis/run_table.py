"""The runs table: every run's metrics.json and results.csv gathered from the run folders,
the order the runs ran in, and which runs and values enter statistics.

Only finished runs (status ok) enter statistics; every run is listed. A shared-GPU run
enters without its times.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attnbench import intermediates, io
from attnbench.analysis.metric_catalog import METRIC_BY_KEY, METRICS
from attnbench.train import schedule

RUN_PATH = re.compile(r"(?P<backend>[^/\\]+)[/\\]seed(?P<seed>\d+)[/\\][^/\\]+$")


def _flatten(data: dict[str, Any]) -> dict[str, Any]:
    """One run, one CSV row: `provenance.fwd_kernels`-style keys one level deep, and any
    deeper list or dict (kernel counts, epoch times) kept as JSON text, not one column each."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            for sub, inner in value.items():
                flat[f"{key}.{sub}"] = _cell(inner)
        else:
            flat[key] = _cell(value)
    return flat


def _cell(value: Any) -> Any:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=isinstance(value, dict))
    return value


def _run_id(path: str | Path) -> tuple[str | None, int | None]:
    match = RUN_PATH.search(str(path))
    if not match:
        return None, None
    return match["backend"], int(match["seed"])


def _read_csv(path: str | Path, schema: io.Schema | None = None) -> pd.DataFrame:
    """A CSV, or an empty frame for an empty or absent file that `schema` allows (a run
    that did not train); a damaged file is a one-line UserError."""
    return io.read_csv(path, schema=schema, missing_ok=not (schema and schema.rows))


def load_runs(metrics_paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per (backend, seed) with every metrics.json key flattened, failures included."""
    rows = []
    for path in metrics_paths:
        data = io.read_json(path, schema=intermediates.METRICS)
        backend, seed = _run_id(path)
        data.setdefault("backend", backend)
        data.setdefault("seed", seed)
        data.setdefault("status", "unknown")
        rows.append(_flatten(data))
    runs = pd.DataFrame(rows)
    if runs.empty:
        return pd.DataFrame(columns=["backend", "seed", "status", *METRIC_BY_KEY])
    for key in METRIC_BY_KEY:
        if key not in runs:
            runs[key] = np.nan
        runs[key] = pd.to_numeric(runs[key], errors="coerce")
    first = ["backend", "seed", "status", "reason"]
    cols = [c for c in first if c in runs] + [c for c in runs if c not in first]
    return runs[cols].reset_index(drop=True)


def load_epochs(
    results_paths: Iterable[str | Path], runs: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Every run's Ultralytics results.csv rows, long, with backend, seed and status columns.

    With `runs`, the results.csv of a run with status ok must hold its epochs and their
    metrics (`intermediates.RUN_RESULTS_OK`), or this is a one-line UserError.
    """
    status = {}
    if runs is not None and not runs.empty:
        seeds = pd.to_numeric(runs["seed"], errors="coerce")
        status = {
            (b, int(s)): st
            for b, s, st in zip(runs["backend"], seeds, runs["status"], strict=True)
            if np.isfinite(s)
        }
    frames = []
    for path in results_paths:
        backend, seed = _run_id(path)
        frame = _read_csv(path, intermediates.run_results(status.get((backend, seed))))
        if frame.empty:
            continue
        frame.columns = [str(c).strip() for c in frame.columns]  # older versions pad names
        frame.insert(0, "seed", seed)
        frame.insert(0, "backend", backend)
        frames.append(frame)
    epochs = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["backend", "seed", "epoch"])
    )
    if runs is not None and not runs.empty:
        status = runs[["backend", "seed", "status"]].copy()
        status["seed"] = pd.to_numeric(status["seed"], errors="coerce")
        epochs["seed"] = pd.to_numeric(epochs["seed"], errors="coerce")
        epochs = epochs.merge(status, on=["backend", "seed"], how="left")
        cols = ["backend", "seed", "status"]
        epochs = epochs[cols + [c for c in epochs if c not in cols]]
    return epochs


def concat_csvs(paths: Iterable[str | Path], schema: io.Schema | None = None) -> pd.DataFrame:
    """Concatenate per-backend CSVs (parity, kernels), each checked against `schema`;
    empty files (where it allows them) are skipped."""
    frames = [frame for frame in (_read_csv(p, schema) for p in paths) if not frame.empty]
    if not frames:
        return pd.DataFrame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # all-NaN columns of skipped backends
        return pd.concat(frames, ignore_index=True)


def read_table(path: str | Path, schema: io.Schema | None = None) -> pd.DataFrame:
    """A table written by `aggregate` (`intermediates.table` gives its schema); an empty
    file is an empty frame where `schema` allows it."""
    return io.read_csv(path, schema=schema)


def has_finished(runs: pd.DataFrame) -> bool:
    """Whether the runs table holds a run with status ok (then the epochs table has rows)."""
    return "status" in runs and bool((runs["status"] == "ok").any())


def ok_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Only finished runs enter statistics; oom/unavailable ones are reported, not averaged.
    A shared-GPU run enters without its times (`without_shared_times`)."""
    if runs.empty or "status" not in runs:
        return runs.iloc[0:0]
    return without_shared_times(runs[runs["status"] == "ok"])


# What another job on the same GPU changes (train.jobs_per_gpu > 1): every time and rate,
# the GPU-busy ratios made of them, and NVML's device memory and utilisation, which count
# every process on the device. Accuracy and per-process memory (torch's peaks, host RSS)
# stay; so do launches per step (a count).
SHARED_GPU_EXCLUDED = (
    *(m.key for m in METRICS if m.kind == "time"),
    "gpu_busy_fraction", "attention_share_of_gpu", "max_step_saving_pct",
    "peak_device_used_mb", "step_ms_p10", "step_ms_p90", "gpu_util_mean", "gpu_util_median",
    "data_wait_fraction", "epoch_times_s", "train_epoch_times_s",
)  # fmt: skip
SHARED_GPU_NOTE = "shared-GPU run(s) (train.jobs_per_gpu > 1): their times left out"


def shared_gpu(runs: pd.DataFrame) -> pd.Series:
    """Which runs shared their GPU by design (metrics.json `shared_gpu`, also as CSV text)."""
    if "shared_gpu" not in runs:
        return pd.Series(False, index=runs.index)
    return runs["shared_gpu"].map(lambda v: str(v).strip().lower() in ("true", "1", "1.0"))


def without_shared_times(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` with the SHARED_GPU_EXCLUDED values of shared-GPU runs blanked (NaN)."""
    shared = shared_gpu(runs)
    if not shared.any():
        return runs
    runs = runs.copy()
    for key in SHARED_GPU_EXCLUDED:
        if key not in runs:
            continue
        if key in METRIC_BY_KEY or pd.api.types.is_numeric_dtype(runs[key]):
            runs[key] = pd.to_numeric(runs[key], errors="coerce").astype(float).where(~shared)
        else:  # JSON text (epoch_times_s)
            runs[key] = runs[key].astype(object).where(~shared, None)
    return runs


def shared_left_out(runs: pd.DataFrame, arms: Sequence[str], key: str) -> int:
    """How many ok runs of `arms` lost their value of `key` to the shared-GPU rule."""
    if key not in SHARED_GPU_EXCLUDED or runs.empty or "status" not in runs:
        return 0
    mine = runs["backend"].isin(list(arms)) & (runs["status"] == "ok")
    return int((mine & shared_gpu(runs)).sum())


def backend_order(runs: pd.DataFrame, baseline: str | None = None) -> list[str]:
    """Arms in the order the workflow lists them, baseline first, then its replica."""
    order = list(dict.fromkeys(runs["backend"].dropna())) if "backend" in runs else []
    if baseline is not None:
        for name in (schedule.replica_name(baseline), baseline):
            if name in order:
                order.remove(name)
                order.insert(0, name)
    return order


def is_control(arm: str, baseline: str) -> bool:
    """The A/A control: the baseline's replica (same kernel, its own job)."""
    return arm == schedule.replica_name(baseline)


def add_order(
    runs: pd.DataFrame,
    order_seed: int = 0,
    arms: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
) -> pd.DataFrame:
    """`run_order`: rank of `started` over the study's runs (1-based, blank without it);
    `planned_order`: the position a train job recorded, else the position in
    `schedule.planned_order` for these arms and seeds (those seen in `runs` if not given)."""
    runs = runs.copy()
    if runs.empty:
        runs["run_order"] = pd.Series(dtype=float)
        runs["planned_order"] = pd.Series(dtype=float)
        return runs
    started = (
        pd.to_datetime(runs["started"], utc=True, errors="coerce", format="ISO8601")
        if "started" in runs
        else pd.Series(pd.NaT, index=runs.index)
    )
    runs["run_order"] = started.rank(method="first")
    arms = list(arms) if arms is not None else list(dict.fromkeys(runs["backend"].dropna()))
    seen = pd.to_numeric(runs["seed"], errors="coerce")
    seeds = list(seeds) if seeds is not None else sorted(int(x) for x in seen.dropna().unique())
    plan = {job: i + 1 for i, job in enumerate(schedule.planned_order(order_seed, arms, seeds))}
    computed = pd.Series(
        [
            plan.get((b, int(x)), math.nan) if np.isfinite(x) else math.nan
            for b, x in zip(runs["backend"], seen, strict=True)
        ],
        index=runs.index,
    )
    # A position the train job recorded itself wins: it is the plan the run ran under.
    if "planned_order" in runs:
        computed = pd.to_numeric(runs["planned_order"], errors="coerce").fillna(computed)
    runs["planned_order"] = computed
    return runs
