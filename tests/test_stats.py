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


# --------------------------------------------------------------------------- #
# Paired designs, permutation, power and zero variance

X = np.array([10.2, 10.8, 10.5, 11.1, 10.4, 10.9])
Y = np.array([10.9, 11.2, 11.1, 11.6, 11.0, 11.1])


def test_paired_matches_scipy_ttest_rel():
    got = stats.paired(X, Y, 0.05)
    res = sps.ttest_rel(X, Y)
    d = X - Y
    half = sps.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    assert got["n"] == 6 and not got["identical"]
    assert got["diff"] == pytest.approx(d.mean())
    assert got["t"] == pytest.approx(res.statistic) and got["p"] == pytest.approx(res.pvalue)
    assert got["df"] == 5 and got["sd_diff"] == pytest.approx(d.std(ddof=1))
    assert (got["diff_ci_low"], got["diff_ci_high"]) == pytest.approx(
        (d.mean() - half, d.mean() + half)
    )


def test_paired_drops_incomplete_pairs():
    got = stats.paired([1.0, np.nan, 3.0, 4.0], [0.5, 2.0, None, 3.1], 0.05)
    assert got["n"] == 2 and got["diff"] == pytest.approx((0.5 + 0.9) / 2)
    with pytest.raises(ValueError, match="equal lengths"):
        stats.paired([1.0, 2.0], [1.0], 0.05)


def test_identical_differences_are_exact_and_untested():
    """Deterministic memory: the same difference in every seed is no sampling question."""
    a = [1588.7177734375] * 3
    b = [1203.2001953125] * 3
    got = stats.paired(a, b, 0.05)
    assert got["identical"] and got["diff"] == 1588.7177734375 - 1203.2001953125
    assert got["sd_diff"] == 0
    for key in ("diff_ci_low", "diff_ci_high", "t", "p"):
        assert math.isnan(got[key]), key
    # Arms that vary across seeds but differ by the same amount are identical differences too.
    assert stats.paired([10.0, 11.0, 12.5], [9.0, 10.0, 11.5], 0.05)["identical"]
    assert not stats.paired([10.0, 11.0], [9.0, 10.5], 0.05)["identical"]
    d = stats.describe([2400.0] * 3, 0.95)
    assert d["sd"] == 0 and math.isnan(d["ci_low"]) and math.isnan(d["ci_high"])


def _brute_force_sign_flip(d: np.ndarray) -> float:
    """Every sign pattern, enumerated one by one with itertools."""
    import itertools

    observed = abs(d.mean())
    hits = total = 0
    for signs in itertools.product((-1.0, 1.0), repeat=len(d)):
        total += 1
        hits += abs((np.array(signs) * d).mean()) >= observed - 1e-12
    return hits / total


@pytest.mark.parametrize(
    "d",
    [X - Y, np.array([0.3, -0.1, 0.2]), np.array([1.0, 2.0, -0.5, 0.7, 0.1, 0.4, -0.2, 0.9])],
)
def test_sign_flip_matches_brute_force_enumeration(d):
    p, method = stats.sign_flip(d)
    assert p == pytest.approx(_brute_force_sign_flip(d))
    assert method == f"sign-flip, exact (all {2 ** len(d)} patterns)"


def test_sign_flip_all_same_sign_reaches_its_floor():
    p, _ = stats.sign_flip([0.5, 0.4, 0.6])
    assert p == pytest.approx(2 / 8)  # the smallest exact p with three pairs


def test_sign_flip_monte_carlo_beyond_exact_is_seeded_and_stated():
    rng = np.random.default_rng(1)
    d = rng.normal(0.3, 1.0, 20)
    p1, method = stats.sign_flip(d, max_exact=16, draws=20_000, seed=3)
    p2, _ = stats.sign_flip(d, max_exact=16, draws=20_000, seed=3)
    assert p1 == p2 and method == "sign-flip, Monte Carlo (20000 draws, seed 3)"
    exact, _ = stats.sign_flip(d, max_exact=20)
    assert p1 == pytest.approx(exact, abs=0.01)
    assert math.isnan(stats.sign_flip([1.0])[0])


