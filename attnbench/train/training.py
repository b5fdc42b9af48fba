"""One Ultralytics training run under one attention backend, measured honestly.

Ultralytics' own trainer runs the loop; `attnbench.train.recorder.RunRecorder` adds the
callbacks that prove the kernel (before the first epoch), time the steady state,
profile a window of iterations and read the memory peaks. This module sets the
run up, turns an out-of-memory error into a result, and writes metrics.json.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from attnbench import host, intermediates, io
from attnbench.backends import registry as backends
from attnbench.backends.patch import use_backend
from attnbench.backends.registry import BackendUnavailableError
from attnbench.train import schedule, trackers, ultralytics_run
from attnbench.train.recorder import RunRecorder
from attnbench.train.settings import LoopArgs, TrainSettings
from attnbench.train.ultralytics_run import offline_ultralytics

LOG = logging.getLogger(__name__)

# metrics.json key -> the results.csv column its final value comes from.
RESULT_COLUMNS = intermediates.ACCURACY_COLUMNS


def _results_metrics(results_csv: Path) -> dict[str, float]:
    """The last epoch row of Ultralytics' results.csv (used when final val is missing)."""
    import pandas as pd

    if not results_csv.exists() or results_csv.stat().st_size == 0:
        return {}
    frame = pd.read_csv(results_csv)
    frame.columns = [c.strip() for c in frame.columns]
    if frame.empty:
        return {}
    return {col: float(frame[col].iloc[-1]) for col in RESULT_COLUMNS.values() if col in frame}


def base_metrics(
    backend: str,
    seed: int,
    device: torch.device,
    loop: LoopArgs,
    cast: str,
    *,
    epochs: int | None,
    batch: int | None,
    imgsz: int,
) -> dict[str, Any]:
    """What every run's record starts with: the arm, its settings and the environment
    (a sweep point or probe has no epochs; a probe has no one batch)."""
    from attnbench.env.envinfo import environment

    env = environment(device)
    return {
        "backend": backend,
        "kernel_backend": schedule.kernel_of(backend),
        "replica": schedule.is_replica(backend),
        "seed": seed,
        "status": None,
        "reason": None,
        "cast": cast,
        "epochs": epochs,
        "batch": batch,
        "imgsz": imgsz,
        "amp": loop.amp,
        "optimizer": loop.optimizer,
        "lr0": loop.lr0,
        "workers": loop.workers,
        "cache": loop.cache,
        "device": str(device),
        "device_name": env.get("gpu_name") or env.get("cpu_model"),
        "torch": env.get("torch"),
        "cuda": env.get("cuda"),
        "cudnn": env.get("cudnn"),
        "flash_attn": env.get("flash_attn"),
        "ultralytics": env.get("ultralytics"),
        "python": env.get("python"),
        "torch_threads": torch.get_num_threads(),
        "started": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
    }


