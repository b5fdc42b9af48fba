"""Steady-state step time and a per-step GPU breakdown of a training loop.

`StepTimer` marks the start of every training iteration (CUDA events on a GPU,
so the loop is never synchronised; `perf_counter` on a CPU) and keeps the
intervals between consecutive starts: one whole iteration each, data wait
included. The first `warmup` iterations of every epoch (loader restart, mosaic
switch, allocator growth) and the iterations around the profiler window are
left out; validation and checkpoints fall between epochs, so they never enter.

`ProfileWindow` profiles K iterations of the same loop, apart from the timed
ones, and `breakdown` turns the profile into per-step device time, attention
time (the backend's own kernels, found through the attention region and the
autograd sequence numbers of its ops), launches and data wait.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from attnbench import host
from attnbench.backends import provenance

LAUNCH = re.compile(
    r"^(cuda|cu)(LaunchKernel|LaunchKernelEx|LaunchKernelExC|LaunchCooperativeKernel|GraphLaunch)"
)
STEP_KEYS = ("step_ms_median", "step_ms_p10", "step_ms_p90", "steps_timed", "steady_images_per_s")
BREAKDOWN_KEYS = (
    "gpu_ms_per_step",
    "attention_ms_per_step",
    "launches_per_step",
    "data_wait_ms_per_step",
    "gpu_busy_fraction",
    "attention_share_of_gpu",
    "max_step_saving_pct",
    "profiled_steps",
)


@dataclass
class StepTimer:
    """Per-iteration times of the steady state, gathered without synchronising the loop.

    Iterations that ran the optimizer (every `accumulate` iterations; more often during
    Ultralytics' LR warm-up) are kept apart: their cost is the same for every backend,
    and a median over a mix of both kinds jumps with the mix.
    """

    device: torch.device
    warmup: int
    # (epoch index, first, last): iterations of one epoch to leave out (a profiler window).
    skip: tuple[int, int, int] | None = None
    step_ms: list[float] = field(default_factory=list)
    opt_step_ms: list[float] = field(default_factory=list)
    host_step_ms: list[float] = field(default_factory=list)
    epoch: int = -1
    _marks: list[list[Any]] = field(default_factory=list)

    @property
    def on_cuda(self) -> bool:
        return self.device.type == "cuda"

    def epoch_start(self) -> None:
        self.epoch += 1
        self._marks = []

    def iteration(self) -> int:
        """Index, within the epoch, of the iteration the next mark starts."""
        return len(self._marks)

    def mark(self, exclude: bool = False) -> None:
        """The start of an iteration; `exclude` leaves the interval it starts out."""
        i = len(self._marks)
        if self.skip and self.skip[0] == self.epoch and self.skip[1] <= i <= self.skip[2]:
            exclude = True
        event = None
        if self.on_cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
        self._marks.append([event, time.perf_counter(), exclude, False])

    def optimizer_stepped(self) -> None:
        """The iteration now running stepped the optimizer."""
        if self._marks:
            self._marks[-1][3] = True

    def _closed(self, marks: list[list[Any]]) -> range:
        """Indices of the intervals `marks` closes after the warm-up (the last one is open)."""
        return range(max(self.warmup, 0), len(marks) - 1)

    def pending(self) -> int:
        """Timed steps (no optimizer step) the running epoch has closed so far: what
        epoch_end would add to `step_ms` now."""
        return sum(1 for i in self._closed(self._marks) if not any(self._marks[i][2:4]))

    def epoch_end(self) -> None:
        """Turn the epoch's marks into intervals (one synchronisation, outside the loop)."""
        if self.on_cuda:
            torch.cuda.synchronize(self.device)
        marks, self._marks = self._marks, []
        for i in self._closed(marks):
            (start, host_start, excluded, stepped), (end, host_end, *_) = marks[i], marks[i + 1]
            if excluded:
                continue
            host_ms = (host_end - host_start) * 1e3
            elapsed = start.elapsed_time(end) if self.on_cuda else host_ms
            if stepped:
                self.opt_step_ms.append(elapsed)
            else:
                self.host_step_ms.append(host_ms)
                self.step_ms.append(elapsed)

    def attach(self, trainer) -> None:
        """Note the trainer's optimizer steps (wraps the instance's `optimizer_step`)."""
        original = trainer.optimizer_step

        def optimizer_step(*args, **kwargs):
            self.optimizer_stepped()
            return original(*args, **kwargs)

        trainer.optimizer_step = optimizer_step

    def summary(self, batch: int | None) -> dict[str, Any]:
        return step_summary(self.step_ms, batch, self.host_step_ms, self.opt_step_ms)


def step_summary(
    step_ms: Iterable[float],
    batch: int | None,
    host_step_ms: Iterable[float] | None = None,
    opt_step_ms: Iterable[float] | None = None,
) -> dict[str, Any]:
    """The step keys of metrics.json.

    `step_ms_*` and `steps_timed` describe iterations without an optimizer step (data,
    forward, backward: where attention differs); `opt_step_ms_median` those with one;
    `steady_images_per_s` is over all timed iterations, optimizer steps included.
    """
    values = np.asarray(list(step_ms), dtype=float)
    opt = np.asarray(list(opt_step_ms or []), dtype=float)
    host = list(host_step_ms or [])
    every = np.concatenate([values, opt])
    result: dict[str, Any] = {
        **dict.fromkeys(STEP_KEYS),
        "steps_timed": int(values.size),
        "opt_steps_timed": int(opt.size),
        "opt_step_ms_median": float(np.median(opt)) if opt.size else None,
        "host_step_ms_median": float(statistics.median(host)) if host else None,
        "step_times_ms": [round(float(v), 4) for v in values],
        "opt_step_times_ms": [round(float(v), 4) for v in opt],
    }
    if values.size:
        p10, median, p90 = np.percentile(values, [10, 50, 90])
        result.update(step_ms_median=float(median), step_ms_p10=float(p10), step_ms_p90=float(p90))
    if every.size and batch:
        result["steady_images_per_s"] = float(batch * every.size / every.sum() * 1e3)
    return result


class ProfileWindow:
    """torch.profiler over K consecutive iterations of a running loop."""

    def __init__(self, device: torch.device, steps: int) -> None:
        self.device = device
        self.steps = steps
        self.profiled = 0
        self.data_wait_s = 0.0
        self._profiler = None
        self._last_end: float | None = None
        self.events = None

    @property
    def active(self) -> bool:
        return self._profiler is not None

    @property
    def done(self) -> bool:
        return self.events is not None

    def start(self) -> None:
        self._profiler = host.profiler(self.device)
        self._profiler.__enter__()

    def batch_start(self) -> None:
        """Count the data wait since the previous iteration of the window ended."""
        if self._last_end is not None:
            self.data_wait_s += time.perf_counter() - self._last_end

    def batch_end(self) -> None:
        self.profiled += 1
        self._last_end = time.perf_counter()

    def stop(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        profiler, self._profiler = self._profiler, None
        profiler.__exit__(None, None, None)
        self.events = list(profiler.events())

    def abandon(self) -> None:
        """Close a window that the loop left early (end of epoch, error)."""
        if self._profiler is not None:
            self.stop()


def _is_device_event(event) -> bool:
    device_type = getattr(event, "device_type", None)
    return (
        device_type is not None
        and device_type != torch.autograd.DeviceType.CPU
        and not getattr(event, "is_user_annotation", False)
    )


def _duration_us(event) -> float:
    return float(event.time_range.end - event.time_range.start)


def device_time_us(events: Iterable) -> float:
    """Summed device time of kernels, memcpy and memset (user annotations overlap them)."""
    return sum(_duration_us(e) for e in events if _is_device_event(e))


def op_time_us(events: Iterable) -> float:
    """On a CPU: the self time of every aten op, the CPU's equivalent of device time."""
    return sum(
        float(e.self_cpu_time_total)
        for e in events
        if e.name.startswith("aten::") and not _is_device_event(e)
    )


def launches(events: Iterable, device_type: str) -> int:
    """Kernel launches on a GPU (runtime calls, else kernels); aten op calls on a CPU."""
    events = list(events)
    if device_type == "cuda":
        calls = sum(1 for e in events if LAUNCH.match(e.name) and not _is_device_event(e))
        return calls or sum(
            1 for e in events if _is_device_event(e) and not e.name.startswith(("Memcpy", "Memset"))
        )
    return sum(1 for e in events if e.name.startswith("aten::"))


def breakdown(
    events: Iterable, device_type: str, steps: int, data_wait_s: float, step_ms_median: float | None
) -> dict[str, Any]:
    """Per-step device time, attention time and their ratios from a profiled window."""
    events = list(events)
    if steps <= 0:
        return {**dict.fromkeys(BREAKDOWN_KEYS), "profiled_steps": 0}
    total_us = device_time_us(events) if device_type == "cuda" else op_time_us(events)
    attention_us = provenance.attention_time_us(events, device_type)
    gpu_ms = total_us / 1e3 / steps
    attention_ms = attention_us / 1e3 / steps
    result = {
        "gpu_ms_per_step": gpu_ms,
        "attention_ms_per_step": attention_ms,
        "launches_per_step": launches(events, device_type) / steps,
        "data_wait_ms_per_step": data_wait_s * 1e3 / max(steps - 1, 1),
        "gpu_busy_fraction": None,
        "attention_share_of_gpu": attention_ms / gpu_ms if gpu_ms > 0 else None,
        "max_step_saving_pct": None,
        "profiled_steps": steps,
    }
    if step_ms_median:
        result["gpu_busy_fraction"] = gpu_ms / step_ms_median
        # Amdahl: a zero-cost attention saves at most its own time, and only on the
        # critical path; when the GPU is mostly idle the host hides even that.
        result["max_step_saving_pct"] = 100.0 * min(attention_ms, step_ms_median) / step_ms_median
    return result
