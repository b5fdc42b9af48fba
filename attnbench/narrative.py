"""The report's narrative: the answer in a few sentences, and what limits it.

The wording follows the statistics (significance, equivalence, too few runs), so the page
never claims more than the tests in the comparisons table show.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from attnbench import tables
from attnbench.formatting import (
    confidence_text,
    fmt_map_diff,
    fmt_ratio,
    interval,
    is_finite,
    metric_fmt,
    na_text,
    p_is,
)

# The metrics that answer the question: speed, memory and accuracy.
SPEED = "epoch_loop_s"
MEMORY = "peak_alloc_mb"
ACCURACY = "mAP50_95"


def row_where(table: pd.DataFrame, **where: Any) -> pd.Series | None:
    """The first row whose columns equal `where`, or None (also for a missing column)."""
    if table is None or table.empty:
        return None
    mask = pd.Series(True, index=table.index)
    for key, value in where.items():
        if key not in table:
            return None
        mask &= table[key] == value
    hits = table[mask]
    return None if hits.empty else hits.iloc[0]


def headline(
    summary: pd.DataFrame,
    comparisons: pd.DataFrame,
    runs: pd.DataFrame,
    baseline: str,
    alpha: float,
    tost_margin: float,
) -> list[str]:
    """The answer in a few sentences: fastest backend, by how much, memory, accuracy, certainty.

    The strength of each claim follows the tests: 'significant' only when the Holm-adjusted
    Welch p is below alpha, 'equivalent' only when TOST shows it, and plain warnings when
    there are too few runs to test anything.
    """
    speed = (
        summary[(summary["metric"] == SPEED) & (summary["n"] >= 1)]
        if not summary.empty
        else summary
    )
    if speed is None or speed.empty:
        return [
            "No run finished training, so there is no answer yet: see Availability and Runs "
            "below for what was skipped or failed and why."
        ]
    fastest = speed.loc[speed["mean"].astype(float).idxmin()]
    name = fastest["backend"]
    conf = confidence_text(alpha)
    out: list[str] = []
    base = row_where(summary, backend=baseline, metric=SPEED)
    has_base = base is not None and is_finite(base["mean"])
    if len(speed) == 1:
        out.append(
            f"Only {name} finished training (epoch-loop time {metric_fmt(SPEED, fastest['mean'])} s, "
            f"n = {int(fastest['n'])}); there is nothing to compare it with"
            + ("." if name == baseline else f" (the baseline {baseline} has no finished run).")
        )
    elif name == baseline:
        others = speed[speed["backend"] != baseline].sort_values("mean")
        second = others.iloc[0]
        comp = row_where(comparisons, backend=second["backend"], metric=SPEED)
        out.append(
            f"No backend beat the baseline {baseline}: it had the shortest mean epoch-loop time "
            f"({metric_fmt(SPEED, fastest['mean'])} s, n = {int(fastest['n'])}). The closest, "
            f"{second['backend']}, took {fmt_ratio(second['ratio'])}x as long "
            f"({_fieller(second, conf)})"
            f"{certainty_clause(comp, alpha)}."
        )
    elif not has_base:
        out.append(
            f"{name} had the shortest mean epoch-loop time ({metric_fmt(SPEED, fastest['mean'])} s, "
            f"n = {int(fastest['n'])}), but the baseline {baseline} has no finished run, so "
            "nothing can be said about how much faster it is than the baseline."
        )
    else:
        comp = row_where(comparisons, backend=name, metric=SPEED)
        pct = 100 * (1 - float(fastest["ratio"]))
        shown = comp is not None and is_finite(comp["p_holm"]) and float(comp["p_holm"]) < alpha
        # "fastest" only when the test backs it; otherwise just the observed ordering.
        lead = f"{name} was fastest:" if shown else f"{name} had the shortest"
        out.append(
            f"{lead} mean epoch-loop time {metric_fmt(SPEED, fastest['mean'])} s "
            f"against {metric_fmt(SPEED, base['mean'])} s for the baseline {baseline}, "
            f"{pct:.1f}% less (time ratio {fmt_ratio(fastest['ratio'])}, {_fieller(fastest, conf)})"
            f"{certainty_clause(comp, alpha)}."
        )
    if has_base and name != baseline:
        out.append(_memory_sentence(summary, comparisons, name, baseline, alpha))
        out.append(_accuracy_sentence(comparisons, name, baseline, tost_margin, conf))
    elif has_base and len(speed) > 1:
        second = speed[speed["backend"] != baseline].sort_values("mean").iloc[0]["backend"]
        out.append(_memory_sentence(summary, comparisons, second, baseline, alpha))
        out.append(_accuracy_sentence(comparisons, second, baseline, tost_margin, conf))
    tally = _tally(comparisons, alpha)
    if tally:
        out.append(tally)
    return [s for s in out if s]


def certainty_clause(comp: pd.Series | None, alpha: float) -> str:
    """How sure a comparison row lets us be, as a clause: tested, deterministic or untestable."""
    if (
        comp is not None
        and not is_finite(comp["p_holm"])
        and min(comp["n"], comp["n_baseline"]) >= 2
        and "no variance" in str(comp.get("note", ""))
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
    n = f"n = {int(comp['n'])} vs {int(comp['n_baseline'])}"
    if p < alpha:
        return f"; the difference is statistically significant (Welch t-test, Holm-adjusted {p_is(p)}, {n})"
    return (
        f"; the difference is not statistically significant (Welch t-test, Holm-adjusted "
        f"{p_is(p)}, {n}): more seeds would be needed to tell them apart"
    )


def _fieller(row: pd.Series, conf: str) -> str:
    """'95% Fieller CI [0.9012, 0.9234]' for a summary row's ratio to the baseline."""
    return f"{conf} Fieller CI {interval(row['ratio_ci_low'], row['ratio_ci_high'], fmt_ratio)}"


