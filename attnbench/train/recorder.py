"""Ultralytics callbacks that prove, time and measure one training run.

- Provenance fails fast: before the first epoch, a few real training steps and
  one validation batch are profiled and checked against the backend's signature;
  a mismatch stops the job there, in seconds. Model and RNGs are restored after.
- Steady state: every iteration's start is marked (`steptime.StepTimer`); the
  first `timing.warmup_iters` of each epoch and the profiled iterations are left out.
- Breakdown: `timing.profile_iters` iterations of the second epoch (the first if
  there is one) run under torch.profiler, apart from the timed ones.
- Epoch loop time, memory peaks (torch, NVML, host RSS), and no silent batch
  halving: an out-of-memory error is a result.
- The harness's own cost (`HarnessClock`): every callback is timed with perf_counter,
  exclusive of what nests inside it, by kind. Per step: the batch callbacks and the
  patch's dispatch around each attention call (`patch.ActiveBackend.dispatch_s`, read
  between the batch callbacks), over the iterations outside the profiler window. Fixed
  per run: provenance profiling, the profiler window (its start, stop and profiled
  iterations' callbacks), the epoch callbacks, and what `training` times around them.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import random
import time
from typing import Any

import numpy as np
import torch

from attnbench import host
from attnbench.backends import patch, provenance
from attnbench.backends import registry as backends
from attnbench.measure.profiling import HostRSS, StepClock, nvml_for
from attnbench.measure.steptime import ProfileWindow, StepTimer, breakdown
from attnbench.train.settings import TimingWindow

LOG = logging.getLogger(__name__)
CALLBACKS = (
    "on_train_start", "on_train_epoch_start", "on_train_batch_start", "on_train_batch_end",
    "on_train_epoch_end", "on_fit_epoch_end", "on_train_end",
)  # fmt: skip
STEP_CALLBACKS = ("on_train_batch_start", "on_train_batch_end")
# HarnessClock kinds: per step, and fixed per run (the metrics.json keys harness_<kind>_s).
PER_STEP = ("step_callbacks", "dispatch")
FIXED = ("setup", "provenance", "profile_window", "run_callbacks", "results")


class HarnessClock:
    """Seconds of the harness's own work by kind, each region exclusive of nested ones."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys((*PER_STEP, *FIXED), 0.0)
        self._inner: list[float] = []  # time of regions nested in each open region

    @contextlib.contextmanager
    def timed(self, kind: str | None, decide=None):
        """Add the region's exclusive time to `kind` (or to `decide()`, asked at its end)."""
        self._inner.append(0.0)
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            inner = self._inner.pop()
            self.add(decide() if decide else kind, elapsed - inner)
            if self._inner:
                self._inner[-1] += elapsed

    def add(self, kind: str, seconds: float) -> None:
        self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds


@contextlib.contextmanager
def preserved_state(model: torch.nn.Module):
    """Restore model weights/buffers, train/eval mode and every RNG after profiling steps."""
    state = copy.deepcopy(model.state_dict())
    training = model.training
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        model.load_state_dict(state)
        model.zero_grad(set_to_none=True)
        model.train(training)
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def _batch(dataset, size: int, trainer) -> dict[str, Any]:
    items = [dataset[i % len(dataset)] for i in range(size)]
    return trainer.preprocess_batch(dataset.collate_fn(items))


