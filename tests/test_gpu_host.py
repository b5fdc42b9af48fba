"""The GPU-host harness on a CPU (tools/gpu-host): a dataset cut into parts and assembled
again against its recorded digest, and dag.sh's staging calls and deadlines, run with a
stand-in Snakemake. Fast: tiny files, deadlines of seconds."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from attnbench.data import digest as datadigest

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools" / "gpu-host"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stage_parts = _load(TOOLS / "stage_parts.py", "stage_parts")
subset_dataset = _load(REPO / "benchmarks" / "subset_dataset.py", "subset_dataset")


def _source(root: Path, images: dict[str, int], size: int = 3000) -> Path:
    """A YOLO-layout dataset of `images[split]` images of `size` bytes each, with labels."""
    for split, n in images.items():
        for sub in ("images", "labels"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / split / "images" / f"img{i:03d}.jpg").write_bytes(
                bytes([i % 256]) * size + split.encode()
            )
            (root / split / "labels" / f"img{i:03d}.txt").write_text(f"0 0.5 0.5 0.1 0.{i}\n")
    (root / "data.yaml").write_text("names: [crop, weed]\nnc: 2\ntest: test/images\n")
    return root


@pytest.fixture
def staged(tmp_path: Path) -> tuple[Path, dict, dict]:
    """A seeded subset with its record, cut into parts of 0.02 MB."""
    src = _source(tmp_path / "src", {"train": 20, "valid": 6})
    dst = tmp_path / "here" / "crop-or-weed"
    record = subset_dataset.subset(src, dst, {"train": 12, "valid": 6}, seed=0)
    record_path = tmp_path / "here" / "subset.json"
    record_path.write_text(json.dumps(record))
    manifest = stage_parts.split(dst, tmp_path / "here", 0.02, record_path)
    return tmp_path / "here", record, manifest


def test_subset_records_its_counts_and_content_digest(staged) -> None:
    here, record, _ = staged
    assert record["seed"] == 0 and record["requested"] == {"train": 12, "valid": 6}
    assert record["splits"] == {
        "train": {"images": 12, "labels": 12}, "valid": {"images": 6, "labels": 6}
    }  # fmt: skip
    assert record["digest"] == datadigest.digest(here / "crop-or-weed")
    # The same seed draws the same subset; a changed byte changes the digest.
    again = subset_dataset.subset(
        here.parent / "src", here.parent / "b", {"train": 12, "valid": 6}, 0
    )
    assert again["digest"] == record["digest"]
    label = next((here / "crop-or-weed" / "train" / "labels").iterdir())
    label.write_text(label.read_text() + " ")
    assert datadigest.digest(here / "crop-or-weed") != record["digest"]


def test_parts_are_small_and_cover_the_dataset_once(staged) -> None:
    here, record, manifest = staged
    assert manifest["digest"] == record["digest"] and len(manifest["parts"]) >= 3
    assert manifest["subset"]["seed"] == 0
    names = []
    for part in manifest["parts"]:
        files = datadigest.files_of(here / part["name"] / "files")
        assert sum((here / part["name"] / "files" / f).stat().st_size for f in files) <= 20_000
        assert datadigest.digest(here / part["name"] / "files") == part["digest"]
        names += files
    assert sorted(names) == datadigest.files_of(here / "crop-or-weed")


def _host_with(here: Path, host: Path, parts: list[str]) -> Path:
    """A host's data folder holding only the named parts, as calls carry them."""
    data = host / "study-data"
    data.mkdir(parents=True, exist_ok=True)
    for part in parts:
        shutil.rmtree(data / part, ignore_errors=True)
        shutil.copytree(here / part, data / part)
    return data