def _memory_sentence(
    summary: pd.DataFrame, comparisons: pd.DataFrame, name: str, baseline: str, alpha: float
) -> str:
    mine, base = (
        row_where(summary, backend=name, metric=MEMORY),
        row_where(summary, backend=baseline, metric=MEMORY),
    )
    if mine is None or base is None or not is_finite(mine["mean"]) or not is_finite(base["mean"]):
        return "No GPU memory was recorded for these runs (CPU), so memory is not compared."
    comp = row_where(comparisons, backend=name, metric=MEMORY)
    pct = 100 * (float(mine["ratio"]) - 1)
    direction = "more" if pct > 0 else "less"
    return (
        f"Peak GPU memory allocated by {name} was {metric_fmt(MEMORY, mine['mean'])} MB against "
        f"{metric_fmt(MEMORY, base['mean'])} MB for {baseline} ({abs(pct):.1f}% {direction}, ratio "
        f"{fmt_ratio(mine['ratio'])}, {_fieller(mine, confidence_text(alpha))})"
        f"{certainty_clause(comp, alpha)}."
    )


def _accuracy_sentence(
    comparisons: pd.DataFrame, name: str, baseline: str, margin: float, conf: str
) -> str:
    comp = row_where(comparisons, backend=name, metric=ACCURACY)
    if comp is None or not is_finite(comp["diff"]):
        return f"mAP50-95 of {name} cannot be compared with {baseline} (no finished runs)."
    diff = (
        f"mAP50-95 of {name} differed from {baseline} by {float(comp['diff']):+.4f} "
        f"({conf} CI {interval(comp['diff_ci_low'], comp['diff_ci_high'], fmt_map_diff)})"
    )
    label = comp["equivalence"]
    if label == "equivalent":
        return (
            f"{diff}: equivalent within ±{margin:g} (TOST, Holm-adjusted "
            f"{p_is(comp['tost_p_holm'])}), so the seed study's 'identical accuracy' holds here "
            "as a tested statement."
        )
    if label == "different":
        return (
            f"{diff}: a real accuracy difference (Welch t-test, Holm-adjusted "
            f"{p_is(comp['p_holm'])}), not equivalent within ±{margin:g}."
        )
    if not is_finite(comp["tost_p"]):
        return f"{diff}; equivalence within ±{margin:g} cannot be tested with fewer than two runs a side."
    return (
        f"{diff}; equivalence within ±{margin:g} is not shown (TOST Holm-adjusted "
        f"{p_is(comp['tost_p_holm'])}), nor is a difference: too few seeds or too much spread."
    )


