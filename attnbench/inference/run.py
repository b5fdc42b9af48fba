"""Running the inference benchmark: one (model, imgsz, batch, compile, backend) per process.

The model is YOLO12's detection model in eval mode, Conv+BN fused as Ultralytics' own
predictor runs it, its weights and inputs in the configured dtype (a CPU runs fp32 and
says so). Inputs are random images of the size (seeded): the forward's cost does not
depend on the pixels, and no pre-processing, NMS or data loading is timed, which is
what the published latencies measure too. In order:

1. provenance: one forward of the uncompiled model under torch.profiler, checked against
   the forward half of the backend's signature (as `RunRecorder.prove` does for its
   validation batch); torch.compile and CUDA graphs would hide the kernels from it;
2. `warmup` calls of the model as timed (compiled when asked: compiling happens here);
3. `iterations` timed calls: CUDA events around each call on a GPU (no synchronisation
   between calls), `perf_counter` on a CPU, and the loop's wall time;
4. `profile_iters` calls under torch.profiler, apart from the timed ones: device time
   per call and attention's share of it (`steptime.device_time_us`,
   `provenance.attention_time_us`).

Peak memory (torch allocated and reserved, NVML device-level) covers steps 2 to 4 after
the model is on the device. OOM is a result (status `oom`), never a crash;
`ATTNBENCH_FORCE_OOM` (tests) forces one for ids like `inference/yolo12n/imgsz64/b1/off/sdpa`.

Loading and preparing the model: `inference_model`; the prediction agreement check:
`inference_agreement`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch

from attnbench import host
from attnbench.backends import provenance
from attnbench.backends import registry as backends
from attnbench.backends.patch import use_backend
from attnbench.inference.model import compile_model, load_yolo, prepare, run_dtype
from attnbench.measure import steptime

LOG = logging.getLogger(__name__)


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not len(values):
        return dict.fromkeys(("latency_ms_median", "latency_ms_p10", "latency_ms_p90",
                              "latency_ms_mean", "latency_ms_min"))  # fmt: skip
    arr = np.asarray(values, dtype=float)
    p10, p50, p90 = np.percentile(arr, [10, 50, 90])
    return {
        "latency_ms_median": float(p50),
        "latency_ms_p10": float(p10),
        "latency_ms_p90": float(p90),
        "latency_ms_mean": float(arr.mean()),
        "latency_ms_min": float(arr.min()),
    }


def time_calls(call, iterations: int, device: torch.device) -> tuple[list[float], float]:
    """Per-call times in ms (CUDA events on a GPU, perf_counter on a CPU) and the loop's wall s."""
    on_cuda = device.type == "cuda"
    if on_cuda:
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in range(iterations)
        ]
    host.synchronize(device)
    times: list[float] = []
    t0 = time.perf_counter()
    for i in range(iterations):
        if on_cuda:
            events[i][0].record()
            call()
            events[i][1].record()
        else:
            start = time.perf_counter()
            call()
            times.append((time.perf_counter() - start) * 1e3)
    host.synchronize(device)
    wall = time.perf_counter() - t0
    if on_cuda:
        times = [start.elapsed_time(end) for start, end in events]
    return times, wall


def window(call, steps: int, device: torch.device) -> dict[str, Any]:
    """Device time per call and attention's share of it, from `steps` profiled calls."""
    if steps <= 0:
        return {"profiled_calls": 0}
    with host.profiler(device) as prof:
        for _ in range(steps):
            call()
        host.synchronize(device)
    events = list(prof.events())
    total_us = (
        steptime.device_time_us(events) if device.type == "cuda" else steptime.op_time_us(events)
    )
    _, _, regions = provenance.attention_events(events)
    attention_us = provenance.attention_time_us(events, device.type) if regions else None
    result = {
        "profiled_calls": steps,
        "gpu_ms_per_call": total_us / 1e3 / steps,
        "attention_ms_per_call": None if attention_us is None else attention_us / 1e3 / steps,
        "attention_share_of_gpu": (attention_us / total_us) if attention_us and total_us else None,
        "launches_per_call": steptime.launches(events, device.type) / steps,
        "window_attention_regions": regions,
    }
    if not regions:
        result["window_note"] = (
            "no attention region in the profiled calls (torch.compile traced it away): "
            "attention time is not attributable"
        )
    return result


