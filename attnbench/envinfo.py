"""What this host is: versions, GPU, git commit; and which backends can run here.

Every result file carries this record so that a number can be traced to the
software and hardware that produced it. Collection never fails: a fact that
cannot be read is `None`, not an exception.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import platform
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch

from attnbench import backends
from attnbench.scriptutil import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
# Same code under two distribution names (the headless one avoids roboflow's cv2 clash).
ULTRALYTICS_DISTS = ("ultralytics", "ultralytics-opencv-headless")


def select_device(spec: str | int | None = "auto") -> torch.device:
    """The torch device for a config value: "auto" (CUDA if present, else CPU), "cpu", or a CUDA index.

    An explicit CUDA request on a host without one is a one-line UserError, never a
    silent fall-back to the CPU (that would mislabel every timing).
    """
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


def _run(cmd: list[str], timeout: float = 10.0, cwd: Path | None = None) -> str | None:
    """stdout of a short command, or None when it is missing or fails."""
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=True, cwd=cwd
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def find_nvcc(environ: dict[str, str] | None = None) -> str | None:
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
    text = _run([nvcc, "--version"]) or ""
    match = re.search(r"V(\d+\.\d+(?:\.\d+)?)", text) or re.search(r"release (\d+\.\d+)", text)
    return match.group(1) if match else None


def cpu_model() -> str | None:
    """The CPU's marketing name (Linux /proc/cpuinfo, else platform)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _dist_version(*names: str) -> str | None:
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(name)
    return None


def git_state(root: Path = REPO_ROOT) -> dict[str, Any]:
    """The commit the code came from and whether tracked files differ from it."""
    commit = _run(["git", "rev-parse", "HEAD"], cwd=root)
    dirty = None
    if commit:
        status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root)
        dirty = bool(status) if status is not None else None
    return {"git_commit": commit, "git_dirty": dirty}


def _driver_version() -> str | None:
    with contextlib.suppress(Exception):
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
            return version.decode() if isinstance(version, bytes) else str(version)
        finally:
            pynvml.nvmlShutdown()
    out = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    return out.splitlines()[0].strip() if out else None


def gpu_info(device: torch.device | None = None) -> dict[str, Any]:
    """Name, compute capability, memory and driver of the CUDA device (all None without one)."""
    info: dict[str, Any] = dict.fromkeys(
        ("gpu_name", "compute_capability", "gpu_memory_gb", "gpu_count", "driver")
    )
    if not torch.cuda.is_available():
        return info
    index = device.index if device is not None and device.type == "cuda" else None
    index = torch.cuda.current_device() if index is None else index
    props = torch.cuda.get_device_properties(index)
    info.update(
        gpu_name=props.name,
        compute_capability=f"{props.major}.{props.minor}",
        gpu_memory_gb=round(props.total_memory / 2**30, 1),
        gpu_count=torch.cuda.device_count(),
        driver=_driver_version(),
    )
    return info


def environment(device: torch.device | None = None) -> dict[str, Any]:
    """Versions, hardware and provenance of this run, as one flat dict."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        **backends.versions(),
        "ultralytics": _dist_version(*ULTRALYTICS_DISTS),
        "triton": _dist_version("triton"),
        "nvcc": nvcc_version(),
        **gpu_info(device),
        "device": str(device) if device is not None else None,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": None,
        "platform": platform.platform(),
        **git_state(),
    }
    with contextlib.suppress(Exception):
        import psutil

        env["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    return env


def probe_backends(
    names: list[str], device: torch.device, dtype: torch.dtype, head_dim: int = 32
) -> dict[str, dict[str, Any]]:
    """For each backend: can it run here at the dtype training will give it, and if not, why.

    `backends.check` runs the kernel once, forward and backward: availability is
    observed, not inferred from version numbers.
    """
    result = {}
    for name in names:
        backend = backends.get(name)
        reason = backends.check(name, device, dtype, head_dim=head_dim)
        result[name] = {
            "available": reason is None,
            "reason": reason,
            "dtype": str(dtype).removeprefix("torch."),
            "device": str(device),
            "description": backend.description,
            "expected": backend.signature(device.type).as_dict(),
        }
    return result
