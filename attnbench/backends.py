"""The attention backends: one registry entry per backend.

Each entry holds what can run it (an availability check that really runs the
kernel once), how to call it, and the ops/kernels that prove it ran. A backend
that cannot run is reported unavailable with the reason; nothing is ever
substituted under its name (the seed study's fatal flaw).

Every attention function takes q, k, v in SDPA layout (B, heads, N, head_dim)
and returns the output in the layout YOLO12's AAttn needs next: (B, N, heads, head_dim).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

HALF_DTYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Signature:
    """Regexes over profiler names that prove which kernel ran.

    Every pattern in a `*_ops`/`*_kernels` tuple must match at least one recorded
    name; no recorded op or kernel may match a `forbidden` pattern. Kernel
    patterns apply on CUDA only (a CPU has no kernels to list).
    """

    fwd_ops: tuple[str, ...] = ()
    bwd_ops: tuple[str, ...] = ()
    fwd_kernels: tuple[str, ...] = ()
    bwd_kernels: tuple[str, ...] = ()
    forbidden: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Backend:
    name: str
    description: str
    fn: AttentionFn
    devices: tuple[str, ...]  # device types it can run on
    half_only_on: tuple[str, ...] = ()  # device types where it needs fp16/bf16
    package: str | None = None  # import needed before it can run
    signatures: dict[str, Signature] = field(default_factory=dict)  # by device type
    activate: Callable[[], contextlib.AbstractContextManager] | None = None
    # Fused kernels need q/k/v with a contiguous last dim. YOLO12's qkv comes from a
    # conv in (B, C, H, W) layout, so its channels are strided unless copied.
    contiguous_qkv: bool = True

    def signature(self, device_type: str) -> Signature:
        return self.signatures.get(device_type, Signature())

    def context(self) -> contextlib.AbstractContextManager:
        """Global state the backend needs while it runs (e.g. FA3 activation)."""
        return self.activate() if self.activate else contextlib.nullcontext()


# --------------------------------------------------------------------------- #
# Attention functions


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Ultralytics' stock AAttn arithmetic, op for op, on its own (B, h, d, N) layout."""
    q, k, v = q.mT, k.mT, v.mT  # back to AAttn's (B, h, d, N) views
    attn = (q * (q.shape[-2] ** -0.5)).transpose(-2, -1) @ k
    attn = attn.softmax(dim=-1)
    x = v @ attn.transpose(-2, -1)
    return x.permute(0, 3, 1, 2)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """PyTorch's default SDPA dispatch (on an H100 with torch >= 2.9 that is cuDNN)."""
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2)


def forced_sdpa(backend: SDPBackend) -> AttentionFn:
    """SDPA restricted to one kernel: it runs that kernel or raises, never another."""

    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v).transpose(1, 2)

    attention.__name__ = f"sdpa_{backend.name.lower()}"
    return attention