class RunRecorder:
    """Attach with `attach(model)` before `model.train()`; read the attributes after."""

    def __init__(
        self, backend: str, device: torch.device, provenance_steps: int, timing: TimingWindow
    ) -> None:
        self.backend = backends.get(backend)
        self.device = device
        self.provenance_steps = provenance_steps
        self.provenance: dict[str, Any] | None = None
        self.epoch_times: list[float] = []
        self.train_epoch_times: list[float] = []
        self.loop_start: float | None = None
        self.loop_end: float | None = None
        self._epoch_start = 0.0
        self._in_epoch = False
        self._epoch_index = -1
        self.clock = StepClock()
        self.timer = StepTimer(device, timing.warmup_iters)
        self.window = ProfileWindow(device, timing.profile_iters)
        self.window_epoch = 0
        self.window_record: dict[str, Any] | None = None
        self.rss = HostRSS()
        self.nvml = None
        self.peak_alloc_mb: float | None = None
        self.peak_reserved_mb: float | None = None
        self.final_metrics: dict[str, float] = {}
        self.train_images = 0
        self.batch = None
        self.overhead = HarnessClock()
        self.overhead_steps = 0  # iterations outside the profiler window
        self._dispatch_mark: float | None = None

    def attach(self, model) -> None:
        """Register the callbacks (on a YOLO model or a trainer), each timed as harness work."""
        for name in CALLBACKS:
            model.add_callback(name, self._timed(name, getattr(self, name)))

    def _timed(self, name: str, callback):
        def profiled() -> str:  # a batch callback of a profiled iteration is the window's cost
            return "profile_window" if self.window.active else "step_callbacks"

        def run(trainer) -> None:
            if name == "on_train_batch_end":
                self._count_dispatch()
            with self.overhead.timed("run_callbacks", profiled if name in STEP_CALLBACKS else None):
                callback(trainer)
            if name == "on_train_batch_start":
                current = patch.active()
                self._dispatch_mark = current.dispatch_s if current else None

        return run

    def _count_dispatch(self) -> None:
        """The patch's dispatch time since the iteration's start, into its kind."""
        current, mark = patch.active(), self._dispatch_mark
        self._dispatch_mark = None
        if not self.window.active:
            self.overhead_steps += 1
        if current is None or mark is None:
            return
        kind = "profile_window" if self.window.active else "dispatch"
        self.overhead.add(kind, current.dispatch_s - mark)

    # -- callbacks ------------------------------------------------------------
    def on_train_start(self, trainer) -> None:
        self.train_images = len(trainer.train_loader.dataset)
        self.batch = trainer.batch_size
        self.window_epoch = 1 if trainer.epochs > 1 else 0
        self.timer.attach(trainer)
        with self.overhead.timed("provenance"):
            self.provenance = self.prove(trainer)
        if not self.provenance["matched"]:
            raise provenance.ProvenanceMismatchError(
                f"{self.backend.name}: the profiled kernels do not match the backend: "
                + "; ".join(self.provenance["mismatch"])
            )
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.nvml = nvml_for(self.device)
        if self.nvml:
            self.nvml.start()
        self.rss.start()
        host.synchronize(self.device)
        self.loop_start = time.perf_counter()

    def on_train_epoch_start(self, trainer) -> None:
        trainer._oom_retries = 3  # no silent batch halving: an OOM is a result
        self._epoch_index += 1
        self.clock.epoch_start()
        self.timer.epoch_start()
        host.synchronize(self.device)
        self._epoch_start = time.perf_counter()
        self._in_epoch = True

    def on_train_batch_start(self, trainer) -> None:
        self.clock.batch_start()
        window, i = self.window, self.timer.iteration()
        if window.active and window.profiled >= window.steps:
            with self.overhead.timed("profile_window"):
                window.stop()  # inside the excluded interval that precedes this mark
        in_window = (
            self._epoch_index == self.window_epoch
            and not window.done
            and window.steps > 0
            and i >= self.timer.warmup
        )
        if in_window and not window.active:
            with self.overhead.timed("profile_window"):
                window.start()
        if window.active:
            window.batch_start()
        # The window's iterations, and the first one after it (the queue drained by
        # the profiler's synchronisation), stay out of the steady-state times.
        after_window = (
            window.done and self._epoch_index == self.window_epoch and i == self._window_end()
        )
        self.timer.mark(exclude=window.active or after_window)

    def on_train_batch_end(self, trainer) -> None:
        self.clock.batch_end()
        if self.window.active:
            self.window.batch_end()

    def on_train_epoch_end(self, trainer) -> None:
        with self.overhead.timed("profile_window"):
            self.window.abandon()  # an epoch shorter than the window ends it here
        host.synchronize(self.device)
        self.train_epoch_times.append(time.perf_counter() - self._epoch_start)
        self.timer.epoch_end()

    def on_fit_epoch_end(self, trainer) -> None:
        if not self._in_epoch:  # the final best.pt validation also fires this event
            self.final_metrics = dict(trainer.metrics or {})
            return
        self._in_epoch = False
        host.synchronize(self.device)
        now = time.perf_counter()
        self.epoch_times.append(now - self._epoch_start)
        self.loop_end = now
        self.final_metrics = dict(trainer.metrics or {})
        self.read_peaks()
        LOG.info(
            "epoch %d/%d of %s: %.2f s (train %.2f s)",
            len(self.epoch_times), trainer.epochs, self.backend.name,
            self.epoch_times[-1], self.train_epoch_times[-1],
        )  # fmt: skip

    def on_train_end(self, trainer) -> None:
        self.final_metrics = dict(trainer.metrics or self.final_metrics)
        self.stop_samplers()

    # -- results --------------------------------------------------------------
    def _window_end(self) -> int:
        return self.timer.warmup + self.window.profiled

    def stop_samplers(self) -> None:
        with self.overhead.timed("profile_window"):
            self.window.abandon()
        self.rss.stop()
        if self.nvml:
            self.nvml.stop()

    def read_peaks(self) -> None:
        if self.device.type == "cuda":
            self.peak_alloc_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
            self.peak_reserved_mb = torch.cuda.max_memory_reserved(self.device) / 2**20

    def peaks(self) -> dict[str, Any]:
        """The run's memory peaks and GPU use as metrics.json keys (after `read_peaks`):
        allocator, device (NVML) and host RSS; None where not measured."""
        nvml = self.nvml.summary() if self.nvml else {}
        return {
            "peak_alloc_mb": self.peak_alloc_mb,
            "peak_reserved_mb": self.peak_reserved_mb,
            "peak_device_used_mb": nvml.get("peak_device_used_mb"),
            "gpu_util_mean": nvml.get("gpu_util_mean"),
            "gpu_util_median": nvml.get("gpu_util_median"),
            "host_peak_rss_mb": self.rss.peak_bytes / 2**20,
        }

    def timing(self) -> dict[str, Any]:
        """The steady-state step keys and the profiled window's per-step breakdown."""
        steps = self.timer.summary(self.batch)
        window: dict[str, Any] = {}
        if self.window.done:
            window = breakdown(
                self.window.events, self.device.type, self.window.profiled,
                self.window.data_wait_s, steps["step_ms_median"],
            )  # fmt: skip
            record = provenance.verify(
                provenance.collect(self.window.events),
                self.backend.signature(self.device.type),
                self.device.type,
            )
            window["window_provenance_matched"] = record["matched"]
            window["window_dispatched"] = record["dispatched"]
        else:
            window = breakdown([], self.device.type, 0, 0.0, None)
        return {**steps, **window, "timing_warmup_iters": self.timer.warmup}

    def overhead_keys(self, step_ms: float | None) -> dict[str, Any]:
        """The harness's own cost as metrics.json keys: per step (ms, and as a share of
        `step_ms`, else of the mean iteration) and fixed per run (s, by kind and in all)."""
        seconds, steps = self.overhead.seconds, self.overhead_steps
        per_step = {k: seconds[k] * 1e3 / steps if steps else None for k in PER_STEP}
        total = sum(per_step.values()) if steps else None
        basis = "step_ms_median"
        if not step_ms and self.clock.batches:
            step_ms, basis = self.clock.step_s * 1e3 / self.clock.batches, "mean iteration"
        fixed = {f"harness_{k}_s": seconds[k] for k in FIXED}
        return {
            "harness_overhead_ms_per_step": total,
            "harness_callbacks_ms_per_step": per_step["step_callbacks"],
            "harness_dispatch_ms_per_step": per_step["dispatch"],
            "harness_overhead_share": total / step_ms if total is not None and step_ms else None,
            "harness_overhead_share_of": basis if step_ms else None,
            "harness_overhead_steps": steps,
            **fixed,
            "harness_fixed_s": sum(fixed.values()),
        }

    # -- provenance -----------------------------------------------------------
    def prove(self, trainer) -> dict[str, Any]:
        """Profile real training steps and one validation batch; leave the run as it was."""
        model = trainer.model
        signature = self.backend.signature(self.device.type)
        amp = bool(trainer.amp)
        with preserved_state(model):
            batch = _batch(trainer.train_loader.dataset, trainer.batch_size, trainer)

            def step() -> None:
                with torch.autocast(self.device.type, enabled=amp):
                    loss, _ = model(batch)
                loss.sum().backward()

            record = provenance.profile_steps(step, self.provenance_steps, self.device)
            val_batch = _batch(trainer.test_loader.dataset, trainer.test_loader.batch_size, trainer)
            model.eval()

            def val_step() -> None:
                with torch.no_grad(), torch.autocast(self.device.type, enabled=amp):
                    model(val_batch["img"])

            val_record = provenance.profile_steps(val_step, 1, self.device)
        result = provenance.verify(record, signature, self.device.type)
        # Validation has no backward: the forward half of the signature must hold.
        forward_only = dataclasses.replace(signature, bwd_ops=(), bwd_kernels=())
        val = provenance.verify(val_record, forward_only, self.device.type)
        result["validation"] = {
            key: val[key] for key in ("regions", "fwd_ops", "fwd_kernels", "dispatched", "matched")
        }
        result["mismatch"] = result["mismatch"] + [f"validation: {m}" for m in val["mismatch"]]
        result["matched"] = result["matched"] and val["matched"]
        LOG.info(
            "provenance of %s: dispatched to %s (validation: %s); matched=%s %s",
            self.backend.name, result["dispatched"], val["dispatched"], result["matched"],
            result["mismatch"] or "",
        )  # fmt: skip
        return result
