"""The ops and kernels that prove which attention implementation ran, per backend.

Each backend's record (`attnbench.backends.registry.REGISTRY`) holds one `Signature` per
device type; `attnbench.backends.provenance` checks a profiled run against it. Plain data:
regexes over torch.profiler op and CUDA kernel names.
"""

from __future__ import annotations

from dataclasses import dataclass


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


_SDPA_FUSED = r"aten::_scaled_dot_product_(flash|efficient|cudnn)_attention"
# PyTorch's built-in FA2 and Dao-AILab's flash-attn 2 kernels (flash::flash_fwd_kernel...).
_FA2_KERNELS = (r"pytorch_flash::", r"(?<!pytorch_)flash::flash_")
_FUSED_KERNELS = (
    r"pytorch_flash::|fmha_cutlass|(?<!pytorch_)flash::flash_|cudnn.*sdpa|sdpa.*(fprop|bprop)"
)
_MATH_BWD = (r"(Bmm|Mm|Matmul)Backward", r"SoftmaxBackward")
_MATMUL_SOFTMAX = (r"^aten::(matmul|bmm)$", r"^aten::(_)?softmax$")
_SDPA_FLASH_OP = r"^aten::_scaled_dot_product_flash_attention$"
# FA3 is flash-attention's hopper/ build: torch.nn.attention._fa3 routes SDPA's flash op
# to torch.ops.flash_attn_3.fwd/bwd, whose CUTLASS kernels are the C++ classes
# flash::FlashAttnFwdSm90 / FlashAttnBwdSm90 (FlashAttnFwdSm80 / ...Sm80 below Hopper).
_FA3_FWD, _FA3_BWD = r"flash::FlashAttnFwdSm\d+", r"flash::FlashAttnBwdSm\d+"
# FA4 is flash-attention's CuTe-DSL build: torch.nn.attention._fa4 calls
# flash_attn.cute.interface._flash_attn_fwd/_bwd, whose JIT kernels are named after the
# Python classes, e.g. kernel_cutlass_kernel_flash_attncuteflash_fwd_sm100FlashAttentionForwardSm100_...
_FA4_FWD, _FA4_BWD = r"FlashAttentionForwardSm\d+", r"FlashAttentionBackwardSm\d+"
# A backend forced through SDPA's flash op must not have run any other SDPA kernel.
_NOT_SDPA_OTHERS = (r"fmha_cutlass", r"cudnn_attention", r"_scaled_dot_product_attention_math")

EAGER = {
    "cpu": Signature(
        fwd_ops=_MATMUL_SOFTMAX,
        bwd_ops=_MATH_BWD,
        forbidden=(r"scaled_dot_product", _FUSED_KERNELS),
    ),
    "cuda": Signature(
        fwd_ops=_MATMUL_SOFTMAX,
        bwd_ops=_MATH_BWD,
        fwd_kernels=(r"(?i)gemm|cutlass|sm90_xmma|ampere|nvjet", r"(?i)softmax"),
        forbidden=(r"scaled_dot_product", _FUSED_KERNELS),
    ),
}
# Default dispatch: any SDPA implementation; the one chosen is recorded.
SDPA = {
    "cpu": Signature(fwd_ops=(r"^aten::scaled_dot_product_attention$",)),
    "cuda": Signature(fwd_ops=(r"^aten::scaled_dot_product_attention$",)),
}
SDPA_MATH = {
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
}


def _forced_sdpa(
    op: str, kernels: tuple[str, ...] = (), forbidden: tuple[str, ...] = ()
) -> Signature:
    """A forced SDPA kernel: its aten op, its autograd node, its CUDA kernels (fwd, bwd)."""
    node = "".join(word.capitalize() for word in op.split("_"))  # ScaledDotProduct<node>Backward
    return Signature(
        fwd_ops=(rf"^aten::_scaled_dot_product_{op}$",),
        bwd_ops=(rf"{op}_backward|ScaledDotProduct{node}Backward",),
        fwd_kernels=kernels[:1],
        bwd_kernels=kernels[1:],
        forbidden=(r"_scaled_dot_product_attention_math", *forbidden),
    )


def _replaced_flash(own: tuple[str, str], other: tuple[str, str]) -> Signature:
    """SDPA's flash op served by a replacement: its own kernels, never FA2's or the other's."""
    return Signature(
        fwd_ops=(_SDPA_FLASH_OP,),
        fwd_kernels=own[:1],
        bwd_kernels=own[1:],
        forbidden=(*_FA2_KERNELS, *other, *_NOT_SDPA_OTHERS),
    )


_TORCH_FA2 = (r"pytorch_flash::flash_fwd", r"pytorch_flash::flash_bwd")
_CUTLASS = (r"fmha_cutlassF", r"fmha_cutlassB")
_OTHER_FUSED = r"_scaled_dot_product_(flash|efficient)_attention"
SDPA_FLASH = {
    "cpu": _forced_sdpa(
        "flash_attention_for_cpu", forbidden=(r"efficient_attention|cudnn_attention",)
    ),
    "cuda": _forced_sdpa("flash_attention", _TORCH_FA2, (r"fmha_cutlass", r"cudnn_attention")),
}
SDPA_EFFICIENT = {
    "cuda": _forced_sdpa("efficient_attention", _CUTLASS, (r"pytorch_flash::", r"cudnn_attention")),
}
SDPA_CUDNN = {
    "cuda": _forced_sdpa(
        "cudnn_attention", (), (r"pytorch_flash::", r"fmha_cutlass", _OTHER_FUSED)
    ),
}
FLASH_ATTN = {
    "cuda": Signature(
        fwd_ops=(r"flash_attn::_flash_attn_forward|FlashAttnFunc",),
        bwd_ops=(r"flash_attn::_flash_attn_backward|FlashAttnFuncBackward",),
        fwd_kernels=(r"(?<!pytorch_)flash::flash_fwd",),
        bwd_kernels=(r"(?<!pytorch_)flash::flash_bwd",),
        forbidden=(r"scaled_dot_product", r"pytorch_flash::", r"fmha_cutlass"),
    ),
}
# FA3 and FA4 must show their own kernels: a plain FA2 record cannot pass for them.
FA3 = {"cuda": _replaced_flash((_FA3_FWD, _FA3_BWD), (_FA4_FWD, _FA4_BWD))}
FA4 = {"cuda": _replaced_flash((_FA4_FWD, _FA4_BWD), (_FA3_FWD, _FA3_BWD))}
FLEX = {
    "cuda": Signature(
        fwd_kernels=(r"triton_tem_fused|flex",),
        forbidden=(r"scaled_dot_product", r"pytorch_flash::", r"fmha_cutlass"),
    ),
}
