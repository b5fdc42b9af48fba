"""Proof of the kernel that ran: profile real steps, keep the attention's ops and kernels.

Forward: every op and CUDA kernel launched inside the `attnbench::attention`
record_function region. Backward: the autograd nodes whose sequence number
matches one of those forward ops, and everything they launched. The result is
checked against the backend's expected `Signature`; a mismatch fails the run.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import torch

from attnbench import backend_records, host
from attnbench.backends.patch import REGION
from attnbench.backends.signatures import Signature
from attnbench.errors import UserError


class ProvenanceMismatchError(UserError):
    """The profiled ops/kernels are not those of the requested backend (ends the job in one line)."""


def _descendants(event) -> Iterable:
    stack = list(event.cpu_children)
    while stack:
        child = stack.pop()
        yield child
        stack.extend(child.cpu_children)


def _kernel_names(event) -> list[str]:
    return [k.name for k in getattr(event, "kernels", [])]


def attention_events(events: Iterable) -> tuple[list, list, int]:
    """The attention's forward events (region and below) and backward autograd nodes.

    Backward nodes are linked to the forward ops by autograd sequence number (and
    forward thread); each node is taken once, with everything it ran below it.
    Returns (forward events, backward events, number of regions).
    """
    events = list(events)
    regions = [e for e in events if e.name == REGION]
    forward: list = []
    seqs: set[tuple[int, int]] = set()
    for region in regions:
        forward.append(region)
        for op in _descendants(region):
            forward.append(op)
            if getattr(op, "sequence_nr", -1) >= 0:
                seqs.add((op.sequence_nr, op.thread))
    seq_nrs = {s for s, _ in seqs}
    fwd_threads = {t for _, t in seqs}
    backward: list = []
    for event in events:
        if "Backward" not in event.name or getattr(event, "sequence_nr", -1) not in seq_nrs:
            continue
        if (
            getattr(event, "fwd_thread", None) not in (None, 0)
            and event.fwd_thread not in fwd_threads
        ):
            continue
        # Count each autograd node once: the engine wrapper, not its inner node event.
        if event.cpu_parent is not None and event.cpu_parent.sequence_nr == event.sequence_nr:
            continue
        backward.append(event)
        backward.extend(_descendants(event))
    return forward, backward, len(regions)


def attention_time_us(events: Iterable, device_type: str) -> float:
    """Time spent in attention, forward and backward: its kernels' device time on a
    GPU, the self time of its aten ops on a CPU."""
    forward, backward, _ = attention_events(events)
    if device_type == "cuda":
        return float(sum(k.duration for e in forward + backward for k in getattr(e, "kernels", [])))
    return float(
        sum(e.self_cpu_time_total for e in forward + backward if e.name.startswith("aten::"))
    )


def collect(events: Iterable) -> dict[str, Any]:
    """Attention ops and kernels, forward and backward, with call counts."""
    forward, backward, regions = attention_events(events)
    fwd_ops: Counter = Counter(e.name for e in forward if e.name != REGION)
    fwd_kernels: Counter = Counter(k for e in forward for k in _kernel_names(e))
    bwd_ops: Counter = Counter(e.name for e in backward)
    bwd_kernels: Counter = Counter(k for e in backward for k in _kernel_names(e))
    return {
        "regions": regions,
        "fwd_ops": dict(fwd_ops),
        "fwd_kernels": dict(fwd_kernels),
        "bwd_ops": dict(bwd_ops),
        "bwd_kernels": dict(bwd_kernels),
    }


def check(record: dict[str, Any], signature: Signature, device_type: str) -> list[str]:
    """The ways `record` disagrees with `signature` (empty when it matches)."""
    problems = []
    if not record["regions"]:
        problems.append("no attention call was profiled (was the backend patched in?)")
    wanted = [("fwd_ops", signature.fwd_ops), ("bwd_ops", signature.bwd_ops)]
    if device_type == "cuda":
        wanted += [("fwd_kernels", signature.fwd_kernels), ("bwd_kernels", signature.bwd_kernels)]
    for key, patterns in wanted:
        for pattern in patterns:
            if not any(re.search(pattern, name) for name in record[key]):
                problems.append(f"{key}: nothing matches {pattern!r}")
    seen = [n for key in ("fwd_ops", "fwd_kernels", "bwd_ops", "bwd_kernels") for n in record[key]]
    for pattern in signature.forbidden:
        hits = sorted({n for n in seen if re.search(pattern, n)})
        if hits:
            problems.append(f"forbidden {pattern!r} matched {hits[:3]}")
    return problems


def dispatched(record: dict[str, Any]) -> str:
    """Which SDPA implementation (or other family) the attention dispatched to: the label
    of the first backend record's kernel pattern that the forward's names match."""
    names = " ".join([*record["fwd_ops"], *record["fwd_kernels"]])
    for pattern, label in backend_records.kernel_labels():
        if re.search(pattern, names):
            return label
    return "unknown"


def profile_steps(step: Callable[[], None], steps: int, device: torch.device) -> dict[str, Any]:
    """Run `step` `steps` times under torch.profiler and collect the attention's record."""
    with host.profiler(device) as prof:
        for _ in range(steps):
            step()
        host.synchronize(device)
    return collect(prof.events())


def verify(record: dict[str, Any], signature: Signature, device_type: str) -> dict[str, Any]:
    """Attach the signature and the verdict to `record`."""
    problems = check(record, signature, device_type)
    return {
        **record,
        "dispatched": dispatched(record),
        "signature": signature.as_dict(),
        "matched": not problems,
        "mismatch": problems,
    }