def test_assembly_names_the_missing_part_then_checks_the_digest(staged, tmp_path) -> None:
    here, _, manifest = staged
    last = manifest["parts"][-1]["name"]
    others = [p["name"] for p in manifest["parts"][:-1]]
    data = _host_with(here, tmp_path / "host", others[:1])
    # A staging call: reports, does not fail.
    line = stage_parts.assemble(data, manifest, partial=True)
    assert "incomplete" in line and last in line and others[0] not in line.split("missing")[0]
    # Later calls carry one part each; an earlier part left on the warm host is not needed.
    for part in others[1:]:
        shutil.rmtree(data / others[0], ignore_errors=True)
        data = _host_with(here, tmp_path / "host", [part])
    with pytest.raises(stage_parts.StagingError, match=f"{last} of {len(manifest['parts'])}"):
        stage_parts.assemble(data, manifest)
    data = _host_with(here, tmp_path / "host", [last])
    assert "as recorded" in stage_parts.assemble(data, manifest)
    assert datadigest.digest(data / "crop-or-weed") == manifest["digest"]
    assert "already there" in stage_parts.assemble(data, manifest)
    # A changed file in the assembled copy is caught, in one line.
    victim = data / "crop-or-weed" / "valid" / "labels" / "img000.txt"
    victim.write_text("1 0 0 0 0\n")
    with pytest.raises(stage_parts.StagingError, match="digest") as caught:
        stage_parts.assemble(data, manifest)
    assert "\n" not in str(caught.value)


def test_a_damaged_part_is_refused(staged, tmp_path) -> None:
    here, _, manifest = staged
    first = manifest["parts"][0]["name"]
    data = _host_with(here, tmp_path / "host", [first])
    victim = next(p for p in (data / first / "files").rglob("*") if p.is_file())
    victim.write_bytes(b"x")
    with pytest.raises(stage_parts.StagingError, match=f"{first} is damaged"):
        stage_parts.assemble(data, manifest)


def test_the_study_manifest_is_the_recorded_subset() -> None:
    """docs/reference/gpu/study/dataset.json: 1,000 train images, the full valid split,
    parts small enough to travel one a call."""
    manifest = json.loads(
        (REPO / "docs" / "reference" / "gpu" / "study" / "dataset.json").read_text()
    )
    assert manifest["splits"]["train"] == {"images": 1000, "labels": 1000}
    assert manifest["splits"]["valid"] == {"images": 260, "labels": 260}
    assert manifest["subset"]["requested"] == {"train": 1000, "valid": 260}
    assert manifest["subset"]["seed"] == 0 and len(manifest["digest"]) == 64
    assert all(p["bytes"] <= 55_000_000 for p in manifest["parts"])
    assert sum(p["files"] for p in manifest["parts"]) == manifest["files"]
    shared = REPO.parent / "shared" / "data" / "crop-or-weed"
    if shared.is_dir():  # where the dataset is, the recorded subset is what the seed draws
        assert len(list((shared / "valid" / "images").iterdir())) == 260


# --------------------------------------------------------------------------- #
# dag.sh with stand-in packages: a staging call, and the hard limit.

FAKE_SNAKEMAKE = """
import signal
def graceful(*_):
    print("Will exit after finishing currently running jobs (scheduler).", flush=True)
signal.signal(signal.SIGTERM, graceful)
signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worst case: only SIGKILL ends it
import os, subprocess
from pathlib import Path
Path("results").mkdir(exist_ok=True)
Path("results/done.txt").write_text("a job's output\\n")
job = subprocess.Popen(["sleep", "120"])  # a job that outlives every deadline
Path("pids").write_text(f"{os.getpid()} {job.pid}\\n")
print("Finished jobid: 1 (Rule: fetch_dataset)", flush=True)
job.wait()
"""


def _fake_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "tools" / "gpu-host").mkdir(parents=True)
    for name in ("dag.sh", "stage_parts.py"):
        shutil.copy2(TOOLS / name, repo / "tools" / "gpu-host" / name)
    shutil.copytree(REPO / "attnbench", repo / "attnbench", ignore=shutil.ignore_patterns("*.pyc"))
    site = repo / "site"
    for name in ("ultralytics", "flash_attn", "polars", "torch", "snakemake"):
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text("__version__ = 'stand-in'\n")
    (site / "torch" / "__init__.py").write_text(
        "__version__ = 'stand-in'\nclass version: cuda = None\n"
        "class backends:\n    class cudnn:\n        version = staticmethod(lambda: None)\n"
    )
    (site / "snakemake" / "__main__.py").write_text(FAKE_SNAKEMAKE)
    return repo


