"""What ran a result: versions, GPU, git commit; and which backends can run here.

Every result file carries this record so that a number can be traced to the
software and hardware that produced it. Collection never fails: a fact that
cannot be read is `None`, not an exception.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import socket
from pathlib import Path
from typing import Any

import torch

from attnbench import host
from attnbench.backends import registry as backends

REPO_ROOT = Path(__file__).resolve().parents[2]
# Same code under two distribution names (the headless one avoids roboflow's cv2 clash).
ULTRALYTICS_DISTS = ("ultralytics", "ultralytics-opencv-headless")


def _dist_version(*names: str) -> str | None:
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(name)
    return None


def git_state(root: Path = REPO_ROOT) -> dict[str, Any]:
    """The commit the code came from and whether tracked files differ from it."""
    commit = host.run_quiet(["git", "rev-parse", "HEAD"], cwd=root)
    dirty = None
    if commit:
        status = host.run_quiet(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root)
        dirty = bool(status) if status is not None else None
    return {"git_commit": commit, "git_dirty": dirty}


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
        driver=host.driver_version(),
    )
    return info


def environment(device: torch.device | None = None) -> dict[str, Any]:
    """Versions, hardware and provenance of this run, as one flat dict."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        **backends.versions(),
        "ultralytics": _dist_version(*ULTRALYTICS_DISTS),
        "triton": _dist_version("triton"),
        "nvcc": host.nvcc_version(),
        **gpu_info(device),
        "device": str(device) if device is not None else None,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "hostname": socket.gethostname(),
        "cpu_model": host.cpu_model(),
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
            "dtype": host.dtype_name(dtype),
            "device": str(device),
            "description": backend.description,
            "expected": backend.signature(device.type).as_dict(),
        }
    return result
