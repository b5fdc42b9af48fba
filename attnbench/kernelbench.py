"""The attention kernel micro-benchmark: time, TFLOP/s, share of the matmul ceiling, memory.

Counted FLOPs (FlashAttention's convention): forward 4*B*h*N^2*d (two matmuls of
2*B*h*N^2*d each); backward counted as 2.5x forward (five matmuls), so forward +
backward is 3.5x forward. Achieved TFLOP/s = counted FLOPs / median time, so the
rates of different kernels compare the same work. `pct_of_matmul_peak` is the
forward+backward rate as a percentage of a large bf16 matmul (8192^3; fp32 1024^3
on a CPU) timed on the same device in the same process.

Timing: warm-up, then the median of `repeats` calls, each between CUDA events (GPU)
or perf_counter stamps (CPU), on random data laid out as YOLO12's AAttn passes it
(views of one qkv buffer), rotating several input sets so small problems do not
run from a warm L2 cache. `fwd` is the forward as training runs it (autograd
recording); `fwdbwd` adds the backward from a random output gradient. Peak memory
is max_memory_allocated during one fwd+bwd call minus what was allocated before it
(the inputs), in MiB.

CLI for hosts without Snakemake: python -m attnbench.kernelbench {shapes,probe,parity,bench,table} --help
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attnbench import backends, io

LOG = logging.getLogger("attnbench.kernelbench")

COLUMNS = [
    "backend", "status", "reason", "device", "gpu", "dtype", "kind", "phase", "B", "heads", "N",
    "head_dim", "fwd_ms", "fwdbwd_ms", "fwd_flops", "fwdbwd_flops", "fwd_tflops", "fwdbwd_tflops",
    "pct_of_matmul_peak", "matmul_peak_tflops", "peak_mem_mb", "repeats",
]  # fmt: skip

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
CPU_DTYPES = ("float32", "bfloat16")  # fp16 attention on a CPU is nobody's training setup
BWD_FACTOR = 2.5
SWEEP_SHAPE = (8, 4, 32)  # B, heads, head_dim of the sequence-length sweep (YOLO12n layer 8)
MIN_GPU_REPEATS = 50
CPU_MAX_WARMUP = 3
# Backends that hold N x N score tensors: a fwd+bwd keeps about 8 of them alive
# (measured: sdpa_math at (8,8,6400,32) fp16 peaks at 7.7x one score tensor, FACTS §3).
MATERIALIZING = frozenset({"eager", "sdpa_math"})
SCORE_COPIES = 8
MEMORY_SHARE = 0.5  # skip a problem estimated above this share of free memory
MAX_SETS = 512  # (8,4,400,32) fp16 needs ~120 sets of 0.8 MB to exceed 2x an H100's L2
MATMUL = {"cuda": (8192, torch.bfloat16), "cpu": (1024, torch.float32)}
MIB = 2**20


@dataclass(frozen=True)
class Problem:
    """One attention problem: SDPA shape (B, heads, N, head_dim) and where it comes from."""

    kind: str  # model | sweep
    phase: str  # train | val | sweep
    B: int
    heads: int
    N: int
    head_dim: int

    @property
    def fwd_flops(self) -> int:
        return attention_flops(self.B, self.heads, self.N, self.head_dim)

    @property
    def fwdbwd_flops(self) -> int:
        return int(self.fwd_flops * (1 + BWD_FACTOR))


def attention_flops(B: int, heads: int, N: int, head_dim: int) -> int:
    """Forward FLOPs of attention: QK^T and PV, 2*B*h*N^2*d each."""
    return 4 * B * heads * N * N * head_dim


def problems(shapes: Mapping[str, Any], seq_lens: Iterable[int]) -> list[Problem]:
    """The model's distinct (phase, shape) calls from shapes.json, then the sweep over `seq_lens`."""
    order = {"train": 0, "val": 1}
    model = sorted(
        {
            Problem("model", c["phase"], c["B"], c["heads"], c["N"], c["head_dim"])
            for c in shapes.get("calls", [])
        },
        key=lambda p: (order.get(p.phase, 2), p.B, p.heads, p.N, p.head_dim),
    )
    B, heads, head_dim = SWEEP_SHAPE
    sweep = [Problem("sweep", "sweep", B, heads, n, head_dim) for n in sorted(set(seq_lens))]
    return model + sweep