def _tally(comparisons: pd.DataFrame, alpha: float) -> str:
    comp = comparisons[comparisons["metric"] == SPEED] if not comparisons.empty else comparisons
    if comp is None or comp.empty or not comp["p_holm"].notna().any():
        return ""
    tested = comp[comp["p_holm"].notna()]
    faster = tested[(tested["p_holm"] < alpha) & (tested["diff"] < 0)]["backend"].tolist()
    slower = tested[(tested["p_holm"] < alpha) & (tested["diff"] > 0)]["backend"].tolist()
    base = tested["baseline"].iloc[0]
    parts = [f"Of {len(tested)} backend(s) tested against {base} on epoch-loop time"]
    parts.append(
        f"{len(faster)} {'was' if len(faster) == 1 else 'were'} significantly faster"
        + (f" ({', '.join(faster)})" if faster else "")
    )
    parts.append(
        f"{len(slower)} significantly slower" + (f" ({', '.join(slower)})" if slower else "")
    )
    return (
        f"{parts[0]}, {parts[1]} and {parts[2]} (Holm-adjusted, alpha = {alpha:g}); the rest "
        "are not distinguishable from it with these runs."
        if len(tested) > len(faster) + len(slower)
        else f"{parts[0]}, {parts[1]} and {parts[2]} (Holm-adjusted, alpha = {alpha:g})."
    )


def caveats(runs: pd.DataFrame, dataset: Mapping[str, Any], reason: str) -> list[str]:
    """What limits the answer: demo data, single seeds, skipped or failed runs, kernel mismatch."""
    out = []
    if is_demo(dataset):
        out.append(
            f"The dataset is the embedded synthetic demo ({reason}). These numbers are a smoke "
            "test of the workflow, not a result: do not quote them."
        )
    ok = tables.ok_runs(runs)
    if not ok.empty:
        per_backend = ok.groupby("backend").size()
        if per_backend.max() < 2:
            out.append(
                "Only one finished run per backend: every interval, p-value and equivalence "
                "test is n/a. Run more seeds."
            )
        elif per_backend.min() < 2:
            few = ", ".join(per_backend[per_backend < 2].index)
            out.append(f"Fewer than two finished runs for {few}: its statistics are n/a.")
    failed = runs[runs["status"] != "ok"] if "status" in runs else runs.iloc[0:0]
    for (backend, status), group in failed.groupby(["backend", "status"], sort=False):
        seeds = ", ".join(str(s) for s in group["seed"])
        why = na_text(group["reason"].iloc[0]) if "reason" in group else "n/a"
        out.append(f"{backend}: {status} for seed(s) {seeds} ({why}).")
    if "provenance.matched" in ok:
        bad = ok[ok["provenance.matched"].astype(str).str.lower().isin(["false", "0"])]
        for backend in dict.fromkeys(bad["backend"]):
            out.append(
                f"{backend}: the profiled kernels did not match the backend's signature in "
                f"{int((bad['backend'] == backend).sum())} run(s); see Provenance."
            )
    return out


def is_demo(dataset: Mapping[str, Any]) -> bool:
    """Whether the dataset is the embedded synthetic demo (its numbers are no result)."""
    return dataset.get("source") == "demo" or dataset.get("name") == "demo"
