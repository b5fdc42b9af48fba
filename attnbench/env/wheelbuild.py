"""Building the flash-attn wheel: find or download the sdist, compile, install, verify.

The decisions (targets, jobs, flags, cache key) are `attnbench.env.flashbuild`'s; this
module runs pip and logs the build's progress into the rule's log (one line per
compiled object, a heartbeat while nvcc is quiet, compiler errors), keeping pip's
whole output in a file beside the wheels.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from attnbench.errors import UserError

LOG = logging.getLogger("attnbench.env.flashbuild")

PACKAGE = "flash_attn"
DIST = "flash-attn"
SDIST_ENV = "ATTNBENCH_FLASH_ATTN_SDIST"
# Where an offline host finds the carried sdist, in order (after $ATTNBENCH_FLASH_ATTN_SDIST).
SDIST_DIRS = (".whl", "results/env/sdist")
COMPILER_ERROR = re.compile(r"(fatal )?error:|\bKilled\b|out of memory", re.IGNORECASE)
LINE_LIMIT = 600  # ninja -v prints whole nvcc command lines; keep the log readable
# ninja's default status ("[finished/total] ") starts the line of each finished edge; pip
# indents its build backend's output (two spaces under "Building wheel ..."), so leading
# whitespace is allowed: without it no status line of a real build ever matched.
NINJA_STATUS = re.compile(r"^\s*\[(\d+)/(\d+)\]\s")
COMPILED_SOURCE = re.compile(r"\s-c\s+(\S+\.(?:cu|cpp|cc|c))\b")
HEARTBEAT_S = 60.0  # a "still building" line after this long without progress
MAX_ERRORS = 5
BUILD_OUTPUT = "build-output.log"  # beside the wheels: pip's whole output of the last build
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


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _compiled(line: str) -> str:
    """What a ninja status line built: the source after -c (an nvcc/c++ command), else the line."""
    match = COMPILED_SOURCE.search(line)
    return Path(match.group(1)).name if match else _shorten(line[line.find("]") + 1 :].strip())


class Progress:
    """Progress of a build from ninja's `[k/n]` lines: one INFO line per finished object,
    with elapsed time and an estimate of what is left, and a heartbeat when nothing comes.
    """

    def __init__(self, log: logging.Logger, heartbeat_s: float, clock: Callable[[], float]):
        self.log, self.heartbeat_s, self.clock = log, heartbeat_s, clock
        self.start = self.last = clock()
        self.done = self.total = 0

    def line(self, line: str) -> bool:
        """Log a `[k/n]` line as progress (True), or leave the line to the caller (False)."""
        match = NINJA_STATUS.match(line)
        if not match:
            return False
        self.done, self.total = map(int, match.groups())
        elapsed = self.clock() - self.start
        self.last = self.clock()
        left = ""
        if 0 < self.done < self.total:
            left = f", about {_duration(elapsed / self.done * (self.total - self.done))} left"
        self.log.info(
            "compile %d/%d (%.0f%%) %s, %s elapsed%s",
            self.done, self.total, 100 * self.done / self.total, _compiled(line),
            _duration(elapsed), left,
        )  # fmt: skip
        return True

    def tick(self) -> None:
        """A heartbeat line when nothing was logged for `heartbeat_s` (nvcc's first objects take minutes)."""
        now = self.clock()
        if now - self.last < self.heartbeat_s:
            return
        self.last = now
        done = (
            f"{self.done} of {self.total} objects compiled"
            if self.total
            else "no object compiled yet"
        )
        self.log.info("still building: %s, %s elapsed", done, _duration(now - self.start))


def stream(
    cmd: list[str],
    env: Mapping[str, str],
    log: logging.Logger = LOG,
    output: Path | None = None,
    heartbeat_s: float = HEARTBEAT_S,
) -> tuple[int, list[str]]:
    """Run `cmd`, logging its progress at INFO as it comes (ninja's `[k/n]`, a heartbeat,
    compiler errors) and every other line at DEBUG; with `output`, all lines go to that file.

    Returns the exit code and the lines worth quoting: the first compiler errors
    (pip's traceback buries them), then the last lines.
    """
    tail: deque[str] = deque(maxlen=40)
    first_errors: list[str] = []
    progress = Progress(log, heartbeat_s, time.monotonic)
    lines: queue.Queue[str | None] = queue.Queue()
    sink = output.open("w") if output else contextlib.nullcontext()
    with sink as fh, subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(env), bufsize=1,
        errors="replace",
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
        reader.start()
        while True:
            try:
                raw = lines.get(timeout=min(heartbeat_s, 5.0))
            except queue.Empty:
                progress.tick()
                continue
            if raw is None:
                break
            if fh:
                fh.write(raw)
            line = raw.rstrip()
            if not line:
                continue
            tail.append(line)
            if progress.line(line):
                continue
            if len(first_errors) < MAX_ERRORS and COMPILER_ERROR.search(line):
                first_errors.append(line)
                log.info("! %s", _shorten(line))
            else:
                log.debug("| %s", _shorten(line))
            progress.tick()
        reader.join()
    if proc.returncode != 0:
        log.info("build output ends:\n%s", "\n".join(_shorten(x) for x in tail))
    return proc.returncode, first_errors + list(tail)


def _pump(source: Iterable[str], lines: queue.Queue[str | None]) -> None:
    """Move the child's lines to the queue (a thread, so the heartbeat runs while nvcc is quiet)."""
    try:
        for raw in source:
            lines.put(raw)
    finally:
        lines.put(None)


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
        output = wheels / BUILD_OUTPUT
        log.info("building: %s", " ".join(cmd))
        log.info(
            "progress below: one line per compiled object (ninja's [k/n]) and a heartbeat "
            "every %.0f s; pip's full output goes to %s",
            HEARTBEAT_S, output,
        )  # fmt: skip
        env = {**env, "PYTHONUNBUFFERED": "1"}  # setup.py's prints arrive as they happen
        code, tail = stream(cmd, env, log, output=output)
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
