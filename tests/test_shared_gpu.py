"""Runs that shared a GPU (train.jobs_per_gpu > 1): the analysis keeps their accuracy and
per-process memory and never uses their times or NVML's device-level readings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures_runs import make_study

from attnbench.analysis import tables

ANALYSIS = json.dumps({"analysis": {"baseline": "eager", "alpha": 0.05, "tost_margin": 0.01}})
TIME = ("step_ms_median", "gpu_ms_per_step", "epoch_loop_s", "images_per_s")
KEPT = ("peak_alloc_mb", "peak_reserved_mb", "host_peak_rss_mb", "mAP50", "mAP50_95")


def _mark_shared(paths: list[Path], which=lambda backend, seed: True) -> int:
    """Mark runs as the train job does under jobs_per_gpu 4; return how many."""
    marked = 0
    for path in paths:
        data = json.loads(path.read_text())
        shared = bool(which(data["backend"], data["seed"]))
        data.update(jobs_per_gpu=4 if shared else 1, shared_gpu=shared)
        path.write_text(json.dumps(data))
        marked += shared
    return marked


def _runs(shared: dict[str, list[bool]]) -> pd.DataFrame:
    """Two arms, 4 seeds, a time and an accuracy each; `shared` marks runs per arm."""
    rows = []
    for backend, base in (("eager", 100.0), ("fast", 90.0)):
        for seed in range(4):
            rows.append(
                {
                    "backend": backend,
                    "seed": seed,
                    "status": "ok",
                    "epoch_loop_s": base + seed,
                    "peak_device_used_mb": 3000.0 + seed,
                    "peak_alloc_mb": 1500.0,
                    "mAP50_95": 0.5 + 0.001 * seed,
                    "shared_gpu": shared.get(backend, [False] * 4)[seed],
                }
            )
    return pd.DataFrame(rows)


def test_all_shared_study_keeps_accuracy_and_memory_but_no_times(tmp_path: Path) -> None:
    study = make_study(tmp_path, backends=("eager", "sdpa", "flash_attn"), replica=True)
    assert _mark_shared(study.metrics) == 12
    written = tables.aggregate(study.metrics, study.results, [], [], ANALYSIS)

    runs = written["runs"]  # the record keeps what was measured, marked
    assert runs["shared_gpu"].all() and runs["step_ms_median"].notna().all()

    summary = written["summary"].set_index(["backend", "metric"])
    for backend in ("eager", "eager_replica", "sdpa", "flash_attn"):
        for key in (*TIME, "peak_device_used_mb", "gpu_busy_fraction"):
            row = summary.loc[(backend, key)]
            assert row["n"] == 0 and math.isnan(row["mean"]) and row["runs_shared_gpu"] == 3
        for key in KEPT:
            row = summary.loc[(backend, key)]
            assert row["n"] == 3 and np.isfinite(row["mean"]) and row["runs_shared_gpu"] == 0
        assert summary.loc[(backend, "launches_per_step"), "n"] == 3  # a count, not a time

    comp = written["comparisons"]
    times = comp[comp["metric"].isin(TIME)]
    assert len(times) and times["diff"].isna().all() and (times["design"] == "").all()
    assert (
        times["note"]
        .str.contains("6 shared-GPU run(s) (train.jobs_per_gpu > 1)", regex=False)
        .all()
    )
    accuracy = comp[comp["metric"] == "mAP50_95"]
    assert (accuracy["design"] == "paired").all() and accuracy["equivalence"].ne("").all()
    assert not accuracy["note"].str.contains("shared-GPU").any()

    drift = written["drift"].set_index("metric")
    assert drift.loc["step_ms_median", "n"] == 0 and drift.loc["mAP50_95", "n"] == 12


def test_only_the_unshared_runs_times_are_compared() -> None:
    runs = _runs({"fast": [True, False, False, False]})
    comp = tables.compare(runs, "eager", metrics=[tables.METRIC_BY_KEY["epoch_loop_s"]])
    row = comp.iloc[0]
    assert row["design"] == "paired" and row["n"] == 3 and row["seeds"] == "1 2 3"
    assert row["diff"] == pytest.approx(-10.0)
    assert "1 shared-GPU run(s)" in row["note"] and "seed(s) 0 left out" in row["note"]
    summary = tables.summarize(runs, "eager").set_index(["backend", "metric"])
    assert summary.loc[("fast", "epoch_loop_s"), "n"] == 3
    assert summary.loc[("fast", "epoch_loop_s"), "mean"] == pytest.approx(92.0)
    assert summary.loc[("fast", "peak_device_used_mb"), "n"] == 3  # device-level: left out
    assert summary.loc[("fast", "mAP50_95"), "n"] == 4  # accuracy: all runs
    assert summary.loc[("eager", "epoch_loop_s"), "runs_shared_gpu"] == 0


def test_shared_flag_read_back_from_csv_text() -> None:
    """runs.csv read back holds the flag as text; blanks and false mean not shared."""
    runs = _runs({"eager": [True] * 4}).astype({"shared_gpu": object})
    runs["shared_gpu"] = ["True"] * 4 + ["False", "", None, "false"]
    assert list(tables.shared_gpu(runs)) == [True] * 4 + [False] * 4
    ok = tables.ok_runs(runs)
    assert ok.loc[ok.backend == "eager", "epoch_loop_s"].isna().all()
    assert ok.loc[ok.backend == "fast", "epoch_loop_s"].notna().all()
    assert ok["mAP50_95"].notna().all()


def test_unshared_runs_pass_through_unchanged() -> None:
    runs = _runs({})
    assert tables.without_shared_times(runs) is runs
    no_column = runs.drop(columns="shared_gpu")
    assert tables.ok_runs(no_column)["epoch_loop_s"].notna().all()  # older metrics.json


def test_every_time_metric_is_excluded_and_memory_kinds_are_sorted() -> None:
    excluded = set(tables.SHARED_GPU_EXCLUDED)
    assert {m.key for m in tables.METRICS if m.kind == "time"} <= excluded
    assert "peak_device_used_mb" in excluded  # NVML: every process on the device
    assert not excluded & set(KEPT)
