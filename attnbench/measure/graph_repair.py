"""Repairing what a failed CUDA-graph capture leaves behind, and naming what broke it.

In torch 2.5-2.11 a capture that fails at cudaStreamEndCapture leaves the allocator
routing into the capture's pool and the default CUDA generator in capture mode;
`recover` undoes both and checks the GPU. `kerneltiming` decides what a failure means
for the benchmark (`GraphSwitch`, graphs off for the process).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch


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


def end_allocation(index: int, pool: Any) -> None:
    """End the allocator's routing into `pool` and release it (torch 2.5+ spells it two ways).
    Raises where nothing is routed there (a newer torch already ended it)."""
    if hasattr(torch._C, "_cuda_endAllocateToPool"):
        end = torch._C._cuda_endAllocateToPool
    else:
        end = torch._C._cuda_endAllocateCurrentStreamToPool
    end(index, pool)
    torch._C._cuda_releasePool(index, pool)  # the graph never ended capture: it will not


def rng_problem(index: int) -> str | None:
    """Why the device's default generator cannot draw numbers, or None (its state is kept)."""
    gen = torch.cuda.default_generators[index]
    try:
        saved = gen.get_state()
        torch.empty(4, device=torch.device("cuda", index)).normal_()
        gen.set_state(saved)
    except Exception as exc:
        return root_cause(exc)
    return None


def recover(device: torch.device, graph: Any = None, pool: Any = None) -> str | None:
    """Undo what a failed capture leaves behind; None once the GPU is verified usable, else
    what is still wrong.

    In torch 2.5-2.11 CUDAGraph::capture_end raises at cudaStreamEndCapture, before it
    ends the allocator's routing into the capture's pool and before the capture epilogue
    of the generator states registered in capture_begin (the default CUDA generator
    always is): that generator stays in capture mode and every later random draw raises
    "Offset increment outside graph capture encountered unexpectedly". So: end the
    routing and release the pool, reset the graph, give the default generator a fresh
    clone of its state (same seed and offset, not capturing), then check that a random
    draw, a synchronize and emptying the cache work and no stream is still capturing.
    """
    index = device.index if device.index is not None else torch.cuda.current_device()
    if pool is not None:
        with contextlib.suppress(Exception):  # a newer torch ended it already
            end_allocation(index, pool)
    if graph is not None:
        with contextlib.suppress(Exception):
            graph.reset()
    if rng_problem(index):
        gen = torch.cuda.default_generators[index]
        try:
            gen.graphsafe_set_state(gen.clone_state())
        except Exception as exc:
            return f"the default CUDA generator could not be reset: {root_cause(exc)}"
        problem = rng_problem(index)
        if problem:
            return f"the default CUDA generator is still unusable: {problem}"
    try:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        if torch.cuda.is_current_stream_capturing():
            return "the current stream is still capturing"
    except Exception as exc:
        return f"the GPU then failed too: {root_cause(exc)}"
    return None