def test_paired_tost_matches_statsmodels_and_its_90_interval():
    from statsmodels.stats.weightstats import ttost_paired

    a = np.array([0.751, 0.748, 0.755, 0.750, 0.752])
    b = np.array([0.749, 0.750, 0.752, 0.749, 0.751])
    got = stats.paired_tost(a, b, 0.01, 0.05)
    assert got["tost_p"] == pytest.approx(ttost_paired(a, b, -0.01, 0.01)[0])
    d = a - b
    half = sps.t.ppf(0.95, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    assert (got["tost_ci_low"], got["tost_ci_high"]) == pytest.approx(
        (d.mean() - half, d.mean() + half)
    )
    # Equivalence at alpha <=> the 90% interval inside the margin.
    assert (got["tost_p"] < 0.05) == (got["tost_ci_low"] > -0.01 and got["tost_ci_high"] < 0.01)


def test_paired_fieller_endpoints_solve_the_inverted_paired_test():
    ratio, low, high = stats.paired_fieller(X, Y, 0.05)
    assert ratio == pytest.approx(X.mean() / Y.mean()) and low < ratio < high
    crit = sps.t.ppf(0.975, len(X) - 1)
    for r in (low, high):
        assert abs(sps.ttest_rel(X, r * Y).statistic) == pytest.approx(crit, rel=1e-9)


def test_mde_paired_matches_statsmodels_and_noncentral_t():
    from statsmodels.stats.power import TTestPower

    sd = 0.8
    for n in (3, 5, 10):
        mde = stats.mde_paired(n, sd, 0.05)
        d = TTestPower().solve_power(effect_size=None, nobs=n, alpha=0.05, power=0.8)
        assert mde == pytest.approx(d * sd)
        # By hand: the noncentral t's two-sided power at the MDE is 80%.
        df, nc = n - 1, mde / sd * math.sqrt(n)
        q = sps.t.ppf(0.975, df)
        assert sps.nct.sf(q, df, nc) + sps.nct.cdf(-q, df, nc) == pytest.approx(0.8, abs=1e-6)
    assert math.isnan(stats.mde_paired(1, sd, 0.05)) and math.isnan(stats.mde_paired(5, 0, 0.05))


def test_mde_welch_matches_ttestindpower_with_welch_standard_error():
    from statsmodels.stats.power import TTestIndPower

    n1, n2, sd1, sd2 = 4, 6, 1.0, 2.0
    d = TTestIndPower().solve_power(None, nobs1=n1, alpha=0.05, power=0.8, ratio=n2 / n1)
    mde = stats.mde_welch(n1, n2, sd1, sd2, 0.05)
    se = math.sqrt(sd1**2 / n1 + sd2**2 / n2)
    assert mde == pytest.approx(d * se / math.sqrt(1 / n1 + 1 / n2))
    assert stats.mde_welch(5, 5, 1.0, 1.0, 0.05) == pytest.approx(
        TTestIndPower().solve_power(None, nobs1=5, alpha=0.05, power=0.8)
    )


def test_seeds_needed_is_the_smallest_n_with_80_percent_power():
    from statsmodels.stats.power import TTestIndPower, TTestPower

    n = stats.seeds_needed_paired(0.1, 0.2, 0.05)
    assert n == math.ceil(TTestPower().solve_power(effect_size=0.5, alpha=0.05, power=0.8))
    assert TTestPower().power(0.5, n, 0.05) >= 0.8 > TTestPower().power(0.5, n - 1, 0.05)
    m = stats.seeds_needed_welch(0.5, 1.0, 1.0, 0.05)
    assert m == math.ceil(TTestIndPower().solve_power(effect_size=0.5, alpha=0.05, power=0.8))
    assert stats.seeds_needed_paired(1e-6, 1.0, 0.05) == math.inf
    assert math.isnan(stats.seeds_needed_paired(0.0, 1.0, 0.05))
    assert math.isnan(stats.seeds_needed_paired(1.0, 0.0, 0.05))


@pytest.mark.parametrize(
    ("diff", "ci", "ci_eq", "identical", "verdict"),
    [
        (-5.0, (-6.0, -4.0), (-5.8, -4.2), False, "meaningful"),
        (0.1, (-0.5, 0.7), (-0.4, 0.6), False, "negligible"),
        (0.5, (-2.0, 3.0), (-1.5, 2.5), False, "unresolved"),
        (-0.5, (np.nan, np.nan), (np.nan, np.nan), False, "unresolved"),
        (-336.0, (np.nan, np.nan), (np.nan, np.nan), True, "meaningful"),
        (0.0, (np.nan, np.nan), (np.nan, np.nan), True, "negligible"),
    ],
)
def test_practical_verdict(diff, ci, ci_eq, identical, verdict):
    assert stats.practical_verdict(diff, ci, ci_eq, 1.0, identical) == verdict


def test_fieller_docstring_does_not_claim_exactness():
    assert "exact" not in (stats.fieller_ratio.__doc__ or "").lower()
    assert "exact" not in (stats.paired_fieller.__doc__ or "").lower()
