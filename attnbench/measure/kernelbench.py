"""The attention kernel micro-benchmark: time, TFLOP/s, share of the matmul ceiling, memory.

Counted FLOPs (FlashAttention's convention): forward 4*B*h*N^2*d (two matmuls of
2*B*h*N^2*d each); backward counted as 2.5x forward (five matmuls), so forward +
backward is 3.5x forward (`attnbench.backends.shapes.AttentionProblem`). Achieved TFLOP/s =
counted FLOPs / median time, so the rates of different kernels compare the same
work. `pct_of_matmul_peak` is the forward+backward rate as a percentage of a large
bf16 matmul (8192^3; fp32 1024^3 on a CPU) timed on the same device in the same process.

Two times per call (`attnbench.measure.kerneltiming`): `fwd_ms`/`fwdbwd_ms` time one call as
training makes it (host dispatch included; warm-up, then the median of `repeats` calls
between CUDA events or perf_counter stamps, rotating several input sets laid out as
YOLO12's AAttn passes them, so small problems do not run from a warm L2 cache);
`graph_fwd_ms`/`graph_fwdbwd_ms` replay the same call captured in a CUDA graph (kernel
time without host dispatch; L2 flushed before each replay). `fwd` is the forward as
training runs it (autograd recording); `fwdbwd` adds the backward from a fixed random
output gradient. Peak memory is max_memory_allocated during one fwd+bwd call minus what
was allocated before it (the inputs), in MiB. The backend's `activate` context (e.g. a
forced SDPA kernel) is entered once around the whole measurement, outside every timed
region.

The whole benchmark (every problem, then every problem again) runs `repetitions` times
in one job; each row holds the median of the repetitions and their spread
((max - min) / median, in %), so a reader sees how far one number can be trusted.
Each repetition starts with an untimed pass over its first problem (on an H200 the first,
smallest problem after the matmul ceiling was the only one whose graph time varied over
repetitions: up to 9.4%, the rest within 0.7%). After a failed CUDA-graph capture a run
captures no more graphs (`kerneltiming.GraphSwitch`); later rows say so in `graph_note`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from attnbench import host, io
from attnbench.backends import registry as backends
from attnbench.backends.shapes import AttentionProblem, problems
from attnbench.measure.kernelbench_log import log_progress, log_row
from attnbench.measure.kerneltiming import (
    GraphSwitch,
    finite,
    first_line,
    graph_times,
    l2_bytes,
    matmul_peak_tflops,
    median_ms,
    spread_pct,
)

__all__ = ["COLUMNS", "bench_problem", "combine", "median_ms", "run", "spread_pct", "write_csv"]

LOG = logging.getLogger("attnbench.measure.kernelbench")

TIMES = ("fwd_ms", "fwdbwd_ms", "graph_fwd_ms", "graph_fwdbwd_ms")
SPREADS = tuple(f"{t}_spread_pct" for t in TIMES)
COLUMNS = [
    "backend", "status", "reason", "device", "gpu", "dtype", "kind", "phase", "B", "heads", "N",
    "head_dim", "fwd_ms", "fwdbwd_ms", "fwd_flops", "fwdbwd_flops", "fwd_tflops", "fwdbwd_tflops",
    "pct_of_matmul_peak", "matmul_peak_tflops", "peak_mem_mb", "repeats",
    # Added with CUDA-graph timing and repetitions (appended: older readers keep their positions).
    "graph_fwd_ms", "graph_fwdbwd_ms", "graph_fwd_tflops", "graph_fwdbwd_tflops", "graph_note",
    *SPREADS, "repetitions",
]  # fmt: skip

CPU_DTYPES = ("float32", "bfloat16")  # fp16 attention on a CPU is nobody's training setup
MIN_GPU_REPEATS = 50
CPU_MAX_WARMUP = 3
# A fwd+bwd of a backend that materialises the N x N scores keeps about 8 of them alive
# (measured on an H100: sdpa_math at (8,8,6400,32) fp16 peaks at 7.7x one score tensor).
SCORE_COPIES = 8
MEMORY_SHARE = 0.5  # skip a problem estimated above this share of free memory
MAX_SETS = 512  # (8,4,400,32) fp16 needs ~120 sets of 0.8 MB to exceed 2x an H100's L2
MIB = 2**20


# --------------------------------------------------------------------------- #
# One problem


def set_bytes(p: AttentionProblem, dtype: torch.dtype) -> int:
    """Bytes of one input set: the qkv buffer (3 x q) and the output gradient."""
    return 4 * p.B * p.N * p.heads * p.head_dim * torch.finfo(dtype).bits // 8


def input_sets(p: AttentionProblem, dtype: torch.dtype, device: torch.device) -> int:
    """How many input sets to rotate: enough to overflow twice the GPU's L2, within 10% of free memory."""
    if device.type != "cuda":
        return 2
    wanted = math.ceil(2 * l2_bytes(device) / set_bytes(p, dtype))
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
    graphs: bool | GraphSwitch = True,
    log: logging.Logger = LOG,
) -> dict[str, Any]:
    """fwd and fwd+bwd median ms, direct and as CUDA-graph replays (while `graphs` allows),
    and the fwd+bwd call's peak memory (MiB; None on a CPU). `graph_note` says why a graph
    time is missing.

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
        drop_grad(0)
        graph = graph_times(forward, bufs[0], douts[0], device, repeats, graphs, log)
    return {"fwd_ms": fwd_ms, "fwdbwd_ms": fwdbwd_ms, "peak_mem_mb": peak, **graph}


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
    cpu_seq_lens, cpu_repeats, repetitions, graphs; the last two default to 1 and true).
    A CPU runs the tiny sweep (cpu_seq_lens, cpu_repeats) in fp32 and bf16 only.
    """
    backend = backends.get(name)
    cpu = device.type != "cuda"
    dtypes = [d for d in settings["dtypes"] if not cpu or d in CPU_DTYPES]
    seq_lens = settings["cpu_seq_lens"] if cpu else settings["seq_lens"]
    repeats = settings["cpu_repeats"] if cpu else max(settings["repeats"], min_repeats)
    warmup = min(settings["warmup"], CPU_MAX_WARMUP) if cpu else settings["warmup"]
    repetitions = int(settings.get("repetitions", 1))
    graphs = bool(settings.get("graphs", True))
    switch = GraphSwitch(graphs)  # off for the rest of this run after a failed capture
    if not cpu and repeats != settings["repeats"]:
        log.info("repeats raised from %d to %d on the GPU", settings["repeats"], repeats)
    todo = [(d, p) for d in dtypes for p in problems(shapes, seq_lens)]
    gpu = host.device_name(device)
    reasons = {
        (d, hd): backends.check(name, device, host.torch_dtype(d), head_dim=hd)
        for d in dtypes
        for hd in sorted({p.head_dim for _, p in todo})
    }
    runnable = [(d, p) for d, p in todo if reasons[(d, p.head_dim)] is None]
    log.info(
        "%s on %s (%s): %d problems x %s, %d runnable; %d repetition(s) of %d timed calls "
        "after %d warm-up; CUDA graphs %s",
        name, device, gpu, len(todo) // max(1, len(dtypes)), ",".join(dtypes), len(runnable),
        repetitions, repeats, warmup, "on" if graphs and not cpu else "off",
    )  # fmt: skip
    measured: dict[tuple[str, AttentionProblem], list[dict[str, Any]]] = {k: [] for k in runnable}
    peaks: list[float] = []
    start = time.monotonic()
    # Entered once, outside every timed region (a failed activation is in `reasons`).
    with backend.context() if runnable else contextlib.nullcontext():
        for rep in range(1, repetitions + 1) if runnable else ():
            peak = matmul_peak
            if peak is None:
                peak = matmul_peak_tflops(device, repeats=20 if not cpu else max(3, repeats))
            peaks.append(peak)
            log.info(
                "repetition %d/%d: matmul ceiling %.1f TFLOP/s (%s)",
                rep, repetitions, peak, "fp32 1024^3" if cpu else "bf16 8192^3",
            )  # fmt: skip
            # Untimed pass over the first problem: see the module docstring.
            _measure(backend, runnable[0][1], runnable[0][0], device, warmup, repeats, switch, log)
            for i, (dtype_name, p) in enumerate(runnable, start=1):
                result = _measure(backend, p, dtype_name, device, warmup, repeats, switch, log)
                measured[(dtype_name, p)].append(result)
                log_progress(log, i, len(runnable), rep, repetitions, start, dtype_name, p, result)
    peak = _sig(statistics.median(peaks) if peaks else matmul_peak)
    rows = []
    for dtype_name, p in todo:
        row = {
            "backend": name, "device": str(device), "gpu": gpu, "dtype": dtype_name,
            "kind": p.kind, "phase": p.phase, "B": p.B, "heads": p.heads, "N": p.N,
            "head_dim": p.head_dim, "fwd_flops": p.fwd_flops, "fwdbwd_flops": p.fwdbwd_flops,
            "matmul_peak_tflops": peak,
        }  # fmt: skip
        reason = reasons[(dtype_name, p.head_dim)]
        if reason:
            row.update(status="unavailable", reason=reason, repetitions=0)
        else:
            row.update(_rates(p, combine(measured[(dtype_name, p)]), peak))
        log_row(log, row)
        rows.append({c: row.get(c) for c in COLUMNS})
    return rows


