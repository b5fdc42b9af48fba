"""Build Dao-AILab flash-attn from its pinned sdist, for hosts without conda or internet.

PyPI ships flash-attn only as an sdist whose setup.py first tries to download a
prebuilt wheel (no timeout). Here the wheel is compiled locally instead
(FLASH_ATTENTION_FORCE_BUILD=TRUE) for the detected GPU only, with MAX_JOBS sized
to cores and memory, optionally "slim" (the FLASHATTENTION_DISABLE_* macros: no
dropout/alibi/softcap/local/uneven-K, ~3.5x less compilation). The wheel is cached
in <out>/wheels/ under a local version that names everything its binary depends
on, and installed with `pip install --no-deps --target <out>/site`; jobs of the
flash_attn backend put that folder on sys.path with `activate()`.

Where flash-attn cannot run (no CUDA GPU, no nvcc, CPU-only torch, GPU older than
Ampere) nothing is built and <out>/flash_attn.json says `unavailable` and why;
the rest of the workflow still runs. Setup errors a user must fix (no sdist
offline, no ninja/wheel) fail with a one-line message instead.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from attnbench import host
from attnbench.env import wheelbuild
from attnbench.env.wheelbuild import PACKAGE, BuildUnavailableError
from attnbench.intermediates import FLASH_ATTN_STATUS
from attnbench.io import read_json, write_json

LOG = logging.getLogger("attnbench.env.flashbuild")

# flash-attn 2.8.x's setup.py knows these gencode targets only; a GPU runs the
# binary of its own major version (sm_80 code serves sm_86/sm_89).
ARCH_BY_MAJOR = {8: "80", 9: "90", 10: "100", 12: "120"}
SLIM_MACROS = (
    "FLASHATTENTION_DISABLE_DROPOUT",
    "FLASHATTENTION_DISABLE_ALIBI",
    "FLASHATTENTION_DISABLE_SOFTCAP",
    "FLASHATTENTION_DISABLE_LOCAL",
    "FLASHATTENTION_DISABLE_UNEVEN_K",
)
# Peak host memory of one nvcc job per architecture it compiles (flash-attn's own
# heuristic: 8-9 GB for 4 architectures at NVCC_THREADS=4).
GIB_PER_JOB_ARCH = 2.5
MEMORY_HEADROOM = 0.8  # use at most this share of the available memory


# --------------------------------------------------------------------------- #
# Pure decisions (tested without a GPU)


def arch_for_capability(major: int, minor: int = 0) -> str:
    """The FLASH_ATTN_CUDA_ARCHS entry for a compute capability, e.g. (9, 0) -> "90"."""
    if major < 8:
        raise BuildUnavailableError(
            f"compute capability {major}.{minor} is too old: flash-attn 2 needs 8.0 (Ampere) or newer"
        )
    if major not in ARCH_BY_MAJOR:
        known = ", ".join(f"{m}.x" for m in ARCH_BY_MAJOR)
        raise BuildUnavailableError(
            f"compute capability {major}.{minor} has no flash-attn 2 build target (known: {known})"
        )
    return ARCH_BY_MAJOR[major]


def cuda_archs(capabilities: Iterable[tuple[int, int]]) -> str:
    """FLASH_ATTN_CUDA_ARCHS for these GPUs: distinct targets, sorted, ';'-joined ("90", "80;90")."""
    archs = {arch_for_capability(major, minor) for major, minor in capabilities}
    if not archs:
        raise BuildUnavailableError("no CUDA GPU to build flash-attn for")
    return ";".join(sorted(archs, key=int))


def torch_arch_list(archs: str) -> str:
    """TORCH_CUDA_ARCH_LIST matching FLASH_ATTN_CUDA_ARCHS ("80;90" -> "8.0;9.0"), so torch adds no others."""
    return ";".join(f"{int(a) // 10}.{int(a) % 10}" for a in archs.split(";"))


def nvcc_threads(archs: str) -> int:
    """nvcc --threads parallelises over architectures only: one thread per target, at most 4."""
    return max(1, min(4, len(archs.split(";"))))


def max_jobs(cores: int, available_bytes: int, archs: str = "90") -> int:
    """Parallel nvcc jobs: bounded by cores (each job uses NVCC_THREADS) and by host memory."""
    threads = nvcc_threads(archs)
    by_cores = cores // threads
    by_memory = int(available_bytes * MEMORY_HEADROOM / (GIB_PER_JOB_ARCH * 2**30 * threads))
    return max(1, min(by_cores, by_memory))


def slim_flags(slim: bool) -> list[str]:
    """The -D flags of a slim build (empty for a full one)."""
    return [f"-D{macro}" for macro in SLIM_MACROS] if slim else []


def local_version(archs: str, slim: bool, torch_version: str, cuda_version: str) -> str:
    """The wheel's PEP 440 local version: what its binary depends on, e.g. "cu130.torch2.11.sm90.slim".

    It keys the wheel cache and tells anyone holding the wheel what it can run with.
    """
    major_minor = ".".join(re.findall(r"\d+", torch_version.split("+")[0])[:2])
    cuda = "".join(re.findall(r"\d+", cuda_version)[:2])
    targets = ".".join(f"sm{a}" for a in archs.split(";"))
    return f"cu{cuda}.torch{major_minor}.{targets}.{'slim' if slim else 'full'}"


def build_environment(
    base: Mapping[str, str],
    archs: str,
    jobs: int,
    slim: bool,
    local: str,
    cuda_home: str | os.PathLike | None = None,
) -> dict[str, str]:
    """Environment for `pip wheel` of the sdist: forced local build, our targets, jobs and macros.

    The slim macros go to nvcc (NVCC_APPEND_FLAGS) and to the host compiler
    (CPPFLAGS), so flash_api.cpp refuses dropout/softcap/... instead of ignoring them.
    """
    env = dict(base)
    flags = " ".join(slim_flags(slim))
    env.update(
        FLASH_ATTENTION_FORCE_BUILD="TRUE",
        FLASH_ATTENTION_SKIP_CUDA_BUILD="FALSE",
        FLASH_ATTN_CUDA_ARCHS=archs,
        TORCH_CUDA_ARCH_LIST=torch_arch_list(archs),
        MAX_JOBS=str(jobs),
        NVCC_THREADS=str(nvcc_threads(archs)),
        FLASH_ATTN_LOCAL_VERSION=local,
        PIP_NO_INPUT="1",
    )
    if cuda_home:
        env["CUDA_HOME"] = str(cuda_home)
        env["PATH"] = os.pathsep.join(filter(None, [f"{cuda_home}/bin", env.get("PATH")]))
    if flags:
        for var in ("NVCC_APPEND_FLAGS", "CPPFLAGS"):
            env[var] = f"{env[var]} {flags}".strip() if env.get(var) else flags
    return env


def python_tag() -> str:
    return f"cp{sys.version_info.major}{sys.version_info.minor}"


def wheel_glob(version: str, local: str) -> str:
    return f"{PACKAGE}-{version}+{local}-{python_tag()}-{python_tag()}-*.whl"


# --------------------------------------------------------------------------- #
# What this host can build


def prerequisites(archs_setting: str = "auto") -> tuple[str | None, dict[str, Any]]:
    """Why flash-attn cannot be built to run here (None if it can), and what was found.

    Every missing prerequisite is named, so one reading of the reason is enough.
    """
    import torch

    facts: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    problems = []
    if torch.version.cuda is None:
        problems.append(
            f"torch {torch.__version__} is a CPU-only build (flash-attn needs CUDA torch)"
        )
    nvcc = host.find_nvcc()
    home = host.find_cuda_home(nvcc)
    facts["cuda_home"] = str(home) if home else None
    facts["nvcc"] = (
        host.nvcc_version(str(home / "bin" / "nvcc") if home else nvcc) if nvcc else None
    )
    if nvcc is None:
        problems.append("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    elif home is None:
        problems.append("no CUDA toolkit with include/cuda_runtime.h found (set CUDA_HOME)")
    elif (
        facts["nvcc"]
        and torch.version.cuda
        and facts["nvcc"].split(".")[0] != torch.version.cuda.split(".")[0]
    ):
        problems.append(
            f"nvcc {facts['nvcc']} and torch's CUDA {torch.version.cuda} differ in major version"
        )
    capabilities = host.gpu_capabilities()
    facts["capabilities"] = [f"{a}.{b}" for a, b in capabilities]
    if not capabilities:
        problems.append("no CUDA GPU visible (torch.cuda.is_available() is False)")
    else:
        try:
            facts["cuda_archs"] = (
                cuda_archs(capabilities) if archs_setting == "auto" else archs_setting
            )
            if archs_setting != "auto":
                for major, minor in capabilities:
                    if arch_for_capability(major, minor) not in archs_setting.split(";"):
                        problems.append(
                            f"flash_attn.cuda_archs = {archs_setting} does not cover this GPU "
                            f"(compute capability {major}.{minor})"
                        )
        except BuildUnavailableError as exc:
            problems.append(str(exc))
    reason = None
    if problems:
        reason = "flash-attn cannot run here: " + "; ".join(problems)
    return reason, facts


# --------------------------------------------------------------------------- #
# The rule


def _installed(version: str) -> dict[str, Any] | None:
    """An importable flash_attn already in this environment (e.g. conda-forge's), or None."""
    if importlib.util.find_spec(PACKAGE) is None:
        return None
    found = None
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        found = importlib.metadata.version(wheelbuild.DIST)
    return {"status": "installed", "version": found, "reason": None, "pinned": version}


def _status(**values: Any) -> dict[str, Any]:
    keys = ("status", "reason", "version", "wheel", "site", "build_seconds", "wheel_bytes",
            "cuda_archs", "slim", "nvcc")  # fmt: skip
    return {**dict.fromkeys(keys), **values}


def run(
    settings: Mapping[str, Any], status_path: str | os.PathLike, cores: int | None = None,
    log: logging.Logger = LOG,
) -> dict[str, Any]:  # fmt: skip
    """Decide, build (or reuse) and install flash-attn; write and return flash_attn.json's content.

    `settings` is config's `flash_attn` section (build, version, slim, cuda_archs, max_jobs).
    Wheels, the sdist and the site folder live beside `status_path`.
    """
    status_path = Path(status_path)
    out = status_path.parent
    version = str(settings["version"])
    status = _build_or_explain(settings, out, cores or host.usable_cores(), log)
    if status.get("version") is None and status["status"] == "unavailable":
        status["version"] = version
    status["pinned"] = version
    write_json(status_path, status, schema=FLASH_ATTN_STATUS)
    log.info(
        "flash-attn: %s%s", status["status"], f" ({status['reason']})" if status["reason"] else ""
    )
    return status


def _build_or_explain(
    settings: Mapping[str, Any], out: Path, cores: int, log: logging.Logger
) -> dict[str, Any]:
    import torch

    version, slim = str(settings["version"]), bool(settings["slim"])
    installed = _installed(version)
    if settings["build"] == "never":
        if installed:
            return _status(**installed, slim=None)
        return _status(
            status="unavailable",
            reason="flash_attn.build = never and no flash_attn is installed in this environment "
            "(use envs/flash-attn.yaml, or set flash_attn.build: auto)",
        )
    if installed and installed["version"] and installed["version"].split("+")[0] == version:
        log.info("flash-attn %s is already installed here; not building", installed["version"])
        return _status(**installed, slim=None)

    reason, facts = prerequisites(str(settings["cuda_archs"]))
    if reason:
        return _status(status="unavailable", reason=reason, nvcc=facts.get("nvcc"), slim=slim)
    archs = facts["cuda_archs"]
    local = local_version(archs, slim, torch.__version__, torch.version.cuda)
    common = {
        "version": f"{version}+{local}", "cuda_archs": archs, "slim": slim,
        "nvcc": facts["nvcc"], "cuda_home": facts["cuda_home"], "torch": torch.__version__,
        "cuda": torch.version.cuda, "python": python_tag(),
    }  # fmt: skip
    wheels, site = out / "wheels", out / "site"
    cached = sorted(wheels.glob(wheel_glob(version, local)))
    jobs = None
    if cached:
        wheel = cached[-1]
        record_path = _record_path(wheel)
        record = {}
        if record_path.exists():  # a side file of the cache, not a rule output: no --forcerun
            fix = f"delete {record_path} and rerun (the cached wheel is kept, its build time lost)"
            record = read_json(record_path, keys=("build_seconds",), fix=fix)
        build_seconds = record.get("build_seconds")
        log.info("reusing cached wheel %s (built in %s s)", wheel, build_seconds)
    else:
        wheelbuild.check_build_tools()
        sdist = wheelbuild.find_sdist(version) or wheelbuild.download_sdist(version, out / "sdist")
        jobs_setting = settings.get("max_jobs", "auto")
        jobs = (
            max_jobs(cores, host.available_memory(), archs)
            if jobs_setting == "auto"
            else int(jobs_setting)
        )
        log.info(
            "building flash-attn %s from %s: archs %s, MAX_JOBS %d, NVCC_THREADS %d, slim %s",
            common["version"], sdist, archs, jobs, nvcc_threads(archs), slim,
        )  # fmt: skip
        env = build_environment(os.environ, archs, jobs, slim, local, facts["cuda_home"])
        start = time.monotonic()
        try:
            wheel = wheelbuild.build_wheel(sdist, wheels, env, log)
        except BuildUnavailableError as exc:
            return _status(status="unavailable", reason=f"{exc}; see this rule's log", **common)
        build_seconds = round(time.monotonic() - start, 1)
        write_json(
            _record_path(wheel), {"build_seconds": build_seconds, "max_jobs": jobs, **common}
        )
    try:
        wheelbuild.install_wheel(wheel, site)
    except BuildUnavailableError as exc:
        return _status(status="unavailable", reason=str(exc), **common)
    error = wheelbuild.verify_import(site)
    if error:
        return _status(
            status="unavailable", reason=f"the built flash-attn does not import: {error}", **common
        )
    return _status(
        status="built", wheel=str(wheel), site=str(site), build_seconds=build_seconds,
        wheel_bytes=wheel.stat().st_size, cached=bool(cached), max_jobs=jobs, **common,
    )  # fmt: skip


def _record_path(wheel: Path) -> Path:
    return wheel.with_name(wheel.name + ".json")


# --------------------------------------------------------------------------- #
# Use


def activate(status_json: str | os.PathLike) -> dict[str, Any]:
    """Put the built flash-attn on sys.path (before any availability check); return the status.

    A wheel built against another torch is not activated (its extension would fail
    to load or, worse, misbehave): the returned status says so.
    """
    path = Path(status_json)
    if not path.exists():
        return {"status": "unavailable", "reason": f"{path} does not exist", "activated": False}
    status = dict(read_json(path, schema=FLASH_ATTN_STATUS))
    status["activated"] = False
    site = status.get("site")
    if status.get("status") != "built" or not site:
        return status
    site_path = Path(site)
    if not site_path.is_absolute() and not site_path.is_dir():
        site_path = path.parent / site_path.name  # results moved, or another working directory
    import torch

    built_for = status.get("torch")
    if built_for and built_for != torch.__version__:
        status.update(
            status="unavailable",
            reason=f"flash-attn in {site_path} was built for torch {built_for}, "
            f"this job runs torch {torch.__version__}: rebuild (snakemake -R build_flash_attn)",
        )
        LOG.warning("%s", status["reason"])
        return status
    if not site_path.is_dir():
        status.update(status="unavailable", reason=f"{site_path} is missing: rebuild flash-attn")
        return status
    if PACKAGE in sys.modules:
        LOG.warning("flash_attn was imported before activate(); the built copy may not be used")
    if str(site_path.resolve()) not in sys.path:
        sys.path.insert(0, str(site_path.resolve()))
        importlib.invalidate_caches()
    status["activated"] = True
    LOG.info("flash-attn %s activated from %s", status.get("version"), site_path)
    return status