def bench(spec: Mapping[str, Any], settings: Mapping[str, Any], device: torch.device,
          environment: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
    """One job's JSON: latency, throughput, memory, attention share, provenance, status."""
    backend, batch, imgsz = spec["backend"], spec["batch"], spec["imgsz"]
    dtype, dtype_note = run_dtype(settings["dtype"], device)
    result: dict[str, Any] = {
        **{
            k: spec[k]
            for k in (
                "id",
                "model",
                "model_name",
                "scale",
                "imgsz",
                "batch",
                "compile",
                "backend",
                "planned_position",
            )
        },  # fmt: skip
        "status": None,
        "reason": None,
        "dtype_requested": settings["dtype"],
        "dtype": host.dtype_name(dtype),
        "dtype_note": dtype_note,
        "device": str(device),
        "device_name": environment.get("gpu_name") or environment.get("cpu_model"),
        **{
            k: environment.get(k)
            for k in ("torch", "cuda", "cudnn", "flash_attn", "ultralytics", "python", "driver")
        },  # fmt: skip
        "torch_threads": torch.get_num_threads(),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "warmup": settings["warmup"],
        "iterations_requested": settings["iterations"],
        "input": f"random images (seeded), {batch}x3x{imgsz}x{imgsz}",
        "timer": "cuda events per call" if device.type == "cuda" else "perf_counter per call",
        "forced_oom": host.forced_oom(spec["force_id"], batch),
        "started": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
    }
    reason = backends.check(backend, device, dtype)
    if reason:
        LOG.warning("%s: unavailable: %s", spec["id"], reason)
        return {**result, "status": "unavailable", "reason": reason}

    compiled = spec["compile"] != "off"
    host.release(device, compiled=compiled)
    status, reason = "ok", None
    measured: dict[str, Any] = {}
    nvml = None
    t0 = time.perf_counter()
    with use_backend(backend) as active:
        model = fn = x = None
        try:
            yolo, weights = load_yolo(spec["weights"])
            measured.update(weights)
            model = prepare(yolo, device, dtype)
            del yolo
            measured["nc"] = int(getattr(model, "nc", 0) or model.model[-1].nc)
            measured["parameters"] = sum(p.numel() for p in model.parameters())
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                measured["model_alloc_mb"] = torch.cuda.memory_allocated(device) / 2**20
                torch.cuda.reset_peak_memory_stats(device)
            generator = torch.Generator().manual_seed(0)
            x = torch.rand(batch, 3, imgsz, imgsz, generator=generator).to(device, dtype)
            if result["forced_oom"]:
                raise host.forced_error(spec["force_id"])
            nvml = _nvml(device)
            with torch.inference_mode():
                measured["provenance"] = prove(model, x, backend, device)
                fn = compile_model(model, spec["compile"])
                mark = (
                    torch.compiler.cudagraph_mark_step_begin
                    if spec["compile"] == "reduce-overhead" and device.type == "cuda"
                    else None
                )

                def call() -> None:
                    if mark is not None:
                        mark()
                    fn(x)

                w0 = time.perf_counter()
                for _ in range(settings["warmup"]):
                    call()
                host.synchronize(device)
                measured["warmup_s"] = time.perf_counter() - w0
                times, wall = time_calls(call, settings["iterations"], device)
                measured["latency_times_ms"] = [round(t, 4) for t in times]
                measured["iterations"] = len(times)
                measured["timed_wall_s"] = wall
                measured.update(window(call, settings["profile_iters"], device))
            if not measured["provenance"]["matched"]:
                status = "mismatch"
                reason = "; ".join(measured["provenance"]["mismatch"])[:300]
        except Exception as exc:
            status, reason = "oom", host.oom_reason(exc)
            LOG.warning("%s: %s", spec["id"], reason)
        finally:
            if nvml is not None:
                nvml.stop()
            model = fn = x = None  # noqa: F841 - free before the peaks are read
        attention_calls = sum(active.calls.values())
        dtypes_seen = active.dtypes_seen()
    if device.type == "cuda":
        measured["peak_alloc_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        measured["peak_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
    if nvml is not None:
        measured["peak_device_used_mb"] = nvml.summary().get("peak_device_used_mb")
    host.release(device, compiled=compiled)
    stats = percentiles(measured.get("latency_times_ms", []) if status == "ok" else [])
    median = stats["latency_ms_median"]
    wall = measured.get("timed_wall_s")
    result.update(measured)
    result.update(stats)
    result.update(
        {
            "status": status,
            "reason": reason,
            "images_per_s": batch * 1e3 / median if median else None,
            "wall_images_per_s": batch * measured["iterations"] / wall
            if status == "ok" and wall
            else None,
            "attention_calls": attention_calls,
            "dtypes_seen": dtypes_seen,
            "job_s": time.perf_counter() - t0,
            "finished": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        }
    )
    for key in ("peak_alloc_mb", "peak_reserved_mb", "peak_device_used_mb", "model_alloc_mb"):
        result.setdefault(key, None)
    LOG.info("%s: %s, median %s ms, p90 %s ms, %s img/s, peak %s MiB", spec["id"], status,
             _fmt(median), _fmt(stats["latency_ms_p90"]), _fmt(result["images_per_s"]),
             _fmt(result["peak_alloc_mb"]))  # fmt: skip
    return result


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _nvml(device: torch.device):
    from attnbench.measure import profiling

    sampler = profiling.nvml_for(device)
    return sampler.start() if sampler is not None else None


def prove(model: torch.nn.Module, x: torch.Tensor, backend: str, device: torch.device) -> dict:
    """The kernels one eval forward ran, against the forward half of the backend's signature."""
    signature = backends.get(backend).signature(device.type)
    forward_only = dataclasses.replace(signature, bwd_ops=(), bwd_kernels=())
    model(x)  # first call: lazy initialisation (cuDNN, allocator) stays out of the profile
    record = provenance.profile_steps(lambda: model(x), 1, device)
    result = provenance.verify(record, forward_only, device.type)
    LOG.info("provenance of %s: dispatched to %s; matched=%s %s", backend, result["dispatched"],
             result["matched"], result["mismatch"] or "")  # fmt: skip
    return result
