"""What the workflow knows about each backend before torch is imported.

The Snakefile, the config schema's check and `snakemake -n` read these facts at
parse time, so this module imports nothing heavy. The runnable half of each record
(attention function, kernel signatures, SDPA activation) is `attnbench.backends.registry`,
whose registry is built from this one: adding a backend means an entry in both.
"""

from __future__ import annotations

from dataclasses import dataclass

FLASH_ATTN_STATUS = "results/env/flash_attn.json"


@dataclass(frozen=True)
class BackendInfo:
    name: str
    description: str
    package: str | None = None  # an import it needs beyond torch
    conda_env: str = "torch"  # its jobs run in envs/<conda_env>.yaml
    flash_build: bool = False  # its jobs activate the wheel of rule build_flash_attn
    materializes_scores: bool = False  # holds N x N score tensors (memory grows as N^2)


INFO: dict[str, BackendInfo] = {
    info.name: info
    for info in [
        BackendInfo(
            "eager", "Ultralytics' stock AAttn (matmul, softmax, matmul)", materializes_scores=True
        ),
        BackendInfo("sdpa", "F.scaled_dot_product_attention, default dispatch"),
        BackendInfo("sdpa_math", "SDPA forced to the math kernel", materializes_scores=True),
        BackendInfo(
            "sdpa_efficient", "SDPA forced to memory-efficient attention (xFormers/CUTLASS)"
        ),
        BackendInfo("sdpa_flash", "SDPA forced to PyTorch's built-in FlashAttention-2"),
        BackendInfo("sdpa_cudnn", "SDPA forced to cuDNN attention"),
        BackendInfo(
            "flash_attn",
            "Dao-AILab flash-attn 2 (flash_attn_func)",
            package="flash_attn",
            conda_env="flash-attn",
            flash_build=True,
        ),
        BackendInfo("fa3", "SDPA flash with FlashAttention-3 activated (prototype)"),
        BackendInfo("fa4", "SDPA flash with FlashAttention-4 activated (prototype)"),
        BackendInfo("flex", "FlexAttention, compiled with torch.compile"),
    ]
}
NAMES: tuple[str, ...] = tuple(INFO)


def conda_env_file(name: str) -> str:
    """The conda env file of `name`'s jobs, relative to rules/."""
    return f"../envs/{INFO[name].conda_env}.yaml"


def flash_attn_input(name: str) -> str | list[str]:
    """The flash-attn build status for backends that use the built wheel, else no input."""
    return FLASH_ATTN_STATUS if INFO[name].flash_build else []
