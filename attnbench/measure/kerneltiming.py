"""Timing primitives of the kernel benchmark: calls timed as training makes them, the same
call captured in a CUDA graph and replayed, and the dense-matmul ceiling.

A call timed directly includes the host's dispatch (Python, autograd, kernel launches):
at YOLO12's small shapes that is most of it. A CUDA graph replays the captured kernels
without the host, so its time is the kernels' own. Capture follows torch.cuda.graph's
documented recipe: warm up on a side stream (lazy handles, cuDNN plans, autotuning),
synchronise, capture on static tensors, replay. Anything that cannot be captured
(a host sync inside the call, an allocation the capture refuses, OOM) becomes a reason
string, never an exception: the direct timings of the row stand on their own. A failed
capture can leave process-wide state behind (the default CUDA generator stuck in capture
mode, the allocator still routing into the capture's pool): `graph_repair` undoes it and
checks the GPU; the benchmark's `GraphSwitch` captures nothing more after the first
failure, and if the repair cannot be verified no graph is captured in the process again.
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
from attnbench.measure.graph_repair import recover, root_cause

LOG = logging.getLogger("attnbench.measure.kernelbench")

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


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (its type if it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _rel_error(got: Sequence[torch.Tensor], want: Sequence[torch.Tensor]) -> float:
    num = sum(float((g.float() - w.float()).norm()) ** 2 for g, w in zip(got, want, strict=True))
    den = sum(float(w.float().norm()) ** 2 for w in want)
    return math.sqrt(num / den) if den else math.sqrt(num)


# Set when a failed capture left this process in a state that could not be verified as
# repaired: from then on no graph is captured in this process.
_PROCESS_BROKEN: str | None = None


class GraphBroke(Exception):
    """A capture or replay failed: its `note` for the row, its first error as `cause`."""

    def __init__(self, note: str, cause: str) -> None:
        super().__init__(note)
        self.note, self.cause = note, cause


class GraphSwitch:
    """Whether one benchmark may still capture CUDA graphs.

    After the first failed capture or replay it captures nothing more (every later call
    gets "graphs off after a failed capture: <first error>"): a failed capture can leave
    process-wide state behind, and a possibly damaged process must not produce numbers.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.failure: str | None = None

    def off(self) -> str | None:
        """Why no graph is captured now, or None."""
        if not self.enabled:
            return "CUDA graphs switched off (kernels.graphs: false)"
        if self.failure:
            return f"graphs off after a failed capture: {self.failure}"
        if _PROCESS_BROKEN:
            return (
                f"graphs off in this process after an unrepaired failed capture: {_PROCESS_BROKEN}"
            )
        return None

    def time(
        self, timer: Callable[[Any], tuple[float | None, str | None]], call: Any
    ) -> tuple[float | None, str | None]:
        """`timer(call)` -> (ms, why not) unless switched off; a GraphBroke switches it off."""
        why = self.off()
        if why:
            return None, why
        try:
            return timer(call)
        except GraphBroke as exc:
            self.failure = self.failure or exc.cause
            return None, exc.note


def time_graphs(
    switch: GraphSwitch,
    calls: Sequence[tuple[str, str, Any]],
    timer: Callable[[Any], tuple[float | None, str | None]],
) -> dict[str, Any]:
    """{column: ms or None for (column, label, call) in calls, "graph_note": why not}."""
    times: dict[str, Any] = {column: None for column, _, _ in calls}
    off = switch.off()
    if off:
        return {**times, "graph_note": off}
    notes = []
    for column, what, call in calls:
        times[column], why = switch.time(timer, call)
        if why:
            notes.append(f"{what}: {why}")
    return {**times, "graph_note": "; ".join(notes) or None}


