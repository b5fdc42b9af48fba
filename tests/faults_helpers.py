"""Shared pieces of the fault-injection tests (tests/test_faults_*.py).

Everything here drives the real workflow: the `snakemake` CLI in a temporary working
directory (config.yaml copied there, `--snakefile` and `--directory` pointing at it), so
a fault is seen the way a user sees it. The one completed reference run that several
tests inspect is built once per session by `reference_run`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from attnbench.data import demo

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
#: Ultralytics' per-epoch losses: what must match between two runs of one (backend, seed).
LOSS_COLUMNS = (
    "train/box_loss", "train/cls_loss", "train/dfl_loss",
    "val/box_loss", "val/cls_loss", "val/dfl_loss",
)  # fmt: skip


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without a Roboflow key or user config that could leak into a job."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ROBOFLOW_API_KEY", "API_URL", "ROBOFLOW_REGION", "CUDA_VISIBLE_DEVICES")
    }
    env["ROBOFLOW_CONFIG_DIR"] = "/nonexistent/roboflow/config.json"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def workdir(root: Path, overrides: Mapping[str, Any] | None = None) -> Path:
    """A Snakemake working directory: config.yaml copied, `overrides` in faults.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "config.yaml", root / "config.yaml")
    if overrides is not None:
        (root / "faults.yaml").write_text(yaml.safe_dump(dict(overrides), sort_keys=False))
    return root


def snakemake_cmd(work: Path, *args: str, configfile: str | None = "faults.yaml") -> list[str]:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE)]
    cmd += ["--directory", str(work)]
    if configfile:
        cmd += ["--configfile", str(work / configfile)]
    return [*cmd, *args]


