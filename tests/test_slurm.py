"""The Slurm profile, run for real: a single-node cluster on 127.0.0.1 (tests/slurm_cluster.py).

Needs root (it starts munged, slurmctld and slurmd, and installs Debian's
slurmctld, slurmd, slurm-client and munge when missing); skipped otherwise,
with the reason. Select with `pytest -m slurm`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import slurm_cluster
import yaml

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm"

pytestmark = pytest.mark.slurm

# Settings of the test cluster only, layered under the real profile (which wins
# for the keys it sets): no slurmdbd here, so job states come from squeue.
CLUSTER_PROFILE = {
    "slurm-status-command": "squeue",
    "slurm-init-seconds-before-status-checks": 2,
    "slurm-keep-successful-logs": True,
}


def _needs() -> tuple[int, int]:
    """CPUs and memory (MB) the node must declare to fit every request of the profile."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    cpus = [int(v) for v in profile.get("set-threads", {}).values()]
    mems = [int(profile["default-resources"].get("mem_mb", 0))]
    for res in profile.get("set-resources", {}).values():
        cpus += [int(res[k]) for k in ("cpus_per_gpu", "cpus_per_task") if k in res]
        mems.append(int(res.get("mem_mb", 0)))
    return max(cpus + [1]), max(mems) + 1024


@pytest.fixture(scope="module")
def cluster() -> Iterator[slurm_cluster.SlurmCluster]:
    if not sys.platform.startswith("linux"):
        pytest.skip("Slurm test cluster: Linux only")
    if os.geteuid() != 0:
        pytest.skip("Slurm test cluster: needs root (starts munged, slurmctld, slurmd)")
    reason = slurm_cluster.install_packages()
    if reason:
        pytest.skip(f"Slurm test cluster: {reason}")
    # Short path: munge and slurmstepd put Unix sockets here (108-byte limit).
    root = Path(tempfile.mkdtemp(prefix="attnbench-slurm-", dir="/tmp"))
    cpus, memory_mb = _needs()
    try:
        with slurm_cluster.SlurmCluster(root, cpus=cpus, memory_mb=memory_mb, gpus=2) as running:
            yield running
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _snakemake(
    cluster: slurm_cluster.SlurmCluster,
    workdir: Path,
    *args: str,
    timeout_s: float,
) -> subprocess.CompletedProcess:
    """Run Snakemake with the real Slurm profile plus this cluster's settings."""
    overlay = workdir / ".test-cluster-profile"
    overlay.mkdir(parents=True, exist_ok=True)
    (overlay / "config.yaml").write_text(yaml.safe_dump(CLUSTER_PROFILE))
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--directory",
        str(workdir),
        "--workflow-profile",
        str(PROFILE),
        "--profile",
        str(overlay),
        *args,
    ]
    result = subprocess.run(
        cmd, cwd=workdir, env=cluster.env, capture_output=True, text=True, timeout=timeout_s
    )
    if result.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted((workdir / ".snakemake/slurm_logs").rglob("*.log"))
        )
        pytest.fail(
            f"snakemake exited {result.returncode}\n{result.stdout[-4000:]}\n"
            f"{result.stderr[-8000:]}\n{logs}\n{cluster.logs()}"
        )
    return result


def test_cluster_runs_a_gpu_job(cluster: slurm_cluster.SlurmCluster, tmp_path: Path) -> None:
    """The cluster itself: sbatch + srun with --gpus=1 get a (fake) device."""
    out = tmp_path / "job.out"
    jobid = cluster.run(
        "sbatch", "--parsable", "--gpus=1", "-o", str(out), "--wrap", "srun -n1 --gpus=1 env"
    ).stdout.strip()
    deadline = time.monotonic() + 60
    while cluster.jobs().get(jobid) not in ("COMPLETED", "FAILED", "CANCELLED"):
        assert time.monotonic() < deadline, cluster.logs()
        time.sleep(0.5)
    assert cluster.jobs()[jobid] == "COMPLETED"
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert env["SLURM_JOB_ID"] == jobid and env["CUDA_VISIBLE_DEVICES"] in ("0", "1")


TOY_SNAKEFILE = """\
localrules: all, gather

rule all:
    input: "gathered.json"

rule train:
    output: "train/{i}.json"
    resources: gpu=0
    script: "job.py"

rule gather:
    input: expand("train/{i}.json", i=range(4))
    output: "gathered.json"
    script: "job.py"
"""

