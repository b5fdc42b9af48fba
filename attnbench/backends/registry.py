"""The attention backends, runnable: each torch-free record resolved to what runs it.

A record (`attnbench.backend_records`) says what a backend is; this module resolves
its torch side: how to call it (`CALLS[record.call]`), the global state it needs while it
runs (`activate`: `sdpa_kernel` for a forced SDPA kernel, PyTorch's FA3/FA4 in place of
flash), its kernel signatures (`attnbench.backends.signatures.<record.signature_ref>`), and
an availability check that really runs the kernel once (`check`).
A backend that cannot run is reported unavailable with the reason; nothing is ever
substituted under its name (the seed study's fatal flaw).

Every attention function takes q, k, v in SDPA layout (B, heads, N, head_dim)
and returns the output in the layout YOLO12's AAttn needs next: (B, N, heads, head_dim).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from attnbench import backend_records, host
from attnbench.backend_records import BackendRecord
from attnbench.backends import signatures as sig
from attnbench.backends.signatures import Signature
from attnbench.errors import UserError

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

HALF_DTYPES = (torch.float16, torch.bfloat16)


class BackendUnavailableError(UserError):
    """The backend cannot run here (or does not exist); the message says why and the fix.

    A UserError, so a job that stops for it ends with this one line, not a traceback.
    """


@dataclass(frozen=True)
class Backend(BackendRecord):
    """A record with its torch side resolved (`resolve`)."""

    fn: AttentionFn | None = None
    signatures: dict[str, Signature] = field(default_factory=dict)  # by device type
    # Global state it needs while it runs, entered once per run (training, benchmark),
    # never per call: e.g. sdpa_kernel(...) for a forced SDPA kernel.
    activate: Callable[[], contextlib.AbstractContextManager] | None = None

    def signature(self, device_type: str) -> Signature:
        return self.signatures.get(device_type, Signature())

    def context(self) -> contextlib.AbstractContextManager:
        """Enter the global state the backend needs (see `activate`); nothing for most."""
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
    """SDPA; which kernel runs is decided by the `sdpa_kernel` context the backend entered."""
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2)


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


def forced(kernel: SDPBackend) -> Callable[[], contextlib.AbstractContextManager]:
    """SDPA restricted to one kernel: it runs that kernel or raises, never another."""
    return functools.partial(sdpa_kernel, kernel)


@contextlib.contextmanager
def _flash_impl(impl: str) -> Iterator[None]:
    """SDPA's flash kernel with PyTorch's `impl` ("FA3"/"FA4") activated in its place.

    Re-entrant: an inner use (an availability check inside a benchmark) leaves the
    outer activation in place.
    """
    from torch.nn import attention

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        if attention.current_flash_attention_impl() == impl:
            yield
            return
        attention.activate_flash_attention_impl(impl)
        try:
            yield
        finally:
            attention.restore_flash_attention_impl()


# --------------------------------------------------------------------------- #
# The registry


CALLS: dict[str, AttentionFn] = {
    "eager": eager_attention,
    "sdpa": sdpa_attention,
    "flash_attn": flash_attn_attention,
    "flex": flex_attention,
}


def resolve(record: BackendRecord) -> Backend:
    """The runnable backend of a record: its call, its activation and its signatures."""
    if record.flash_impl:
        activate = functools.partial(_flash_impl, record.flash_impl)
    elif record.sdpa_kernel:
        activate = forced(getattr(SDPBackend, record.sdpa_kernel))
    else:
        activate = None
    facts = {f.name: getattr(record, f.name) for f in dataclasses.fields(BackendRecord)}
    return Backend(
        **facts, fn=CALLS[record.call], signatures=getattr(sig, record.signature_ref),
        activate=activate,
    )  # fmt: skip


class _Registry(dict):
    """Name -> Backend, resolved from the records; a record added later resolves when asked."""

    def __missing__(self, name: str) -> Backend:
        if name not in backend_records.RECORDS:
            raise KeyError(name)
        self[name] = resolve(backend_records.RECORDS[name])
        return self[name]


REGISTRY: dict[str, Backend] = _Registry(
    (name, resolve(record)) for name, record in backend_records.RECORDS.items()
)


def get(name: str) -> Backend:
    try:
        return REGISTRY[name]
    except KeyError:
        raise BackendUnavailableError(
            f"unknown backend {name!r}: choose one of {', '.join(backend_records.names())}"
        ) from None


def kernel_dtype(device: torch.device, amp: bool, cast: str = "none") -> torch.dtype:
    """The dtype attention sees in training: fp16 under CUDA AMP, a cast if asked, else fp32."""
    if cast != "none":
        return host.torch_dtype(cast)
    if device.type == "cuda" and amp:
        return torch.float16
    return torch.float32


def needs_cast(backend: Backend, device: torch.device, dtype: torch.dtype) -> bool:
    return device.type in backend.half_only_on and dtype not in HALF_DTYPES


def check(name: str, device: torch.device, dtype: torch.dtype, head_dim: int = 32) -> str | None:
    """Return why `name` cannot run on `device` at `dtype`, or None when it can.

    The last step runs the kernel once, forward and backward, on random data inside
    the backend's `activate` context: availability is observed, not inferred from
    version numbers.
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
            f"{host.dtype_name(dtype)}: set train.amp: true or train.cast: fp16|bf16"
        )
    try:
        with backend.context(), torch.enable_grad():
            shape = (1, 2, 128, head_dim)
            q, k, v = (
                torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3)
            )
            out = backend.fn(q, k, v)
            out.float().sum().backward()
            host.synchronize(device)
    except Exception as exc:  # the kernel's own refusal is the reason
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"{name} failed a test call on {device.type} {host.dtype_name(dtype)}: {first}"
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