# --------------------------------------------------------------------------- #
# Device helpers


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_bytes(device: torch.device) -> int:
    """Free memory where the problem lives: the GPU's, or the host's available RAM."""
    if device.type == "cuda":
        # Blocks cached by this process from earlier problems are free for the next one;
        # without this, one large math problem made later ones look out of memory.
        torch.cuda.empty_cache()
        return int(torch.cuda.mem_get_info(device)[0])
    import psutil

    return int(psutil.virtual_memory().available)


def device_name(device: torch.device) -> str | None:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from attnbench.envinfo import cpu_model

    return cpu_model()


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
    synchronize(device)
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
        synchronize(device)
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


def set_bytes(p: Problem, dtype: torch.dtype) -> int:
    """Bytes of one input set: the qkv buffer (3 x q) and the output gradient."""
    return 4 * p.B * p.N * p.heads * p.head_dim * torch.finfo(dtype).bits // 8


def input_sets(p: Problem, dtype: torch.dtype, device: torch.device) -> int:
    """How many input sets to rotate: enough to overflow twice the GPU's L2, within 10% of free memory."""
    if device.type != "cuda":
        return 2
    l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 * MIB)
    wanted = math.ceil(2 * l2 / set_bytes(p, dtype))
    affordable = max(2, int(0.1 * free_bytes(device) // set_bytes(p, dtype)))
    return max(2, min(wanted, MAX_SETS, affordable))


def estimate_bytes(name: str, p: Problem, dtype: torch.dtype, sets: int) -> int:
    """Rough peak bytes of benchmarking `p`: the input sets, the call's outputs and grads,
    and for materializing backends the N x N scores."""
    elem = torch.finfo(dtype).bits // 8
    total = (sets + 2) * set_bytes(p, dtype)
    if name in MATERIALIZING:
        total += SCORE_COPIES * p.B * p.heads * p.N * p.N * elem
    return total


def _views(buf: torch.Tensor, p: Problem, channels_last: bool) -> tuple[torch.Tensor, ...]:
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
    p: Problem,
    dtype: torch.dtype,
    device: torch.device,
    warmup: int,
    repeats: int,
    sets: int | None = None,
    seed: int = 0,
) -> dict[str, float | None]:
    """fwd and fwd+bwd median ms, and the fwd+bwd call's peak memory (MiB; None on a CPU)."""
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

    with backend.context(), torch.enable_grad():
        fwd_ms = median_ms(forward, device, warmup, repeats)
        fwdbwd_ms = median_ms(forward_backward, device, warmup, repeats, prepare=drop_grad)
        peak = None
        if device.type == "cuda":
            drop_grad(0)
            synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            forward_backward(0)
            synchronize(device)
            peak = (torch.cuda.max_memory_allocated(device) - before) / MIB
    return {"fwd_ms": fwd_ms, "fwdbwd_ms": fwdbwd_ms, "peak_mem_mb": peak}


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


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
    cpu_seq_lens, cpu_repeats; optional sweep_dtypes). A CPU runs the tiny sweep
    (cpu_seq_lens, cpu_repeats) in fp32 and bf16 only.
    """
    backend = backends.get(name)
    cpu = device.type != "cuda"
    dtypes = [d for d in settings["dtypes"] if not cpu or d in CPU_DTYPES]
    sweep_dtypes = [d for d in settings.get("sweep_dtypes") or dtypes if d in dtypes]
    seq_lens = settings["cpu_seq_lens"] if cpu else settings["seq_lens"]
    repeats = settings["cpu_repeats"] if cpu else max(settings["repeats"], min_repeats)
    warmup = min(settings["warmup"], CPU_MAX_WARMUP) if cpu else settings["warmup"]
    if not cpu and repeats != settings["repeats"]:
        log.info("repeats raised from %d to %d on the GPU", settings["repeats"], repeats)
    todo = problems(shapes, seq_lens)
    gpu = device_name(device)
    peak = matmul_peak
    if peak is None and todo and device.type in backend.devices:
        peak = matmul_peak_tflops(device, repeats=20 if not cpu else max(3, repeats))
    log.info(
        "%s on %s (%s): %d problems x %s; matmul ceiling %.1f TFLOP/s (%s)",
        name, device, gpu, len(todo), ",".join(dtypes), peak or float("nan"),
        "bf16 8192^3" if not cpu else "fp32 1024^3",
    )  # fmt: skip
    reasons: dict[tuple[str, int], str | None] = {}
    rows = []
    for dtype_name in dtypes:
        for p in todo:
            if p.kind == "sweep" and dtype_name not in sweep_dtypes:
                continue
            row = {
                "backend": name, "device": str(device), "gpu": gpu, "dtype": dtype_name,
                "kind": p.kind, "phase": p.phase, "B": p.B, "heads": p.heads, "N": p.N,
                "head_dim": p.head_dim, "fwd_flops": p.fwd_flops, "fwdbwd_flops": p.fwdbwd_flops,
                "matmul_peak_tflops": _sig(peak),
            }  # fmt: skip
            row.update(_measure(backend, p, dtype_name, device, warmup, repeats, peak, reasons))
            _log_row(log, row)
            rows.append({c: row.get(c) for c in COLUMNS})
    return rows


def _measure(
    backend: backends.Backend,
    p: Problem,
    dtype_name: str,
    device: torch.device,
    warmup: int,
    repeats: int,
    peak: float | None,
    reasons: dict[tuple[str, int], str | None],
) -> dict[str, Any]:
    dtype = DTYPES[dtype_name]
    key = (dtype_name, p.head_dim)
    if key not in reasons:
        reasons[key] = backends.check(backend.name, device, dtype, head_dim=p.head_dim)
    if reasons[key]:
        return {"status": "unavailable", "reason": reasons[key]}
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the previous problem's cached blocks are free for this one
    sets = input_sets(p, dtype, device)
    need, free = estimate_bytes(backend.name, p, dtype, sets), free_bytes(device)
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
        if _is_oom(exc):
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


# --------------------------------------------------------------------------- #
# A compact table of a session's results (for people, at the end of a run)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _num(text: str | None, fmt: str) -> str:
    try:
        return format(float(text), fmt) if text not in (None, "") else "-"
    except ValueError:
        return "-"


def summary_table(
    kernel_csvs: Iterable[str | os.PathLike], parity_csvs: Iterable[str | os.PathLike] = ()
) -> str:
    """Model shapes (fwd+bwd ms, TFLOP/s, % of matmul, MiB), the sweep (fwd+bwd ms by N), parity."""
    rows = [r for path in kernel_csvs for r in _read_csv(Path(path))]
    lines = []
    model = [r for r in rows if r["kind"] == "model"]
    if model:
        lines.append(
            f"{'backend':<15}{'dtype':<10}{'phase':<6}{'B x h x N x d':<18}"
            f"{'fwd ms':>9}{'f+b ms':>9}{'TFLOP/s':>9}{'%mm':>7}{'MiB':>8}  status"
        )
        groups: dict[tuple[str, str], list[dict[str, str]]] = {}
        for r in model:
            groups.setdefault((r["backend"], r["dtype"]), []).append(r)
        for (backend, dtype), group in groups.items():
            if all(r["status"] != "ok" for r in group):  # one line for a backend that did not run
                lines.append(f"{backend:<15}{dtype:<10}{'all shapes':<60}  "
                             f"{group[0]['status']}: {group[0]['reason'][:70]}")  # fmt: skip
                continue
            for r in group:
                shape = f"{r['B']}x{r['heads']}x{r['N']}x{r['head_dim']}"
                status = (
                    r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason'][:60]}"
                )
                lines.append(
                    f"{backend:<15}{dtype:<10}{r['phase']:<6}{shape:<18}"
                    f"{_num(r['fwd_ms'], '.4f'):>9}{_num(r['fwdbwd_ms'], '.4f'):>9}"
                    f"{_num(r['fwdbwd_tflops'], '.3g'):>9}{_num(r['pct_of_matmul_peak'], '.3g'):>7}"
                    f"{_num(r['peak_mem_mb'], '.0f'):>8}  {status}"
                )
    sweep = [r for r in rows if r["kind"] == "sweep"]
    if sweep:
        lens = sorted({int(r["N"]) for r in sweep})
        lines += ["", "sweep (B={}, h={}, d={}): fwd+bwd ms by N".format(*SWEEP_SHAPE)]
        lines.append(f"{'backend':<15}{'dtype':<10}" + "".join(f"{n:>10}" for n in lens))
        cells: dict[tuple[str, str], dict[int, str]] = {}
        for r in sweep:
            cell = _num(r["fwdbwd_ms"], ".3f") if r["status"] == "ok" else r["status"][:7]
            cells.setdefault((r["backend"], r["dtype"]), {})[int(r["N"])] = cell
        for (backend, dtype), by_n in cells.items():
            lines.append(
                f"{backend:<15}{dtype:<10}" + "".join(f"{by_n.get(n, '-'):>10}" for n in lens)
            )
    parity_rows = [r for path in parity_csvs for r in _read_csv(Path(path))]
    if parity_rows:
        lines += ["", f"{'parity':<15}{'dtype':<10}{'max rel err':>12}{'threshold':>11}  result"]
        groups = {}
        for r in parity_rows:
            groups.setdefault((r["backend"], r["dtype"]), []).append(r)
        for (backend, dtype), group in groups.items():
            errs = [
                float(r[c])
                for r in group
                for c in ("rel_err_out", "rel_err_dq", "rel_err_dk", "rel_err_dv")
                if r.get(c) not in (None, "")
            ]
            statuses = sorted({r["status"] for r in group})
            lines.append(
                f"{backend:<15}{dtype:<10}{(max(errs) if errs else float('nan')):>12.2e}"
                f"{_num(group[0]['threshold'], '.0e'):>11}  {','.join(statuses)}"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------- #
# CLI: the workflow's attention steps without Snakemake (e.g. on an offline GPU host)


def _setup_logging(path: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=handlers,
        force=True,
    )


@contextlib.contextmanager
def _gpu_job(device_spec: str) -> Iterator[torch.device]:
    """Hold a GPU slot (attnbench.gpuslots) before CUDA starts, then pick the device."""
    from attnbench import config as cfg
    from attnbench import envinfo, gpuslots

    wants_gpu = str(device_spec).lower() != "cpu" and cfg.cuda_hint()
    with gpuslots.acquire(1 if wants_gpu else 0):
        yield envinfo.select_device(device_spec)


def _activate_flash(names: Iterable[str], status: str | None) -> dict[str, Any] | None:
    """Activate the built flash-attn when the flash_attn backend is asked for; its status."""
    if not status or "flash_attn" not in names:
        return None
    from attnbench import flashbuild

    return flashbuild.activate(status)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m attnbench.kernelbench",
        description="The workflow's attention steps without Snakemake; settings from --config.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--config", default="config.yaml")
        cmd.add_argument("--log", help="also write the log to this file")
        return cmd

    shapes = add("shapes", "results/attention/shapes.json from the model (needs ultralytics)")
    shapes.add_argument("--out", default="results/attention/shapes.json")
    shapes.add_argument("--model")
    shapes.add_argument("--imgsz", type=int)
    shapes.add_argument("--batch", type=int)
    probe = add("probe", "results/env/backends.json: which backends run here, and why not")
    probe.add_argument("--out", default="results/env/backends.json")
    parity = add("parity", "results/parity/<backend>.csv: errors against a float64 reference")
    parity.add_argument("--out-dir", default="results/parity")
    bench = add("bench", "results/kernels/<backend>.csv: the kernel micro-benchmark")
    bench.add_argument("--out-dir", default="results/kernels")
    bench.add_argument("--sweep-dtypes", nargs="+", choices=list(DTYPES))
    bench.add_argument("--repeats", type=int)
    bench.add_argument("--warmup", type=int)
    for cmd in (parity, bench):
        cmd.add_argument("--shapes", default="results/attention/shapes.json")
    for cmd in (probe, parity, bench):
        cmd.add_argument("--backends", nargs="+", help="default: config backends")
        cmd.add_argument("--device", help="auto | cpu | CUDA index (default: config train.device)")
        cmd.add_argument("--flash-status", default="results/env/flash_attn.json")
    table = sub.add_parser("table", help="print a compact table of kernels and parity CSVs")
    table.add_argument("--kernels-dir", default="results/kernels")
    table.add_argument("--parity-dir", default="results/parity")
    table.add_argument("--backends", nargs="+", help="default: every CSV in the folders")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one attention step of the workflow from the command line."""
    from attnbench import config as cfg
    from attnbench.io import read_json, write_json
    from attnbench.scriptutil import UserError

    args = _parser().parse_args(argv)
    if args.command == "table":
        pick = (lambda p: p.stem in args.backends) if args.backends else (lambda p: True)
        kernels = [p for p in sorted(Path(args.kernels_dir).glob("*.csv")) if pick(p)]
        parity_files = [p for p in sorted(Path(args.parity_dir).glob("*.csv")) if pick(p)]
        print(summary_table(kernels, parity_files))
        return 0
    _setup_logging(args.log)
    try:
        config = cfg.load_file(args.config)
        train = config["train"]  # the study's settings, not the demo's overrides
        if args.command == "shapes":
            from attnbench import shapes as shapes_mod

            os.environ.setdefault("YOLO_OFFLINE", "1")
            os.environ.setdefault(
                "YOLO_CONFIG_DIR", str(Path(args.out).parents[1] / ".ultralytics")
            )
            doc = shapes_mod.attention_shapes(
                args.model or train["model"],
                args.imgsz or train["imgsz"],
                args.batch or train["batch"],
            )
            write_json(args.out, doc)
            LOG.info("%d attention calls -> %s", len(doc["calls"]), args.out)
            return 0
        names = args.backends or config["backends"]
        flash = _activate_flash(names, args.flash_status)
        with _gpu_job(args.device or train["device"]) as device:
            if args.command == "probe":
                from attnbench import envinfo

                dtype = backends.kernel_dtype(device, train["amp"], train["cast"])
                doc = {
                    "environment": envinfo.environment(device),
                    "backends": envinfo.probe_backends(names, device, dtype),
                }
                if flash is not None:
                    doc["flash_attn_build"] = flash
                write_json(args.out, doc)
                for name, info in doc["backends"].items():
                    LOG.info("%-15s %s", name, "available" if info["available"] else info["reason"])
                return 0
            shapes_doc = read_json(args.shapes)
            if args.command == "parity":
                from attnbench import parity

                thresholds = config["parity"]["thresholds"]
                for name in names:
                    rows = parity.run(name, shapes_doc["calls"], thresholds, device)
                    write_csv(Path(args.out_dir) / f"{name}.csv", rows, parity.COLUMNS)
                    LOG.info("%s parity: %s", name, sorted({r["status"] for r in rows}))
                return 0
            settings = dict(config["kernels"])
            for key in ("sweep_dtypes", "repeats", "warmup"):
                if getattr(args, key) is not None:
                    settings[key] = getattr(args, key)
            peak = matmul_peak_tflops(device) if device.type == "cuda" else None
            for name in names:
                rows = run(name, shapes_doc, settings, device, matmul_peak=peak)
                write_csv(Path(args.out_dir) / f"{name}.csv", rows)
            return 0
    except (UserError, cfg.ConfigError) as exc:
        LOG.error("%s", exc)
        print(f"Error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
