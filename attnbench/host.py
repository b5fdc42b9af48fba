"""Facts about this host and its devices, in one place: device choice, synchronise,
free memory, cores, the CUDA toolkit, GPU capabilities, NVML, OOM (and the tests'
forced OOM), releasing device memory, dtype names.

torch, psutil and pynvml are imported inside the functions: light scripts and the
GPU-slot code import this module before CUDA may start.
"""

from __future__ import annotations

import atexit
import contextlib
import fnmatch
import functools
import gc
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnbench.errors import UserError

if TYPE_CHECKING:
    import torch

# One dtype map: config spells dtypes both ways (train.cast: fp16, kernels.dtypes: float16).
DTYPE_NAMES = {
    "fp16": "float16", "float16": "float16", "half": "float16",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp32": "float32", "float32": "float32", "float": "float32",
}  # fmt: skip


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype for a config name in either spelling ("fp16" or "float16")."""
    import torch

    try:
        return getattr(torch, DTYPE_NAMES[name])
    except KeyError:
        raise UserError(
            f"dtype {name!r} is not known: use one of {', '.join(DTYPE_NAMES)}"
        ) from None


def dtype_name(dtype: torch.dtype) -> str:
    """The spelling result files use: "float16" for torch.float16."""
    return str(dtype).removeprefix("torch.")


# --------------------------------------------------------------------------- #
# Devices


def select_device(spec: str | int | None = "auto") -> torch.device:
    """The torch device for a config value: "auto" (CUDA if present, else CPU), "cpu", or a CUDA index.

    An explicit CUDA request on a host without one is a one-line UserError, never a
    silent fall-back to the CPU (that would mislabel every timing).
    """
    import torch

    text = "auto" if spec is None else str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"(?:cuda:?)?(\d*)", text)
    if match is None:
        raise UserError(f"device {spec!r} is not valid: use auto, cpu, or a CUDA index such as 0")
    index = int(match.group(1) or 0)
    if not torch.cuda.is_available():
        raise UserError(
            f"device {spec!r} asks for CUDA but torch {torch.__version__} sees no CUDA GPU: "
            "use device: auto or cpu"
        )
    count = torch.cuda.device_count()
    if index >= count:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
        raise UserError(
            f"device {spec!r} does not exist: torch sees {count} CUDA device(s){where}; "
            "use device: auto or an index below that"
        )
    return torch.device("cuda", index)


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work (a no-op on a CPU): timings must include it."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def free_bytes(device: torch.device) -> int:
    """Free memory where the problem lives: the GPU's, or the host's available RAM."""
    if device.type == "cuda":
        import torch

        # Blocks cached by this process from earlier problems are free for the next one;
        # without this, one large math problem made later ones look out of memory.
        torch.cuda.empty_cache()
        return int(torch.cuda.mem_get_info(device)[0])
    return available_memory()


def device_name(device: torch.device) -> str | None:
    """The GPU's name, or the CPU's model on a CPU."""
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    return cpu_model()


def gpu_capabilities() -> list[tuple[int, int]]:
    """Compute capabilities of the visible CUDA GPUs (empty without any)."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]


def is_oom(exc: BaseException) -> bool:
    """An out-of-memory failure, whether torch raised its own type or a message says so."""
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def first_line(exc: BaseException) -> str:
    """An error's first line, for a result's `reason` (its type when it has no text)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def oom_reason(exc: BaseException) -> str:
    """The `reason` of a result that ran out of memory; any other error is raised again.

    Used in an `except` block: out of memory is a result (status `oom`), never a crash.
    """
    if not is_oom(exc):
        raise exc
    return f"out of memory: {first_line(exc)}"


# `ATTNBENCH_FORCE_OOM` (tests only) makes chosen sweep points, probes, paired-timing arms
# or inference jobs raise an out-of-memory error: comma-separated globs of their ids or
# `batch>N`.
FORCE_OOM_ENV = "ATTNBENCH_FORCE_OOM"


def forced_oom(item_id: str, batch: int, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ATTNBENCH_FORCE_OOM asks this point or probe to run out of memory."""
    spec = (os.environ if environ is None else environ).get(FORCE_OOM_ENV, "")
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        above = re.fullmatch(r"batch>(\d+)", item)
        if (above and batch > int(above.group(1))) or (
            not above and fnmatch.fnmatch(item_id, item)
        ):
            return True
    return False


def forced_error(item_id: str) -> torch.OutOfMemoryError:
    """The out-of-memory error ATTNBENCH_FORCE_OOM makes a point or probe raise."""
    import torch

    return torch.OutOfMemoryError(f"CUDA out of memory (forced by {FORCE_OOM_ENV} for {item_id})")


