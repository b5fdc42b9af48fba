"""What the sweep costs: a model of its GPU time from the H200 figures of FACTS §7.

An upper bound at eager speed, per part of the sweep (points, job starts, largest-batch
searches, kernel and parity jobs, the paired wall-time timing), so a plan can be sized
before it runs. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from attnbench import backend_records
from attnbench.grid import scale_of
from attnbench.sweep.plan import Plan
from attnbench.timing.plan import whole_cycles

# Ultralytics' GFLOPs at imgsz 640 (YOLO12 model card); training ~ 3x forward.
GFLOPS_640 = {"n": 6.5, "s": 21.4, "m": 67.5, "l": 88.9, "x": 199.0}
HOST_MS = 86.0  # host-bound floor of one iteration (YOLO12n, batch 8, H200)
# Eager GPU ms per (image x GFLOP at 640): YOLO12l batch 16 took 76.9 ms a step.
GPU_MS_PER_IMAGE_GFLOP = 76.9 / (16 * 88.9)
PROFILE_SLOWDOWN = 2.0  # an iteration under torch.profiler (CUDA activity)
JOB_START_S = 12.0  # Python, torch, CUDA context, Ultralytics, backend checks
POINT_SETUP_S = {"n": 2.0, "s": 2.5, "m": 3.0, "l": 3.5, "x": 4.5}  # model, optimizer, EMA
# Peak training memory per image at imgsz 640 (MiB), eager / fused (FACTS §7: n b64, l b16).
MIB_PER_IMAGE = {
    "n": (183.0, 140.0),
    "s": (330.0, 250.0),
    "m": (700.0, 500.0),
    "l": (980.0, 692.0),
    "x": (1500.0, 1100.0),
}
USABLE_MIB = 135_000.0  # of an H200's 141 GB
PROBE_SETUP_S = 2.0
KERNEL_JOB_S = 60.0  # a sweep kernel_bench or parity job over every shape of the grid


def step_ms(model: str, imgsz: int, batch: int) -> float:
    """Modelled wall time of one eager training iteration: the host floor or the GPU time."""
    flops = GFLOPS_640.get(scale_of(model), GFLOPS_640["x"]) * (imgsz / 640) ** 2
    return max(HOST_MS, GPU_MS_PER_IMAGE_GFLOP * batch * flops)


def estimate(plan_: Plan, train: Mapping[str, Any]) -> dict[str, float]:
    """Estimated seconds of GPU time per part of the sweep (an upper-bound model, eager speed).

    Iterations per point: provenance steps + 1 validation batch (profiled), warm-up,
    the profiled window, one excluded after it, `steps` timed. A paired job per compile-off
    cell: a job start, every arm's set-up and provenance steps, and (warm-up + measured
    rounds) x steps_per_block steps per arm. See docs for the model.
    """
    s = plan_.settings
    points_s = 0.0
    for p in plan_.points():
        ms = step_ms(p.model, p.imgsz, p.batch)
        profiled = (train["provenance_steps"] + 1 + s["profile_iters"]) * PROFILE_SLOWDOWN
        # Optimizer iterations (every round(64 / batch)) are timed apart, not as steps.
        accumulate = max(round(64 / p.batch), 1)
        timed = s["steps"] * (accumulate / (accumulate - 1) if accumulate > 1 else 2)
        iterations = s["warmup_iters"] + 1 + timed + profiled
        points_s += POINT_SETUP_S.get(scale_of(p.model), 4.5) + iterations * ms / 1e3
    jobs = len(plan_.groups())
    search_s = 0.0
    mb = s["max_batch"]
    for model, imgsz, backend in plan_.searches():
        eager, fused = MIB_PER_IMAGE.get(scale_of(model), MIB_PER_IMAGE["x"])
        scores = backend_records.record(backend).materializes_scores  # N x N scores: eager's cost
        per_image = (eager if scores else fused) * (imgsz / 640) ** 2
        largest = min(USABLE_MIB / per_image, mb["limit"])
        doublings = max(math.ceil(math.log2(max(largest / mb["start"], 1))) + 1, 1)
        bisections = max(math.ceil(math.log2(1 / max(mb["tolerance"], 1 / largest))), 1)
        probe_s = PROBE_SETUP_S + mb["steps"] * step_ms(model, imgsz, int(largest)) / 1e3
        # Doubling probes grow geometrically: together about two probes at the largest batch.
        search_s += (doublings + bisections) * PROBE_SETUP_S + (2 + bisections) * (
            probe_s - PROBE_SETUP_S
        )
    search_jobs = len({(m, i) for m, i, _ in plan_.searches()})
    paired_s = 0.0
    paired = plan_.paired
    arms = len(plan_.backends)
    for g in plan_.paired_groups():
        # One job per cell: every arm's set-up and provenance, then its blocks, all rounds.
        ms = step_ms(g.model, g.imgsz, g.batch)
        rounds = paired["warmup_rounds"] + whole_cycles(paired["rounds"], arms)
        prove = (train["provenance_steps"] + 1) * PROFILE_SLOWDOWN
        steps = rounds * paired["steps_per_block"] + prove
        paired_s += JOB_START_S + arms * (
            POINT_SETUP_S.get(scale_of(g.model), 4.5) + steps * ms / 1e3
        )
    kernels_s = 2 * len(plan_.backends) * KERNEL_JOB_S if plan_.enabled else 0.0
    parts = {
        "points_s": points_s,
        "point_jobs_start_s": jobs * JOB_START_S,
        "max_batch_s": search_s + search_jobs * JOB_START_S,
        "kernels_parity_s": kernels_s,
        "paired_s": paired_s,
    }
    parts["total_s"] = sum(parts.values())
    parts["points"] = float(len(plan_.points()))
    parts["jobs"] = float(jobs)
    return parts
