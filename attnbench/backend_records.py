"""One torch-free record per attention backend: every fact the workflow knows about it.

The Snakefile, the config check (`config.load_schema` fills the schema's backend lists from
`names()`), the cost models and provenance's labels read these records at parse time or
without torch. The runnable half (attention function, SDPA activation, availability probe)
is resolved from a record by `attnbench.backends.registry`, and its kernel signatures are
`attnbench.backends.signatures.<signature_ref>`: adding a backend is one record here plus its
signature there.
"""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.errors import ConfigError

FLASH_ATTN_STATUS = "results/env/flash_attn.json"
DEFAULT_ENV = "torch"

# Profiled forward op names that name a kernel (provenance's `dispatched` labels).
_SDPA_OP = r"_scaled_dot_product_{}"


@dataclass(frozen=True)
class BackendRecord:
    name: str
    description: str
    devices: tuple[str, ...]  # device types it can run on
    signature_ref: str  # its signatures by device type: attnbench.backends.signatures.<ref>
    # How it is called (attnbench.backends.registry.CALLS): eager | sdpa | flash_attn | flex.
    call: str = "sdpa"
    sdpa_kernel: str | None = None  # the SDPBackend it forces SDPA to (MATH, CUDNN_ATTENTION, ..)
    flash_impl: str | None = None  # PyTorch's flash implementation it activates (FA3, FA4)
    half_only_on: tuple[str, ...] = ()  # device types where it needs fp16/bf16
    # Fused kernels need q/k/v with a contiguous last dim. YOLO12's qkv comes from a
    # conv in (B, C, H, W) layout, so its channels are strided unless copied.
    contiguous_qkv: bool = True
    package: str | None = None  # an import it needs beyond torch
    env: str = DEFAULT_ENV  # its jobs run in envs/<env>.yaml
    flash_build: bool = False  # its jobs activate the wheel of rule build_flash_attn
    # Holds N x N score tensors: memory grows as N^2 (the kernel benchmark's memory
    # estimate, the sweep's largest-batch cost class).
    materializes_scores: bool = False
    stock: bool = False  # Ultralytics' own AAttn arithmetic: what paired timing's `bare` runs
    # The kernel's labels: (regex over a profile's forward op and kernel names, label),
    # first match wins; `attnbench.backends.provenance.dispatched` reports the label.
    kernel: tuple[tuple[str, str], ...] = ()


HALF_ON_CUDA = ("cuda",)
ANY = ("cpu", "cuda")

RECORDS: dict[str, BackendRecord] = {
    r.name: r
    for r in [
        BackendRecord(
            "eager", "Ultralytics' stock AAttn (matmul, softmax, matmul)", ANY, "EAGER",
            call="eager", contiguous_qkv=False, materializes_scores=True, stock=True,
            # matmul + softmax outside SDPA (SDPA's math kernel runs a softmax too)
            kernel=((r"^(?!.*scaled_dot_product).*aten::softmax", "eager (matmul + softmax)"),),
        ),
        BackendRecord("sdpa", "F.scaled_dot_product_attention, default dispatch", ANY, "SDPA"),
        BackendRecord(
            "sdpa_math", "SDPA forced to the math kernel", ANY, "SDPA_MATH",
            sdpa_kernel="MATH", materializes_scores=True,
            kernel=((_SDPA_OP.format("attention_math"), "math"),),
        ),
        BackendRecord(
            "sdpa_efficient", "SDPA forced to memory-efficient attention (xFormers/CUTLASS)",
            ("cuda",), "SDPA_EFFICIENT", sdpa_kernel="EFFICIENT_ATTENTION",
            kernel=((_SDPA_OP.format("efficient_attention"), "efficient"),),
        ),
        BackendRecord(
            "sdpa_flash", "SDPA forced to PyTorch's built-in FlashAttention-2", ANY, "SDPA_FLASH",
            sdpa_kernel="FLASH_ATTENTION", half_only_on=HALF_ON_CUDA,
            kernel=(
                (_SDPA_OP.format("flash_attention_for_cpu"), "flash (cpu)"),
                (_SDPA_OP.format("flash_attention"), "flash"),
            ),
        ),
        BackendRecord(
            "sdpa_cudnn", "SDPA forced to cuDNN attention", ("cuda",), "SDPA_CUDNN",
            sdpa_kernel="CUDNN_ATTENTION", half_only_on=HALF_ON_CUDA,
            kernel=((_SDPA_OP.format("cudnn_attention"), "cudnn"),),
        ),
        BackendRecord(
            "flash_attn", "Dao-AILab flash-attn 2 (flash_attn_func)", ("cuda",), "FLASH_ATTN",
            call="flash_attn", half_only_on=HALF_ON_CUDA, package="flash_attn",
            env="flash-attn", flash_build=True, kernel=((r"flash_attn::", "flash-attn"),),
        ),
        BackendRecord(
            "fa3", "SDPA flash with FlashAttention-3 activated (prototype)", ("cuda",), "FA3",
            flash_impl="FA3", half_only_on=HALF_ON_CUDA,
        ),
        BackendRecord(
            "fa4", "SDPA flash with FlashAttention-4 activated (prototype)", ("cuda",), "FA4",
            flash_impl="FA4", half_only_on=HALF_ON_CUDA,
        ),
        BackendRecord(
            "flex", "FlexAttention, compiled with torch.compile", ("cuda",), "FLEX",
            call="flex", kernel=((r"triton_tem_fused|flex", "flex"),),
        ),
    ]
}  # fmt: skip


def names() -> tuple[str, ...]:
    """Every backend's name, in the records' order (read when asked: tests add records)."""
    return tuple(RECORDS)


def record(name: str) -> BackendRecord:
    """The record of `name`; a ConfigError names the valid backends."""
    try:
        return RECORDS[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}: choose one of {', '.join(RECORDS)}") from None


def is_stock(name: str) -> bool:
    """Whether `name` is a backend that runs Ultralytics' own AAttn arithmetic."""
    return name in RECORDS and RECORDS[name].stock


def conda_env_file(*names_: str) -> str:
    """The conda env file (relative to rules/) of a job that runs all of `names_`.

    One env each; a job mixing backends runs in the one env beyond torch's they need
    (flash-attn's is a superset of torch's), never in two.
    """
    envs = sorted({record(n).env for n in names_} - {DEFAULT_ENV})
    if len(envs) > 1:
        raise ConfigError(
            f"backends {', '.join(names_)} need different conda envs ({', '.join(envs)}): "
            "run them in separate jobs"
        )
    return f"../envs/{envs[0] if envs else DEFAULT_ENV}.yaml"


def flash_attn_input(*names_: str) -> str | list[str]:
    """The flash-attn build status when one of `names_` uses the built wheel, else no input."""
    return FLASH_ATTN_STATUS if any(record(n).flash_build for n in names_) else []


def kernel_labels() -> list[tuple[str, str]]:
    """(pattern, label) of every record's kernels, in the records' order."""
    return [pair for r in RECORDS.values() for pair in r.kernel]
