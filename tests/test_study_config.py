"""The 20-epoch study's config (docs/reference/gpu/study, issue 23): it validates against the
schema with the seed study's settings, and `snakemake -n` plans the jobs the README counts,
with jobs_per_gpu's resources, and only the dataset and train jobs `--until train`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from workflow_helpers import REPO, job_stats, output_of, prepare_workdir, snakemake

from attnbench import config as cfg
from attnbench.train import schedule

STUDY = REPO / "docs" / "reference" / "gpu" / "study"
ACCURACY = STUDY / "config.yaml"
BACKENDS = ["eager", "sdpa", "sdpa_cudnn", "sdpa_flash", "flash_attn"]


def _dataset(root: Path) -> None:
    """A stand-in for the crop-or-weed subset (parse time only checks that it is there)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text("names: [crop, weed]\nnc: 2\n")
    for split in ("train", "valid"):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "labels").mkdir(parents=True, exist_ok=True)


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    workdir = prepare_workdir(tmp_path / "study")
    _dataset(workdir / ".gpu" / "study-data" / "crop-or-weed")
    return workdir


def test_study_config_validates_with_the_seed_study_settings(
    study_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(study_dir)
    config = cfg.validate(yaml.safe_load(ACCURACY.read_text()))
    train = config["train"]
    assert train["jobs_per_gpu"] == 2
    assert (train["model"], train["batch"], train["imgsz"]) == ("yolo12n.yaml", 8, 640)
    assert (train["optimizer"], train["lr0"], train["amp"]) == ("AdamW", 0.001, True)
    assert train["epochs"] == 20
    assert config["backends"] == BACKENDS and config["seeds"] == [0, 1, 2, 3, 4]
    assert config["analysis"]["replica"] and config["analysis"]["baseline"] == "eager"
    assert config["analysis"]["tost_margin"] == 0.01
    assert config["dataset"]["source"] == "local"
    assert config["dataset"]["local"] == ".gpu/study-data/crop-or-weed"
    assert not config["paired_timing"]["enabled"]  # speed: docs/reference/gpu/timing


def test_study_data_is_the_manifests_subset() -> None:
    manifest = json.loads((STUDY / "dataset.json").read_text())
    assert manifest["dataset"] == "crop-or-weed"
    assert manifest["splits"]["train"]["images"] >= 1000
    assert manifest["splits"]["valid"]["images"] == 260  # the whole validation split


def test_study_plans_30_shared_train_jobs(study_dir: Path) -> None:
    text = output_of(snakemake(study_dir, "-n", "all", "--cores", "16", configfile=ACCURACY))
    arms = schedule.arms(BACKENDS, "eager", True)
    assert len(arms) == 6
    assert job_stats(text) == {
        "fetch_dataset": 1, "validate_dataset": 1, "build_flash_attn": 1, "probe_backends": 1,
        "attention_shapes": 1, "parity": 5, "kernel_bench": 5, "train": 6 * 5,
        "aggregate": 1, "plots": 1, "report": 1, "all": 1,
    }  # fmt: skip
    # On this CPU host GPU_JOBS is 0, so resources read 0; the key reaches the jobs.
    assert "jobs_per_gpu=2" in text


def test_train_calls_plan_only_the_dataset_and_the_train_jobs(study_dir: Path) -> None:
    """The T calls of the README (SMK_ARGS="--until train")."""
    text = output_of(
        snakemake(study_dir, "-n", "all", "--until", "train", "--cores", "16", configfile=ACCURACY)
    )
    assert job_stats(text) == {
        "fetch_dataset": 1, "validate_dataset": 1, "build_flash_attn": 1, "train": 30,
    }  # fmt: skip
