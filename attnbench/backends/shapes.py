"""The attention problems YOLO12 really solves, found with forward hooks.

Shapes depend on the model yaml, imgsz and batch; deriving them from the model
(one batch-1 forward, scaled by the batch size) keeps the kernel benchmark and
the parity check at the sizes training actually runs. `problems()` turns them,
plus a sequence-length sweep, into the kernel benchmark's `AttentionProblem`s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

# Ultralytics' trainer validates with twice the training batch (detection task).
VAL_BATCH_FACTOR = 2
SWEEP_SHAPE = (8, 4, 32)  # B, heads, head_dim of the sequence-length sweep (YOLO12n layer 8)
BWD_FACTOR = 2.5  # backward counted as 2.5x forward (FlashAttention's convention)


@dataclass(frozen=True)
class AttentionProblem:
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


def problems(shapes: Mapping[str, Any], seq_lens: Iterable[int]) -> list[AttentionProblem]:
    """The model's distinct (phase, shape) calls from shapes.json, then the sweep over `seq_lens`."""
    order = {"train": 0, "val": 1}
    model = sorted(
        {
            AttentionProblem("model", c["phase"], c["B"], c["heads"], c["N"], c["head_dim"])
            for c in shapes.get("calls", [])
        },
        key=lambda p: (order.get(p.phase, 2), p.B, p.heads, p.N, p.head_dim),
    )
    B, heads, head_dim = SWEEP_SHAPE
    sweep = [
        AttentionProblem("sweep", "sweep", B, heads, n, head_dim) for n in sorted(set(seq_lens))
    ]
    return model + sweep


def attention_shapes(model_yaml: str, imgsz: int, batch: int) -> dict[str, Any]:
    """One record per AAttn module and phase: (B', heads, N, head_dim) and calls per forward."""
    from ultralytics.nn.modules.block import AAttn
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel(model_yaml, verbose=False).eval()
    seen: list[dict[str, Any]] = []

    def hook(name: str):
        def record(module: AAttn, inputs: tuple[torch.Tensor, ...]) -> None:
            _, _, h, w = inputs[0].shape
            seen.append(
                {
                    "layer": name,
                    "area": module.area,
                    "heads": module.num_heads,
                    "head_dim": module.head_dim,
                    "N": h * w // module.area,
                }
            )

        return record

    handles = [
        module.register_forward_pre_hook(hook(name))
        for name, module in model.named_modules()
        if isinstance(module, AAttn)
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, imgsz, imgsz))
    finally:
        for handle in handles:
            handle.remove()
    if not seen:
        raise ValueError(f"model {model_yaml} has no AAttn attention layers")

    calls = []
    for phase, phase_batch in (("train", batch), ("val", batch * VAL_BATCH_FACTOR)):
        groups: dict[tuple, dict[str, Any]] = {}
        for rec in seen:
            key = (phase_batch * rec["area"], rec["heads"], rec["N"], rec["head_dim"])
            group = groups.setdefault(
                key,
                {
                    "phase": phase,
                    "B": key[0],
                    "heads": key[1],
                    "N": key[2],
                    "head_dim": key[3],
                    "layers": [],
                    "calls_per_forward": 0,
                },
            )
            group["layers"].append(rec["layer"])
            group["calls_per_forward"] += 1
        calls.extend(groups.values())
    return {
        "model": model_yaml,
        "imgsz": imgsz,
        "batch": batch,
        "val_batch": batch * VAL_BATCH_FACTOR,
        "calls": calls,
    }
