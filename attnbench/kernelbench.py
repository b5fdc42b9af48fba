"""The attention kernel micro-benchmark: time, TFLOP/s, share of the matmul ceiling, memory.

Counted FLOPs (FlashAttention's convention): forward 4*B*h*N^2*d (two matmuls of
2*B*h*N^2*d each); backward counted as 2.5x forward (five matmuls), so forward +
backward is 3.5x forward (`attnbench.shapes.AttentionProblem`). Achieved TFLOP/s =
counted FLOPs / median time, so the rates of different kernels compare the same
work. `pct_of_matmul_peak` is the forward+backward rate as a percentage of a large
bf16 matmul (8192^3; fp32 1024^3 on a CPU) timed on the same device in the same process.

Timing: warm-up, then the median of `repeats` calls, each between CUDA events (GPU)
or perf_counter stamps (CPU), on random data laid out as YOLO12's AAttn passes it
(views of one qkv buffer), rotating several input sets so small problems do not
run from a warm L2 cache. `fwd` is the forward as training runs it (autograd
recording); `fwdbwd` adds the backward from a random output gradient. Peak memory
is max_memory_allocated during one fwd+bwd call minus what was allocated before it
(the inputs), in MiB. The backend's `activate` context (e.g. a forced SDPA kernel)
is entered once around the whole measurement, outside every timed region.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from attnbench import backends, host, io
from attnbench.shapes import AttentionProblem, problems

LOG = logging.getLogger("attnbench.kernelbench")

COLUMNS = [
    "backend", "status", "reason", "device", "gpu", "dtype", "kind", "phase", "B", "heads", "N",
    "head_dim", "fwd_ms", "fwdbwd_ms", "fwd_flops", "fwdbwd_flops", "fwd_tflops", "fwdbwd_tflops",
    "pct_of_matmul_peak", "matmul_peak_tflops", "peak_mem_mb", "repeats",
]  # fmt: skip

CPU_DTYPES = ("float32", "bfloat16")  # fp16 attention on a CPU is nobody's training setup
MIN_GPU_REPEATS = 50
CPU_MAX_WARMUP = 3
# A fwd+bwd of a backend that materialises the N x N scores keeps about 8 of them alive
# (measured on an H100: sdpa_math at (8,8,6400,32) fp16 peaks at 7.7x one score tensor).
SCORE_COPIES = 8
MEMORY_SHARE = 0.5  # skip a problem estimated above this share of free memory
MAX_SETS = 512  # (8,4,400,32) fp16 needs ~120 sets of 0.8 MB to exceed 2x an H100's L2
MATMUL = {"cuda": (8192, torch.bfloat16), "cpu": (1024, torch.float32)}
MIB = 2**20


# --------------------------------------------------------------------------- #
# Timing


def median_ms(
    step: Callable[[int], Any],
    device: torch.device,
    warmup: int,
    repeats: int,
    prepare: Callable[[int], Any] | None = None,
) -> float:
    """Median milliseconds of `step(i)` over `repeats` calls after `warmup` calls.

    Timed calls continue the index after the warm-up (i = warmup, warmup + 1, ...),
    so with rotating input sets they do not start on the sets just warmed into
    cache. `prepare(i)` runs before each call, outside the timed span.
    """
    for i in range(warmup):
        if prepare:
            prepare(i)
        step(i)
    host.synchronize(device)
    if device.type == "cuda":
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in range(repeats)
        ]
        for i, (start, end) in enumerate(events, start=warmup):
            if prepare:
                prepare(i)
            start.record()
            step(i)
            end.record()
        host.synchronize(device)
        times = [start.elapsed_time(end) for start, end in events]
    else:
        times = []
        for i in range(warmup, warmup + repeats):
            if prepare:
                prepare(i)
            t0 = time.perf_counter()
            step(i)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def matmul_peak_tflops(device: torch.device, warmup: int = 5, repeats: int = 20) -> float:
    """The achievable dense-matmul rate here: bf16 8192^3 on a GPU, fp32 1024^3 on a CPU."""
    n, dtype = MATMUL["cuda" if device.type == "cuda" else "cpu"]
    gen = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(n, n, device=device, dtype=dtype, generator=gen) for _ in range(2))
    out = torch.empty(n, n, device=device, dtype=dtype)
    ms = median_ms(lambda _: torch.mm(a, b, out=out), device, warmup, repeats)
    return 2 * n**3 / ms / 1e9


# --------------------------------------------------------------------------- #
# One problem


def set_bytes(p: AttentionProblem, dtype: torch.dtype) -> int:
    """Bytes of one input set: the qkv buffer (3 x q) and the output gradient."""
    return 4 * p.B * p.N * p.heads * p.head_dim * torch.finfo(dtype).bits // 8


def input_sets(p: AttentionProblem, dtype: torch.dtype, device: torch.device) -> int:
    """How many input sets to rotate: enough to overflow twice the GPU's L2, within 10% of free memory."""
    if device.type != "cuda":
        return 2
    l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 * MIB)
    wanted = math.ceil(2 * l2 / set_bytes(p, dtype))
    affordable = max(2, int(0.1 * host.free_bytes(device) // set_bytes(p, dtype)))
    return max(2, min(wanted, MAX_SETS, affordable))


def estimate_bytes(name: str, p: AttentionProblem, dtype: torch.dtype, sets: int) -> int:
    """Rough peak bytes of benchmarking `p`: the input sets, the call's outputs and grads,
    and for backends that materialise scores the N x N scores."""
    elem = torch.finfo(dtype).bits // 8
    total = (sets + 2) * set_bytes(p, dtype)
    if backends.get(name).materializes_scores:
        total += SCORE_COPIES * p.B * p.heads * p.N * p.N * elem
    return total


def _views(buf: torch.Tensor, p: AttentionProblem, channels_last: bool) -> tuple[torch.Tensor, ...]:
    """q, k, v (B, h, N, d) as patch.py hands them over: views of AAttn's interleaved qkv."""
    qkv = buf if channels_last else buf.transpose(1, 2)  # (B, N, h*3d)
    q, k, v = (
        qkv.view(p.B, p.N, p.heads, 3 * p.head_dim)
        .permute(0, 2, 3, 1)
        .split([p.head_dim] * 3, dim=2)
    )
    return q.mT, k.mT, v.mT


def bench_problem(
    backend: backends.Backend,
    p: AttentionProblem,
    dtype: torch.dtype,
    device: torch.device,
    warmup: int,
    repeats: int,
    sets: int | None = None,
    seed: int = 0,
) -> dict[str, float | None]:
    """fwd and fwd+bwd median ms, and the fwd+bwd call's peak memory (MiB; None on a CPU).

    Call it inside `backend.context()`: a forced SDPA kernel is selected there.
    """
    sets = sets or input_sets(p, dtype, device)
    # Fused kernels get the channels-last copy patch.py makes; eager keeps the conv's layout.
    channels_last = getattr(backend, "contiguous_qkv", True)
    shape = (p.B, p.N, 3 * p.heads * p.head_dim)
    if not channels_last:
        shape = (p.B, 3 * p.heads * p.head_dim, p.N)
    gen = torch.Generator(device=device).manual_seed(seed)
    bufs = [
        torch.randn(shape, device=device, dtype=dtype, generator=gen).requires_grad_()
        for _ in range(sets)
    ]
    douts = [
        torch.randn(p.B, p.N, p.heads, p.head_dim, device=device, dtype=dtype, generator=gen)
        for _ in range(sets)
    ]

    def forward(i: int) -> torch.Tensor:
        return backend.fn(*_views(bufs[i % sets], p, channels_last))

    def forward_backward(i: int) -> None:
        forward(i).backward(douts[i % sets])

    def drop_grad(i: int) -> None:
        bufs[i % sets].grad = None

    with torch.enable_grad():
        fwd_ms = median_ms(forward, device, warmup, repeats)
        fwdbwd_ms = median_ms(forward_backward, device, warmup, repeats, prepare=drop_grad)
        peak = None
        if device.type == "cuda":
            drop_grad(0)
            host.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            forward_backward(0)
            host.synchronize(device)
            peak = (torch.cuda.max_memory_allocated(device) - before) / MIB
    return {"fwd_ms": fwd_ms, "fwdbwd_ms": fwdbwd_ms, "peak_mem_mb": peak}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


# --------------------------------------------------------------------------- #
# One backend


def run(
    name: str,
    shapes: Mapping[str, Any],
    settings: Mapping[str, Any],
    device: torch.device,
    matmul_peak: float | None = None,
    min_repeats: int = MIN_GPU_REPEATS,
    log: logging.Logger = LOG,
) -> list[dict[str, Any]]:
    """Rows of results/kernels/<name>.csv: every (problem, dtype), ok or the reason it is not.

    `settings` is config's `kernels` section (dtypes, warmup, repeats, seq_lens,
    cpu_seq_lens, cpu_repeats). A CPU runs the tiny sweep (cpu_seq_lens,
    cpu_repeats) in fp32 and bf16 only.
    """
    backend = backends.get(name)
    cpu = device.type != "cuda"
    dtypes = [d for d in settings["dtypes"] if not cpu or d in CPU_DTYPES]
    seq_lens = settings["cpu_seq_lens"] if cpu else settings["seq_lens"]
    repeats = settings["cpu_repeats"] if cpu else max(settings["repeats"], min_repeats)
    warmup = min(settings["warmup"], CPU_MAX_WARMUP) if cpu else settings["warmup"]
    if not cpu and repeats != settings["repeats"]:
        log.info("repeats raised from %d to %d on the GPU", settings["repeats"], repeats)
    todo = problems(shapes, seq_lens)
    gpu = host.device_name(device)
    peak = matmul_peak
    if peak is None and todo and device.type in backend.devices:
        peak = matmul_peak_tflops(device, repeats=20 if not cpu else max(3, repeats))
    log.info(
        "%s on %s (%s): %d problems x %s; matmul ceiling %.1f TFLOP/s (%s)",
        name, device, gpu, len(todo), ",".join(dtypes), peak or float("nan"),
        "bf16 8192^3" if not cpu else "fp32 1024^3",
    )  # fmt: skip
    reasons = {
        (d, hd): backends.check(name, device, host.torch_dtype(d), head_dim=hd)
        for d in dtypes
        for hd in sorted({p.head_dim for p in todo})
    }
    runnable = any(reason is None for reason in reasons.values())
    rows = []
    # Entered once, outside every timed region (a failed activation is in `reasons`).
    with backend.context() if runnable else contextlib.nullcontext():
        for dtype_name in dtypes:
            for p in todo:
                row = {
                    "backend": name, "device": str(device), "gpu": gpu, "dtype": dtype_name,
                    "kind": p.kind, "phase": p.phase, "B": p.B, "heads": p.heads, "N": p.N,
                    "head_dim": p.head_dim, "fwd_flops": p.fwd_flops,
                    "fwdbwd_flops": p.fwdbwd_flops, "matmul_peak_tflops": _sig(peak),
                }  # fmt: skip
                reason = reasons[(dtype_name, p.head_dim)]
                row.update(_measure(backend, p, dtype_name, device, warmup, repeats, peak, reason))
                _log_row(log, row)
                rows.append({c: row.get(c) for c in COLUMNS})
    return rows


def _measure(
    backend: backends.Backend,
    p: AttentionProblem,
    dtype_name: str,
    device: torch.device,
    warmup: int,
    repeats: int,
    peak: float | None,
    reason: str | None,
) -> dict[str, Any]:
    if reason:
        return {"status": "unavailable", "reason": reason}
    dtype = host.torch_dtype(dtype_name)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the previous problem's cached blocks are free for this one
    sets = input_sets(p, dtype, device)
    need, free = estimate_bytes(backend.name, p, dtype, sets), host.free_bytes(device)
    if need > MEMORY_SHARE * free:
        return {
            "status": "skipped",
            "reason": f"needs about {need / 2**30:.1f} GiB, over {MEMORY_SHARE:.0%} of the "
            f"{free / 2**30:.1f} GiB free on {device.type}",
        }
    try:
        timing = bench_problem(backend, p, dtype, device, warmup, repeats, sets)
    except Exception as exc:  # a kernel's refusal or OOM at one size is a result, not a crash
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if host.is_oom(exc):
            return {"status": "skipped", "reason": f"out of memory: {_first_line(exc)}"}
        return {"status": "failed", "reason": _first_line(exc)}
    fwd_tflops = p.fwd_flops / timing["fwd_ms"] / 1e9
    fwdbwd_tflops = p.fwdbwd_flops / timing["fwdbwd_ms"] / 1e9
    return {
        "status": "ok",
        "reason": None,
        "fwd_ms": _sig(timing["fwd_ms"]),
        "fwdbwd_ms": _sig(timing["fwdbwd_ms"]),
        "fwd_tflops": _sig(fwd_tflops),
        "fwdbwd_tflops": _sig(fwdbwd_tflops),
        "pct_of_matmul_peak": _sig(100 * fwdbwd_tflops / peak) if peak else None,
        "peak_mem_mb": _sig(timing["peak_mem_mb"]),
        "repeats": repeats,
    }


def _sig(value: float | None, digits: int = 5) -> float | None:
    """Round to significant digits: a CPU's 1e-5 TFLOP/s must not print as 0."""
    return None if value is None else float(f"{value:.{digits}g}")


def _log_row(log: logging.Logger, row: Mapping[str, Any]) -> None:
    shape = (
        f"{row['B']}x{row['heads']}x{row['N']}x{row['head_dim']} {row['dtype']} ({row['phase']})"
    )
    if row["status"] != "ok":
        log.info("%-40s %s: %s", shape, row["status"], row["reason"])
        return
    mem = f", {row['peak_mem_mb']:.0f} MiB" if row["peak_mem_mb"] is not None else ""
    log.info(
        "%-40s fwd %.4f ms (%.2f TFLOP/s), fwd+bwd %.4f ms (%.2f TFLOP/s, %.1f%% of matmul)%s",
        shape, row["fwd_ms"], row["fwd_tflops"], row["fwdbwd_ms"], row["fwdbwd_tflops"],
        row["pct_of_matmul_peak"] or float("nan"), mem,
    )  # fmt: skip


def write_csv(
    path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], columns: Sequence[str] = COLUMNS
) -> None:
    """Write benchmark rows (default: the kernels CSV columns)."""
    io.write_csv(path, rows, columns)
