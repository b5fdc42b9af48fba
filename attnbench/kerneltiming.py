"""Timing primitives of the kernel benchmark: calls timed as training makes them, the same
call captured in a CUDA graph and replayed, and the dense-matmul ceiling.

A call timed directly includes the host's dispatch (Python, autograd, kernel launches):
at YOLO12's small shapes that is most of it. A CUDA graph replays the captured kernels
without the host, so its time is the kernels' own. Capture follows torch.cuda.graph's
documented recipe: warm up on a side stream (lazy handles, cuDNN plans, autotuning),
synchronise, capture on static tensors, replay. Anything that cannot be captured
(a host sync inside the call, an allocation the capture refuses, OOM) becomes a reason
string, never an exception: the direct timings of the row stand on their own.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from attnbench import host

LOG = logging.getLogger("attnbench.kernelbench")

MATMUL = {"cuda": (8192, torch.bfloat16), "cpu": (1024, torch.float32)}
MIB = 2**20
GRAPH_WARMUP = 3  # side-stream calls before capture (torch.cuda.make_graphed_callables uses 3)
GRAPH_RTOL = 2e-2  # replay vs a direct call: same kernels, but backward may sum atomically
DEFAULT_L2 = 50 * MIB


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


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def spread_pct(values: Iterable[float | None]) -> float | None:
    """(max - min) / median of the finite values, in %; None with fewer than two."""
    kept = [float(v) for v in values if finite(v)]
    if len(kept) < 2:
        return None
    mid = statistics.median(kept)
    return 100 * (max(kept) - min(kept)) / mid if mid else None


# --------------------------------------------------------------------------- #
# CUDA graphs


def l2_bytes(device: torch.device) -> int:
    """The GPU's L2 size (50 MiB if torch does not report it)."""
    props = torch.cuda.get_device_properties(device)
    return int(getattr(props, "L2_cache_size", 0) or DEFAULT_L2)


def root_cause(exc: BaseException) -> str:
    """The first line of the error that started it: a failed capture_end hides the op that broke it."""
    seen = exc
    while True:
        earlier = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
        if earlier is None:
            break
        seen = earlier
    text = str(seen).strip()
    first = text.splitlines()[0][:240] if text else ""
    return f"{type(seen).__name__}: {first}" if first else type(seen).__name__


def _rel_error(got: Sequence[torch.Tensor], want: Sequence[torch.Tensor]) -> float:
    num = sum(float((g.float() - w.float()).norm()) ** 2 for g, w in zip(got, want, strict=True))
    den = sum(float(w.float().norm()) ** 2 for w in want)
    return math.sqrt(num / den) if den else math.sqrt(num)


def graph_ms(
    call: Callable[[], Sequence[torch.Tensor]],
    device: torch.device,
    repeats: int,
    flush: torch.Tensor | None = None,
    log: logging.Logger = LOG,
) -> tuple[float | None, str | None]:
    """Median ms of replaying `call` captured in a CUDA graph, or (None, why not).

    `call` works on static tensors and returns the tensors it computes. The replay is
    checked against a direct call (its outputs are poisoned with NaN first, so an
    unwritten output fails). Before each timed replay `flush` is zeroed, outside the
    events, so the replay reads its inputs from memory as training does, not from L2.
    """
    if device.type != "cuda":
        return None, f"CUDA graphs need a CUDA GPU ({device.type})"
    stream = torch.cuda.current_stream(device)
    graph = outputs = None
    try:
        with torch.cuda.device(device):
            side = torch.cuda.Stream(device)
            side.wait_stream(stream)
            with torch.cuda.stream(side):
                for _ in range(GRAPH_WARMUP):
                    call()
            stream.wait_stream(side)
            reference = [t.detach().clone() for t in call()]
            torch.cuda.synchronize(device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                outputs = call()
    except Exception as exc:  # any refusal of the capture is a result
        # torch.cuda.graph.__exit__ calls capture_end before leaving its stream context:
        # when capture_end raises, the capture stream stays current. Put ours back.
        torch.cuda.set_stream(stream)
        del graph, outputs
        why = f"capture failed: {root_cause(exc)}"
        return None, _after_failure(device, why, log)
    try:
        with torch.cuda.device(device):
            for out in outputs:
                out.detach().fill_(float("nan"))
            graph.replay()
            torch.cuda.synchronize(device)
            err = _rel_error([o.detach() for o in outputs], reference)
            if not err <= GRAPH_RTOL:  # NaN fails too
                return None, (
                    f"replay differs from a direct call (relative error {err:.2g}, "
                    f"over {GRAPH_RTOL:g}): not timed"
                )
            events = [
                (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                for _ in range(repeats)
            ]
            graph.replay()  # the first replay after capture may upload the graph
            for start, end in events:
                if flush is not None:
                    flush.zero_()
                start.record()
                graph.replay()
                end.record()
            torch.cuda.synchronize(device)
            times = [start.elapsed_time(end) for start, end in events]
    except Exception as exc:
        return None, _after_failure(device, f"replay failed: {root_cause(exc)}", log)
    finally:
        del graph, outputs
    return statistics.median(times), None


def _after_failure(device: torch.device, why: str, log: logging.Logger) -> str:
    """Log a failed capture or replay and check the GPU is still usable (a sticky error is not)."""
    log.warning("CUDA graph: %s", why)
    try:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
    except Exception as exc:
        log.error("the GPU is unusable after the failed CUDA graph: %s", root_cause(exc))
        return f"{why}; the GPU then failed too: {root_cause(exc)}"
    return why


def graph_times(
    forward: Callable[[int], torch.Tensor],
    buf: torch.Tensor,
    dout: torch.Tensor,
    device: torch.device,
    repeats: int,
    enabled: bool,
    log: logging.Logger,
) -> dict[str, Any]:
    """The forward, and forward + backward (torch.autograd.grad with the fixed `dout`),
    each captured on the static input `buf` and replayed."""
    times: dict[str, Any] = {"graph_fwd_ms": None, "graph_fwdbwd_ms": None, "graph_note": None}
    if not enabled:
        times["graph_note"] = "CUDA graphs switched off (kernels.graphs: false)"
        return times
    if device.type != "cuda":
        times["graph_note"] = f"no CUDA graphs on {device.type}"
        return times
    try:
        flush = torch.empty(2 * l2_bytes(device), dtype=torch.uint8, device=device)
    except Exception as exc:  # without it the replays run from a warm L2; say so
        flush = None
        log.warning("no L2 flush buffer (%s): graph replays may read from L2", root_cause(exc))

    def fwd() -> tuple[torch.Tensor, ...]:
        return (forward(0),)

    def fwdbwd() -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(forward(0), (buf,), dout)

    notes = []
    calls = (("graph_fwd_ms", fwd, "fwd"), ("graph_fwdbwd_ms", fwdbwd, "fwd+bwd"))
    for column, call, what in calls:
        times[column], why = graph_ms(call, device, repeats, flush, log)
        if why:
            notes.append(f"{what}: {why}")
    times["graph_note"] = "; ".join(notes) or None
    return times