def release(device: torch.device, compiled: bool = False) -> None:
    """Free what earlier points left: Python garbage, cached blocks, peak statistics."""
    import torch

    gc.collect()
    if compiled:  # fresh models would otherwise recompile up to the limit, then run eager
        with contextlib.suppress(Exception):
            torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# --------------------------------------------------------------------------- #
# The host


def available_memory() -> int:
    """Bytes of host memory available to new processes."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def usable_cores() -> int:
    """CPUs this process may run on (its affinity, not the machine's count)."""
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_model() -> str | None:
    """The CPU's marketing name (Linux /proc/cpuinfo, else platform)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def run_quiet(cmd: list[str], timeout: float = 10.0, cwd: Path | None = None) -> str | None:
    """stdout of a short command, or None when it is missing or fails."""
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=True, cwd=cwd
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


# --------------------------------------------------------------------------- #
# The CUDA toolkit


def find_nvcc(environ: Mapping[str, str] | None = None) -> str | None:
    """The nvcc that torch's extension builder would use: $CUDA_HOME, $CUDA_PATH, PATH, /usr/local/cuda."""
    env = os.environ if environ is None else environ
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if env.get(var):
            candidate = Path(env[var]) / "bin" / "nvcc"
            if candidate.is_file():
                return str(candidate)
    found = shutil.which("nvcc", path=env.get("PATH"))
    if found:
        return found
    default = Path("/usr/local/cuda/bin/nvcc")
    return str(default) if default.is_file() else None


@functools.cache
def nvcc_version(nvcc: str | None = None) -> str | None:
    """nvcc's release, e.g. "13.0.88" (from `nvcc --version`), or None without nvcc."""
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        return None
    text = run_quiet([nvcc, "--version"]) or ""
    match = re.search(r"V(\d+\.\d+(?:\.\d+)?)", text) or re.search(r"release (\d+\.\d+)", text)
    return match.group(1) if match else None


def find_cuda_home(nvcc: str | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The CUDA toolkit to compile against: one with bin/nvcc and include/cuda_runtime.h.

    torch guesses CUDA_HOME from nvcc's folder, which is wrong for a wrapper such as
    /usr/local/bin/nvcc; so look where toolkits live and hand the answer to the build.
    """
    env = os.environ if environ is None else environ
    candidates = [Path(env[v]) for v in ("CUDA_HOME", "CUDA_PATH") if env.get(v)]
    if nvcc:
        candidates.append(Path(nvcc).resolve().parents[1])
    candidates.append(Path("/usr/local/cuda"))
    versioned = Path("/usr/local").glob("cuda-*")
    candidates += sorted(
        versioned, key=lambda p: [int(x) for x in re.findall(r"\d+", p.name)], reverse=True
    )
    for root in candidates:
        if (root / "bin" / "nvcc").is_file() and (root / "include" / "cuda_runtime.h").is_file():
            return root
    return None


# --------------------------------------------------------------------------- #
# NVML


@functools.cache
def nvml() -> Any | None:
    """pynvml, initialised once per process (shut down at exit), or None without a driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no package, or no driver: NVMLError_LibraryNotFound, _DriverNotLoaded
        return None
    atexit.register(_nvml_shutdown, pynvml)
    return pynvml


def _nvml_shutdown(pynvml: Any) -> None:
    with contextlib.suppress(Exception):
        pynvml.nvmlShutdown()


def driver_version() -> str | None:
    """The NVIDIA driver's version (NVML, else nvidia-smi), or None."""
    lib = nvml()
    if lib is not None:
        with contextlib.suppress(Exception):
            version = lib.nvmlSystemGetDriverVersion()
            return version.decode() if isinstance(version, bytes) else str(version)
    out = run_quiet(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    return out.splitlines()[0].strip() if out else None


# --------------------------------------------------------------------------- #
# Profiling


def profiler(device: torch.device):
    """torch.profiler over CPU ops (and CUDA kernels on a GPU) that lets CUPTI go afterwards.

    Kineto keeps CUPTI attached after a profile ends unless TEARDOWN_CUPTI=1
    (pytorch/pytorch#144455: training 10-20% slower after profiling). Our profiles run
    before and inside the timed loop, so every later launch would pay for it. A value
    the user set wins.
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        os.environ.setdefault("TEARDOWN_CUPTI", "1")
        activities.append(ProfilerActivity.CUDA)
    return profile(activities=activities, record_shapes=False)
