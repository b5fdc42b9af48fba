"""GPU slots: exclusive devices across processes, freed on SIGKILL, no-ops without GPUs."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from itertools import pairwise
from pathlib import Path

import pytest

from attnbench.env import gpuslots
from attnbench.errors import UserError

CTX = mp.get_context("spawn")


def _hold(lock_dir: str, devices: list[str], hold_s: float, log: mp.Queue) -> None:
    """A fake GPU job: take a slot, record when it held which device, let go."""
    env: dict[str, str] = {}
    with gpuslots.acquire(devices=devices, directory=lock_dir, poll_s=0.02, environ=env) as slot:
        start = time.monotonic()
        time.sleep(hold_s)
        log.put((os.getpid(), env["CUDA_VISIBLE_DEVICES"], slot.devices, start, time.monotonic()))


def _hold_forever(lock_dir: str, devices: list[str], ready: mp.Queue) -> None:
    with gpuslots.acquire(devices=devices, directory=lock_dir, environ={}) as slot:
        ready.put(slot.devices)
        time.sleep(600)


def test_processes_never_share_a_device(tmp_path: Path) -> None:
    devices = ["0", "1", "2"]
    log: mp.Queue = CTX.Queue()
    procs = [CTX.Process(target=_hold, args=(str(tmp_path), devices, 0.4, log)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    records = [log.get(timeout=5) for _ in procs]

    assert len({r[0] for r in records}) == 8
    for _, visible, chosen, _, _ in records:
        assert (visible,) == chosen and visible in devices
    # Intervals on one device never overlap.
    for device in devices:
        spans = sorted((s, e) for _, v, _, s, e in records if v == device)
        for (_, end), (start, _) in pairwise(spans):
            assert start >= end, f"device {device} was held twice at once"
    # 8 jobs on 3 slots: more than one device was used, so they ran in parallel.
    assert len({r[1] for r in records}) > 1


def test_sigkilled_holder_frees_its_slot(tmp_path: Path) -> None:
    ready: mp.Queue = CTX.Queue()
    holder = CTX.Process(target=_hold_forever, args=(str(tmp_path), ["7"], ready))
    holder.start()
    try:
        assert ready.get(timeout=60) == ("7",)
        with (
            pytest.raises(gpuslots.SlotTimeoutError, match="held: gpu7.lock: pid="),
            gpuslots.acquire(
                devices=["7"], directory=tmp_path, timeout_s=0.3, poll_s=0.05, environ={}
            ),
        ):
            pass
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(timeout=30)
        assert holder.exitcode == -signal.SIGKILL
        env: dict[str, str] = {}
        with gpuslots.acquire(devices=["7"], directory=tmp_path, timeout_s=5, environ=env) as slot:
            assert env["CUDA_VISIBLE_DEVICES"] == "7" and slot.locked
    finally:
        if holder.is_alive():
            holder.kill()


def test_one_process_takes_distinct_slots_and_restores_env(tmp_path: Path) -> None:
    env = {"CUDA_VISIBLE_DEVICES": "4,5"}
    with gpuslots.acquire(directory=tmp_path, environ=env) as first:
        assert first.devices == ("4",) and env["CUDA_VISIBLE_DEVICES"] == "4"
        inner_env = {"CUDA_VISIBLE_DEVICES": "4,5"}
        with gpuslots.acquire(directory=tmp_path, environ=inner_env) as second:
            assert second.devices == ("5",)
        with (
            pytest.raises(gpuslots.SlotTimeoutError),
            gpuslots.acquire(
                devices=["4"], directory=tmp_path, timeout_s=0.1, poll_s=0.02, environ={}
            ),
        ):
            pass
    assert env == {"CUDA_VISIBLE_DEVICES": "4,5"}
    # Released: the slot is free again.
    with gpuslots.acquire(devices=["4"], directory=tmp_path, timeout_s=1, environ={}) as again:
        assert again.devices == ("4",)


def test_count_takes_several_devices(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    with gpuslots.acquire(2, devices=["0", "1", "2"], directory=tmp_path, environ=env) as slot:
        assert slot.devices == ("0", "1") and env["CUDA_VISIBLE_DEVICES"] == "0,1"
    with (
        pytest.raises(UserError, match="needs 4 GPUs but only 3"),
        gpuslots.acquire(4, devices=["0", "1", "2"], directory=tmp_path, environ={}),
    ):
        pass


def test_slurm_assignment_is_kept(tmp_path: Path) -> None:
    env = {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "3"}
    with gpuslots.acquire(devices=["0", "1"], directory=tmp_path, environ=env) as slot:
        assert slot.devices == ("3",) and not slot.locked and slot.reason == "assigned by Slurm"
        assert env["CUDA_VISIBLE_DEVICES"] == "3"
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("env", "devices", "count"),
    [
        ({"CUDA_VISIBLE_DEVICES": ""}, None, 1),
        ({"CUDA_VISIBLE_DEVICES": "-1"}, None, 1),
        ({}, [], 1),
        ({}, ["0"], 0),
    ],
)
def test_no_gpu_is_a_no_op(tmp_path: Path, env: dict, devices: list | None, count: int) -> None:
    before = dict(env)
    with gpuslots.acquire(count, devices=devices, directory=tmp_path, environ=env) as slot:
        assert slot.devices == () and not slot.locked
        assert env == before
    assert not any(tmp_path.iterdir())


def test_detection_without_driver_finds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpuslots.shutil, "which", lambda name: None)
    monkeypatch.setattr(gpuslots, "_nvml_devices", lambda: None)
    assert gpuslots.visible_devices({}) == []


def test_detection_uses_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpuslots, "_nvidia_smi_devices", lambda: ["0", "1"])
    assert gpuslots.visible_devices({}) == ["0", "1"]
    assert gpuslots.visible_devices({"CUDA_VISIBLE_DEVICES": " 2, 3 "}) == ["2", "3"]


def test_parse_nvidia_smi_list_with_mig() -> None:
    text = """\
GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)
GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-bbbb)
  MIG 3g.40gb     Device  0: (UUID: MIG-1111)
  MIG 3g.40gb     Device  1: (UUID: MIG-2222)
GPU 2: NVIDIA H100 80GB HBM3 (UUID: GPU-cccc)
"""
    assert gpuslots.parse_nvidia_smi_list(text) == ["0", "MIG-1111", "MIG-2222", "2"]
    assert gpuslots.parse_nvidia_smi_list("No devices were found\n") == []


def test_lock_dir_from_env_and_timeout_from_env(tmp_path: Path) -> None:
    env = {"ATTNBENCH_GPU_SLOTS_DIR": str(tmp_path / "slots")}
    assert gpuslots.lock_dir(environ=env) == tmp_path / "slots"
    assert gpuslots.lock_dir(environ={}) == Path("results/.gpu-slots")
    with gpuslots.acquire(devices=["0"], environ=env) as slot:
        assert slot.lock_paths[0].is_relative_to(tmp_path / "slots")
        assert f"pid={os.getpid()}" in slot.lock_paths[0].read_text()
        waiting = dict(env, ATTNBENCH_GPU_SLOTS_TIMEOUT="0.1")
        with (
            pytest.raises(gpuslots.SlotTimeoutError, match="after 0 s"),
            gpuslots.acquire(devices=["0"], poll_s=0.02, environ=waiting),
        ):
            pass
    with (
        pytest.raises(UserError, match="ATTNBENCH_GPU_SLOTS_TIMEOUT='soon'"),
        gpuslots.acquire(devices=["0"], environ=dict(env, ATTNBENCH_GPU_SLOTS_TIMEOUT="soon")),
    ):
        pass


def test_waiting_logs_progress(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="attnbench.env.gpuslots")
    with (
        gpuslots.acquire(devices=["0"], directory=tmp_path, environ={}),
        pytest.raises(gpuslots.SlotTimeoutError),
        gpuslots.acquire(
            devices=["0"],
            directory=tmp_path,
            timeout_s=0.3,
            poll_s=0.05,
            log_every_s=0.1,
            environ={},
        ),
    ):
        pass
    assert "waiting for a GPU slot: all 1 busy" in caplog.text


def _try_once(lock_dir: str, device: str, result: mp.Queue) -> None:
    try:
        with gpuslots.acquire(
            devices=[device], directory=lock_dir, timeout_s=0.3, poll_s=0.05, environ={}
        ):
            result.put("acquired")
    except gpuslots.SlotTimeoutError:
        result.put("busy")


def test_reporting_holders_does_not_drop_our_own_lock(tmp_path: Path) -> None:
    """Regression: reading a held lock file with open()/close() releases a POSIX lock."""
    with gpuslots.acquire(devices=["4"], directory=tmp_path, environ={}) as slot:
        assert f"pid={os.getpid()}" in gpuslots.holders(slot.lock_paths)["gpu4.lock"]
        with (
            pytest.raises(gpuslots.SlotTimeoutError, match=f"pid={os.getpid()}"),
            gpuslots.acquire(
                devices=["4"], directory=tmp_path, timeout_s=0.1, poll_s=0.02, environ={}
            ),
        ):
            pass
        result: mp.Queue = CTX.Queue()
        other = CTX.Process(target=_try_once, args=(str(tmp_path), "4", result))
        other.start()
        other.join(timeout=60)
        assert result.get(timeout=5) == "busy"


# --------------------------------------------------------------------------- #
# train.jobs_per_gpu: k jobs share a device, the (k+1)th waits


def _share_forever(lock_dir: str, devices: list[str], k: int, ready: mp.Queue) -> None:
    with gpuslots.acquire(devices=devices, directory=lock_dir, environ={}, jobs_per_gpu=k) as slot:
        ready.put((slot.devices, slot.jobs_per_gpu, slot.shared))
        time.sleep(600)


def _try_share(lock_dir: str, devices: list[str], k: int, result: mp.Queue) -> None:
    try:
        with gpuslots.acquire(
            devices=devices, directory=lock_dir, timeout_s=0.3, poll_s=0.05, environ={},
            jobs_per_gpu=k,
        ) as slot:  # fmt: skip
            result.put(slot.devices)
    except gpuslots.SlotTimeoutError as exc:
        result.put(str(exc))


def _start(target, *args) -> tuple[mp.Process, mp.Queue]:
    queue: mp.Queue = CTX.Queue()
    proc = CTX.Process(target=target, args=(*args, queue))
    proc.start()
    return proc, queue


def _outcome(target, *args):
    proc, queue = _start(target, *args)
    proc.join(timeout=60)
    return queue.get(timeout=5)


@pytest.mark.parametrize("k", [2, 3])
def test_k_jobs_share_one_device_and_the_next_waits(tmp_path: Path, k: int) -> None:
    holders = [_start(_share_forever, str(tmp_path), ["0"], k) for _ in range(k)]
    try:
        for _, ready in holders:
            assert ready.get(timeout=60) == (("0",), k, True)
        busy = _outcome(_try_share, str(tmp_path), ["0"], k)
        assert f"no free GPU slot ({k} jobs per GPU)" in busy
        assert "gpu_slots=" in busy  # the message names the Snakemake resource
        # One sharer ends (even by SIGKILL): its slot is free for the next job.
        os.kill(holders[0][0].pid, signal.SIGKILL)
        holders[0][0].join(timeout=30)
        assert _outcome(_try_share, str(tmp_path), ["0"], k) == ("0",)
    finally:
        for proc, _ in holders:
            if proc.is_alive():
                proc.kill()


def test_shared_jobs_spread_over_devices_before_doubling_up(tmp_path: Path) -> None:
    holders = [_start(_share_forever, str(tmp_path), ["0", "1"], 2) for _ in range(2)]
    try:
        got = sorted(ready.get(timeout=60)[0] for _, ready in holders)
        assert got == [("0",), ("1",)]
        # Both devices have a free second slot.
        assert _outcome(_try_share, str(tmp_path), ["0", "1"], 2) in (("0",), ("1",))
    finally:
        for proc, _ in holders:
            proc.kill()


def test_whole_device_jobs_and_sharers_exclude_each_other(tmp_path: Path) -> None:
    """A kernel benchmark never times a device that train jobs share, and vice versa."""
    sharer, ready = _start(_share_forever, str(tmp_path), ["0"], 4)
    try:
        assert ready.get(timeout=60)[0] == ("0",)
        assert _outcome(_try_once, str(tmp_path), "0") == "busy"
    finally:
        sharer.kill()
        sharer.join(timeout=30)
    whole, ready = _start(_hold_forever, str(tmp_path), ["0"])
    try:
        assert ready.get(timeout=60) == ("0",)
        assert "no free GPU slot (4 jobs per GPU)" in _outcome(_try_share, str(tmp_path), ["0"], 4)
    finally:
        whole.kill()


def test_slot_records_sharing(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    with gpuslots.acquire(devices=["3"], directory=tmp_path, environ=env, jobs_per_gpu=4) as slot:
        assert slot.devices == ("3",) and env["CUDA_VISIBLE_DEVICES"] == "3"
        assert slot.jobs_per_gpu == 4 and slot.shared and slot.locked
        assert "shared by up to 4 jobs per GPU" in slot.reason
        assert [p.name for p in slot.lock_paths] == ["gpu3.lock", "gpu3.slot0.lock"]
        assert "pid=" in gpuslots.holders(slot.lock_paths)["gpu3.slot0.lock"]
    with gpuslots.acquire(devices=["3"], directory=tmp_path, environ={}) as whole:
        assert whole.jobs_per_gpu == 1 and not whole.shared  # released: whole again
    with gpuslots.acquire(devices=[], directory=tmp_path, environ={}, jobs_per_gpu=4) as none:
        assert not none.shared  # no GPU: nothing was shared
    with pytest.raises(UserError, match="jobs_per_gpu = 0"), gpuslots.acquire(jobs_per_gpu=0):
        pass


@pytest.mark.parametrize(
    ("resources", "devices", "per_gpu"),
    [
        ({"gpu": 1}, ("0",), 1),
        ({"gpu": 1, "gpu_slots": 1, "jobs_per_gpu": 4}, ("0",), 1),  # Slurm's gpu: 1 wins
        ({"gpu": 0, "gpu_slots": 1, "jobs_per_gpu": 4}, ("0",), 4),
        ({"gpu": 0, "gpu_slots": 0, "jobs_per_gpu": 4}, (), 1),  # a CPU host
        ({}, (), 1),
    ],
)
def test_for_job_reads_the_rule_resources(
    tmp_path: Path, resources: dict, devices: tuple, per_gpu: int
) -> None:
    with gpuslots.for_job(resources, devices=["0"], directory=tmp_path, environ={}) as slot:
        assert slot.devices == devices and slot.jobs_per_gpu == per_gpu
        assert slot.shared == (per_gpu > 1)
