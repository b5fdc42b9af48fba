"""Faults in and around training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures_runs import FakeSnakemake, NamedList, run_script

from attnbench import config as cfg

REPO = Path(__file__).resolve().parents[1]


def test_unavailable_backend_under_fail_policy_ends_the_job_with_one_line(tmp_path: Path) -> None:
    """Regression: under train.on_unavailable: fail, the train job ended in a traceback
    (BackendUnavailableError was not a UserError) instead of one line naming the reason."""
    train = cfg.validate({"train": {"device": "cpu", "on_unavailable": "fail"}})["train"]
    run = tmp_path / "results" / "train" / "sdpa_cudnn" / "seed0"
    job = FakeSnakemake(
        input=NamedList(data_yaml=str(tmp_path / "never-read.yaml")),
        output=NamedList(metrics=str(run / "metrics.json"), results=str(run / "results.csv")),
        params=NamedList(train=json.dumps(train)),
        log=NamedList([str(tmp_path / "train.log")]),
        wildcards=NamedList(backend="sdpa_cudnn", seed="0"),
        resources=NamedList(gpu=0),
        scriptdir=str(REPO / "scripts"),
    )
    with pytest.raises(SystemExit) as exit_info:
        run_script(REPO / "scripts" / "train.py", job)
    assert str(exit_info.value) == (
        "Error: sdpa_cudnn needs a CUDA GPU; this host runs on the CPU "
        "(train.on_unavailable = fail)"
    )
    assert "Traceback" not in (tmp_path / "train.log").read_text()
    assert not run.exists()
