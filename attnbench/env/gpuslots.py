"""One CUDA device per running GPU job on a multi-GPU host, by file locks.

Snakemake's `gpu` resource is only a counter: with `--resources gpu=4` four GPU
jobs run at once, but every one of them sees all four devices and uses device 0.
`acquire()` gives the calling process a device of its own: it takes an exclusive,
non-blocking `fcntl` lock on `<lock_dir>/<host>/gpu<dev>.lock` for the first free
device, sets `CUDA_VISIBLE_DEVICES` to it and holds the lock while the job runs.
The kernel drops the lock when the process ends, even by SIGKILL, so a slot is
never left stale. Call it before anything initialises CUDA (torch reads
`CUDA_VISIBLE_DEVICES` once, at its first CUDA call).

Sharing a device (`train.jobs_per_gpu` = k > 1): a job that asks for one of k slots
takes a *shared* lock on `gpu<dev>.lock` and an exclusive one on one of
`gpu<dev>.slot<i>.lock` (i < k), so k such jobs run on a device at once and the next
one waits. The shared lock keeps whole-device jobs (kernel benchmark, parity) off a
device that jobs share, and them off it until those jobs have left. `Slot.jobs_per_gpu`
records the sharing, so a run can say that its times are not its own.

Under Slurm (`SLURM_JOB_ID` and `CUDA_VISIBLE_DEVICES` both set) the allocation is
already exclusive and is kept as it is. On a host without GPUs nothing happens.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnbench import host
from attnbench.errors import UserError

LOG = logging.getLogger("attnbench.env.gpuslots")

DEFAULT_LOCK_DIR = "results/.gpu-slots"
ENV_LOCK_DIR = "ATTNBENCH_GPU_SLOTS_DIR"
ENV_TIMEOUT = "ATTNBENCH_GPU_SLOTS_TIMEOUT"
CUDA_VISIBLE = "CUDA_VISIBLE_DEVICES"

# POSIX record locks are per process: a second open() of the same file in this
# process would "succeed", and closing ANY descriptor of it drops the lock. So
# this process remembers what it holds (path -> fd) and never reopens those.
_HELD: dict[Path, int] = {}
_HELD_GUARD = threading.Lock()


class SlotTimeoutError(UserError):
    """No GPU slot became free within the timeout."""


@dataclass
class Slot:
    """What `acquire()` decided: the devices this process uses, and why."""

    devices: tuple[str, ...]
    reason: str
    lock_paths: tuple[Path, ...] = ()
    waited_s: float = 0.0
    # How many jobs may run on each of `devices` at once: 1 is a device of its own.
    jobs_per_gpu: int = 1
    _fds: list[int] = field(default_factory=list, repr=False)

    @property
    def locked(self) -> bool:
        return bool(self._fds)

    @property
    def shared(self) -> bool:
        """Other jobs may run on this job's GPU by design: its times are not its own."""
        return self.jobs_per_gpu > 1 and bool(self.devices)


def parse_nvidia_smi_list(text: str) -> list[str]:
    """Devices from `nvidia-smi -L`: GPU indices, or MIG UUIDs where a GPU is split.

    CUDA addresses a MIG instance only by its UUID, so a GPU with MIG children
    contributes those UUIDs instead of its index.
    """
    devices: list[str] = []
    gpu: str | None = None
    migs: list[str] = []

    def flush() -> None:
        if gpu is not None:
            devices.extend(migs or [gpu])

    for line in text.splitlines():
        gpu_match = re.match(r"\s*GPU (\d+):", line)
        mig_match = re.match(r"\s*MIG .*\(UUID: (MIG-[^)\s]+)\)", line)
        if gpu_match:
            flush()
            gpu, migs = gpu_match.group(1), []
        elif mig_match and gpu is not None:
            migs.append(mig_match.group(1))
    flush()
    return devices


def _nvidia_smi_devices() -> list[str] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "-L"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        LOG.warning("nvidia-smi -L failed (%s); trying NVML", exc)
        return None
    return parse_nvidia_smi_list(out)


def _nvml_devices() -> list[str] | None:
    pynvml = host.nvml()
    if pynvml is None:
        return None
    try:
        return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:
        return None


