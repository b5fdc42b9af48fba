"""Numerical parity of each backend with a float64 reference, forward and backward.

Run at the model's real attention shapes (attnbench.backends.shapes) on fresh random
inputs; errors are ||x - ref|| / ||ref|| per output and gradient.
"""

from __future__ import annotations

from typing import Any

import torch

from attnbench import host
from attnbench.backends import registry as backends

COLUMNS = [
    "backend", "status", "reason", "device", "dtype", "B", "heads", "N", "head_dim",
    "rel_err_out", "rel_err_dq", "rel_err_dk", "rel_err_dv", "threshold", "passed",
]  # fmt: skip


def _rel(x: torch.Tensor | None, ref: torch.Tensor) -> float:
    if x is None:  # a kernel whose output ignores an input gives it no gradient
        return float("inf")
    x = x.double()
    if not torch.isfinite(x).all():
        return float("nan")
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def reference(q, k, v, dout) -> tuple[torch.Tensor, ...]:
    """Attention in float64 by its definition; returns out (B, N, h, d) and dq, dk, dv."""
    q, k, v = (t.detach().double().requires_grad_() for t in (q, k, v))
    attn = torch.softmax((q @ k.mT) * q.shape[-1] ** -0.5, dim=-1)
    out = (attn @ v).transpose(1, 2)
    out.backward(dout.double())
    return out.detach(), q.grad, k.grad, v.grad


def check_shape(
    backend: backends.Backend, shape: tuple[int, int, int, int], dtype: torch.dtype, device: torch.device,
    seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """Relative errors of one backend at one shape and dtype, forward and backward."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    B, h, N, d = shape
    q, k, v = (torch.randn(B, h, N, d, generator=gen, dtype=torch.float64) for _ in range(3))
    dout = torch.randn(B, N, h, d, generator=gen, dtype=torch.float64)
    q, k, v, dout = (t.to(device) for t in (q, k, v, dout))
    ref_out, ref_dq, ref_dk, ref_dv = reference(q, k, v, dout)
    qx, kx, vx = (t.to(dtype).requires_grad_() for t in (q, k, v))
    with backend.context():
        out = backend.fn(qx, kx, vx)
        out.backward(dout.to(out.dtype))
    return {
        "rel_err_out": _rel(out, ref_out),
        "rel_err_dq": _rel(qx.grad, ref_dq),
        "rel_err_dk": _rel(kx.grad, ref_dk),
        "rel_err_dv": _rel(vx.grad, ref_dv),
    }


def run(
    name: str, shapes: list[dict[str, Any]], thresholds: dict[str, float], device: torch.device
) -> list[dict[str, Any]]:
    """One row per (shape, dtype); unavailable combinations are rows that say why."""
    backend = backends.get(name)
    unique = sorted({(c["B"], c["heads"], c["N"], c["head_dim"]) for c in shapes})
    rows = []
    for dtype_name, threshold in thresholds.items():
        dtype = host.torch_dtype(dtype_name)
        reason = backends.check(name, device, dtype, head_dim=unique[0][3] if unique else 32)
        for shape in unique:
            row = {
                "backend": name, "device": device.type, "dtype": dtype_name,
                "B": shape[0], "heads": shape[1], "N": shape[2], "head_dim": shape[3],
                "threshold": threshold, "status": "unavailable" if reason else "ok", "reason": reason,
            }  # fmt: skip
            if reason is None:
                errors = check_shape(backend, shape, dtype, device)
                row.update(errors)
                row["passed"] = all(e <= threshold for e in errors.values())
                row["status"] = "ok" if row["passed"] else "failed"
            rows.append({c: row.get(c) for c in COLUMNS})
    return rows
