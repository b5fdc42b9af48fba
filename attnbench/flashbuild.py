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

CLI (no Snakemake needed): python -m attnbench.flashbuild --out results/env [--config config.yaml]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from attnbench.io import read_json, write_json
from attnbench.scriptutil import UserError

LOG = logging.getLogger("attnbench.flashbuild")

PACKAGE = "flash_attn"
DIST = "flash-attn"
SDIST_ENV = "ATTNBENCH_FLASH_ATTN_SDIST"
# Where an offline host finds the carried sdist, in order (after $ATTNBENCH_FLASH_ATTN_SDIST).
SDIST_DIRS = (".whl", "results/env/sdist")
STATUS_FILE = "flash_attn.json"

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
COMPILER_ERROR = re.compile(r"(fatal )?error:|\bKilled\b|out of memory", re.IGNORECASE)
LINE_LIMIT = 600  # ninja -v prints whole nvcc command lines; keep the log readable

# Python-side modules the sdist's setup.py imports (pip runs it without build isolation).
BUILD_MODULES = {"wheel": "wheel", "setuptools": "setuptools", "packaging": "packaging"}


class BuildUnavailable(Exception):
    """flash-attn cannot be built or run on this host; the message says why."""


# --------------------------------------------------------------------------- #
# Pure decisions (tested without a GPU)


def arch_for_capability(major: int, minor: int = 0) -> str:
    """The FLASH_ATTN_CUDA_ARCHS entry for a compute capability, e.g. (9, 0) -> "90"."""
    if major < 8:
        raise BuildUnavailable(
            f"compute capability {major}.{minor} is too old: flash-attn 2 needs 8.0 (Ampere) or newer"
        )
    if major not in ARCH_BY_MAJOR:
        known = ", ".join(f"{m}.x" for m in ARCH_BY_MAJOR)
        raise BuildUnavailable(
            f"compute capability {major}.{minor} has no flash-attn 2 build target (known: {known})"
        )
    return ARCH_BY_MAJOR[major]


def cuda_archs(capabilities: Iterable[tuple[int, int]]) -> str:
    """FLASH_ATTN_CUDA_ARCHS for these GPUs: distinct targets, sorted, ';'-joined ("90", "80;90")."""
    archs = {arch_for_capability(major, minor) for major, minor in capabilities}
    if not archs:
        raise BuildUnavailable("no CUDA GPU to build flash-attn for")
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
# Host facts