def graph_ms(
    call: Callable[[], Sequence[torch.Tensor]], device: torch.device, repeats: int, **options: Any
) -> tuple[float | None, str | None]:
    """Median ms of replaying `call` captured in a CUDA graph, or (None, why not).

    `call` works on static tensors and returns the tensors it computes. The replay is
    checked against a direct call (its outputs are poisoned with NaN first, so an
    unwritten output fails). Before each timed replay `flush` is zeroed, outside the
    events, so the replay reads its inputs from memory as training does, not from L2
    (`options`: `flush` and `log`, as `replay_ms` takes them). A failed capture is
    repaired as far as PyTorch allows (`graph_repair.recover`); if that cannot be
    verified, no later capture in this process is attempted.
    """
    return GraphSwitch().time(lambda c: replay_ms(c, device, repeats, **options), call)


def replay_ms(
    call: Callable[[], Sequence[torch.Tensor]],
    device: torch.device,
    repeats: int,
    flush: torch.Tensor | None = None,
    log: logging.Logger = LOG,
) -> tuple[float | None, str | None]:
    """`graph_ms` that raises GraphBroke when the capture or a replay fails."""
    if device.type != "cuda":
        return None, f"CUDA graphs need a CUDA GPU ({device.type})"
    stream = torch.cuda.current_stream(device)
    graph = outputs = pool = None
    failure = None
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
            # An explicit pool: after a failed capture its id is known, so the allocator's
            # routing of allocations into it can be ended (`graph_repair.recover`).
            pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                outputs = call()
    except Exception as exc:  # any refusal of the capture is a result
        # torch.cuda.graph.__exit__ calls capture_end before leaving its stream context:
        # when capture_end raises, the capture stream stays current. Put ours back.
        torch.cuda.set_stream(stream)
        failure = root_cause(exc)
    if failure is not None:  # outside the except: its traceback no longer holds tensors
        raise _broken(device, f"capture failed: {failure}", failure, log, graph, pool)
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
        cause = root_cause(exc)
        raise _broken(device, f"replay failed: {cause}", cause, log) from None
    finally:
        del graph, outputs
    return statistics.median(times), None


def _broken(
    device: torch.device,
    why: str,
    cause: str,
    log: logging.Logger,
    graph: Any = None,
    pool: Any = None,
) -> GraphBroke:
    """Log a failed capture or replay, repair what it left behind, and say so."""
    global _PROCESS_BROKEN
    log.warning("CUDA graph: %s", why)
    problem = recover(device, graph, pool)
    if problem:
        _PROCESS_BROKEN = _PROCESS_BROKEN or f"{cause} ({problem})"
        log.error("CUDA graphs off for the rest of this process: %s", problem)
        why = f"{why}; then {problem}"
    return GraphBroke(why, cause)


def graph_times(
    forward: Callable[[int], torch.Tensor],
    buf: torch.Tensor,
    dout: torch.Tensor,
    device: torch.device,
    repeats: int,
    switch: GraphSwitch | bool,
    log: logging.Logger,
) -> dict[str, Any]:
    """The forward, and forward + backward (torch.autograd.grad with the fixed `dout`),
    each captured on the static input `buf` and replayed, while `switch` allows it."""
    if not isinstance(switch, GraphSwitch):
        switch = GraphSwitch(bool(switch))
    columns = ("graph_fwd_ms", "graph_fwdbwd_ms")
    if switch.enabled and device.type != "cuda":
        return {**dict.fromkeys(columns), "graph_note": f"no CUDA graphs on {device.type}"}
    flush = None
    if not switch.off():
        try:
            flush = torch.empty(2 * l2_bytes(device), dtype=torch.uint8, device=device)
        except Exception as exc:  # without it the replays run from a warm L2; say so
            log.warning("no L2 flush buffer (%s): graph replays may read from L2", root_cause(exc))

    def fwd() -> tuple[torch.Tensor, ...]:
        return (forward(0),)

    def fwdbwd() -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(forward(0), (buf,), dout)

    calls = ((columns[0], "fwd", fwd), (columns[1], "fwd+bwd", fwdbwd))
    return time_graphs(switch, calls, lambda c: replay_ms(c, device, repeats, flush, log))
