"""Statistics checked against values computed here by hand formulas or other scipy paths."""

from __future__ import annotations

import math

import numpy as np
import pytest
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
    d = stats.describe(A, 0.95)
    half = sps.t.ppf(0.975, len(A) - 1) * A.std(ddof=1) / math.sqrt(len(A))
    assert d["n"] == 5
    assert d["mean"] == pytest.approx(A.mean())
    assert d["sd"] == pytest.approx(A.std(ddof=1))
    assert d["ci_low"] == pytest.approx(A.mean() - half)
    assert d["ci_high"] == pytest.approx(A.mean() + half)


@pytest.mark.parametrize("values", [[], [3.0], [np.nan, 3.0], [None, "x"]])
def test_describe_below_two_values_is_nan(values):
    d = stats.describe(values, 0.95)
    assert math.isnan(d["sd"]) and math.isnan(d["ci_low"]) and math.isnan(d["ci_high"])


def test_welch_matches_hand_formula():
    got = stats.welch(A, B, 0.05)
    want = _welch_by_hand(A, B)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key


def test_welch_agrees_with_scipy_from_summary_statistics():
    # Another route: scipy's ttest_ind_from_stats with summary statistics only.
    res = sps.ttest_ind_from_stats(
        A.mean(), A.std(ddof=1), len(A), B.mean(), B.std(ddof=1), len(B), equal_var=False
    )
    got = stats.welch(A, B, 0.05)
    assert got["t"] == pytest.approx(res.statistic)
    assert got["p"] == pytest.approx(res.pvalue)


def test_welch_small_or_constant_samples_are_nan():
    assert math.isnan(stats.welch([1.0], B, 0.05)["p"])
    assert stats.welch([1.0], B, 0.05)["diff"] == pytest.approx(1.0 - B.mean())
    assert math.isnan(stats.welch([2.0, 2.0], [2.0, 2.0], 0.05)["p"])


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
    ratio, low, high = stats.fieller_ratio(A, B, 0.05)
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
    ratio, low, high = stats.fieller_ratio(a, b, 0.05)
    se = ratio * math.sqrt(
        a.var(ddof=1) / len(a) / a.mean() ** 2 + b.var(ddof=1) / len(b) / b.mean() ** 2
    )
    assert (high - low) / 2 == pytest.approx(sps.t.ppf(0.975, 5.5) * se, rel=0.15)


def test_fieller_unbounded_or_too_small_is_nan():
    ratio, low, high = stats.fieller_ratio([1.0, 2.0, 3.0], [0.1, -0.1, 0.05], 0.05)
    assert math.isnan(low) and math.isnan(high)
    ratio, low, high = stats.fieller_ratio([1.0], [2.0, 2.5], 0.05)
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
