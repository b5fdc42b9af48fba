"""Running the sweep's points, short trainings, on one device (probes: `max_batch`).

A point is Ultralytics' own training loop under `RunRecorder` (fail-fast provenance,
step timer, profiled window, peaks), stopped once it has `steps` timed iterations:
`PointRecorder` raises `StopPoint` from a callback, before the next forward, and the
point's code catches it. The train loader is endless (one epoch that never ends, full
batches only), so no epoch end, validation, checkpoint or loader restart ever runs;
`val=False` and `save=False` guard that too.

Points of one job share their data loaders (`ultralytics_run.LoaderCache`): the workers start once.
Between points the model, optimizer and EMA are dropped, the allocator cache is
emptied and the peak statistics reset (and torch.compile's caches, when compiling).

`ATTNBENCH_FORCE_OOM` (tests only; `host.forced_oom`) makes chosen points or probes raise an
out-of-memory error: comma-separated globs of point ids
(`yolo12s/imgsz64/b2/off/eager/rep1`, `max_batch/yolo12n/imgsz64/eager`) or `batch>N`.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from attnbench import grid, host
from attnbench.backends import provenance
from attnbench.backends import registry as backends
from attnbench.backends.patch import use_backend
from attnbench.errors import UserError
from attnbench.train import schedule, training, ultralytics_run
from attnbench.train.recorder import RunRecorder
from attnbench.train.settings import StepSettings, TimingWindow

LOG = logging.getLogger(__name__)


class StopPoint(Exception):  # noqa: N818 - a signal, not an error
    """A point has its timed iterations: leave Ultralytics' loop before the next step."""


# --------------------------------------------------------------------------- #
# Points


class PointRecorder(RunRecorder):
    """RunRecorder that ends the loop after warm-up, the profiled window and `steps` timed steps."""

    def __init__(self, backend: str, device: torch.device, provenance_steps: int,
                 timing: TimingWindow, steps: int, point_id: str, batch: int) -> None:  # fmt: skip
        super().__init__(backend, device, provenance_steps, timing)
        self.steps = steps
        self.point_id = point_id
        self.force_oom = host.forced_oom(point_id, batch)
        self.iterations = 0
        self.started_loop: float | None = None

    def on_train_start(self, trainer) -> None:
        if trainer.train_loader.batch_size != trainer.batch_size:
            raise UserError(
                f"the dataset has {len(trainer.train_loader.dataset)} training images, fewer than "
                f"sweep batch {trainer.batch_size}: use a larger dataset or smaller sweep.batches"
            )
        super().on_train_start(trainer)
        self.window_epoch = 0  # a point lives in its first (endless) epoch
        self.started_loop = time.perf_counter()

    def timed(self) -> int:
        """Timed steps so far, those the running epoch has closed included."""
        return len(self.timer.step_ms) + self.timer.pending()

    def on_train_batch_start(self, trainer) -> None:
        super().on_train_batch_start(trainer)
        self.iterations += 1
        if self.force_oom and self.iterations > self.timer.warmup:
            raise host.forced_error(self.point_id)
        window = self.window
        settled = window.done or window.steps == 0 or self._epoch_index > self.window_epoch
        if settled and not window.active and self.timed() >= self.steps:
            self.timer.epoch_end()  # this iteration's mark closed the last interval
            self.read_peaks()
            raise StopPoint


