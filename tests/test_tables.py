"""The aggregate tables: runs gathered from files, summary and comparisons per backend."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from fixtures_runs import RESULTS_COLUMNS, make_study
from scipy import stats as sps

from attnbench import config, stats
from attnbench.analysis import settings as analysis_config
from attnbench.analysis import tables
from attnbench.train import schedule


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
    """Runs pair by seed: paired t, sign-flip and paired TOST; Holm within each family."""
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
    assert (table.loc[table.metric.isin(["epoch_loop_s", "mAP50_95"]), "design"] == "paired").all()
    assert (table.loc[~table.metric.isin(["epoch_loop_s", "mAP50_95"]), "design"] == "").all()
    time = table[table["metric"] == "epoch_loop_s"].set_index("backend")
    want = {b: sps.ttest_rel(runs[runs.backend == b].epoch_loop_s, base_time) for b in time.index}  # fmt: skip
    for b in time.index:
        assert time.loc[b, "p"] == pytest.approx(want[b].pvalue)
        d = runs[runs.backend == b].epoch_loop_s.to_numpy() - np.array(base_time)
        assert time.loc[b, "p_perm"] == pytest.approx(stats.sign_flip(d)[0])
        assert time.loc[b, "mde"] == pytest.approx(stats.mde_paired(4, d.std(ddof=1), 0.05))
    # The epoch_time family holds epoch_loop_s only here: Holm over the three arms.
    assert (time["family"] == "epoch_time").all()
    assert list(time["p_holm"]) == pytest.approx(stats.holm([want[b].pvalue for b in time.index]))
    assert bool(time.loc["fast", "significant"]) and not bool(time.loc["same", "significant"])
    assert time.loc["fast", "diff"] == pytest.approx(
        np.mean([90.0, 91.0, 89.5, 90.2]) - np.mean(base_time)
    )
    assert time.loc["fast", "verdict"] == "meaningful"  # -10% against a 1% threshold
    assert time.loc["fast", "threshold"] == pytest.approx(0.01 * np.mean(base_time))
    assert time.loc["fast", "equivalence"] == ""  # TOST only for accuracy
    acc = table[table["metric"] == "mAP50_95"].set_index("backend")
    assert acc.loc["fast", "equivalence"] == "equivalent"
    assert acc.loc["same", "equivalence"] == "different"
    assert acc.loc["noisy", "equivalence"] == "not shown"
    assert (acc["tost_margin"] == 0.01).all()
    base_map = runs[runs.backend == "eager"].mAP50_95
    tost_raw = [stats.paired_tost(runs[runs.backend == b].mAP50_95, base_map, 0.01, 0.05)["tost_p"] for b in acc.index]  # fmt: skip
    assert list(acc["tost_p_holm"]) == pytest.approx(stats.holm(tost_raw))


def test_holm_runs_within_families_not_across_them():
    runs = _runs(
        {
            "eager": {"step_ms_median": [86.0, 86.5, 85.8], "steady_images_per_s": [93.0, 92.5, 93.3], "gpu_ms_per_step": [13.6, 13.7, 13.5]},
            "sdpa": {"step_ms_median": [85.0, 86.1, 85.1], "steady_images_per_s": [94.1, 92.9, 94.0], "gpu_ms_per_step": [12.0, 12.2, 11.9]},
        }
    )  # fmt: skip
    table = tables.compare(runs, "eager").set_index("metric")
    step = table.loc[["step_ms_median", "steady_images_per_s"]]
    assert list(step["p_holm"]) == pytest.approx(stats.holm(step["p"]))
    gpu = table.loc["gpu_ms_per_step"]
    assert gpu["family"] == "gpu_time" and gpu["p_holm"] == pytest.approx(
        stats.holm([gpu["p"], table.loc["attention_ms_per_step", "p"]])[0]
    )


def test_welch_only_where_pairing_is_impossible():
    runs = _runs({"eager": {"epoch_loop_s": [100.0, 101.0, 99.0]}, "sdpa": {"epoch_loop_s": [90.0, 91.0, 89.0]}})  # fmt: skip
    runs.loc[runs.backend == "sdpa", "seed"] = [10, 11, 12]  # no seed in common
    row = tables.compare(runs, "eager").set_index("metric").loc["epoch_loop_s"]
    assert row["design"] == "welch" and "pairing impossible" in row["note"]
    assert row["p"] == pytest.approx(
        stats.welch([90.0, 91.0, 89.0], [100.0, 101.0, 99.0], 0.05)["p"]
    )
    assert row["mde"] == pytest.approx(stats.mde_welch(3, 3, 1.0, 1.0, 0.05))
    # One seed lost to an OOM: the other two still pair, the lost one is named.
    runs = _runs(
        {"eager": {"epoch_loop_s": [100.0, 101.0, 99.0]}, "sdpa": {"epoch_loop_s": [90.0, 91.0, 89.0]}},
        status={("sdpa", 2): "oom"},
    )  # fmt: skip
    row = tables.compare(runs, "eager").set_index("metric").loc["epoch_loop_s"]
    assert row["design"] == "paired" and row["n"] == 2 and row["seeds"] == "0 1"
    assert "seed(s) 2 left out" in row["note"]


def test_identical_memory_is_exact_not_tested():
    runs = _runs(
        {
            "eager": {"peak_alloc_mb": [1588.7] * 3, "epoch_loop_s": [1.0, 1.1, 1.2]},
            "sdpa": {"peak_alloc_mb": [1203.2] * 3, "epoch_loop_s": [1.0, 1.05, 1.2]},
            "same": {"peak_alloc_mb": [1588.9] * 3, "epoch_loop_s": [1.0, 1.1, 1.25]},
        }
    )
    table = tables.compare(runs, "eager").set_index(["metric", "backend"])
    row = table.loc[("peak_alloc_mb", "sdpa")]
    assert bool(row["identical"]) and row["diff"] == pytest.approx(1203.2 - 1588.7)
    for col in ("diff_ci_low", "diff_ci_high", "p", "p_holm", "p_perm", "mde"):
        assert math.isnan(row[col]), col
    assert row["verdict"] == "meaningful" and "identical across 3 seeds" in row["note"]
    assert table.loc[("peak_alloc_mb", "same"), "verdict"] == "negligible"  # 0.2 < 1 MiB
    summary = tables.summarize(runs, "eager").set_index(["backend", "metric"])
    cell = summary.loc[("sdpa", "peak_alloc_mb")]
    assert bool(cell["identical"]) and math.isnan(cell["ci_low"])
    assert cell["ci_method"] == "identical across seeds"


def test_replica_is_compared_as_the_noise_floor(tmp_path):
    study = make_study(tmp_path, backends=("eager", "sdpa"), seeds=(0, 1, 2), replica=True)
    written = tables.aggregate(
        study.metrics, study.results, study.parity, study.kernels, json.dumps({"analysis": {}})
    )
    comp = written["comparisons"]
    aa = comp[comp["backend"] == "eager_replica"]
    assert len(aa) == len(tables.COMPARED) and aa["replica"].all()
    assert set(aa["family"]) == {f"{f} (A/A)" for f in tables.FAMILIES}
    assert not comp.loc[comp.backend == "sdpa", "replica"].any()
    # Same kernel and seed: learning and memory identical, wall-clock times not.
    aa = aa.set_index("metric")
    assert bool(aa.loc["mAP50_95", "identical"]) and aa.loc["mAP50_95", "diff"] == 0
    assert bool(aa.loc["peak_alloc_mb", "identical"])
    assert not bool(aa.loc["step_ms_median", "identical"]) and np.isfinite(aa.loc["step_ms_median", "p"])  # fmt: skip
    replica = written["replica"]
    assert list(replica.columns) == tables.REPLICA_COLUMNS
    assert list(replica["seed"]) == [0, 1, 2] and replica["bit_identical"].all()
    assert (replica["results_columns_compared"] == len(RESULTS_COLUMNS) - 2).all()
    summary = written["summary"]
    assert summary.loc[summary.backend == "eager_replica", "replica"].all()
    assert tables.backend_order(written["runs"], "eager")[:2] == ["eager", "eager_replica"]


def test_replica_that_differs_is_not_bit_identical(tmp_path):
    study = make_study(tmp_path, backends=("eager",), seeds=(0, 1), replica=True)
    path = tmp_path / "results" / "train" / "eager_replica" / "seed1" / "results.csv"
    frame = pd.read_csv(path)
    frame.loc[2, "train/box_loss"] += 1e-5
    frame.to_csv(path, index=False)
    runs = tables.load_runs(study.metrics)
    replica = tables.replica_identity(runs, tables.load_epochs(study.results, runs), "eager")
    row = replica.set_index("seed").loc[1]
    assert not row["results_identical"] and row["results_differing"] == "train/box_loss"
    assert row["results_max_abs_diff"] == pytest.approx(1e-5, rel=1e-3)
    assert row["metrics_identical"] and not row["bit_identical"]
    assert replica.set_index("seed").loc[0, "bit_identical"]


def test_run_order_ranks_start_times_and_planned_order_follows_the_schedule(tmp_path):
    study = make_study(tmp_path, backends=("eager", "sdpa"), seeds=(0, 1), replica=True, failed={("sdpa", 1): "oom"})  # fmt: skip
    analysis = {"analysis": {"order_seed": 0}, "backends": ["eager", "sdpa"], "seeds": [0, 1]}
    runs = tables.aggregate(study.metrics, study.results, [], [], analysis)["runs"]
    assert list(runs.columns[:6]) == ["backend", "seed", "status", "reason", "run_order", "planned_order"]  # fmt: skip
    assert len(runs) == 6 and (runs["status"] == "oom").sum() == 1  # failures stay rows
    plan = schedule.planned_order(0, ["eager", "sdpa", "eager_replica"], [0, 1])
    for (arm, seed), position in zip(plan, range(1, 7), strict=True):
        row = runs[(runs.backend == arm) & (runs.seed == seed)].iloc[0]
        assert row["planned_order"] == position
        assert row["run_order"] == position  # the fixture starts runs in planned order
    shuffled = runs.copy()
    shuffled["started"] = ["2026-01-01T00:00:05.001Z", "2026-01-01T00:00:05.000Z", None, "2026-01-01T00:00:01Z", "2026-01-01T00:00:09Z", "2026-01-01T00:00:02Z"]  # fmt: skip
    ordered = tables.add_order(shuffled.drop(columns=["run_order", "planned_order"]))
    assert list(ordered["run_order"].fillna(0)) == [4, 3, 0, 1, 5, 2]


def test_drift_table_finds_a_planted_slope_and_adjusts(tmp_path):
    study = make_study(tmp_path, backends=("eager", "sdpa"), seeds=(0, 1, 2, 3, 4), drift=0.02)
    written = tables.aggregate(study.metrics, study.results, [], [], {"analysis": {}})
    drift = written["drift"].set_index("metric")
    assert list(written["drift"].columns) == tables.DRIFT_COLUMNS
    step = drift.loc["step_ms_median"]
    assert step["p"] < 0.05 and step["slope_ci_low"] < step["slope_per_run"] < step["slope_ci_high"]
    assert step["slope_ci_low"] < 0.02 * 86.0 < step["slope_ci_high"]  # the planted slope
    assert bool(step["significant_within_blocks"])
    row = written["comparisons"].set_index(["metric", "backend"]).loc[("step_ms_median", "sdpa")]
    assert np.isfinite(row["diff_drift_adjusted"])
    assert row["diff_drift_adjusted_ci_low"] < row["diff_drift_adjusted"] < row["diff_drift_adjusted_ci_high"]  # fmt: skip
    # Independent: statsmodels' formula interface on the same runs.
    import statsmodels.formula.api as smf

    ok = written["runs"][written["runs"]["status"] == "ok"]
    fit = smf.ols("step_ms_median ~ C(backend) + run_order", data=ok).fit()
    assert step["slope_per_run"] == pytest.approx(fit.params["run_order"])
    assert step["p"] == pytest.approx(fit.pvalues["run_order"])
    within = smf.ols("step_ms_median ~ C(backend) + C(seed) + run_order", data=ok).fit()
    assert row["diff_drift_adjusted"] == pytest.approx(within.params["C(backend)[T.sdpa]"])
    # Memory is deterministic: no residual variance, no slope to test.
    assert "no residual variance" in drift.loc["peak_alloc_mb", "note"]


def test_drift_without_start_times_is_blank_not_a_crash():
    runs = _runs({"eager": {"epoch_loop_s": [1.0, 2.0, 3.0]}, "sdpa": {"epoch_loop_s": [1.0, 2.0, 3.0]}})  # fmt: skip
    table, adjusted = tables.drift(tables.add_order(runs), "eager")
    assert table["p"].isna().all() and adjusted == {}


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
    assert eager["runs_oom"] == 1 and eager["runs_unavailable"] == 0
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
    defaults = {
        "baseline": "eager",
        "alpha": 0.05,
        "tost_margin": 0.01,
        "replica": True,
        "order_seed": 0,
        "thresholds": {"time_rel": 0.01, "memory_mib": 1.0},
    }
    assert tables.analysis_settings("{}") == defaults
    assert config.validate({})["analysis"] == defaults
    got = tables.analysis_settings(
        {"analysis": {"baseline": "sdpa", "tost_margin": 0.02, "thresholds": {"time_rel": 0.02}}}
    )
    assert got["baseline"] == "sdpa" and got["tost_margin"] == 0.02
    assert got["thresholds"] == {"time_rel": 0.02, "memory_mib": 1.0}
    design = tables.analysis_settings({"analysis": {}, "backends": ["eager"], "seeds": [0, 1]})
    assert design["backends"] == ["eager"] and design["seeds"] == [0, 1]


def test_thresholds_set_the_verdict():
    runs = _runs({"eager": {"step_ms_median": [86.0, 86.2, 85.9, 86.1]}, "sdpa": {"step_ms_median": [84.9, 85.2, 84.8, 85.0]}})  # fmt: skip
    loose = tables.compare(runs, "eager", thresholds={"time_rel": 0.05}).set_index("metric")
    tight = tables.compare(runs, "eager", thresholds={"time_rel": 0.005}).set_index("metric")
    assert loose.loc["step_ms_median", "verdict"] == "negligible"
    assert tight.loc["step_ms_median", "verdict"] == "meaningful"
    assert loose.loc["step_ms_median", "threshold_rule"] == "5% of the baseline mean"


def test_defaults_are_read_from_the_schema_not_copied(monkeypatch):
    schema = config.load_schema()
    schema["properties"]["analysis"]["properties"]["alpha"]["default"] = 0.1
    monkeypatch.setattr(config, "load_schema", lambda: schema)
    analysis_config._schema_analysis.cache_clear()
    try:
        assert tables.analysis_settings({})["alpha"] == 0.1
        runs = _runs({"eager": {"epoch_loop_s": [1.0, 2.0]}})
        assert tables.summarize(runs, "eager")["confidence"].eq(0.9).all()
    finally:
        analysis_config._schema_analysis.cache_clear()


def test_planned_order_recorded_by_the_job_wins():
    runs = _runs({"eager": {"epoch_loop_s": [1.0, 2.0]}, "sdpa": {"epoch_loop_s": [1.0, 2.0]}})
    runs["planned_order"] = [4, None, 2, 1]
    ordered = tables.add_order(runs, order_seed=0)
    plan = schedule.planned_order(0, ["eager", "sdpa"], [0, 1])
    assert list(ordered["planned_order"]) == [4, plan.index(("eager", 1)) + 1, 2, 1]