def _measure(
    backend: backends.Backend,
    p: AttentionProblem,
    dtype_name: str,
    device: torch.device,
    warmup: int,
    repeats: int,
    graphs: GraphSwitch,
    log: logging.Logger,
) -> dict[str, Any]:
    """One repetition of one problem: raw times, or why there are none."""
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
        timing = bench_problem(
            backend, p, dtype, device, warmup, repeats, sets, graphs=graphs, log=log
        )
    except Exception as exc:  # a kernel's refusal or OOM at one size is a result, not a crash
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if host.is_oom(exc):
            return {"status": "skipped", "reason": f"out of memory: {first_line(exc)}"}
        return {"status": "failed", "reason": first_line(exc)}
    return {"status": "ok", "reason": None, "repeats": repeats, **timing}


# --------------------------------------------------------------------------- #
# Repetitions


def combine(repetitions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One row's values from the repetitions of one problem: the median of each time over
    the repetitions that ran, its spread, and how many ran (`repetitions`).

    A problem that ran in none keeps the first repetition's status and reason; one that
    ran in some is `ok` and its reason says what happened to the others.
    """
    ok = [r for r in repetitions if r.get("status") == "ok"]
    if not ok:
        first = repetitions[0] if repetitions else {"status": "failed", "reason": "not run"}
        return {"status": first["status"], "reason": first["reason"], "repetitions": 0}
    out: dict[str, Any] = {"status": "ok", "reason": None, "repetitions": len(ok)}
    out["repeats"] = ok[0].get("repeats")
    if len(ok) < len(repetitions):
        bad = next(r for r in repetitions if r.get("status") != "ok")
        out["reason"] = (
            f"{len(repetitions) - len(ok)} of {len(repetitions)} repetitions "
            f"{bad['status']}: {bad['reason']}"
        )
    for column in (*TIMES, "peak_mem_mb"):
        values = [r.get(column) for r in ok if finite(r.get(column))]
        out[column] = statistics.median(values) if values else None
    for column, spread in zip(TIMES, SPREADS, strict=True):
        out[spread] = spread_pct(r.get(column) for r in ok)
    notes = list(dict.fromkeys(r["graph_note"] for r in ok if r.get("graph_note")))
    out["graph_note"] = " | ".join(notes) or None
    return out


def _rates(p: AttentionProblem, values: Mapping[str, Any], peak: float | None) -> dict[str, Any]:
    """Rounded times and spreads, with TFLOP/s and % of the matmul ceiling from the medians."""
    out = dict(values)
    for column in (*TIMES, *SPREADS, "peak_mem_mb"):
        out[column] = _sig(values.get(column))
    if values.get("status") != "ok":
        return out
    for prefix in ("", "graph_"):
        for what, flops in (("fwd", p.fwd_flops), ("fwdbwd", p.fwdbwd_flops)):
            ms = values.get(f"{prefix}{what}_ms")
            out[f"{prefix}{what}_tflops"] = _sig(flops / ms / 1e9) if finite(ms) and ms else None
    rate = out.get("fwdbwd_tflops")
    out["pct_of_matmul_peak"] = _sig(100 * rate / peak) if rate and peak else None
    return out


def _sig(value: float | None, digits: int = 5) -> float | None:
    """Round to significant digits: a CPU's 1e-5 TFLOP/s must not print as 0."""
    return None if value is None else float(f"{value:.{digits}g}")


def write_csv(
    path: str | os.PathLike,
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str] = COLUMNS,
    *,
    schema: io.Schema | None = None,
) -> None:
    """Write benchmark rows (default: the kernels CSV columns), checked against `schema`."""
    io.write_csv(path, rows, columns, schema=schema)