def point_args(spec: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """A point's train() arguments beyond the shared ones: no warm-up epochs, validation or
    checkpoints."""
    return {
        "epochs": 1,  # of ultralytics_run.ENDLESS_BATCHES iterations; the point stops long before its end
        "batch": spec["batch"],
        "imgsz": spec["imgsz"],
        "seed": spec["seed"],
        "deterministic": settings["deterministic"],
        "compile": grid.COMPILE_ARGS[spec["compile"]],
        "warmup_epochs": 0,  # steady optimizer cadence (nominal batch 64) from the first step
        "close_mosaic": 0,
        "val": False,
        "save": False,
        "verbose": False,
    }


def run_point(
    spec: Mapping[str, Any],
    settings: Mapping[str, Any],
    step: StepSettings,
    data_yaml: str,
    workdir: Path,
    device: torch.device,
    loaders: ultralytics_run.LoaderCache,
) -> dict[str, Any]:
    """Train one point and return its metrics.json; OOM, mismatch and unavailable are results."""
    backend = spec["backend"]
    kernel = schedule.kernel_of(backend)
    metrics = training.base_metrics(
        backend, spec["seed"], device, step.loop, step.cast,
        epochs=None, batch=spec["batch"], imgsz=spec["imgsz"],
    )  # fmt: skip
    metrics.update(
        {k: spec[k] for k in ("id", "model", "model_name", "scale", "compile", "rep", "run_order")}
    )
    metrics.update(
        {
            "point_id": metrics.pop("id"),
            "planned_position": spec.get("planned_position"),
            "first_in_process": spec["run_order"] == 0,
            "deterministic": settings["deterministic"],
            "steps_requested": settings["steps"],
            "warmup_iters": settings["warmup_iters"],
            "profile_iters": settings["profile_iters"],
            "forced_oom": host.forced_oom(spec["id"], spec["batch"]),
        }
    )
    dtype = backends.kernel_dtype(device, step.loop.amp, step.cast)
    metrics["dtype"] = host.dtype_name(dtype)
    reason = backends.check(kernel, device, dtype)
    if reason:
        LOG.warning("%s: unavailable: %s", spec["id"], reason)
        return {**metrics, "status": "unavailable", "reason": reason}

    host.release(device, compiled=spec["compile"] != "off")
    timing = TimingWindow(settings["warmup_iters"], settings["profile_iters"])
    recorder = PointRecorder(kernel, device, step.provenance_steps, timing, settings["steps"],
                             spec["id"], spec["batch"])  # fmt: skip
    t0 = time.perf_counter()
    status, reason = "ok", None
    with use_backend(kernel, cast=step.cast) as active:
        try:
            model, args = ultralytics_run.setup(
                spec["model"], recorder, data_yaml, step.loop, device, workdir,
                **point_args(spec, settings),
            )  # fmt: skip
            model.train(trainer=loaders.trainer_class(), **args)
            status, reason = "error", "the training loop ended before the timed steps"
        except StopPoint:
            pass
        except provenance.ProvenanceMismatchError as exc:
            status, reason = "mismatch", host.first_line(exc)
            LOG.error("%s: provenance mismatch: %s", spec["id"], reason)
        except Exception as exc:
            status, reason = "oom", host.oom_reason(exc)
            LOG.warning("%s: %s", spec["id"], reason)
        finally:
            recorder.stop_samplers()
            model = None  # noqa: F841 - drop the trainer, its model, optimizer and EMA now
    recorder.read_peaks()
    timing_keys = recorder.timing()
    if status != "ok":  # an interrupted loop's partial timings are not a measurement
        timing_keys = {
            k: (0 if k in ("steps_timed", "profiled_steps") else None) for k in timing_keys
        }
    metrics.update(
        {
            "status": status,
            "reason": reason,
            **timing_keys,
            **recorder.peaks(),
            "provenance": recorder.provenance,
            "dtypes_seen": active.dtypes_seen(),
            "attention_calls": sum(active.calls.values()),
            "train_images": recorder.train_images,
            "batch_used": recorder.batch,
            "iterations_run": recorder.iterations,
            "setup_s": (recorder.started_loop - t0) if recorder.started_loop else None,
            "point_s": time.perf_counter() - t0,
            "finished": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        }
    )
    LOG.info(
        "%s: %s, step %s ms (%s timed), GPU %s ms/step, peak %s MiB",
        spec["id"], status, _fmt(metrics.get("step_ms_median")), metrics.get("steps_timed"),
        _fmt(metrics.get("gpu_ms_per_step")), _fmt(metrics["peak_alloc_mb"]),
    )  # fmt: skip
    return metrics


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def run_points(
    specs: list[Mapping[str, Any]],
    settings: Mapping[str, Any],
    step: StepSettings,
    data_yaml: str,
    workdir: Path,
    device: torch.device,
    write: Callable[[Mapping[str, Any], dict[str, Any]], None],
) -> list[dict[str, Any]]:
    """Run a job's points in their order, sharing data loaders; `write` each result at once."""
    workdir = Path(workdir).resolve()
    loaders = ultralytics_run.LoaderCache()
    results = []
    try:
        for spec in specs:
            LOG.info(
                "point %d/%d: %s (seed %d)",
                spec["run_order"] + 1,
                len(specs),
                spec["id"],
                spec["seed"],
            )
            point_dir = workdir / spec["id"].replace("/", "_")
            result = run_point(spec, settings, step, data_yaml, point_dir, device, loaders)
            shutil.rmtree(point_dir, ignore_errors=True)  # Ultralytics' args.yaml, empty weights/
            write(spec, result)
            results.append(result)
    finally:
        loaders.close()
        host.release(device)
    return results
