"""Steady-state step time and the per-step breakdown: pure parts, then a real CPU run.

The CPU run trains 2 epochs of 8 iterations with 1 warm-up iteration and a window
of 2 profiled iterations, so every key of metrics.json comes from a real loop.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import cpu_train_settings, demo_data_yaml

from attnbench.backends import provenance
from attnbench.backends import registry as backends
from attnbench.measure import steptime
from attnbench.train import training
from attnbench.train.settings import TrainSettings

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


# --------------------------------------------------------------------------- #
# Pure parts


def test_step_summary_matches_numpy_percentiles():
    values = [12.0, 10.0, 11.0, 30.0, 10.5, 10.2, 10.8, 9.9, 10.1, 10.4]
    summary = steptime.step_summary(values, batch=8)
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    assert summary["step_ms_median"] == pytest.approx(p50)
    assert summary["step_ms_p10"] == pytest.approx(p10)
    assert summary["step_ms_p90"] == pytest.approx(p90)
    assert summary["steps_timed"] == len(values)
    assert summary["steady_images_per_s"] == pytest.approx(8 * len(values) / sum(values) * 1e3)


def test_step_summary_of_nothing_timed_says_zero_steps():
    summary = steptime.step_summary([], batch=8)
    assert summary["steps_timed"] == 0 and summary["step_ms_median"] is None


def test_timer_leaves_out_warmup_excluded_and_last_marks(monkeypatch):
    clock = iter([0.0, 1.0, 3.0, 6.0, 10.0, 15.0, 21.0])  # seconds at each mark
    monkeypatch.setattr(steptime.time, "perf_counter", lambda: next(clock))
    timer = steptime.StepTimer(CPU, warmup=1)
    timer.epoch_start()
    for i in range(7):
        timer.mark(exclude=(i == 3))
    timer.epoch_end()
    # Intervals: 1,2,3,4,5,6 s; the first is warm-up, the 4th starts at an excluded mark.
    assert timer.step_ms == pytest.approx([2000.0, 3000.0, 5000.0, 6000.0])


def test_timer_keeps_optimizer_iterations_apart_and_skips_a_window(monkeypatch):
    clock = iter(float(t) for t in range(100))  # one second per mark
    monkeypatch.setattr(steptime.time, "perf_counter", lambda: next(clock))
    timer = steptime.StepTimer(CPU, warmup=0, skip=(1, 2, 3))
    for _epoch in range(2):
        timer.epoch_start()
        for i in range(6):
            timer.mark()
            if i in (1, 4):
                timer.optimizer_stepped()
        timer.epoch_end()
    # Epoch 0: intervals 0..4, optimizer at 1 and 4. Epoch 1: 2 and 3 skipped, 0, 1, 4 kept.
    assert len(timer.opt_step_ms) == 2 + 2 and len(timer.step_ms) == 3 + 1
    summary = timer.summary(batch=4)
    assert summary["steps_timed"] == 4 and summary["opt_steps_timed"] == 4
    assert summary["steady_images_per_s"] == pytest.approx(4 * 8 / 8000 * 1e3)


@dataclasses.dataclass
class _Ev:
    name: str
    self_cpu_time_total: float = 0.0
    device_type: object = torch.autograd.DeviceType.CPU
    is_user_annotation: bool = False


def test_cpu_breakdown_sums_aten_self_time_and_counts_ops():
    events = [_Ev("aten::mm", 300.0), _Ev("aten::add", 100.0), _Ev("ProfilerStep", 5000.0)]
    result = steptime.breakdown(events, "cpu", steps=2, data_wait_s=0.004, step_ms_median=1.0)
    assert result["gpu_ms_per_step"] == pytest.approx(0.2)
    assert result["launches_per_step"] == 1
    assert result["attention_ms_per_step"] == 0  # no attention region in these events
    assert result["data_wait_ms_per_step"] == pytest.approx(4.0)
    assert result["gpu_busy_fraction"] == pytest.approx(0.2)
    assert result["max_step_saving_pct"] == 0


def test_device_time_leaves_out_user_annotations():
    cuda = torch.autograd.DeviceType.CUDA

    @dataclasses.dataclass
    class Dev(_Ev):
        start: float = 0.0
        end: float = 0.0

        @property
        def time_range(self):
            return type("R", (), {"start": self.start, "end": self.end})()

    events = [
        Dev("kernel", device_type=cuda, start=0, end=40),
        Dev("Memcpy HtoD", device_type=cuda, start=50, end=60),
        Dev("attnbench::attention", device_type=cuda, is_user_annotation=True, start=0, end=100),
        Dev("aten::mm", start=0, end=500),
    ]
    assert steptime.device_time_us(events) == 50


# --------------------------------------------------------------------------- #
# A real CPU training run


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory) -> Path:
    return demo_data_yaml(tmp_path_factory.mktemp("demo"), train_images=16)


@pytest.fixture(scope="module")
def train_settings() -> dict:
    settings = cpu_train_settings(epochs=2, batch=2, imgsz=64)
    settings["timing"] = {"warmup_iters": 1, "profile_iters": 2}
    return settings


def _train(backend, data_yaml, train, workdir) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    metrics = training.train_one(
        backend, 0, data_yaml, TrainSettings.from_section(train), workdir, CPU
    )
    training.write_outputs(metrics, workdir, workdir / "metrics.json", workdir / "results.csv")
    return json.loads((workdir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def eager_run(data_yaml, train_settings, tmp_path_factory) -> dict:
    return _train("eager", data_yaml, train_settings, tmp_path_factory.mktemp("eager") / "seed0")


def test_step_keys_of_a_cpu_run(eager_run):
    m = eager_run
    # 8 iterations an epoch -> 7 intervals; 1 warm-up each epoch; in epoch 2 the window
    # (2 iterations) and the one after it are out: 6 + 3 timed.
    assert m["steps_timed"] + m["opt_steps_timed"] == 9
    # Batch 2 accumulates 16 iterations: the optimizer steps at iteration 0 only (warm-up).
    assert m["steps_timed"] == 9 and m["opt_steps_timed"] == 0
    assert len(m["step_times_ms"]) == m["steps_timed"]
    assert 0 < m["step_ms_p10"] <= m["step_ms_median"] <= m["step_ms_p90"]
    assert m["steady_images_per_s"] > 0 and m["timing_warmup_iters"] == 1


def test_breakdown_keys_of_a_cpu_run(eager_run):
    m = eager_run
    assert m["profiled_steps"] == 2
    assert m["gpu_ms_per_step"] > 0 and m["launches_per_step"] > 0
    assert 0 < m["attention_ms_per_step"] < m["gpu_ms_per_step"]
    assert m["attention_share_of_gpu"] == pytest.approx(
        m["attention_ms_per_step"] / m["gpu_ms_per_step"]
    )
    assert m["gpu_busy_fraction"] == pytest.approx(m["gpu_ms_per_step"] / m["step_ms_median"])
    assert 0 < m["max_step_saving_pct"] < 100
    assert m["data_wait_ms_per_step"] >= 0
    assert m["window_provenance_matched"] is True
    assert m["window_dispatched"] == "eager (matmul + softmax)"


def test_provenance_also_covers_a_validation_batch(eager_run):
    val = eager_run["provenance"]["validation"]
    assert val["matched"] is True and val["regions"] > 0
    assert val["dispatched"] == "eager (matmul + softmax)"


def test_a_swapped_kernel_fails_the_run_before_its_first_epoch(
    data_yaml, train_settings, tmp_path, monkeypatch
):
    """A registry entry that runs another kernel than its name says is caught at once."""
    honest = backends.REGISTRY["sdpa_math"]
    liar = dataclasses.replace(honest, fn=backends.REGISTRY["eager"].fn)
    monkeypatch.setitem(backends.REGISTRY, "sdpa_math", liar)
    epochs = []
    monkeypatch.setattr(
        training.RunRecorder, "on_train_epoch_start", lambda self, trainer: epochs.append(1)
    )
    with pytest.raises(provenance.ProvenanceMismatchError, match=r"sdpa_math: the profiled"):
        training.train_one(
            "sdpa_math",
            0,
            data_yaml,
            TrainSettings.from_section(train_settings),
            tmp_path / "run",
            CPU,
        )
    assert epochs == []
