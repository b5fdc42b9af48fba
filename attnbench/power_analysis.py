"""Power analysis for the comparisons: the smallest difference a test of n runs detects,
and the runs that would resolve an observed difference.

Both at `POWER` (80%) and two-sided alpha, with the spread observed; `stats` re-exports
them, so the tables read every method from one place.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats as sps
from statsmodels.stats.power import TTestIndPower, TTestPower

POWER = 0.8
MAX_SEEDS = 10_000  # seeds_needed beyond this is inf: "not resolvable"


def mde_paired(n: int, sd_diff: float, alpha: float, power: float = POWER) -> float:
    """Smallest true mean difference a paired t-test of n pairs detects with `power`."""
    if n < 2 or not np.isfinite(sd_diff) or sd_diff <= 0:
        return math.nan
    effect = TTestPower().solve_power(
        effect_size=None, nobs=n, alpha=alpha, power=power, alternative="two-sided"
    )
    return float(np.asarray(effect).item() * sd_diff)


def _welch_sigma(n1: int, n2: int, sd1: float, sd2: float) -> float:
    """The common SD whose two-sample standard error equals Welch's sqrt(v1/n1 + v2/n2)."""
    return math.sqrt((sd1**2 / n1 + sd2**2 / n2) / (1 / n1 + 1 / n2))


def mde_welch(
    n1: int, n2: int, sd1: float, sd2: float, alpha: float, power: float = POWER
) -> float:
    """Smallest true difference two independent samples detect with `power` (two-sided).

    The noncentral-t power of the two-sample test, with the SD that gives Welch's
    standard error (df n1 + n2 - 2: an approximation for unequal variances).
    """
    if n1 < 2 or n2 < 2 or not (np.isfinite(sd1) and np.isfinite(sd2)) or sd1 + sd2 <= 0:
        return math.nan
    effect = TTestIndPower().solve_power(
        effect_size=None, nobs1=n1, alpha=alpha, power=power, ratio=n2 / n1
    )
    return float(np.asarray(effect).item() * _welch_sigma(n1, n2, sd1, sd2))


def _power(t_power: float, noncentrality: float, alpha: float) -> float:
    """The t-test's power, or its normal approximation where the noncentral t underflows
    to NaN (large n, where t and normal agree)."""
    if np.isfinite(t_power):
        return float(t_power)
    z = sps.norm.ppf(1 - alpha / 2)
    return float(sps.norm.sf(z - noncentrality) + sps.norm.cdf(-z - noncentrality))


def _smallest_n(power_at: Any, target: float) -> float:
    """Smallest integer n >= 2 with power_at(n) >= target (power rises with n); inf if none."""
    if power_at(MAX_SEEDS) < target:
        return math.inf
    lo, hi = 2, MAX_SEEDS
    if power_at(lo) >= target:
        return float(lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if power_at(mid) >= target else (mid, hi)
    return float(hi)


def seeds_needed_paired(diff: float, sd_diff: float, alpha: float, power: float = POWER) -> float:
    """Pairs (seeds) a paired t-test needs to detect a true difference `diff` with `power`.

    NaN without a difference or a spread to plan with; inf beyond `MAX_SEEDS`.
    """
    if not (np.isfinite(diff) and np.isfinite(sd_diff)) or sd_diff <= 0 or diff == 0:
        return math.nan
    effect = abs(diff) / sd_diff

    def power_at(n: int) -> float:
        t_power = TTestPower().power(effect_size=effect, nobs=n, alpha=alpha)
        return _power(t_power, effect * math.sqrt(n), alpha)

    return _smallest_n(power_at, power)


def seeds_needed_welch(
    diff: float, sd1: float, sd2: float, alpha: float, power: float = POWER
) -> float:
    """Runs per arm two independent samples need to detect `diff` with `power`."""
    if not (np.isfinite(diff) and np.isfinite(sd1) and np.isfinite(sd2)) or diff == 0:
        return math.nan
    sigma = math.sqrt((sd1**2 + sd2**2) / 2)
    if sigma <= 0:
        return math.nan
    effect = abs(diff) / sigma

    def power_at(n: int) -> float:
        t_power = TTestIndPower().power(effect_size=effect, nobs1=n, alpha=alpha, ratio=1.0)
        return _power(t_power, effect * math.sqrt(n / 2), alpha)

    return _smallest_n(power_at, power)