TOY_SCRIPT = """\
import json, os, socket, time
from attnbench.env import gpuslots

with gpuslots.acquire(snakemake.resources.get("gpu", 0)) as slot:
    start = time.time()
    if snakemake.rule == "train":
        time.sleep(4)
    record = {
        "rule": snakemake.rule, "slurm_job": os.environ.get("SLURM_JOB_ID"),
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "slot": slot.reason,
        "gpu": snakemake.resources.get("gpu", 0), "threads": snakemake.threads,
        "host": socket.gethostname(), "start": start, "end": time.time(),
    }
    if snakemake.input:
        record["inputs"] = [json.load(open(p)) for p in snakemake.input]
    json.dump(record, open(snakemake.output[0], "w"))
"""


def test_profile_gives_each_gpu_job_its_own_device(
    cluster: slurm_cluster.SlurmCluster, tmp_path: Path
) -> None:
    """A toy workflow with a rule named train: the profile's gpu: 1 reaches sbatch,
    Slurm hands each job one of the two GPUs, gpuslots keeps it, and the
    localrule runs on the submit host."""
    (tmp_path / "Snakefile").write_text(TOY_SNAKEFILE)
    (tmp_path / "job.py").write_text(TOY_SCRIPT)
    started = time.monotonic()
    _snakemake(cluster, tmp_path, "--snakefile", str(tmp_path / "Snakefile"), timeout_s=600)
    elapsed = time.monotonic() - started

    gathered = json.loads((tmp_path / "gathered.json").read_text())
    assert gathered["slurm_job"] is None, "a localrule went through sbatch"
    runs = gathered["inputs"]
    assert {r["rule"] for r in runs} == {"train"}
    assert len({r["slurm_job"] for r in runs}) == 4 and None not in {r["slurm_job"] for r in runs}
    assert all(r["gpu"] == 1 and r["slot"] == "assigned by Slurm" for r in runs)
    assert {r["cuda"] for r in runs} <= {"0", "1"}
    # Jobs that overlapped in time held different devices.
    for a in runs:
        for b in runs:
            if a is not b and a["start"] < b["end"] and b["start"] < a["end"]:
                assert a["cuda"] != b["cuda"], (a, b)
    print(f"toy workflow through Slurm: {elapsed:.0f} s")


# The demo workflow, small: two CPU backends, one seed, one short epoch.
DEMO_CONFIG = {
    "backends": ["eager", "sdpa"],
    "seeds": [0],
    "dataset": {
        "source": "demo",
        "demo": {
            "train_images": 16,
            "val_images": 8,
            "image_size": 192,
            "train": {"epochs": 1, "batch": 8, "imgsz": 128},
        },
    },
    "train": {"workers": 1},
    "kernels": {"cpu_seq_lens": [64], "cpu_repeats": 3},
}
GPU_RULES = {"train", "parity", "kernel_bench", "probe_backends", "build_flash_attn"}
LIGHT_RULES = {
    "fetch_dataset",
    "validate_dataset",
    "attention_shapes",
    "aggregate",
    "plots",
    "report",
}
COPY_IGNORE = shutil.ignore_patterns(
    ".git", "results", ".snakemake", "__pycache__", "*.egg-info", ".*_cache",
    ".whl", ".whl2", ".gpu", ".data", ".gl",
)  # fmt: skip


@pytest.mark.timeout(1800)
def test_demo_workflow_runs_through_slurm(
    cluster: slurm_cluster.SlurmCluster, tmp_path: Path
) -> None:
    """The real workflow, end to end, with the real profile: GPU rules go through
    sbatch with --gpus=1 (fake devices), light rules stay local, the report exists."""
    work = tmp_path / "repo"
    shutil.copytree(REPO, work, ignore=COPY_IGNORE)
    config = tmp_path / "demo-slurm.yaml"
    config.write_text(yaml.safe_dump(DEMO_CONFIG))
    started = time.monotonic()
    _snakemake(cluster, work, "--configfile", str(config), "--jobs", "4", timeout_s=1700)
    elapsed = time.monotonic() - started

    assert (work / "results/report.html").stat().st_size > 0
    for backend in DEMO_CONFIG["backends"]:
        metrics = json.loads((work / f"results/train/{backend}/seed0/metrics.json").read_text())
        assert metrics["status"] == "ok", metrics.get("reason")
        assert metrics["gpu_slot"] in ("0", "1"), "the job did not keep Slurm's device"
    submitted = {p.name.removeprefix("rule_") for p in (work / ".snakemake/slurm_logs").iterdir()}
    assert submitted == GPU_RULES, f"through sbatch: {sorted(submitted)}"
    assert not submitted & LIGHT_RULES
    print(f"demo workflow through Slurm: {elapsed:.0f} s")
