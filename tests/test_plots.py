"""Figures render for full GPU studies, CPU runs without GPU memory, one seed, and no kernel data."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from fixtures_runs import make_study, rendered_study
from matplotlib import font_manager
from PIL import Image

from attnbench.analysis import tables
from attnbench.report import plot_style, plots

NAMES = ("curves", "epoch_time", "memory", "speed_memory", "kernels", "step_breakdown")
ANALYSIS = '{"analysis": {"baseline": "eager", "alpha": 0.05, "tost_margin": 0.01}}'


def _tables(root: Path, **kwargs) -> dict:
    study = make_study(root, **kwargs)
    return tables.aggregate(study.metrics, study.results, study.parity, study.kernels, ANALYSIS)


def _render(tables: dict, out: Path) -> dict[str, Path]:
    outputs = {name: out / f"{name}.png" for name in NAMES}
    plots.theme()
    plots.make_all(
        tables["runs"], tables["epochs"], tables["kernels"], tables["summary"], outputs, "eager"
    )
    return outputs


def _assert_real_png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    pixels = np.asarray(Image.open(path).convert("L"))
    assert pixels.shape[0] > 100 and pixels.shape[1] > 300, path
    assert pixels.std() > 5, f"{path} looks blank"
    return pixels


@pytest.fixture
def messages(monkeypatch) -> list[str]:
    """Record every 'nothing to plot' message a figure falls back to."""
    seen: list[str] = []
    original = plots.message

    def spy(path, title, text):
        seen.append(text)
        original(path, title, text)

    monkeypatch.setattr(plots, "message", spy)
    return seen


MESSAGE_SIZE = (round(6 * plot_style.DPI), round(2.2 * plot_style.DPI))  # message's figure


def test_gpu_study_renders_every_figure(tmp_path_factory):
    out = rendered_study(tmp_path_factory.getbasetemp(), "gpu") / "plots"
    for name in NAMES:
        pixels = _assert_real_png(out / f"{name}.png")
        assert pixels.shape[::-1] != MESSAGE_SIZE, f"{name} fell back to a message"


def test_cpu_one_seed_no_kernels(tmp_path_factory):
    out = rendered_study(tmp_path_factory.getbasetemp(), "cpu-one-seed")
    runs = tables.read_table(out / "tables" / "runs.csv")
    assert runs["peak_alloc_mb"].isna().all() and runs["seed"].nunique() == 1
    for name in NAMES:
        pixels = _assert_real_png(out / "plots" / f"{name}.png")
        assert (pixels.shape[::-1] == MESSAGE_SIZE) == (name == "kernels"), name


def test_no_font_lookup_warnings(tmp_path, caplog):
    tables = _tables(tmp_path / "s", backends=("eager", "sdpa"), seeds=(0, 1), epochs=2)
    with caplog.at_level(logging.WARNING, logger="matplotlib"):
        plots.theme()
        plots.plot_memory(tables["runs"], tables["summary"], tmp_path / "m.png", "eager")
    assert not [r for r in caplog.records if "findfont" in r.getMessage()]
    assert matplotlib.get_backend().lower() == "agg"


def test_nothing_finished_still_gives_images(tmp_path, messages):
    tables = _tables(
        tmp_path / "none",
        backends=("eager", "sdpa"),
        seeds=(0, 1),
        unavailable={"eager": "no GPU", "sdpa": "no GPU"},
    )
    outputs = _render(tables, tmp_path / "plots")
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in outputs.values())
    assert "no per-epoch results (no run finished training)" in messages
    assert "no kernel data" in messages
    assert "no finished runs with speed and memory" in messages
    assert "no per-step breakdown recorded (no run with the step keys)" in messages


def test_empty_tables_from_csv(tmp_path, messages):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    frame = tables.read_table(empty)
    plots.theme()
    plots.plot_kernels(frame, tmp_path / "k.png")
    plots.plot_curves(frame, tmp_path / "c.png")
    assert messages == ["no kernel data", "no per-epoch results (no run finished training)"]


def test_theme_uses_bundled_dejavu_only():
    plots.theme()
    assert matplotlib.rcParams["font.family"] == [plot_style.FONT]
    found = font_manager.findfont(
        font_manager.FontProperties(family=plot_style.FONT), fallback_to_default=False
    )
    assert Path(matplotlib.get_data_path()) in Path(found).parents


def test_png_bytes_are_reproducible(tmp_path):
    plots.theme()
    plots.message(tmp_path / "a.png", "t", "no kernel data")
    plots.message(tmp_path / "b.png", "t", "no kernel data")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_confidence_follows_the_tables():
    import pandas as pd

    assert plots.confidence_of(pd.DataFrame({"confidence": [0.9, 0.9]})) == 0.9
    assert plots.confidence_of(pd.DataFrame()) == 0.95


def test_step_breakdown_from_known_inputs(tmp_path, messages):
    runs = pd.DataFrame(
        {
            "backend": ["eager"] * 3 + ["sdpa"] * 3 + ["oom_arm"],
            "seed": [0, 1, 2, 0, 1, 2, 0],
            "status": ["ok"] * 6 + ["oom"],
            "device": ["cuda:0"] * 7,
            "step_ms_median": [86.0, 90.0, 85.0, 84.0, 84.5, 83.0, None],
            "gpu_ms_per_step": [13.6, 13.7, 13.5, 12.0, 12.1, 11.9, None],
            "attention_ms_per_step": [1.9, 2.0, 1.8, 0.29, 0.3, 0.28, None],
        }
    )
    frame = plots.step_breakdown_frame(runs, "eager").set_index("backend")
    assert list(frame.index) == ["eager", "sdpa"]  # failed runs have no bar
    eager = frame.loc["eager"]
    assert eager["attention_ms"] == pytest.approx(1.9)  # medians over seeds
    assert eager["other_gpu_ms"] == pytest.approx(13.6 - 1.9)
    assert eager["host_ms"] == pytest.approx(86.0 - 13.6)
    assert eager["step_ms"] == pytest.approx(86.0) and eager["n"] == 3
    # GPU time above the step time (a GPU-bound step): no negative host segment.
    busy = runs.assign(step_ms_median=10.0)
    assert (plots.step_breakdown_frame(busy)["host_ms"] == 0).all()
    plots.theme()
    plots.plot_step_breakdown(runs, tmp_path / "s.png", "eager")
    pixels = _assert_real_png(tmp_path / "s.png")
    assert pixels.shape[::-1] != MESSAGE_SIZE and messages == []


def test_step_breakdown_without_step_keys_says_so(tmp_path, messages):
    """Older metrics files (docs/reference/h100) lack the keys: a message, not a crash."""
    runs = pd.DataFrame(
        {"backend": ["eager"], "seed": [0], "status": ["ok"], "epoch_loop_s": [1.0]}
    )
    plots.plot_step_breakdown(runs, tmp_path / "s.png")
    runs["step_ms_median"] = runs["gpu_ms_per_step"] = runs["attention_ms_per_step"] = np.nan
    plots.plot_step_breakdown(runs, tmp_path / "t.png")
    assert messages == ["no per-step breakdown recorded (no run with the step keys)"] * 2