def gpu_capabilities() -> list[tuple[int, int]]:
    """Compute capabilities of the visible CUDA GPUs (empty without any)."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]


def available_memory() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def usable_cores() -> int:
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


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


def prerequisites(archs_setting: str = "auto") -> tuple[str | None, dict[str, Any]]:
    """Why flash-attn cannot be built to run here (None if it can), and what was found.

    Every missing prerequisite is named, so one reading of the reason is enough.
    """
    import torch

    from attnbench.envinfo import find_nvcc, nvcc_version

    facts: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    problems = []
    if torch.version.cuda is None:
        problems.append(
            f"torch {torch.__version__} is a CPU-only build (flash-attn needs CUDA torch)"
        )
    nvcc = find_nvcc()
    home = find_cuda_home(nvcc)
    facts["cuda_home"] = str(home) if home else None
    facts["nvcc"] = nvcc_version(str(home / "bin" / "nvcc") if home else nvcc) if nvcc else None
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
    capabilities = gpu_capabilities()
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
        except BuildUnavailable as exc:
            problems.append(str(exc))
    reason = None
    if problems:
        reason = "flash-attn cannot run here: " + "; ".join(problems)
    return reason, facts


def _check_build_tools() -> None:
    """ninja and the modules setup.py imports: a user-fixable setup error when missing."""
    from torch.utils.cpp_extension import is_ninja_available

    missing = [pkg for mod, pkg in BUILD_MODULES.items() if importlib.util.find_spec(mod) is None]
    if not is_ninja_available():
        missing.append("ninja")
    if missing:
        raise UserError(
            f"building flash-attn needs {', '.join(missing)}: pip install {' '.join(missing)} "
            "(or set flash_attn.build: never and use envs/flash-attn.yaml)"
        )


# --------------------------------------------------------------------------- #
# Source, build, install


def find_sdist(
    version: str, environ: Mapping[str, str] | None = None, dirs: Iterable[str | Path] = SDIST_DIRS
) -> Path | None:
    """A local flash_attn-<version>.tar.gz: $ATTNBENCH_FLASH_ATTN_SDIST (file or folder), then `dirs`."""
    env = os.environ if environ is None else environ
    name = f"{PACKAGE}-{version}.tar.gz"
    candidates: list[Path] = []
    if env.get(SDIST_ENV):
        given = Path(env[SDIST_ENV]).expanduser()
        if given.is_file():
            return given
        candidates.append(given / name)
    candidates += [Path(d) / name for d in dirs]
    return next((c for c in candidates if c.is_file()), None)


def download_sdist(version: str, dest: Path, runner: Callable[..., Any] = subprocess.run) -> Path:
    """`pip download` the sdist into `dest` (metadata prepared with this env's torch, no build)."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        "--no-build-isolation", "--dest", str(dest), f"{DIST}=={version}",
    ]  # fmt: skip
    env = {**os.environ, "FLASH_ATTENTION_SKIP_CUDA_BUILD": "TRUE", "PIP_NO_INPUT": "1"}
    LOG.info("no local sdist; running %s", " ".join(cmd))
    result = runner(cmd, capture_output=True, text=True, env=env, timeout=600)
    found = find_sdist(version, environ={}, dirs=[dest])
    if result.returncode != 0 or found is None:
        tail = (result.stderr or result.stdout or "").strip().splitlines()
        LOG.info("pip download output:\n%s", "\n".join(tail[-20:]))
        raise UserError(
            f"flash-attn {version} sdist not found locally and `pip download` failed "
            f"({tail[-1] if tail else 'no output'}): put {PACKAGE}-{version}.tar.gz in .whl/ "
            f"or results/env/sdist/, or set {SDIST_ENV}"
        )
    return found


def _shorten(line: str) -> str:
    if len(line) <= LINE_LIMIT:
        return line
    return f"{line[: LINE_LIMIT // 2]} [...] {line[-LINE_LIMIT // 2 :]}"


def stream(
    cmd: list[str], env: Mapping[str, str], log: logging.Logger = LOG
) -> tuple[int, list[str]]:
    """Run `cmd`, logging each line as it comes (a long compile shows progress).

    Returns the exit code and the lines worth quoting: the first compiler errors
    (pip's traceback buries them), then the last lines.
    """
    tail: deque[str] = deque(maxlen=40)
    first_errors: list[str] = []
    progress = re.compile(r"^\[(\d+)/(\d+)\]")
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(env), bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            if not line:
                continue
            tail.append(line)
            if len(first_errors) < 5 and COMPILER_ERROR.search(line):
                first_errors.append(line)
            match = progress.match(line)
            if match:
                done, total = map(int, match.groups())
                log.info(
                    "compile %d/%d (%.0f%%) %s", done, total, 100 * done / total, _shorten(line)
                )
            else:
                log.info("| %s", _shorten(line))
    return proc.returncode, first_errors + list(tail)


def _error_line(lines: list[str]) -> str:
    """The line that says what went wrong: the first error, else the last line."""
    found = next((line for line in lines if COMPILER_ERROR.search(line)), None)
    found = found or next((line for line in reversed(lines) if "error" in line.lower()), None)
    found = found or (lines[-1] if lines else "no output")
    return _shorten(found.strip())[:300]


def build_wheel(
    sdist: Path, wheels: Path, env: Mapping[str, str], log: logging.Logger = LOG
) -> Path:
    """Compile the sdist into a wheel in `wheels` (pip wheel, no isolation: it needs this torch)."""
    wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=wheels) as tmp:
        cmd = [
            sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
            "--wheel-dir", tmp, str(sdist),
        ]  # fmt: skip
        log.info("building: %s", " ".join(cmd))
        code, tail = stream(cmd, env, log)
        built = sorted(Path(tmp).glob(f"{PACKAGE}-*.whl"))
        if code != 0 or not built:
            raise BuildUnavailable(f"building flash-attn failed (exit {code}): {_error_line(tail)}")
        target = wheels / built[0].name
        os.replace(built[0], target)
    return target


