"""Building the flash-attn wheel: find or download the sdist, compile, install, verify.

The decisions (targets, jobs, flags, cache key) are `attnbench.flashbuild`'s; this
module runs pip and streams its output into the rule's log.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from attnbench.scriptutil import UserError

LOG = logging.getLogger("attnbench.flashbuild")

PACKAGE = "flash_attn"
DIST = "flash-attn"
SDIST_ENV = "ATTNBENCH_FLASH_ATTN_SDIST"
# Where an offline host finds the carried sdist, in order (after $ATTNBENCH_FLASH_ATTN_SDIST).
SDIST_DIRS = (".whl", "results/env/sdist")
COMPILER_ERROR = re.compile(r"(fatal )?error:|\bKilled\b|out of memory", re.IGNORECASE)
LINE_LIMIT = 600  # ninja -v prints whole nvcc command lines; keep the log readable
# Python-side modules the sdist's setup.py imports (pip runs it without build isolation).
BUILD_MODULES = {"wheel": "wheel", "setuptools": "setuptools", "packaging": "packaging"}


class BuildUnavailableError(Exception):
    """flash-attn cannot be built or run on this host; the message says why."""


def check_build_tools() -> None:
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
            raise BuildUnavailableError(
                f"building flash-attn failed (exit {code}): {_error_line(tail)}"
            )
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
        raise BuildUnavailableError(
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