def snakemake(
    work: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
    configfile: str | None = "faults.yaml",
) -> subprocess.CompletedProcess:
    """Run the real CLI in `work`; stdout and stderr merged into `.stdout`."""
    return subprocess.run(
        snakemake_cmd(work, *args, configfile=configfile),
        cwd=work,
        env=dict(env) if env is not None else clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def start_snakemake(
    work: Path, *args: str, env: Mapping[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen:
    """Start the CLI without waiting (its output goes to `log`, default work/snakemake.out)."""
    out = (log or work / "snakemake.out").open("w")
    return subprocess.Popen(
        snakemake_cmd(work, *args),
        cwd=work,
        env=dict(env) if env is not None else clean_env(),
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def run_all(
    jobs: Mapping[str, tuple[Path, tuple[str, ...], Mapping[str, str] | None]],
    timeout: float = 300,
) -> dict[str, tuple[int, str]]:
    """Several snakemake CLIs at once (they are mostly start-up time): name -> (rc, output)."""
    procs = {}
    for name, (work, args, env) in jobs.items():
        procs[name] = (work, start_snakemake(work, *args, env=env, log=work / "snakemake.out"))
    deadline = time.monotonic() + timeout
    results = {}
    for name, (work, proc) in procs.items():
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        results[name] = (proc.returncode, (work / "snakemake.out").read_text())
    return results


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


# --------------------------------------------------------------------------- #
# Datasets with faults


def make_dataset(root: Path, train_images: int = 12, val_images: int = 4, size: int = 96) -> Path:
    """A small demo dataset in YOLO layout at `root` (what dataset.local points at)."""
    return demo.generate(root, train_images=train_images, val_images=val_images, image_size=size)


def corrupt_image(root: Path, split: str = "train", index: int = 0) -> str:
    """Truncate one JPEG to its first 200 bytes; returns its path relative to `root`."""
    image = sorted((root / split / "images").glob("*.jpg"))[index]
    image.write_bytes(image.read_bytes()[:200])
    return image.relative_to(root).as_posix()


def edit_label(root: Path, index: int, *, cls: int | None = None, cx: float | None = None) -> str:
    """Rewrite the first row of one train label file; returns its path relative to `root`."""
    label = sorted((root / "train" / "labels").glob("*.txt"))[index]
    rows = label.read_text().splitlines()
    fields = rows[0].split()
    if cls is not None:
        fields[0] = str(cls)
    if cx is not None:
        fields[1] = f"{cx:g}"
    rows[0] = " ".join(fields)
    label.write_text("\n".join(rows) + "\n")
    return label.relative_to(root).as_posix()


def empty_split(root: Path, folder: str = "valid") -> str:
    """Remove every image (and label) of one split, keeping its folders."""
    for sub in ("images", "labels"):
        for path in (root / folder / sub).iterdir():
            path.unlink()
    return f"{folder}/images"


# --------------------------------------------------------------------------- #
# The reference run


#: Small enough for two CPU cores: two seeds of eager (trained, 3 epochs so that a kill
#: lands mid-training), sdpa_cudnn (CUDA-only: recorded unavailable on a CPU).
REFERENCE_BACKENDS = ("eager", "sdpa_cudnn")
REFERENCE_SEEDS = (0, 1)


def reference_config(dataset: Path) -> dict[str, Any]:
    return {
        "backends": list(REFERENCE_BACKENDS),
        "seeds": list(REFERENCE_SEEDS),
        "dataset": {"source": "local", "local": str(dataset), "on_problems": "drop"},
        # workers: 0 -> threads 1 per train job, so two train jobs run at once on 2 cores.
        "train": {"epochs": 3, "batch": 4, "imgsz": 64, "workers": 0, "device": "cpu"},
        "kernels": {"cpu_seq_lens": [64], "cpu_repeats": 2, "warmup": 1},
    }


@dataclass
class ReferenceRun:
    """One completed workflow run, plus what was injected into its dataset."""

    work: Path
    dataset: Path
    dropped: dict[str, str]  # problem kind -> file it was injected into
    trains: subprocess.CompletedProcess  # the --cores 2 run of the two eager jobs
    full: subprocess.CompletedProcess  # the rest of the DAG, up to report.html
    seconds: float

    @property
    def results(self) -> Path:
        return self.work / "results"

    @property
    def data_dir(self) -> Path:
        return self.results / "data" / f"local-{self.dataset.name}"

    def run_dir(self, backend: str, seed: int) -> Path:
        return self.results / "train" / backend / f"seed{seed}"


_REFERENCE: dict[str, ReferenceRun] = {}


def reference_run(base: Path) -> ReferenceRun:
    """Build the reference run once per session (tests share it, read-only).

    First the two eager train jobs alone with `--cores 2` (after the data rules, they are
    the only jobs, so they run at once), then the whole DAG to the report.
    """
    if "run" in _REFERENCE:
        return _REFERENCE["run"]
    started = time.monotonic()
    dataset = make_dataset(base / "dataset-with-problems")
    dropped = {
        "unreadable_image": corrupt_image(dataset, "train", 0),
        "class_out_of_range": edit_label(dataset, 1, cls=7),
        "coords_out_of_range": edit_label(dataset, 2, cx=1.5),
    }
    work = workdir(base / "work", reference_config(dataset))
    trains = [f"results/train/eager/seed{s}/metrics.json" for s in REFERENCE_SEEDS]
    first = snakemake(work, "--cores", "2", *trains, timeout=600)
    assert first.returncode == 0, first.stdout[-4000:]
    # build_flash_attn asks for every core; one is plenty on a CPU host (nothing to build).
    full = snakemake(work, "--cores", "2", "--set-threads", "build_flash_attn=1", timeout=600)
    assert full.returncode == 0, full.stdout[-4000:]
    run = ReferenceRun(work, dataset, dropped, first, full, time.monotonic() - started)
    _REFERENCE["run"] = run
    return run


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def results_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Ultralytics' results.csv: (stripped column names, rows with stripped values)."""
    import csv

    with Path(path).open(newline="") as handle:
        reader = csv.reader(handle, skipinitialspace=True)
        header = [c.strip() for c in next(reader)]
        rows = [dict(zip(header, (v.strip() for v in row), strict=True)) for row in reader]
    return header, rows


def leftovers(root: Path, names: Iterable[str] = ()) -> list[str]:
    """Hidden staging folders/temp files under `root` (what a crash could leave), plus `names`."""
    found = [
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.name.endswith((".partial", ".tmp")) and p.name.startswith(".")
    ]
    return found + [n for n in names if (root / n).exists()]
