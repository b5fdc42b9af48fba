"""Statistics checked against values computed here by hand formulas or other scipy paths."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from fixtures_runs import make_study
from scipy import stats as sps

from attnbench import stats

A = np.array([10.2, 10.8, 10.5, 11.1, 10.4])
B = np.array([11.9, 12.4, 11.6, 12.8])


def _welch_by_hand(a: np.ndarray, b: np.ndarray, alpha: float = 0.05) -> dict[str, float]:
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    diff = a.mean() - b.mean()
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    t = diff / se
    q = sps.t.ppf(1 - alpha / 2, df)
    return {
        "diff": diff,
        "t": t,
        "df": df,
        "p": 2 * sps.t.sf(abs(t), df),
        "diff_ci_low": diff - q * se,
        "diff_ci_high": diff + q * se,
    }


def _holm_by_hand(p: list[float]) -> list[float]:
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def test_describe_matches_hand_t_interval():
    d = stats.describe(A)
    half = sps.t.ppf(0.975, len(A) - 1) * A.std(ddof=1) / math.sqrt(len(A))
    assert d["n"] == 5
    assert d["mean"] == pytest.approx(A.mean())
    assert d["sd"] == pytest.approx(A.std(ddof=1))
    assert d["ci_low"] == pytest.approx(A.mean() - half)
    assert d["ci_high"] == pytest.approx(A.mean() + half)


@pytest.mark.parametrize("values", [[], [3.0], [np.nan, 3.0], [None, "x"]])
def test_describe_below_two_values_is_nan(values):
    d = stats.describe(values)
    assert math.isnan(d["sd"]) and math.isnan(d["ci_low"]) and math.isnan(d["ci_high"])


def test_welch_matches_hand_formula():
    got = stats.welch(A, B)
    want = _welch_by_hand(A, B)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key


def test_welch_agrees_with_scipy_from_summary_statistics():
    # Another route: scipy's ttest_ind_from_stats with summary statistics only.
    res = sps.ttest_ind_from_stats(
        A.mean(), A.std(ddof=1), len(A), B.mean(), B.std(ddof=1), len(B), equal_var=False
    )
    got = stats.welch(A, B)
    assert got["t"] == pytest.approx(res.statistic)
    assert got["p"] == pytest.approx(res.pvalue)


def test_welch_small_or_constant_samples_are_nan():
    assert math.isnan(stats.welch([1.0], B)["p"])
    assert stats.welch([1.0], B)["diff"] == pytest.approx(1.0 - B.mean())
    assert math.isnan(stats.welch([2.0, 2.0], [2.0, 2.0])["p"])


def test_hedges_g_matches_hand_formula():
    n1, n2 = len(A), len(B)
    pooled = math.sqrt(((n1 - 1) * A.var(ddof=1) + (n2 - 1) * B.var(ddof=1)) / (n1 + n2 - 2))
    d = (A.mean() - B.mean()) / pooled
    df = n1 + n2 - 2
    j = math.gamma(df / 2) / (math.sqrt(df / 2) * math.gamma((df - 1) / 2))
    assert stats.hedges_g(A, B) == pytest.approx(j * d)
    # Hedges' usual approximation of J agrees closely.
    assert stats.hedges_g(A, B) == pytest.approx((1 - 3 / (4 * df - 1)) * d, rel=2e-3)
    assert math.isnan(stats.hedges_g([1.0], B))


def test_fieller_endpoints_solve_the_inverted_welch_test():
    ratio, low, high = stats.fieller_ratio(A, B)
    assert ratio == pytest.approx(A.mean() / B.mean())
    assert low < ratio < high
    # At the estimate, Welch-Satterthwaite df of mean(A) - r*mean(B):
    va, vb = A.var(ddof=1) / len(A), B.var(ddof=1) / len(B)
    rvb = ratio**2 * vb
    df = (va + rvb) ** 2 / (va**2 / (len(A) - 1) + rvb**2 / (len(B) - 1))
    crit = sps.t.ppf(0.975, df)
    for r in (low, high):
        # Welch's statistic of A against r*B is (mean A - r mean B) / sqrt(va + r^2 vb).
        t = sps.ttest_ind(A, r * B, equal_var=False).statistic
        assert abs(t) == pytest.approx(crit, rel=1e-9)


def test_fieller_is_close_to_the_delta_method_for_precise_means():
    a = np.array([100.0, 101.0, 99.5, 100.4])
    b = np.array([120.0, 121.0, 119.0, 120.5])
    ratio, low, high = stats.fieller_ratio(a, b)
    se = ratio * math.sqrt(
        a.var(ddof=1) / len(a) / a.mean() ** 2 + b.var(ddof=1) / len(b) / b.mean() ** 2
    )
    assert (high - low) / 2 == pytest.approx(sps.t.ppf(0.975, 5.5) * se, rel=0.15)


def test_fieller_unbounded_or_too_small_is_nan():
    ratio, low, high = stats.fieller_ratio([1.0, 2.0, 3.0], [0.1, -0.1, 0.05])
    assert math.isnan(low) and math.isnan(high)
    ratio, low, high = stats.fieller_ratio([1.0], [2.0, 2.5])
    assert ratio == pytest.approx(1 / 2.25) and math.isnan(low)


def test_tost_matches_two_one_sided_tests_by_hand():
    a = np.array([0.751, 0.748, 0.755, 0.750])
    b = np.array([0.749, 0.752, 0.747, 0.753, 0.750])
    margin = 0.01
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    diff = a.mean() - b.mean()
    p_lower = sps.t.sf((diff + margin) / se, df)  # H0: diff <= -margin
    p_upper = sps.t.cdf((diff - margin) / se, df)  # H0: diff >= +margin
    assert stats.tost(a, b, margin) == pytest.approx(max(p_lower, p_upper))
    assert stats.tost(a, b, margin) < 0.05


def test_holm_matches_hand_and_keeps_nan():
    p = [0.01, 0.04, 0.03, 0.2]
    assert list(stats.holm(p)) == pytest.approx(_holm_by_hand(p))
    got = stats.holm([0.01, np.nan, 0.04])
    assert math.isnan(got[1])
    assert [got[0], got[2]] == pytest.approx(_holm_by_hand([0.01, 0.04]))
    assert np.isnan(stats.holm([np.nan])).all()


@pytest.mark.parametrize(
    ("tost_p", "p", "label"),
    [
        (0.01, 0.5, "equivalent"),
        (0.01, 0.01, "equivalent"),
        (0.3, 0.01, "different"),
        (0.3, 0.4, "not shown"),
        (np.nan, np.nan, "not shown"),
    ],
)
def test_equivalence_label(tost_p, p, label):
    assert stats.equivalence_label(tost_p, p, 0.05) == label


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
    table = stats.compare(runs, "eager", alpha=0.05, tost_margin=0.01)
    assert set(table["backend"]) == {"fast", "same", "noisy"}
    assert list(table.columns) == stats.COMPARISON_COLUMNS
    time = table[table["metric"] == "epoch_loop_s"].set_index("backend")
    want_p = {b: _welch_by_hand(np.array(runs[runs.backend == b].epoch_loop_s), np.array(base_time))["p"] for b in time.index}  # fmt: skip
    for b in time.index:
        assert time.loc[b, "p"] == pytest.approx(want_p[b])
    holm = _holm_by_hand([want_p[b] for b in time.index])
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
    assert list(acc["tost_p_holm"]) == pytest.approx(_holm_by_hand(tost_raw))


def test_summary_ratio_and_ci():
    runs = _runs(
        {
            "eager": {"epoch_loop_s": list(B)},
            "fast": {"epoch_loop_s": list(A)},
        }
    )
    table = stats.summarize(runs, "eager", metrics=[stats.METRIC_BY_KEY["epoch_loop_s"]])
    row = table.set_index("backend").loc["fast"]
    assert row["n"] == 5
    assert row["ci_method"] == "t-interval" and row["ratio_method"].startswith("Fieller")
    assert (row["ratio"], row["ratio_ci_low"], row["ratio_ci_high"]) == pytest.approx(
        stats.fieller_ratio(A, B)
    )
    base = table.set_index("backend").loc["eager"]
    assert base["ratio"] == 1.0 and math.isnan(base["ratio_ci_low"])


def test_one_seed_gives_nan_statistics_without_warnings():
    runs = _runs({"eager": {"epoch_loop_s": [100.0], "mAP50_95": [0.7]}, "sdpa": {"epoch_loop_s": [90.0], "mAP50_95": [0.71]}})  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = stats.summarize(runs, "eager")
        table = stats.compare(runs, "eager")
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
    summary = stats.summarize(runs, "eager", metrics=[stats.METRIC_BY_KEY["epoch_loop_s"]])
    eager = summary.set_index("backend").loc["eager"]
    assert eager["runs"] == 3 and eager["runs_ok"] == 2 and eager["n"] == 2
    assert eager["mean"] == pytest.approx(100.5)


def test_missing_baseline_does_not_crash():
    runs = _runs({"eager": {"epoch_loop_s": [1.0, 2.0]}, "sdpa": {"epoch_loop_s": [1.0, 2.0]}})
    runs["status"] = np.where(runs["backend"] == "eager", "unavailable", "ok")
    table = stats.compare(runs, "eager")
    assert table["p"].isna().all()
    summary = stats.summarize(runs, "eager")
    assert summary.loc[summary.backend == "sdpa", "ratio"].isna().all()


def test_aggregate_reads_fixture_tree(tmp_path):
    study = make_study(
        tmp_path,
        unavailable={"flash_attn": "flash_attn is not installed"},
        failed={("sdpa", 1): "oom"},
    )
    tables = stats.aggregate(
        study.metrics,
        study.results,
        study.parity,
        study.kernels,
        json.dumps({"analysis": {"baseline": "eager", "alpha": 0.05, "tost_margin": 0.01}}),
    )
    runs = tables["runs"]
    assert len(runs) == 12
    assert {"provenance.matched", "provenance.fwd_kernels", "epoch_times_s"} <= set(runs.columns)
    assert json.loads(runs.loc[0, "epoch_times_s"])  # lists are kept as JSON text
    assert isinstance(json.loads(runs.loc[0, "provenance.fwd_kernels"]), dict)
    assert (runs.loc[runs.backend == "flash_attn", "status"] == "unavailable").all()
    epochs = tables["epochs"]
    assert {"backend", "seed", "status", "epoch", "metrics/mAP50-95(B)"} <= set(epochs.columns)
    assert set(epochs["backend"]) == {"eager", "sdpa", "sdpa_flash"}  # skipped runs: no rows
    assert len(epochs) == 8 * 5  # 8 trained runs x 5 epochs
    summary = tables["summary"]
    sdpa = summary[(summary.backend == "sdpa") & (summary.metric == "epoch_loop_s")].iloc[0]
    assert sdpa["runs"] == 3 and sdpa["n"] == 2
    assert set(tables["kernels"]["backend"]) == set(study_backends(study))
    assert "rel_err_out" in tables["parity"]
    comp = tables["comparisons"]
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
    epochs = stats.load_epochs([run / "results.csv", empty / "results.csv"])
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
    table = stats.concat_csvs([tmp_path / "a.csv", tmp_path / "b.csv"])
    assert len(table) == 1
    assert stats.concat_csvs([tmp_path / "b.csv"]).empty


def test_analysis_settings_defaults():
    assert stats.analysis_settings("{}") == {
        "baseline": "eager",
        "alpha": 0.05,
        "tost_margin": 0.01,
    }
    got = stats.analysis_settings({"analysis": {"baseline": "sdpa", "tost_margin": 0.02}})
    assert got["baseline"] == "sdpa" and got["tost_margin"] == 0.02
