"""One real Ultralytics training run per CPU backend, on a tiny generated demo dataset.

Goes through attnbench.train.training.train_one and write_outputs exactly as the train rule's
script does; only the sizes are small (1 epoch, 64 px) so the file runs in about a minute.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from training_helpers import cpu_train_settings, demo_data_yaml

from attnbench.train import training
from attnbench.train.settings import TrainSettings

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
CPU_BACKENDS = ("eager", "sdpa", "sdpa_math", "sdpa_flash")
# What provenance.dispatched names for each backend on a CPU (torch 2.x).
DISPATCHED = {
    "eager": "eager (matmul + softmax)",
    "sdpa": "flash (cpu)",
    "sdpa_math": "math",
    "sdpa_flash": "flash (cpu)",
}
# Ultralytics' results.csv header for detection (8.4.x).
RESULTS_COLUMNS = [
    "epoch", "time", "train/box_loss", "train/cls_loss", "train/dfl_loss",
    "metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)",
    "val/box_loss", "val/cls_loss", "val/dfl_loss", "lr/pg0", "lr/pg1", "lr/pg2",
]  # fmt: skip
LOSS_COLUMNS = [c for c in RESULTS_COLUMNS if c.startswith(("train/", "val/"))]


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory) -> Path:
    """A tiny demo dataset, validated into the data.yaml the train rule reads."""
    return demo_data_yaml(tmp_path_factory.mktemp("demo"), train_images=8)


@pytest.fixture(scope="module")
def train_settings() -> dict:
    """The project's default training settings, validated, at a size a CPU trains in seconds."""
    return cpu_train_settings(epochs=1, batch=4, imgsz=64)


def _train(backend: str, seed: int, data_yaml: Path, train: dict, root: Path) -> tuple[dict, Path]:
    """Train like scripts/train.py: results/train/<backend>/seed<seed>/ under `root`."""
    workdir = root / "results" / "train" / backend / f"seed{seed}"
    workdir.mkdir(parents=True)
    metrics = training.train_one(
        backend, seed, data_yaml, TrainSettings.from_section(train), workdir, CPU
    )
    training.write_outputs(metrics, workdir, workdir / "metrics.json", workdir / "results.csv")
    return json.loads((workdir / "metrics.json").read_text()), workdir / "results.csv"


def _spy(seen: list, cls):
    """RunRecorder.on_train_start that also notes which AAttn.forward is installed."""
    original = training.RunRecorder.on_train_start

    def on_train_start(self, trainer):
        seen.append(cls.forward)
        original(self, trainer)

    return on_train_start


def _rows(results_csv: Path) -> tuple[list[str], list[dict[str, str]]]:
    with results_csv.open(newline="") as handle:
        reader = csv.DictReader(handle, skipinitialspace=True)
        rows = list(reader)
        return [c.strip() for c in reader.fieldnames or []], rows


@pytest.fixture(scope="module")
def runs(data_yaml, train_settings, tmp_path_factory) -> dict[str, tuple[dict, Path]]:
    """Seed 0 under every CPU backend: {backend: (metrics.json, results.csv path)}."""
    root = tmp_path_factory.mktemp("runs")
    return {b: _train(b, 0, data_yaml, train_settings, root) for b in CPU_BACKENDS}