def train_one(
    backend: str,
    seed: int,
    data_yaml: str | os.PathLike,
    settings: TrainSettings,
    workdir: str | os.PathLike,
    device: torch.device,
) -> dict[str, Any]:
    """Train once and return metrics.json's content; raises for non-OOM failures.

    `settings` is the run's frozen train settings (TrainSettings.from_mapping of the
    rule's params, or .from_section of an effective train section)."""
    started = time.perf_counter()
    workdir = Path(workdir).resolve()  # Ultralytics puts a relative project under its own runs_dir
    runs = workdir / "ultralytics"
    shutil.rmtree(runs, ignore_errors=True)  # a killed run restarts cleanly (no resume)
    offline_ultralytics(workdir.parent.parent / ".ultralytics")

    step, loop = settings.step, settings.step.loop
    trackers.check_loggers(settings.loggers)  # a missing tracker package fails before any work
    metrics = base_metrics(
        backend, seed, device, loop, step.cast,
        epochs=settings.epochs, batch=settings.batch, imgsz=settings.imgsz,
    )  # fmt: skip
    dtype = backends.kernel_dtype(device, loop.amp, step.cast)
    metrics["dtype"] = str(dtype).removeprefix("torch.")
    kernel = schedule.kernel_of(backend)  # a replica arm trains its baseline's kernel
    reason = backends.check(kernel, device, dtype)
    if reason:
        if settings.on_unavailable == "fail":
            raise BackendUnavailableError(f"{reason} (train.on_unavailable = fail)")
        LOG.warning("skipping %s: %s", backend, reason)
        return {**metrics, "status": "unavailable", "reason": reason}

    recorder = RunRecorder(kernel, device, step.provenance_steps, settings.timing)
    # The harness's set-up: environment, availability check (Ultralytics' own is not in it).
    recorder.overhead.add("setup", time.perf_counter() - started)
    model, args = ultralytics_run.setup(
        settings.model, recorder, data_yaml, loop, device, workdir,
        epochs=settings.epochs, batch=settings.batch, imgsz=settings.imgsz, seed=seed,
        deterministic=True, verbose=True,
    )  # fmt: skip
    status, reason = "ok", None
    tags = {
        "backend": backend,
        "seed": seed,
        "kernel_seen": lambda: (recorder.provenance or {}).get("dispatched"),
    }
    # Trackers read Ultralytics' settings when the trainer is built: enter them first.
    with (
        use_backend(kernel, cast=step.cast) as active,
        trackers.tracking(settings.loggers, model, tags),
    ):
        try:
            model.train(**args)
        except Exception as exc:
            if not host.is_oom(exc):
                raise
            status, reason = "oom", f"out of memory: {str(exc).splitlines()[0]}"
            LOG.error("%s seed %d ran out of memory: %s", backend, seed, reason)
        finally:
            recorder.stop_samplers()
    with recorder.overhead.timed("results"):
        recorder.read_peaks()
        timing, peaks = recorder.timing(), recorder.peaks()

    prov = recorder.provenance  # a mismatch already ended the run before its first epoch
    final = recorder.final_metrics or _results_metrics(runs / "results.csv")
    epoch_times = recorder.epoch_times
    train_times = recorder.train_epoch_times
    images = recorder.train_images * len(train_times)
    loop = (
        (recorder.loop_end - recorder.loop_start)
        if recorder.loop_end and recorder.loop_start
        else None
    )
    metrics.update(
        {
            "status": status,
            "reason": reason,
            "dtypes_seen": active.dtypes_seen(),
            "attention_calls": sum(active.calls.values()),
            "construction_cpu_calls": active.construction_calls,
            "train_images": recorder.train_images,
            "batch_used": recorder.batch,
            "epochs_done": len(epoch_times),
            "epoch_loop_s": loop,
            "epoch_times_s": epoch_times,
            "train_epoch_times_s": train_times,
            "epoch_time_s": statistics.median(epoch_times[1:] or epoch_times)
            if epoch_times
            else None,
            "images_per_s": images / sum(train_times) if train_times else None,
            "data_wait_fraction": recorder.clock.fraction(),
            **timing,
            **peaks,
            **recorder.overhead_keys(timing.get("step_ms_median")),
            "provenance": prov,
            "amp_check": "skipped (it downloads yolo26n.pt)"
            if device.type == "cuda"
            else "n/a (CPU)",
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )
    for key, column in RESULT_COLUMNS.items():
        metrics[key] = float(final[column]) if column in final else None
    if recorder.batch is not None and recorder.batch != settings.batch:
        raise RuntimeError(
            f"Ultralytics changed the batch size to {recorder.batch} (asked {settings.batch})"
        )
    return metrics


def write_outputs(
    metrics: dict[str, Any], workdir: Path, metrics_path: Path, results_path: Path
) -> None:
    """Copy Ultralytics' results.csv beside metrics.json; write both atomically.

    Both are checked against their schemas (attnbench.intermediates) first: a run with
    status ok must have its accuracy and its epochs, or neither file is written.
    """
    import pandas as pd

    if problem := io.json_problem(metrics, intermediates.METRICS):
        raise io.incomplete(metrics_path, problem)
    source = Path(workdir) / "ultralytics" / "results.csv"
    schema = intermediates.run_results(metrics.get("status"))
    if schema.rows and not source.exists():
        raise io.incomplete(results_path, f"Ultralytics wrote no {source}")
    if source.exists() and source.stat().st_size:
        frame = pd.read_csv(source)
        if problem := io.table_problem(frame.columns, len(frame), schema):
            raise io.incomplete(results_path, f"Ultralytics' {source}: {problem}")
    elif schema.rows:
        raise io.incomplete(results_path, f"Ultralytics' {source} is empty")
    with io.atomic_path(results_path) as tmp:
        if source.exists():
            shutil.copyfile(source, tmp)
        else:
            tmp.write_text("")
    io.write_json(metrics_path, metrics, schema=intermediates.METRICS)
