"""Statistics on two small samples: every interval, test and effect size the tables state.

Methods (named in the tables too, so a reader of a CSV alone knows them):
- mean CI: Student t-interval;
- difference: Welch's t-test and its CI (scipy), Holm-adjusted over a family of
  comparisons (statsmodels), Hedges' g with the exact small-sample correction;
- ratio: Fieller's interval for a ratio of two independent means, with
  Welch-Satterthwaite degrees of freedom at the estimate;
- equivalence: TOST with unequal variances (statsmodels).
Fewer than two usable values on either side gives NaN, never an exception. The levels
(alpha, confidence, margin) are arguments: their defaults live in the config schema.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import special
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_ind

CI_METHOD = "t-interval"
DIFF_METHOD = "Welch t"
RATIO_METHOD = "Fieller (Welch df)"


def clean(values: Iterable[float]) -> np.ndarray:
    """The finite numbers among `values`: text, None and NaN (blanks of failed runs) drop out."""
    arr = np.asarray(pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce"), float)
    return arr[np.isfinite(arr)]


def describe(values: Iterable[float], confidence: float) -> dict[str, float]:
    """n, mean, sd and the t-interval of the mean; NaN where n is too small."""
    x = clean(values)
    n = len(x)
    mean = float(np.mean(x)) if n else math.nan
    sd = float(np.std(x, ddof=1)) if n >= 2 else math.nan
    low = high = math.nan
    if n >= 2:
        if sd == 0:
            low = high = mean
        else:
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
    res = sps.ttest_ind(x, y, equal_var=False)
    ci = res.confidence_interval(1 - alpha)
    out.update(
        diff_ci_low=float(ci.low),
        diff_ci_high=float(ci.high),
        t=float(res.statistic),
        df=float(res.df),
        p=float(res.pvalue),
    )
    return out


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

    Fieller inverts the t-test of mean(a) - r * mean(b) = 0, so the interval is exact under
    normality and asymmetric like a ratio should be. Degrees of freedom: Welch-Satterthwaite
    at the estimate. The interval is NaN when it is unbounded (mean(b) not clearly non-zero).
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