def flash_attn_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Dao-AILab flash-attn 2: (B, N, h, d) in and out, last dim contiguous (no copy)."""
    from flash_attn import flash_attn_func

    return flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))


@functools.cache
def _compiled_flex() -> Callable:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """FlexAttention, compiled (uncompiled flex is a reference loop, not a kernel)."""
    return _compiled_flex()(q, k, v).transpose(1, 2)


@contextlib.contextmanager
def _flash_impl(impl: str) -> Iterator[None]:
    from torch.nn import attention

    attention.activate_flash_attention_impl(impl)
    try:
        yield
    finally:
        attention.restore_flash_attention_impl()


# --------------------------------------------------------------------------- #
# Kernel signatures

_SDPA_FUSED = r"aten::_scaled_dot_product_(flash|efficient|cudnn)_attention"
_FUSED_KERNELS = (
    r"pytorch_flash::|fmha_cutlass|(?<!pytorch_)flash::flash_|cudnn.*sdpa|sdpa.*(fprop|bprop)"
)
_MATH_BWD = (r"(Bmm|Mm|Matmul)Backward", r"SoftmaxBackward")

SIGNATURES: dict[str, dict[str, Signature]] = {
    "eager": {
        "cpu": Signature(
            fwd_ops=(r"^aten::(matmul|bmm)$", r"^aten::(_)?softmax$"),
            bwd_ops=_MATH_BWD,
            forbidden=(r"scaled_dot_product", _FUSED_KERNELS),
        ),
        "cuda": Signature(
            fwd_ops=(r"^aten::(matmul|bmm)$", r"^aten::(_)?softmax$"),
            bwd_ops=_MATH_BWD,
            fwd_kernels=(r"(?i)gemm|cutlass|sm90_xmma|ampere|nvjet", r"(?i)softmax"),
            forbidden=(r"scaled_dot_product", _FUSED_KERNELS),
        ),
    },
    "sdpa": {
        # Default dispatch: any SDPA implementation; the one chosen is recorded.
        "cpu": Signature(fwd_ops=(r"^aten::scaled_dot_product_attention$",)),
        "cuda": Signature(fwd_ops=(r"^aten::scaled_dot_product_attention$",)),
    },
    "sdpa_math": {
        "cpu": Signature(
            fwd_ops=(r"^aten::_scaled_dot_product_attention_math$",),
            bwd_ops=_MATH_BWD,
            forbidden=(_SDPA_FUSED, r"flash_attention_for_cpu", _FUSED_KERNELS),
        ),
        "cuda": Signature(
            fwd_ops=(r"^aten::_scaled_dot_product_attention_math$",),
            bwd_ops=_MATH_BWD,
            forbidden=(_SDPA_FUSED, _FUSED_KERNELS),
        ),
    },
    "sdpa_flash": {
        "cpu": Signature(
            fwd_ops=(r"^aten::_scaled_dot_product_flash_attention_for_cpu$",),
            bwd_ops=(
                r"flash_attention_for_cpu_backward|ScaledDotProductFlashAttentionForCpuBackward",
            ),
            forbidden=(
                r"_scaled_dot_product_attention_math",
                r"efficient_attention|cudnn_attention",
            ),
        ),
        "cuda": Signature(
            fwd_ops=(r"^aten::_scaled_dot_product_flash_attention$",),
            bwd_ops=(
                r"_scaled_dot_product_flash_attention_backward|ScaledDotProductFlashAttentionBackward",
            ),
            fwd_kernels=(r"pytorch_flash::flash_fwd",),
            bwd_kernels=(r"pytorch_flash::flash_bwd",),
            forbidden=(r"_scaled_dot_product_attention_math", r"fmha_cutlass", r"cudnn_attention"),
        ),
    },
    "sdpa_efficient": {
        "cuda": Signature(
            fwd_ops=(r"^aten::_scaled_dot_product_efficient_attention$",),
            bwd_ops=(r"efficient_attention_backward|ScaledDotProductEfficientAttentionBackward",),
            fwd_kernels=(r"fmha_cutlassF",),
            bwd_kernels=(r"fmha_cutlassB",),
            forbidden=(
                r"_scaled_dot_product_attention_math",
                r"pytorch_flash::",
                r"cudnn_attention",
            ),
        ),
    },
    "sdpa_cudnn": {
        "cuda": Signature(
            fwd_ops=(r"^aten::_scaled_dot_product_cudnn_attention$",),
            bwd_ops=(r"cudnn_attention_backward|ScaledDotProductCudnnAttentionBackward",),
            forbidden=(
                r"_scaled_dot_product_attention_math",
                r"pytorch_flash::",
                r"fmha_cutlass",
                r"_scaled_dot_product_(flash|efficient)_attention",
            ),
        ),
    },
    "flash_attn": {
        "cuda": Signature(
            fwd_ops=(r"flash_attn::_flash_attn_forward|FlashAttnFunc",),
            bwd_ops=(r"flash_attn::_flash_attn_backward|FlashAttnFuncBackward",),
            fwd_kernels=(r"(?<!pytorch_)flash::flash_fwd",),
            bwd_kernels=(r"(?<!pytorch_)flash::flash_bwd",),
            forbidden=(r"scaled_dot_product", r"pytorch_flash::", r"fmha_cutlass"),
        ),
    },
    "fa3": {
        "cuda": Signature(
            fwd_ops=(r"^aten::_scaled_dot_product_flash_attention$",),
            forbidden=(r"pytorch_flash::flash_fwd", r"fmha_cutlass", r"cudnn_attention"),
        ),
    },
    "fa4": {
        "cuda": Signature(
            fwd_ops=(r"^aten::_scaled_dot_product_flash_attention$",),
            forbidden=(r"pytorch_flash::flash_fwd", r"fmha_cutlass", r"cudnn_attention"),
        ),
    },
    "flex": {
        "cuda": Signature(
            fwd_kernels=(r"triton_tem_fused|flex",),
            forbidden=(r"scaled_dot_product", r"pytorch_flash::", r"fmha_cutlass"),
        ),
    },
}


def _entry(name: str, description: str, fn: AttentionFn, devices, **kw) -> Backend:
    return Backend(name, description, fn, tuple(devices), signatures=SIGNATURES[name], **kw)


REGISTRY: dict[str, Backend] = {
    b.name: b
    for b in [
        _entry(
            "eager",
            "Ultralytics' stock AAttn (matmul, softmax, matmul)",
            eager_attention,
            ["cpu", "cuda"],
            contiguous_qkv=False,
        ),
        _entry(
            "sdpa",
            "F.scaled_dot_product_attention, default dispatch",
            sdpa_attention,
            ["cpu", "cuda"],
        ),
        _entry(
            "sdpa_math",
            "SDPA forced to the math kernel",
            forced_sdpa(SDPBackend.MATH),
            ["cpu", "cuda"],
        ),
        _entry(
            "sdpa_efficient",
            "SDPA forced to memory-efficient attention (xFormers/CUTLASS)",
            forced_sdpa(SDPBackend.EFFICIENT_ATTENTION),
            ["cuda"],
        ),
        _entry(
            "sdpa_flash",
            "SDPA forced to PyTorch's built-in FlashAttention-2",
            forced_sdpa(SDPBackend.FLASH_ATTENTION),
            ["cpu", "cuda"],
            half_only_on=("cuda",),
        ),
        _entry(
            "sdpa_cudnn",
            "SDPA forced to cuDNN attention",
            forced_sdpa(SDPBackend.CUDNN_ATTENTION),
            ["cuda"],
            half_only_on=("cuda",),
        ),
        _entry(
            "flash_attn",
            "Dao-AILab flash-attn 2 (flash_attn_func)",
            flash_attn_attention,
            ["cuda"],
            half_only_on=("cuda",),
            package="flash_attn",
        ),
        _entry(
            "fa3",
            "SDPA flash with FlashAttention-3 activated (prototype)",
            forced_sdpa(SDPBackend.FLASH_ATTENTION),
            ["cuda"],
            half_only_on=("cuda",),
            activate=functools.partial(_flash_impl, "FA3"),
        ),
        _entry(
            "fa4",
            "SDPA flash with FlashAttention-4 activated (prototype)",
            forced_sdpa(SDPBackend.FLASH_ATTENTION),
            ["cuda"],
            half_only_on=("cuda",),
            activate=functools.partial(_flash_impl, "FA4"),
        ),
        _entry("flex", "FlexAttention, compiled with torch.compile", flex_attention, ["cuda"]),
    ]
}


class BackendUnavailable(RuntimeError):
    """The backend cannot run here; the message says why and what would fix it."""


def get(name: str) -> Backend:
    try:
        return REGISTRY[name]
    except KeyError:
        raise BackendUnavailable(
            f"unknown backend {name!r}: choose one of {', '.join(REGISTRY)}"
        ) from None


DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def kernel_dtype(device: torch.device, amp: bool, cast: str = "none") -> torch.dtype:
    """The dtype attention sees in training: fp16 under CUDA AMP, a cast if asked, else fp32."""
    if cast != "none":
        return DTYPES[cast]
    if device.type == "cuda" and amp:
        return torch.float16
    return torch.float32


def needs_cast(backend: Backend, device: torch.device, dtype: torch.dtype) -> bool:
    return device.type in backend.half_only_on and dtype not in HALF_DTYPES


def check(name: str, device: torch.device, dtype: torch.dtype, head_dim: int = 32) -> str | None:
    """Return why `name` cannot run on `device` at `dtype`, or None when it can.

    The last step runs the kernel once, forward and backward, on random data:
    availability is observed, not inferred from version numbers.
    """
    backend = get(name)
    if device.type not in backend.devices:
        if device.type == "cpu":
            return f"{name} needs a CUDA GPU; this host runs on the CPU"
        return f"{name} does not run on {device.type}"
    if backend.package and importlib.util.find_spec(backend.package) is None:
        return (
            f"{name} needs the '{backend.package}' package, which is not installed "
            "(build it with rule build_flash_attn, or use envs/flash-attn.yaml)"
        )
    if needs_cast(backend, device, dtype):
        return (
            f"{name} needs fp16/bf16 on {device.type} but attention runs in "
            f"{str(dtype).removeprefix('torch.')}: set train.amp: true or train.cast: fp16|bf16"
        )
    try:
        with backend.context(), torch.enable_grad():
            shape = (1, 2, 128, head_dim)
            q, k, v = (
                torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3)
            )
            out = backend.fn(q, k, v)
            out.float().sum().backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    except Exception as exc:  # the kernel's own refusal is the reason
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"{name} failed a test call on {device.type} {str(dtype).removeprefix('torch.')}: {first}"
    return None


def versions() -> dict[str, str | None]:
    """Versions of the software that decides which kernels exist."""
    info: dict[str, str | None] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(torch.backends.cudnn.version())
        if torch.backends.cudnn.is_available()
        else None,
        "flash_attn": None,
        "torch_flash": None,
    }
    if importlib.util.find_spec("flash_attn") is not None:
        try:
            info["flash_attn"] = importlib.import_module("flash_attn").__version__
        except Exception as exc:  # a broken install is worth reporting, not crashing on
            info["flash_attn"] = f"broken: {exc}"
    with contextlib.suppress(Exception):
        from torch.nn.attention import _get_flash_version

        info["torch_flash"] = _get_flash_version()
    return info