def test_training_restores_the_stock_attention(data_yaml, train_settings, tmp_path):
    from ultralytics.nn.modules.block import AAttn

    from attnbench.backends import patch

    stock = AAttn.forward
    assert stock is not patch._aattn_forward
    seen = []
    with pytest.MonkeyPatch.context() as mp:  # observe the patch while training runs
        mp.setattr(training.RunRecorder, "on_train_start", _spy(seen, AAttn))
        metrics, _ = _train("eager", 0, data_yaml, train_settings, tmp_path)
    assert metrics["status"] == "ok" and seen == [patch._aattn_forward]
    assert AAttn.forward is stock


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_metrics_of_a_cpu_run(runs, backend):
    metrics, _ = runs[backend]
    assert metrics["status"] == "ok" and metrics["reason"] is None
    assert (metrics["backend"], metrics["seed"], metrics["device"]) == (backend, 0, "cpu")
    assert metrics["dtype"] == "float32" and metrics["dtypes_seen"] == ["float32"]
    assert metrics["attention_calls"] > 0
    prov = metrics["provenance"]
    assert prov["matched"] is True and prov["mismatch"] == []
    assert prov["dispatched"] == DISPATCHED[backend]
    assert metrics["epochs_done"] == 1 and len(metrics["epoch_times_s"]) == 1
    assert len(metrics["train_epoch_times_s"]) == 1
    assert 0 < metrics["train_epoch_times_s"][0] <= metrics["epoch_times_s"][0]
    assert metrics["epoch_time_s"] == metrics["epoch_times_s"][0]
    assert metrics["epoch_loop_s"] >= metrics["epoch_times_s"][0]
    assert metrics["train_images"] == 8 and metrics["batch_used"] == 4
    assert metrics["images_per_s"] == pytest.approx(8 / metrics["train_epoch_times_s"][0])
    for key in ("precision", "recall", "mAP50", "mAP50_95"):
        assert key in metrics and isinstance(metrics[key], float), key
    for key in ("peak_alloc_mb", "peak_reserved_mb", "peak_device_used_mb", "gpu_util_mean"):
        assert metrics[key] is None, key
    assert metrics["host_peak_rss_mb"] > 0
    # The harness's own cost, measured directly: per step and fixed per run.
    assert metrics["harness_overhead_steps"] == 2  # 8 images at batch 4, no profiled ones
    for key in ("harness_overhead_ms_per_step", "harness_callbacks_ms_per_step",
                "harness_dispatch_ms_per_step", "harness_overhead_share", "harness_setup_s",
                "harness_provenance_s", "harness_results_s", "harness_fixed_s"):  # fmt: skip
        assert metrics[key] > 0, key
    assert metrics["harness_overhead_ms_per_step"] == pytest.approx(
        metrics["harness_callbacks_ms_per_step"] + metrics["harness_dispatch_ms_per_step"]
    )
    assert metrics["harness_overhead_share"] < 0.5  # bookkeeping, not the step
    assert metrics["harness_overhead_share_of"] == "mean iteration"  # no steady-state steps
    assert metrics["harness_provenance_s"] < metrics["harness_fixed_s"]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_results_csv_is_ultralytics_table(runs, backend):
    metrics, results_csv = runs[backend]
    columns, rows = _rows(results_csv)
    assert columns == RESULTS_COLUMNS
    assert len(rows) == 1 and int(rows[0]["epoch"]) == 1
    assert float(rows[0]["metrics/mAP50-95(B)"]) == pytest.approx(metrics["mAP50_95"], abs=1e-5)


def test_same_backend_and_seed_give_identical_losses(runs, data_yaml, train_settings, tmp_path):
    """Determinism on CPU: a rerun reproduces every loss, to the digit Ultralytics writes."""
    _, first = runs["sdpa"]
    _, again = _train("sdpa", 0, data_yaml, train_settings, tmp_path)
    losses = [{c: r[c] for c in LOSS_COLUMNS} for r in _rows(first)[1]]
    assert losses == [{c: r[c] for c in LOSS_COLUMNS} for r in _rows(again)[1]]
    assert all(float(v) > 0 for row in losses for v in row.values())


def test_cuda_only_backend_on_cpu_is_skipped_with_reason(data_yaml, train_settings, tmp_path):
    metrics, results_csv = _train("sdpa_cudnn", 0, data_yaml, train_settings, tmp_path)
    assert metrics["status"] == "unavailable"
    assert "needs a CUDA GPU" in metrics["reason"]
    assert results_csv.read_text() == ""
    assert not (tmp_path / "results/train/sdpa_cudnn/seed0/ultralytics").exists()


def test_cuda_only_backend_on_cpu_fails_when_asked(data_yaml, train_settings, tmp_path):
    strict = {**train_settings, "on_unavailable": "fail"}
    with pytest.raises(training.BackendUnavailableError, match=r"sdpa_cudnn needs a CUDA GPU"):
        training.train_one(
            "sdpa_cudnn", 0, data_yaml, TrainSettings.from_section(strict), tmp_path / "run", CPU
        )
