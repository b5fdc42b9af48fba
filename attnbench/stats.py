"""Statistics on two small samples: every interval, test and effect size the tables state.

Methods (named in the tables too, so a reader of a CSV alone knows them):
- mean CI: Student t-interval;
- paired difference (runs paired by seed): mean difference, its t-interval and the
  paired t-test, plus an exact sign-flip permutation test over all 2^n sign patterns
  (a seeded Monte Carlo beyond `PERM_EXACT_MAX` pairs, its draw count stated);
- unpaired difference (only where pairing is impossible): Welch's t-test and its CI;
- Holm adjustment over a family of comparisons (statsmodels), Hedges' g with the
  gamma-function small-sample correction;
- ratio: Fieller's interval, paired (n - 1 df) or for independent means (Welch df);
- equivalence: TOST, paired or with unequal variances (statsmodels), with the
  (1 - 2 alpha) interval that decides it;
- power: the minimum detectable effect at 80% power (two-sided alpha) for the n and
  the spread observed, and the n that would resolve the observed difference
  (`power_analysis`, re-exported here).
A difference that is the same in every pair (zero variance: deterministic memory) is
`identical`: no test, no interval, the exact difference. Fewer than two usable values
gives NaN, never an exception. The levels (alpha, confidence, margin) are arguments:
their defaults live in the config schema.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import special
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_ind, ttost_paired

from attnbench.power_analysis import POWER as POWER
from attnbench.power_analysis import mde_paired as mde_paired
from attnbench.power_analysis import mde_welch as mde_welch
from attnbench.power_analysis import seeds_needed_paired as seeds_needed_paired
from attnbench.power_analysis import seeds_needed_welch as seeds_needed_welch

CI_METHOD = "t-interval"
DIFF_METHOD = "Welch t"
PAIRED_METHOD = "paired t"
RATIO_METHOD = "Fieller (Welch df)"
PAIRED_RATIO_METHOD = "Fieller (paired, n-1 df)"
EXACT_METHOD = "identical in every pair: exact difference"
PERM_EXACT_MAX = 16  # 2^16 sign patterns; beyond, Monte Carlo
PERM_DRAWS = 100_000


def clean(values: Iterable[float]) -> np.ndarray:
    """The finite numbers among `values`: text, None and NaN (blanks of failed runs) drop out."""
    arr = np.asarray(pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce"), float)
    return arr[np.isfinite(arr)]


def describe(values: Iterable[float], confidence: float) -> dict[str, float]:
    """n, mean, sd and the t-interval of the mean; NaN where n is too small, and where
    every value is the same (a deterministic metric has no interval, not a zero-width one)."""
    x = clean(values)
    n = len(x)
    mean = float(np.mean(x)) if n else math.nan
    sd = float(np.std(x, ddof=1)) if n >= 2 else math.nan
    low = high = math.nan
    if n >= 2 and sd > 1e-12 * max(1.0, float(np.max(np.abs(x)))):
        low, high = sps.t.interval(confidence, df=n - 1, loc=mean, scale=sps.sem(x))
    return {"n": n, "mean": mean, "sd": sd, "ci_low": float(low), "ci_high": float(high)}


def t_interval(values: Iterable[float], confidence: float) -> tuple[float, float]:
    """The t-interval of the mean, as (low, high); used by plots to match the tables."""
    d = describe(values, confidence)
    return d["ci_low"], d["ci_high"]


def welch(a: Iterable[float], b: Iterable[float], alpha: float) -> dict[str, float]:
    """Welch's t-test of mean(a) - mean(b) with its (1 - alpha) CI."""
    x, y = clean(a), clean(b)
    out = dict.fromkeys(("diff", "diff_ci_low", "diff_ci_high", "t", "df", "p"), math.nan)
    if len(x):
        out["diff"] = float(np.mean(x) - np.mean(y)) if len(y) else math.nan
    if len(x) < 2 or len(y) < 2 or np.var(x) + np.var(y) == 0:
        return out
    out.update(_t_test_fields(sps.ttest_ind(x, y, equal_var=False), alpha))
    return out


def _t_test_fields(res: Any, alpha: float) -> dict[str, float]:
    """A scipy t-test result as the tables' fields: its (1 - alpha) CI, t, df and p."""
    ci = res.confidence_interval(1 - alpha)
    return {
        "diff_ci_low": float(ci.low),
        "diff_ci_high": float(ci.high),
        "t": float(res.statistic),
        "df": float(res.df),
        "p": float(res.pvalue),
    }


def hedges_g(a: Iterable[float], b: Iterable[float]) -> float:
    """Standardised mean difference (a - b) / pooled sd, bias-corrected with the exact J."""
    x, y = clean(a), clean(b)
    n1, n2 = len(x), len(y)
    if n1 < 2 or n2 < 2:
        return math.nan
    dof = n1 + n2 - 2
    pooled = ((n1 - 1) * np.var(x, ddof=1) + (n2 - 1) * np.var(y, ddof=1)) / dof
    if pooled == 0:
        return math.nan
    d = (np.mean(x) - np.mean(y)) / math.sqrt(pooled)
    j = math.exp(special.gammaln(dof / 2) - special.gammaln((dof - 1) / 2)) / math.sqrt(dof / 2)
    return float(j * d)


