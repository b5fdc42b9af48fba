"""The aggregate tables: runs gathered from files, summary and comparisons per backend."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from fixtures_runs import make_study

from attnbench import config, stats, tables


def _runs(values: dict[str, dict[str, list[float]]], status: dict | None = None) -> pd.DataFrame:
    rows = []
    for backend, metrics in values.items():
        n = len(next(iter(metrics.values())))
        for seed in range(n):
            row = {"backend": backend, "seed": seed, "status": "ok"}
            row.update({k: v[seed] for k, v in metrics.items()})
            rows.append(row)
    runs = pd.DataFrame(rows)
    for (backend, seed), value in (status or {}).items():
        runs.loc[(runs["backend"] == backend) & (runs["seed"] == seed), "status"] = value
    return runs


def test_compare_on_known_inputs():
    base_time = [100.0, 101.0, 99.0, 100.5]
    runs = _runs(
        {
            "eager": {"epoch_loop_s": base_time, "mAP50_95": [0.750, 0.752, 0.748, 0.751]},
            "fast": {"epoch_loop_s": [90.0, 91.0, 89.5, 90.2], "mAP50_95": [0.751, 0.749, 0.750, 0.752]},
            "same": {"epoch_loop_s": [100.2, 99.8, 101.2, 99.5], "mAP50_95": [0.70, 0.71, 0.705, 0.702]},
            "noisy": {"epoch_loop_s": [80.0, 120.0, 95.0, 110.0], "mAP50_95": [0.70, 0.80, 0.74, 0.76]},
        }
    )  # fmt: skip
    table = tables.compare(runs, "eager", alpha=0.05, tost_margin=0.01)
    assert set(table["backend"]) == {"fast", "same", "noisy"}
    assert list(table.columns) == tables.COMPARISON_COLUMNS
    time = table[table["metric"] == "epoch_loop_s"].set_index("backend")
    # stats' own tests check welch and holm against hand formulas; here: the right samples
    # and one Holm family per metric.
    want_p = {b: stats.welch(runs[runs.backend == b].epoch_loop_s, base_time, 0.05)["p"] for b in time.index}  # fmt: skip
    for b in time.index:
        assert time.loc[b, "p"] == pytest.approx(want_p[b])
    holm = stats.holm([want_p[b] for b in time.index])
    assert list(time["p_holm"]) == pytest.approx(holm)
    assert bool(time.loc["fast", "significant"]) and not bool(time.loc["same", "significant"])
    assert time.loc["fast", "diff"] == pytest.approx(
        np.mean([90.0, 91.0, 89.5, 90.2]) - np.mean(base_time)
    )
    assert time.loc["fast", "equivalence"] == ""  # TOST only for accuracy
    acc = table[table["metric"] == "mAP50_95"].set_index("backend")
    assert acc.loc["fast", "equivalence"] == "equivalent"
    assert acc.loc["same", "equivalence"] == "different"
    assert acc.loc["noisy", "equivalence"] == "not shown"
    assert (acc["tost_margin"] == 0.01).all()
    tost_raw = [stats.tost(runs[runs.backend == b].mAP50_95, runs[runs.backend == "eager"].mAP50_95, 0.01) for b in acc.index]  # fmt: skip
    assert list(acc["tost_p_holm"]) == pytest.approx(stats.holm(tost_raw))


def test_summary_ratio_and_ci():
    a = np.array([10.2, 10.8, 10.5, 11.1, 10.4])
    b = np.array([11.9, 12.4, 11.6, 12.8])
    runs = _runs(
        {
            "eager": {"epoch_loop_s": list(b)},
            "fast": {"epoch_loop_s": list(a)},
        }
    )
    table = tables.summarize(runs, "eager", metrics=[tables.METRIC_BY_KEY["epoch_loop_s"]])
    row = table.set_index("backend").loc["fast"]
    assert row["n"] == 5
    assert row["ci_method"] == "t-interval" and row["ratio_method"].startswith("Fieller")
    assert (row["ratio"], row["ratio_ci_low"], row["ratio_ci_high"]) == pytest.approx(
        stats.fieller_ratio(a, b, 0.05)
    )
    base = table.set_index("backend").loc["eager"]
    assert base["ratio"] == 1.0 and math.isnan(base["ratio_ci_low"])


def test_one_seed_gives_nan_statistics_without_warnings():
    runs = _runs({"eager": {"epoch_loop_s": [100.0], "mAP50_95": [0.7]}, "sdpa": {"epoch_loop_s": [90.0], "mAP50_95": [0.71]}})  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = tables.summarize(runs, "eager")
        table = tables.compare(runs, "eager")
    assert summary["ci_low"].isna().all()
    assert table["p"].isna().all() and table["p_holm"].isna().all()
    acc = table[table["metric"] == "mAP50_95"]
    assert (acc["equivalence"] == "not shown").all()
    assert acc["note"].str.contains("fewer than 2").all()
    assert table.loc[table.metric == "epoch_loop_s", "diff"].iloc[0] == pytest.approx(-10.0)


def test_failed_runs_are_listed_but_not_counted():
    runs = _runs(
        {"eager": {"epoch_loop_s": [100.0, 101.0, 5000.0]}, "sdpa": {"epoch_loop_s": [90, 91, 92]}},
        status={("eager", 2): "oom"},
    )
    summary = tables.summarize(runs, "eager", metrics=[tables.METRIC_BY_KEY["epoch_loop_s"]])
    eager = summary.set_index("backend").loc["eager"]
    assert eager["runs"] == 3 and eager["runs_ok"] == 2 and eager["n"] == 2
    assert eager["mean"] == pytest.approx(100.5)


def test_missing_baseline_does_not_crash():
    runs = _runs({"eager": {"epoch_loop_s": [1.0, 2.0]}, "sdpa": {"epoch_loop_s": [1.0, 2.0]}})
    runs["status"] = np.where(runs["backend"] == "eager", "unavailable", "ok")
    table = tables.compare(runs, "eager")
    assert table["p"].isna().all()
    summary = tables.summarize(runs, "eager")
    assert summary.loc[summary.backend == "sdpa", "ratio"].isna().all()


def test_aggregate_reads_fixture_tree(tmp_path):
    study = make_study(
        tmp_path,
        unavailable={"flash_attn": "flash_attn is not installed"},
        failed={("sdpa", 1): "oom"},
    )
    written = tables.aggregate(
        study.metrics,
        study.results,
        study.parity,
        study.kernels,
        json.dumps({"analysis": {"baseline": "eager", "alpha": 0.05, "tost_margin": 0.01}}),
    )
    runs = written["runs"]
    assert len(runs) == 12
    assert {"provenance.matched", "provenance.fwd_kernels", "epoch_times_s"} <= set(runs.columns)
    assert json.loads(runs.loc[0, "epoch_times_s"])  # lists are kept as JSON text
    assert isinstance(json.loads(runs.loc[0, "provenance.fwd_kernels"]), dict)
    assert (runs.loc[runs.backend == "flash_attn", "status"] == "unavailable").all()
    epochs = written["epochs"]
    assert {"backend", "seed", "status", "epoch", "metrics/mAP50-95(B)"} <= set(epochs.columns)
    assert set(epochs["backend"]) == {"eager", "sdpa", "sdpa_flash"}  # skipped runs: no rows
    assert len(epochs) == 8 * 5  # 8 trained runs x 5 epochs
    summary = written["summary"]
    sdpa = summary[(summary.backend == "sdpa") & (summary.metric == "epoch_loop_s")].iloc[0]
    assert sdpa["runs"] == 3 and sdpa["n"] == 2
    assert set(written["kernels"]["backend"]) == set(study_backends(study))
    assert "rel_err_out" in written["parity"]
    comp = written["comparisons"]
    assert set(comp["backend"]) == {"sdpa", "sdpa_flash", "flash_attn"}


def study_backends(study) -> list[str]:
    return [p.stem for p in study.kernels]


def test_load_epochs_strips_padded_names_and_skips_empty(tmp_path):
    run = tmp_path / "results" / "train" / "eager" / "seed3"
    run.mkdir(parents=True)
    (run / "results.csv").write_text(
        "                  epoch,         train/box_loss,   metrics/mAP50-95(B)\n"
        "                      1,                 1.5,      0.2\n"
    )
    empty = tmp_path / "results" / "train" / "sdpa" / "seed0"
    empty.mkdir(parents=True)
    (empty / "results.csv").write_text("")
    epochs = tables.load_epochs([run / "results.csv", empty / "results.csv"])
    assert list(epochs.columns) == [
        "backend",
        "seed",
        "epoch",
        "train/box_loss",
        "metrics/mAP50-95(B)",
    ]
    assert epochs.iloc[0]["backend"] == "eager" and epochs.iloc[0]["seed"] == 3


def test_concat_csvs_skips_empty(tmp_path):
    (tmp_path / "a.csv").write_text("backend,x\neager,1\n")
    (tmp_path / "b.csv").write_text("")
    table = tables.concat_csvs([tmp_path / "a.csv", tmp_path / "b.csv"])
    assert len(table) == 1
    assert tables.concat_csvs([tmp_path / "b.csv"]).empty


def test_analysis_settings_default_to_the_schema():
    defaults = {"baseline": "eager", "alpha": 0.05, "tost_margin": 0.01}
    assert tables.analysis_settings("{}") == defaults
    assert config.validate({})["analysis"] == defaults
    got = tables.analysis_settings({"analysis": {"baseline": "sdpa", "tost_margin": 0.02}})
    assert got["baseline"] == "sdpa" and got["tost_margin"] == 0.02


def test_defaults_are_read_from_the_schema_not_copied(monkeypatch):
    schema = config.load_schema()
    schema["properties"]["analysis"]["properties"]["alpha"]["default"] = 0.1
    monkeypatch.setattr(config, "load_schema", lambda: schema)
    tables._schema_analysis.cache_clear()
    try:
        assert tables.analysis_settings({})["alpha"] == 0.1
        runs = _runs({"eager": {"epoch_loop_s": [1.0, 2.0]}})
        assert tables.summarize(runs, "eager")["confidence"].eq(0.9).all()
    finally:
        tables._schema_analysis.cache_clear()
