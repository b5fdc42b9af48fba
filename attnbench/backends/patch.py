"""Route YOLO12's area attention through a chosen backend.

`use_backend(name)` patches the CLASS `AAttn.forward` (not a model instance):
Ultralytics rebuilds the model from yaml inside `train()`, and the EMA copy and
the reloaded best.pt must use the same kernel. Leaving the context restores the
stock forward. The q/k/v channel layout is untouched, so weights stay compatible.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.profiler import record_function

from attnbench import host
from attnbench.backends import registry as backends

REGION = "attnbench::attention"


@dataclass
class ActiveBackend:
    backend: backends.Backend
    cast: torch.dtype | None
    # (dtype the kernel saw, dtype it was given, B, heads, N, head_dim) -> calls
    calls: Counter = field(default_factory=Counter)
    # Calls on a device the backend does not support (model construction only).
    construction_calls: int = 0
    # Seconds spent in this dispatch around the kernel calls (checks, the call counter,
    # the profiler region; casts when train.cast asks): the patch's own per-call cost.
    dispatch_s: float = 0.0

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        given = q.dtype
        if q.device.type not in self.backend.devices:
            # Ultralytics builds the model on the CPU and runs one forward there to
            # find its strides, before moving it to the GPU. A CUDA-only kernel cannot
            # serve that call; the stock arithmetic does, and it is counted apart
            # (training itself never reaches this line: availability is checked first).
            self.construction_calls += 1
            return backends.eager_attention(q, k, v)
        if self.cast is not None and given != self.cast:
            q, k, v = q.to(self.cast), k.to(self.cast), v.to(self.cast)
        elif backends.needs_cast(self.backend, q.device, given):
            raise backends.BackendUnavailableError(
                f"{self.backend.name} needs fp16/bf16 on {q.device.type} but attention got "
                f"{host.dtype_name(given)}: set train.amp: true or train.cast: fp16|bf16"
            )
        B, h, N, d = q.shape
        self.calls[(host.dtype_name(q.dtype), host.dtype_name(given), B, h, N, d)] += 1
        with record_function(REGION):
            called = time.perf_counter()
            out = self.backend.fn(q, k, v)
            returned = time.perf_counter()
        out = out if out.dtype == given else out.to(given)
        self.dispatch_s += (called - start) + (time.perf_counter() - returned)
        return out

    def dtypes_seen(self) -> list[str]:
        return sorted({key[0] for key in self.calls})


_ACTIVE: ActiveBackend | None = None


def active() -> ActiveBackend | None:
    """The backend `use_backend` has active now, or None (stock AAttn.forward)."""
    return _ACTIVE


def _aattn_forward(self, x: torch.Tensor) -> torch.Tensor:
    """AAttn.forward with the attention product delegated to the active backend.

    Identical to ultralytics.nn.modules.block.AAttn.forward (8.4.x) otherwise.
    """
    B, _, H, W = x.shape
    N = H * W

    qkv = self.qkv(x).flatten(2).transpose(1, 2)
    if self.area > 1:
        qkv = qkv.reshape(B * self.area, N // self.area, self.all_head_dim * 3)
        B, N, _ = qkv.shape
    if _ACTIVE.backend.contiguous_qkv:
        # Channels-last copy (the area reshape above already made one when area > 1):
        # without it every fused SDPA kernel refuses and default dispatch falls to math.
        qkv = qkv.contiguous()
    q, k, v = (
        qkv.view(B, N, self.num_heads, self.head_dim * 3)
        .permute(0, 2, 3, 1)
        .split([self.head_dim, self.head_dim, self.head_dim], dim=2)
    )
    # q, k, v are (B, h, d, N); backends take (B, h, N, d) and return (B, N, h, d).
    x = _ACTIVE.attend(q.mT, k.mT, v.mT)
    v = v.permute(0, 3, 1, 2)
    if self.area > 1:
        x = x.reshape(B // self.area, N * self.area, self.all_head_dim)
        v = v.reshape(B // self.area, N * self.area, self.all_head_dim)
        B, N, _ = x.shape
    x = x.reshape(B, H, W, self.all_head_dim).permute(0, 3, 1, 2).contiguous()
    v = v.reshape(B, H, W, self.all_head_dim).permute(0, 3, 1, 2).contiguous()
    x = x + self.pe(v)
    return self.proj(x)


@contextlib.contextmanager
def use_backend(name: str, cast: str = "none") -> Iterator[ActiveBackend]:
    """Run every YOLO12 AAttn through backend `name` inside the block; restore on exit.

    The backend's `activate` context (e.g. `sdpa_kernel` of a forced SDPA kernel) is
    entered here, once for the whole block, not per attention call.
    """
    global _ACTIVE
    from ultralytics.nn.modules.block import AAttn

    if _ACTIVE is not None:
        raise RuntimeError(
            f"backend {_ACTIVE.backend.name!r} is already active; contexts do not nest"
        )
    active = ActiveBackend(backends.get(name), None if cast == "none" else host.torch_dtype(cast))
    original = AAttn.forward
    with active.backend.context():
        AAttn.forward = _aattn_forward
        _ACTIVE = active
        try:
            yield active
        finally:
            AAttn.forward = original
            _ACTIVE = None