def install_wheel(wheel: Path, site: Path) -> None:
    """Install into a fresh folder, then swap it in: a failed install leaves the old site intact."""
    staging = site.with_name(site.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-index",
        "--target",
        str(staging),
        str(wheel),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise BuildUnavailable(
            f"pip install of {wheel.name} failed: {_error_line(result.stderr.splitlines())}"
        )
    shutil.rmtree(site, ignore_errors=True)
    os.replace(staging, site)


def verify_import(site: Path) -> str | None:
    """Import the installed extension in a fresh interpreter; None if it loads, else the error."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import torch, flash_attn_2_cuda, flash_attn; "
        "print(flash_attn.__version__)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True, text=True)
    if result.returncode == 0:
        return None
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit {result.returncode}"


# --------------------------------------------------------------------------- #
# The rule


def _installed(version: str) -> dict[str, Any] | None:
    """An importable flash_attn already in this environment (e.g. conda-forge's), or None."""
    if importlib.util.find_spec(PACKAGE) is None:
        return None
    found = None
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        found = importlib.metadata.version(DIST)
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
    status = _build_or_explain(settings, out, cores or usable_cores(), log)
    if status.get("version") is None and status["status"] == "unavailable":
        status["version"] = version
    status["pinned"] = version
    write_json(status_path, status)
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
        record = read_json(_record_path(wheel)) if _record_path(wheel).exists() else {}
        build_seconds = record.get("build_seconds")
        log.info("reusing cached wheel %s (built in %s s)", wheel, build_seconds)
    else:
        _check_build_tools()
        sdist = find_sdist(version) or download_sdist(version, out / "sdist")
        jobs_setting = settings.get("max_jobs", "auto")
        jobs = (
            max_jobs(cores, available_memory(), archs)
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
            wheel = build_wheel(sdist, wheels, env, log)
        except BuildUnavailable as exc:
            return _status(status="unavailable", reason=f"{exc}; see this rule's log", **common)
        build_seconds = round(time.monotonic() - start, 1)
        write_json(
            _record_path(wheel), {"build_seconds": build_seconds, "max_jobs": jobs, **common}
        )
    try:
        install_wheel(wheel, site)
    except BuildUnavailable as exc:
        return _status(status="unavailable", reason=str(exc), **common)
    error = verify_import(site)
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
    status = dict(read_json(path))
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


def main(argv: list[str] | None = None) -> int:
    """CLI: the rule's logic without Snakemake (settings from config.yaml, overridable)."""
    from attnbench import config as cfg

    parser = argparse.ArgumentParser(
        prog="python -m attnbench.flashbuild", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--out", default="results/env", help="folder of flash_attn.json, wheels/, site/"
    )
    parser.add_argument(
        "--config", default="config.yaml", help="workflow config (its flash_attn section)"
    )
    parser.add_argument("--build", choices=["auto", "never"])
    parser.add_argument("--version")
    parser.add_argument("--slim", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--cuda-archs")
    parser.add_argument("--max-jobs")
    parser.add_argument("--cores", type=int, help="default: the CPUs this process may use")
    parser.add_argument("--log", help="also write the log to this file")
    args = parser.parse_args(argv)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if args.log:
        Path(args.log).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(args.log, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", handlers=handlers)  # fmt: skip
    settings = dict(cfg.load_file(args.config)["flash_attn"]) if Path(args.config).exists() else {}
    defaults = {
        "build": "auto",
        "version": "2.8.3.post2",
        "slim": True,
        "cuda_archs": "auto",
        "max_jobs": "auto",
    }
    settings = {**defaults, **settings}
    for key in defaults:
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    try:
        status = run(settings, Path(args.out) / STATUS_FILE, cores=args.cores)
    except UserError as exc:
        LOG.error("%s", exc)
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print(
        f"flash-attn: {status['status']}" + (f" ({status['reason']})" if status["reason"] else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
