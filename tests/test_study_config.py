"""The H200 reference study's configs (docs/reference/h200/study): they validate against the
schema, and `snakemake -n` plans the jobs the README counts, with jobs_per_gpu's resources."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from workflow_helpers import REPO, job_stats, output_of, prepare_workdir, snakemake

from attnbench import config as cfg
from attnbench.train import schedule

STUDY = REPO / "docs" / "reference" / "h200" / "study"
ACCURACY, TIMING = STUDY / "config.yaml", STUDY / "timing.yaml"
BACKENDS = ["eager", "sdpa", "sdpa_cudnn", "sdpa_flash", "flash_attn"]


def _dataset(root: Path) -> None:
    """A stand-in for the crop-or-weed subset (parse time only checks that it is there)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text("names: [crop, weed]\nnc: 2\n")
    for split in ("train", "valid"):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "labels").mkdir(parents=True, exist_ok=True)


@pytest.fixture
def study_dirs(tmp_path: Path) -> tuple[Path, Path]:
    accuracy = prepare_workdir(tmp_path / "study")
    timing = prepare_workdir(accuracy / "timing")
    _dataset(accuracy / ".gpu" / "study-data" / "crop-or-weed")
    return accuracy, timing


@pytest.mark.parametrize(("path", "per_gpu"), [(ACCURACY, 4), (TIMING, 1)])
def test_study_configs_validate_with_the_seed_study_settings(
    study_dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, path: Path, per_gpu: int
) -> None:
    monkeypatch.chdir(study_dirs[0] if path == ACCURACY else study_dirs[1])
    config = cfg.validate(yaml.safe_load(path.read_text()))
    train = config["train"]
    assert train["jobs_per_gpu"] == per_gpu
    assert (train["model"], train["batch"], train["imgsz"]) == ("yolo12n.yaml", 8, 640)
    assert (train["optimizer"], train["lr0"], train["amp"]) == ("AdamW", 0.001, True)
    assert train["epochs"] == (20 if path == ACCURACY else 3)
    assert config["backends"] == BACKENDS and len(config["seeds"]) >= 5
    assert config["analysis"]["replica"] and config["analysis"]["baseline"] == "eager"
    assert config["analysis"]["tost_margin"] == 0.01
    assert config["dataset"]["source"] == "local"


def test_accuracy_study_plans_30_shared_train_jobs(study_dirs: tuple[Path, Path]) -> None:
    workdir = study_dirs[0]
    text = output_of(snakemake(workdir, "-n", "--cores", "16", configfile=ACCURACY))
    arms = schedule.arms(BACKENDS, "eager", True)
    assert len(arms) == 6
    assert job_stats(text) == {
        "fetch_dataset": 1, "validate_dataset": 1, "build_flash_attn": 1, "probe_backends": 1,
        "attention_shapes": 1, "parity": 5, "kernel_bench": 5, "train": 6 * 5,
        "aggregate": 1, "plots": 1, "report": 1, "all": 1,
    }  # fmt: skip
    # On this CPU host GPU_JOBS is 0, so resources read 0; the key reaches the jobs.
    assert "jobs_per_gpu=4" in text


def test_timing_study_plans_30_train_jobs_in_its_own_folder(study_dirs: tuple[Path, Path]) -> None:
    workdir = study_dirs[1]
    text = output_of(snakemake(workdir, "-n", "--cores", "16", configfile=TIMING))
    stats = job_stats(text)
    assert stats["train"] == 6 * 5 and stats["report"] == 1
    assert "jobs_per_gpu=1" in text
    assert "local-crop-or-weed" in text  # ../.gpu/study-data, resolved from timing/