def fieller_ratio(
    a: Iterable[float], b: Iterable[float], alpha: float
) -> tuple[float, float, float]:
    """mean(a) / mean(b) with Fieller's (1 - alpha) interval for independent samples.

    Fieller inverts the Welch t-test of mean(a) - r * mean(b) = 0, so the interval is
    asymmetric like a ratio should be. Its coverage is approximate: the Welch-Satterthwaite
    degrees of freedom are taken at the estimate, not at each r. The interval is NaN when
    it is unbounded (mean(b) not clearly non-zero).
    """
    x, y = clean(a), clean(b)
    if not len(x) or not len(y) or np.mean(y) == 0:
        return math.nan, math.nan, math.nan
    ma, mb = float(np.mean(x)), float(np.mean(y))
    ratio = ma / mb
    if len(x) < 2 or len(y) < 2:
        return ratio, math.nan, math.nan
    va, vb = np.var(x, ddof=1) / len(x), np.var(y, ddof=1) / len(y)
    if va + vb == 0:
        return ratio, math.nan, math.nan  # like Welch: no variance, no interval
    rvb = ratio**2 * vb
    df = (va + rvb) ** 2 / (va**2 / (len(x) - 1) + rvb**2 / (len(y) - 1))
    t = sps.t.ppf(1 - alpha / 2, df)
    denom = mb**2 - t**2 * vb
    if denom <= 0:
        return ratio, math.nan, math.nan
    disc = (ma * mb) ** 2 - denom * (ma**2 - t**2 * va)
    root = math.sqrt(max(disc, 0.0))
    return ratio, float((ma * mb - root) / denom), float((ma * mb + root) / denom)


def tost(a: Iterable[float], b: Iterable[float], margin: float) -> float:
    """TOST p-value that |mean(a) - mean(b)| < margin (Welch variances); NaN if untestable."""
    x, y = clean(a), clean(b)
    if len(x) < 2 or len(y) < 2 or np.var(x) + np.var(y) == 0:
        return math.nan
    p, _, _ = ttost_ind(x, y, -margin, margin, usevar="unequal")
    return float(p)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values; NaNs stay NaN and do not count towards the family."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    mask = np.isfinite(p)
    if mask.any():
        out[mask] = multipletests(p[mask], method="holm")[1]
    return out


def equivalence_label(tost_p: float, p: float, alpha: float) -> str:
    """Turn the two tests into the wording the report uses."""
    if np.isfinite(tost_p) and tost_p < alpha:
        return "equivalent"
    if np.isfinite(p) and p < alpha:
        return "different"
    return "not shown"


# --------------------------------------------------------------------------- #
# Paired designs: runs paired by seed (same initial weights and data order)


