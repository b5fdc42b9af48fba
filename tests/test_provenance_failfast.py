"""A train job whose backend runs another kernel than its name says fails at once.

Runs the train rule's own script (scripts/train.py, as Snakemake's `script:` would) on
a tiny CPU demo with the `sdpa_math` registry entry swapped to eager's arithmetic: the
job must end before its first epoch with the one-line mismatch message and leave no
metrics.json behind.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
from fixtures_runs import FakeSnakemake, NamedList, run_script
from training_helpers import demo_data_yaml

from attnbench import config as cfg
from attnbench.backends import registry as backends
from attnbench.train import recorder
from attnbench.train.settings import TrainSettings, pick

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory) -> Path:
    return demo_data_yaml(tmp_path_factory.mktemp("demo"), train_images=8)


def _job(tmp_path: Path, data_yaml: Path, backend: str) -> FakeSnakemake:
    config = cfg.validate(cfg.load_file(REPO / "config.yaml"))
    train = {**config["train"], "epochs": 2, "batch": 4, "imgsz": 64, "workers": 0}
    train["device"] = "cpu"
    out = tmp_path / "results" / "train" / backend / "seed0"
    return FakeSnakemake(
        input=NamedList(data_yaml=str(data_yaml), summary=str(data_yaml)),
        output=NamedList(metrics=str(out / "metrics.json"), results=str(out / "results.csv")),
        params=NamedList(train=cfg.canonical(pick(train, TrainSettings.KEYS)), device="cpu"),
        log=NamedList([str(tmp_path / "train.log")]),
        scriptdir=str(REPO / "scripts"),
        wildcards=NamedList(backend=backend, seed="0"),
        config={**config, "backends": ["eager", backend], "seeds": [0]},
    )


def test_a_swapped_kernel_fails_the_train_job_with_one_line(tmp_path, data_yaml, monkeypatch):
    liar = dataclasses.replace(backends.REGISTRY["sdpa_math"], fn=backends.REGISTRY["eager"].fn)
    monkeypatch.setitem(backends.REGISTRY, "sdpa_math", liar)
    epochs = []
    monkeypatch.setattr(
        recorder.RunRecorder, "on_train_epoch_start", lambda self, trainer: epochs.append(1)
    )
    job = _job(tmp_path, data_yaml, "sdpa_math")
    start = time.monotonic()
    with pytest.raises(SystemExit) as stop:
        run_script(REPO / "scripts" / "train.py", job)
    message = str(stop.value)
    assert message.startswith("Error: sdpa_math: the profiled kernels do not match the backend")
    assert "\n" not in message
    assert "forbidden" in message or "nothing matches" in message
    assert epochs == []  # stopped before the first epoch
    assert time.monotonic() - start < 120
    assert not Path(job.output.metrics).exists()
    assert "do not match" in Path(job.log[0]).read_text()


def test_the_honest_entry_trains_and_records_its_place(tmp_path, data_yaml):
    job = _job(tmp_path, data_yaml, "sdpa_math")
    run_script(REPO / "scripts" / "train.py", job)
    metrics = json.loads(Path(job.output.metrics).read_text())
    assert metrics["status"] == "ok" and metrics["provenance"]["matched"] is True
    assert metrics["planned_order"] in (1, 2, 3)  # eager, sdpa_math, eager_replica: seed 0