def _dag(repo: Path, out: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    out.mkdir(exist_ok=True)
    return subprocess.run(
        ["bash", "tools/gpu-host/dag.sh", *args],
        cwd=repo,
        env={**os.environ, "GPU_SITE": str(repo / "site"), "OUT": str(out), "POLL_S": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dag_staging_call_then_a_missing_part_stops_before_snakemake(staged, tmp_path) -> None:
    here, _, manifest = staged
    repo = _fake_repo(tmp_path)
    (repo / "manifest.json").write_text(json.dumps(manifest))
    first = manifest["parts"][0]["name"]
    _host_with(here, repo / ".gpu", [first])
    env = {"GPU_DATA": ".gpu/study-data", "GPU_MANIFEST": "manifest.json"}
    staging = _dag(repo, tmp_path / "out1", "study", "c.yaml", "5", GPU_STAGE_ONLY="1", **env)
    assert staging.returncode == 0, staging.stderr
    assert "incomplete" in staging.stdout and "staging call" in staging.stdout
    assert not (tmp_path / "out1" / "study.tar.gz").exists()
    shutil.rmtree(repo / ".gpu" / "study-data" / first)  # this call carries nothing
    run = _dag(repo, tmp_path / "out2", "study", "c.yaml", "5", **env)
    assert run.returncode == 3
    errors = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and manifest["parts"][1]["name"] in errors[0]
    assert not (tmp_path / "out2" / "snakemake.log").exists()


def test_dag_hard_limit_kills_the_jobs_and_still_packs(tmp_path) -> None:
    repo = _fake_repo(tmp_path)
    (repo / "results").mkdir()
    (repo / "results" / "earlier.txt").write_text("the last call's results\n")
    out = tmp_path / "out"
    # The deadline comes after the stand-in's start (a real Snakemake takes its SIGTERM as
    # graceful once its scheduler runs; before that, it just ends: no job has started).
    run = _dag(repo, out, "t", "c.yaml", "4", HARD_LIMIT_S="12")
    assert "deadline 4 s: Snakemake starts no new job" in run.stdout, run.stdout + run.stderr
    assert "hard limit 12 s" in run.stdout
    with tarfile.open(out / "t.tar.gz") as archive:
        assert {"results/earlier.txt", "results/done.txt"} <= set(archive.getnames())
    time.sleep(0.5)  # the orphaned job is reaped by init
    for pid in map(int, (repo / "pids").read_text().split()):
        stat = Path(f"/proc/{pid}/stat")
        alive = stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
        if alive and "sleep" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
            os.kill(pid, 9)
            pytest.fail(f"job {pid} outlived the hard limit")


def test_dag_gives_unchanged_scripts_their_recorded_mtime_back(tmp_path) -> None:
    """Each call copies the tree afresh: without this, every script is newer than the
    outputs it made, and Snakemake reruns all of the DAG's script jobs on every call."""
    repo = _fake_repo(tmp_path)
    (repo / "scripts").mkdir()
    same, edited = repo / "scripts" / "same.py", repo / "scripts" / "edited.py"
    same.write_text("print('same')\n")
    edited.write_text("print('before')\n")
    for script in (same, edited):
        os.utime(script, (1_700_000_000, 1_700_000_000))
    first = _dag(repo, tmp_path / "out1", "t", "c.yaml", "30", HARD_LIMIT_S="2")
    assert "hard limit" in first.stdout, first.stdout + first.stderr
    (repo / ".gpu" / "resume").mkdir(parents=True)
    shutil.copy2(tmp_path / "out1" / "t.tar.gz", repo / ".gpu" / "resume" / "t.tar.gz")
    shutil.rmtree(repo / ".snakemake")
    edited.write_text("print('after')\n")
    copied = time.time()  # the next call's fresh copy of the tree
    for script in (same, edited):
        os.utime(script, (copied, copied))
    second = _dag(repo, tmp_path / "out2", "t", "c.yaml", "30", HARD_LIMIT_S="2")
    assert "scripts: 1 unchanged keep their recorded mtime, 1 changed" in second.stdout
    assert same.stat().st_mtime == 1_700_000_000
    assert edited.stat().st_mtime == copied


if sys.platform != "linux":  # setsid, sha256sum, GNU touch: the host is Linux
    pytestmark = pytest.mark.skip("the GPU host is Linux")