def aligned(a: Iterable[float], b: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
    """Two paired samples (same order) as floats, keeping only pairs finite on both sides."""
    x = np.asarray(pd.to_numeric(pd.Series(list(a), dtype=object), errors="coerce"), float)
    y = np.asarray(pd.to_numeric(pd.Series(list(b), dtype=object), errors="coerce"), float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples need equal lengths, got {len(x)} and {len(y)}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _constant(d: np.ndarray, scale: float) -> bool:
    """All differences equal up to float rounding of values of size `scale`."""
    return len(d) >= 2 and float(np.ptp(d)) <= 1e-12 * max(1.0, scale)


def paired(a: Iterable[float], b: Iterable[float], alpha: float) -> dict[str, Any]:
    """Mean of a - b over pairs, its (1 - alpha) t-interval and the paired t-test.

    `identical` is True when every pair differs by the same amount (two pairs or more):
    then `diff` is that exact difference and the interval, t and p stay NaN.
    """
    x, y = aligned(a, b)
    d = x - y
    out: dict[str, Any] = dict.fromkeys(
        ("diff", "sd_diff", "diff_ci_low", "diff_ci_high", "t", "df", "p"), math.nan
    )
    out.update(n=len(d), identical=False)
    if not len(d):
        return out
    out["diff"] = float(np.mean(d))
    if len(d) < 2:
        return out
    scale = float(max(np.max(np.abs(x)), np.max(np.abs(y))))
    if _constant(d, scale):
        out.update(diff=float(d[0]), sd_diff=0.0, identical=True)
        return out
    out["sd_diff"] = float(np.std(d, ddof=1))
    out.update(_t_test_fields(sps.ttest_rel(x, y), alpha))
    return out


def sign_flip(
    d: Iterable[float], max_exact: int = PERM_EXACT_MAX, draws: int = PERM_DRAWS, seed: int = 0
) -> tuple[float, str]:
    """Two-sided sign-flip permutation p of mean(d) = 0, and the method in words.

    Under H0 each paired difference is as likely negative as positive, so every one of
    the 2^n sign patterns is equally likely: exact enumeration up to `max_exact` pairs,
    beyond it `draws` seeded Monte Carlo patterns with p = (1 + hits) / (1 + draws).
    With n pairs the smallest exact p is 2 / 2^n (0.25 at n = 3, 0.0625 at n = 5).
    """
    d = clean(d)
    n = len(d)
    if n < 2:
        return math.nan, ""
    observed = abs(float(d.sum()))
    tol = 1e-12 * max(1.0, float(np.abs(d).sum()))
    if n <= max_exact:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
        sums = np.abs((1 - 2 * bits) @ d)
        return float(np.mean(sums >= observed - tol)), f"sign-flip, exact (all {2**n} patterns)"
    rng = np.random.default_rng(seed)
    hits, done = 0, 0
    while done < draws:
        size = min(10_000, draws - done)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(size, n))
        hits += int(np.sum(np.abs(signs @ d) >= observed - tol))
        done += size
    return (1 + hits) / (1 + draws), f"sign-flip, Monte Carlo ({draws} draws, seed {seed})"


def paired_tost(
    a: Iterable[float], b: Iterable[float], margin: float, alpha: float
) -> dict[str, float]:
    """Paired TOST p that |mean(a - b)| < margin, and the (1 - 2 alpha) interval it uses."""
    x, y = aligned(a, b)
    out = {"tost_p": math.nan, "tost_ci_low": math.nan, "tost_ci_high": math.nan}
    d = paired(x, y, 2 * alpha)
    if d["n"] < 2 or d["identical"]:
        return out
    p, _, _ = ttost_paired(x, y, -margin, margin)
    out.update(tost_p=float(p), tost_ci_low=d["diff_ci_low"], tost_ci_high=d["diff_ci_high"])
    return out


def welch_tost(
    a: Iterable[float], b: Iterable[float], margin: float, alpha: float
) -> dict[str, float]:
    """Welch TOST p that |mean(a) - mean(b)| < margin, and its (1 - 2 alpha) interval."""
    w = welch(a, b, 2 * alpha)
    return {
        "tost_p": tost(a, b, margin),
        "tost_ci_low": w["diff_ci_low"],
        "tost_ci_high": w["diff_ci_high"],
    }


def paired_fieller(
    a: Iterable[float], b: Iterable[float], alpha: float
) -> tuple[float, float, float]:
    """mean(a) / mean(b) over pairs with Fieller's (1 - alpha) interval for paired samples.

    Inverts the paired t-test of a - r * b = 0 (n - 1 df), so the covariance of the
    pairs narrows the interval. NaN interval when unbounded or without variance.
    """
    x, y = aligned(a, b)
    n = len(x)
    if not n or np.mean(y) == 0:
        return math.nan, math.nan, math.nan
    ma, mb = float(np.mean(x)), float(np.mean(y))
    ratio = ma / mb
    if n < 2:
        return ratio, math.nan, math.nan
    cov = np.cov(x, y, ddof=1) / n
    saa, sbb, sab = float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1])
    if saa + sbb == 0:
        return ratio, math.nan, math.nan
    t2 = sps.t.ppf(1 - alpha / 2, n - 1) ** 2
    qa, qb, qc = mb**2 - t2 * sbb, ma * mb - t2 * sab, ma**2 - t2 * saa
    disc = qb**2 - qa * qc
    if qa <= 0 or disc < 0:
        return ratio, math.nan, math.nan
    root = math.sqrt(disc)
    return ratio, float((qb - root) / qa), float((qb + root) / qa)


# --------------------------------------------------------------------------- #
# Verdicts


def practical_verdict(
    diff: float,
    ci: tuple[float, float],
    ci_equivalence: tuple[float, float],
    threshold: float,
    identical: bool = False,
) -> str:
    """'meaningful', 'negligible' or 'unresolved' against a practical threshold.

    negligible: the (1 - 2 alpha) interval lies inside (-threshold, threshold) (TOST);
    meaningful: the (1 - alpha) interval lies wholly beyond +threshold or -threshold;
    an identical (deterministic) difference is judged by its exact value. '' without a
    threshold or a difference.
    """
    if not (np.isfinite(threshold) and np.isfinite(diff)):
        return ""
    if identical:
        return "meaningful" if abs(diff) >= threshold else "negligible"
    lo_eq, hi_eq = ci_equivalence
    if np.isfinite(lo_eq) and np.isfinite(hi_eq) and -threshold < lo_eq and hi_eq < threshold:
        return "negligible"
    lo, hi = ci
    if (np.isfinite(lo) and lo > threshold) or (np.isfinite(hi) and hi < -threshold):
        return "meaningful"
    return "unresolved"
