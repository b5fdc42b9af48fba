"""The ops and kernels that prove which attention implementation ran, per backend.

Each backend's record (`attnbench.backends.REGISTRY`) holds one `Signature` per
device type; `attnbench.provenance` checks a profiled run against it. Plain data:
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
SDPA_FLASH = {
    "cpu": Signature(
        fwd_ops=(r"^aten::_scaled_dot_product_flash_attention_for_cpu$",),
        bwd_ops=(r"flash_attention_for_cpu_backward|ScaledDotProductFlashAttentionForCpuBackward",),
        forbidden=(
            r"_scaled_dot_product_attention_math",
            r"efficient_attention|cudnn_attention",
        ),
    ),
    "cuda": Signature(
        fwd_ops=(_SDPA_FLASH_OP,),
        bwd_ops=(
            r"_scaled_dot_product_flash_attention_backward|ScaledDotProductFlashAttentionBackward",
        ),
        fwd_kernels=(r"pytorch_flash::flash_fwd",),
        bwd_kernels=(r"pytorch_flash::flash_bwd",),
        forbidden=(r"_scaled_dot_product_attention_math", r"fmha_cutlass", r"cudnn_attention"),
    ),
}
SDPA_EFFICIENT = {
    "cuda": Signature(
        fwd_ops=(r"^aten::_scaled_dot_product_efficient_attention$",),
        bwd_ops=(r"efficient_attention_backward|ScaledDotProductEfficientAttentionBackward",),
        fwd_kernels=(r"fmha_cutlassF",),
        bwd_kernels=(r"fmha_cutlassB",),
        forbidden=(r"_scaled_dot_product_attention_math", r"pytorch_flash::", r"cudnn_attention"),
    ),
}
SDPA_CUDNN = {
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
FA3 = {
    "cuda": Signature(
        fwd_ops=(_SDPA_FLASH_OP,),
        fwd_kernels=(_FA3_FWD,),
        bwd_kernels=(_FA3_BWD,),
        forbidden=(*_FA2_KERNELS, _FA4_FWD, _FA4_BWD, *_NOT_SDPA_OTHERS),
    ),
}
FA4 = {
    "cuda": Signature(
        fwd_ops=(_SDPA_FLASH_OP,),
        fwd_kernels=(_FA4_FWD,),
        bwd_kernels=(_FA4_BWD,),
        forbidden=(*_FA2_KERNELS, _FA3_FWD, _FA3_BWD, *_NOT_SDPA_OTHERS),
    ),
}
FLEX = {
    "cuda": Signature(
        fwd_kernels=(r"triton_tem_fused|flex",),
        forbidden=(r"scaled_dot_product", r"pytorch_flash::", r"fmha_cutlass"),
    ),
}