def visible_devices(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """The devices this process may use, without initialising CUDA.

    An existing `CUDA_VISIBLE_DEVICES` is the pool (empty or "-1" means none);
    otherwise `nvidia-smi -L`, then NVML; no driver means no devices.
    """
    env = os.environ if environ is None else environ
    if CUDA_VISIBLE in env:
        value = env[CUDA_VISIBLE].strip()
        if value in ("", "-1"):
            return []
        return [item.strip() for item in value.split(",") if item.strip()]
    found = _nvidia_smi_devices()
    if found is None:
        found = _nvml_devices()
    return found or []


def lock_dir(
    path: str | os.PathLike | None = None, environ: MutableMapping[str, str] | None = None
) -> Path:
    """Where the slot locks live: `path`, else $ATTNBENCH_GPU_SLOTS_DIR, else results/.gpu-slots."""
    env = os.environ if environ is None else environ
    return Path(path or env.get(ENV_LOCK_DIR) or DEFAULT_LOCK_DIR)


def _lock_name(device: str) -> str:
    return "gpu" + re.sub(r"[^A-Za-z0-9._-]", "_", device) + ".lock"


def _slot_paths(directory: Path, devices: Sequence[str]) -> list[Path]:
    # Per host: a results folder shared between hosts must not make gpu0 on one
    # host block gpu0 on another.
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "localhost"
    return [directory / host / _lock_name(device) for device in devices]


def _share_path(device_path: Path, index: int) -> Path:
    """The lock of one of a shared device's slots: gpu0.lock -> gpu0.slot<index>.lock."""
    return device_path.with_name(f"{device_path.stem}.slot{index}.lock")


def _try_lock(path: Path, shared: bool = False) -> int | None:
    """An fd holding a lock on `path` (exclusive, or `shared` with other shared holders),
    or None when someone else's lock conflicts."""
    with _HELD_GUARD:
        if path in _HELD:
            return None
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.lockf(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return None
            raise
        _HELD[path] = fd
    if not shared:  # several shared holders would overwrite each other's line
        # Who holds it, for the waiting message of others (advisory text only).
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            f"pid={os.getpid()} host={socket.gethostname()} since={time.time():.0f}\n".encode(),
            0,
        )
    return fd


def _unlock(path: Path, fd: int, shared: bool = False) -> None:
    with _HELD_GUARD:
        if not shared:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
        os.close(fd)  # closing drops the lock
        _HELD.pop(path, None)


def _take(device_path: Path, slot: int | None) -> list[tuple[Path, int, bool]] | None:
    """Lock one device: whole (`slot` None), or shared plus its slot `slot`; None if busy.

    Returns (path, fd, shared) for each lock held.
    """
    if slot is None:
        fd = _try_lock(device_path)
        return None if fd is None else [(device_path, fd, False)]
    device_fd = _try_lock(device_path, shared=True)
    if device_fd is None:  # a whole-device job holds it
        return None
    slot_path = _share_path(device_path, slot)
    slot_fd = _try_lock(slot_path)
    if slot_fd is None:
        _unlock(device_path, device_fd, shared=True)
        return None
    return [(device_path, device_fd, True), (slot_path, slot_fd, False)]


def holders(paths: Sequence[Path]) -> dict[str, str]:
    """What each lock file says about its holder (advisory; for log messages)."""
    out = {}
    for path in paths:
        with contextlib.suppress(OSError), _HELD_GUARD:
            fd = _HELD.get(path)
            # Our own lock: read through its fd (opening and closing the file
            # again would release the lock).
            raw = os.pread(fd, 512, 0) if fd is not None else path.read_bytes()[:512]
            text = raw.decode(errors="replace").strip()
            if text:
                out[path.name] = text
    return out


def _timeout_from_env(environ: MutableMapping[str, str]) -> float | None:
    raw = environ.get(ENV_TIMEOUT, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"{ENV_TIMEOUT}={raw!r} is not a number of seconds") from None
    return None if value <= 0 else value


@contextlib.contextmanager
def acquire(
    count: int = 1,
    *,
    devices: Sequence[str] | None = None,
    directory: str | os.PathLike | None = None,
    timeout_s: float | None = None,
    poll_s: float = 0.5,
    log_every_s: float = 60.0,
    environ: MutableMapping[str, str] | None = None,
    jobs_per_gpu: int = 1,
) -> Iterator[Slot]:
    """Hold `count` GPUs of this host for the body's duration; set CUDA_VISIBLE_DEVICES.

    `count` is the job's `resources.gpu` (0: nothing to do). `jobs_per_gpu` > 1 takes
    one of that many slots on each device instead of the whole device (see the module
    docstring). `devices` replaces detection (tests); `timeout_s` (else
    $ATTNBENCH_GPU_SLOTS_TIMEOUT, else wait forever) bounds the wait for a free slot,
    then raises SlotTimeoutError.
    """
    env = os.environ if environ is None else environ
    if jobs_per_gpu < 1:
        raise UserError(f"train.jobs_per_gpu = {jobs_per_gpu}: it must be 1 or more")
    if count <= 0:
        yield Slot(devices=(), reason="the job asked for no GPU")
        return
    if env.get("SLURM_JOB_ID") and env.get(CUDA_VISIBLE, "").strip() not in ("", "-1"):
        kept = tuple(d.strip() for d in env[CUDA_VISIBLE].split(",") if d.strip())
        LOG.info("Slurm job %s: keeping its GPUs %s", env["SLURM_JOB_ID"], ",".join(kept))
        yield Slot(devices=kept, reason="assigned by Slurm")
        return
    pool = list(devices) if devices is not None else visible_devices(env)
    if not pool:
        yield Slot(devices=(), reason="no GPU on this host")
        return
    if count > len(pool):
        raise UserError(
            f"the job needs {count} GPUs but only {len(pool)} are visible ({','.join(pool)}); "
            "lower the rule's gpu resource"
        )
    if timeout_s is None:
        timeout_s = _timeout_from_env(env)
    folder = lock_dir(directory, env)
    paths = _slot_paths(folder, pool)
    paths[0].parent.mkdir(parents=True, exist_ok=True)

    # Whole devices in order; shared slots index first, so k jobs spread over the devices
    # before any device takes a second one.
    tries: list[tuple[int, int | None]] = (
        [(i, None) for i in range(len(pool))]
        if jobs_per_gpu == 1
        else [(i, j) for j in range(jobs_per_gpu) for i in range(len(pool))]
    )
    every = (
        paths
        if jobs_per_gpu == 1
        else [_share_path(p, j) for p in paths for j in range(jobs_per_gpu)]
    )
    what = "GPU slot" if jobs_per_gpu == 1 else f"GPU slot ({jobs_per_gpu} jobs per GPU)"
    start = time.monotonic()
    next_log = start + log_every_s
    while True:
        taken: dict[int, list[tuple[Path, int, bool]]] = {}  # pool index -> locks
        for i, j in tries:
            if i in taken:
                continue
            held = _take(paths[i], j)
            if held is not None:
                taken[i] = held
                if len(taken) == count:
                    break
        if len(taken) == count:
            break
        for held in taken.values():  # all or nothing: never sit on part of a request
            for path, fd, shared in reversed(held):
                _unlock(path, fd, shared)
        now = time.monotonic()
        waited = now - start
        if timeout_s is not None and waited >= timeout_s:
            busy = "; ".join(f"{k}: {v}" for k, v in holders(every).items())
            raise SlotTimeoutError(
                f"no free {what} among {len(pool)} devices ({','.join(pool)}) after "
                f"{waited:.0f} s (held: {busy or 'unknown'}); run Snakemake with "
                f"--resources gpu=<number of GPUs> gpu_slots=<GPUs x train.jobs_per_gpu> "
                f"or raise {ENV_TIMEOUT}"
            )
        if now >= next_log:
            LOG.info(
                "waiting for a %s: all %d busy for %.0f s (%s)",
                what,
                len(pool),
                waited,
                "; ".join(f"{k}: {v}" for k, v in holders(every).items()),
            )
            next_log = now + log_every_s
        time.sleep(poll_s)

    locks = [lock for i in sorted(taken) for lock in taken[i]]
    chosen = tuple(pool[i] for i in sorted(taken))
    slot = Slot(
        devices=chosen,
        reason=f"locked slot(s) in {folder}"
        + (f", shared by up to {jobs_per_gpu} jobs per GPU" if jobs_per_gpu > 1 else ""),
        lock_paths=tuple(path for path, _, _ in locks),
        waited_s=time.monotonic() - start,
        jobs_per_gpu=jobs_per_gpu,
        _fds=[fd for _, fd, _ in locks],
    )
    modes = [shared for _, _, shared in locks]
    previous = env.get(CUDA_VISIBLE)
    env[CUDA_VISIBLE] = ",".join(chosen)
    LOG.info(
        "GPU slot: CUDA_VISIBLE_DEVICES=%s (of GPUs [%s]; %d job(s) per GPU; waited %.1f s)",
        env[CUDA_VISIBLE],
        ",".join(pool),
        jobs_per_gpu,
        slot.waited_s,
    )
    try:
        yield slot
    finally:
        for path, fd, shared in reversed(list(zip(slot.lock_paths, slot._fds, modes, strict=True))):
            _unlock(path, fd, shared)
        slot._fds.clear()
        if previous is None:
            env.pop(CUDA_VISIBLE, None)
        else:
            env[CUDA_VISIBLE] = previous


def for_job(resources: Mapping[str, Any], **kwargs: Any) -> contextlib.AbstractContextManager[Slot]:
    """The slot a Snakemake job's resources ask for (`gpu_job` enters it).

    `gpu`: that many whole devices (also what Slurm's `set-resources` gives a job);
    else `gpu_slots`: one of `jobs_per_gpu` slots on a device that others share.
    """
    gpus = int(resources.get("gpu", 0) or 0)
    slots = int(resources.get("gpu_slots", 0) or 0)
    if gpus > 0 or slots <= 0:
        return acquire(gpus, **kwargs)
    return acquire(slots, jobs_per_gpu=int(resources.get("jobs_per_gpu", 1) or 1), **kwargs)
