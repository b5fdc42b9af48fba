"""One comparison row in words: the difference with its interval, how sure the test lets
us be, and the power to detect it. The narrative builds its sentences from these.
"""

from __future__ import annotations

from functools import partial

import pandas as pd

from attnbench.analysis import tables
from attnbench.report.formatting import (
    blank,
    confidence_text,
    interval,
    is_finite,
    is_missing,
    metric_fmt,
    p_is,
)
from attnbench.report.lookups import truthy


def difference_text(row: pd.Series, alpha: float) -> str:
    """'−336 MB (−14.0%), identical across 3 seeds' or '−1.70 ms (−12.5%, 95% CI [..])'."""
    metric = str(row["metric"])
    unit = f" {tables.METRIC_BY_KEY[metric].unit}" if tables.METRIC_BY_KEY[metric].unit else ""
    diff = metric_fmt(metric, row["diff"], signed=True) + unit
    pct = f", {float(row['diff_pct']):+.1f}%" if is_finite(row.get("diff_pct")) else ""
    if truthy(row.get("identical")):
        return (
            f"{diff}{pct}; identical across {int(row['n'])} seeds, so this is the exact difference"
        )
    ci = interval(row["diff_ci_low"], row["diff_ci_high"], partial(metric_fmt, metric))
    return f"{diff} ({confidence_text(alpha)} CI {ci}{pct})"


def verdict_clause(row: pd.Series) -> str:
    verdict = blank(row.get("verdict"))
    if not verdict:
        return ""
    rule = blank(row.get("threshold_rule"))
    return f", {verdict}" + (f" against a threshold of {rule}" if rule else "")


def power_clause(row: pd.Series) -> str:
    """The minimum detectable effect and the seeds that would resolve the difference."""
    if truthy(row.get("identical")) or not is_finite(row.get("mde")):
        return ""
    metric = str(row["metric"])
    unit = tables.METRIC_BY_KEY[metric].unit
    pct = f" ({float(row['mde_pct']):.1f}%)" if is_finite(row.get("mde_pct")) else ""
    n = "pairs of runs" if row.get("design") == "paired" else "runs a side"
    text = (
        f"; with {int(row['n'])} {n} the smallest difference detectable at 80% power is "
        f"{metric_fmt(metric, row['mde'])} {unit}{pct}"
    )
    needed = row.get("seeds_needed")
    if is_finite(needed):
        text += f", and about {int(float(needed))} seeds would resolve a difference this size"
    elif not is_missing(needed) and str(needed) == "inf":
        text += ", and no practical number of seeds would resolve a difference this size"
    return text + verdict_clause(row)


def certainty_clause(comp: pd.Series | None, alpha: float) -> str:
    """How sure a comparison row lets us be, as a clause: tested, deterministic or untestable."""
    if comp is not None and (
        truthy(comp.get("identical"))
        or (
            not is_finite(comp["p_holm"])
            and min(comp["n"], comp["n_baseline"]) >= 2
            and "no variance" in str(comp.get("note", ""))
        )
    ):
        return (
            f"; identical in all {int(comp['n'])} vs {int(comp['n_baseline'])} runs (no variance), "
            "so the difference is deterministic rather than a sampling question"
        )
    if comp is None or not is_finite(comp["p_holm"]):
        return (
            "; with fewer than two finished runs on a side no test is possible, so treat this "
            "as a single observation, not a result"
        )
    p = float(comp["p_holm"])
    paired = comp.get("design") == "paired"
    test = "paired t-test" if paired else "Welch t-test"
    n = (
        f"{int(comp['n'])} pairs"
        if paired
        else f"n = {int(comp['n'])} vs {int(comp['n_baseline'])}"
    )
    perm = (
        f", sign-flip permutation {p_is(comp['p_perm'])}"
        if paired and is_finite(comp.get("p_perm"))
        else ""
    )
    if p < alpha:
        return f"; the difference is statistically significant ({test}, Holm-adjusted {p_is(p)}{perm}, {n})"
    return (
        f"; the difference is not statistically significant ({test}, Holm-adjusted "
        f"{p_is(p)}{perm}, {n}): more seeds would be needed to tell them apart"
    )
