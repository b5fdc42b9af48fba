"""The comparison table: every arm against the baseline, paired by seed where it can be
(else Welch), with practical verdicts, TOST on accuracy and Holm within metric families."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from attnbench import stats
from attnbench.analysis.arm_summary import identical
from attnbench.analysis.metric_catalog import COMPARED, Metric
from attnbench.analysis.run_table import (
    SHARED_GPU_NOTE,
    backend_order,
    is_control,
    ok_runs,
    shared_left_out,
)
from attnbench.analysis.settings import analysis_defaults

COMPARISON_COLUMNS = [
    "backend", "baseline", "metric", "label", "unit", "family", "replica", "design", "n",
    "n_baseline", "seeds", "mean", "mean_baseline", "diff", "diff_pct", "diff_ci_low",
    "diff_ci_high", "confidence", "ci_method", "identical", "sd_diff", "t", "df", "p",
    "p_holm", "significant", "p_perm", "p_perm_holm", "perm_method", "hedges_g", "ratio",
    "ratio_ci_low", "ratio_ci_high", "ratio_method", "mde", "mde_pct", "power",
    "seeds_needed", "threshold", "threshold_rule", "verdict", "tost_margin", "tost_ci_low",
    "tost_ci_high", "tost_p", "tost_p_holm", "equivalence", "drift_p", "diff_drift_adjusted",
    "diff_drift_adjusted_ci_low", "diff_drift_adjusted_ci_high", "note",
]  # fmt: skip
PAIRED_NOTE = (
    "paired by seed: each seed is a block of interleaved runs, so drift between blocks "
    "cancels in the differences"
)


def _by_seed(runs: pd.DataFrame, backend: str, key: str) -> pd.Series:
    """An arm's finite values of `key`, indexed by seed (ok runs only)."""
    if runs.empty or key not in runs:
        return pd.Series(dtype=float)
    mine = runs[runs["backend"] == backend]
    values = pd.to_numeric(mine[key], errors="coerce")
    seeds = pd.to_numeric(mine["seed"], errors="coerce")
    series = pd.Series(values.to_numpy(), index=seeds.to_numpy())
    series = series[np.isfinite(series.to_numpy()) & np.isfinite(series.index.to_numpy(float))]
    return series[~series.index.duplicated(keep="first")].sort_index()


def threshold_for(
    metric: Metric, baseline_mean: float, thresholds: Mapping[str, float], tost_margin: float
) -> tuple[float, str]:
    """The practical threshold of a metric in its own unit, and the rule it comes from."""
    if metric.kind == "memory":
        value = float(thresholds["memory_mib"])
        return value, f"{value:g} MiB"
    if metric.kind == "accuracy":
        return tost_margin, f"±{tost_margin:g} (tost_margin)"
    if metric.kind == "time" and np.isfinite(baseline_mean):
        rel = float(thresholds["time_rel"])
        return rel * abs(baseline_mean), f"{100 * rel:g}% of the baseline mean"
    return math.nan, ""


def _paired_row(x: pd.Series, y: pd.Series, alpha: float, margin: float | None) -> dict[str, Any]:
    """Statistics of arm x against baseline y over the seeds both have."""
    p = stats.paired(x, y, alpha)
    eq = stats.paired(x, y, 2 * alpha)
    row: dict[str, Any] = {
        "design": "paired",
        "n": p["n"],
        "n_baseline": p["n"],
        "mean": float(x.mean()),
        "mean_baseline": float(y.mean()),
        **{k: p[k] for k in ("diff", "diff_ci_low", "diff_ci_high", "sd_diff", "t", "df", "p")},
        "identical": p["identical"],
        "ci_method": stats.EXACT_METHOD if p["identical"] else stats.PAIRED_METHOD,
        "hedges_g": stats.hedges_g(x, y),
        "mde": stats.mde_paired(p["n"], p["sd_diff"], alpha),
        "seeds_needed": stats.seeds_needed_paired(p["diff"], p["sd_diff"], alpha),
        "_eq": (eq["diff_ci_low"], eq["diff_ci_high"]),
    }
    row["p_perm"], row["perm_method"] = (
        (math.nan, "") if p["identical"] else stats.sign_flip(x.to_numpy() - y.to_numpy())
    )
    row["ratio"], row["ratio_ci_low"], row["ratio_ci_high"] = stats.paired_fieller(x, y, alpha)
    row["ratio_method"] = stats.PAIRED_RATIO_METHOD
    if margin is not None:
        row.update(stats.paired_tost(x, y, margin, alpha))
    return row


def _welch_row(x: np.ndarray, y: np.ndarray, alpha: float, margin: float | None) -> dict[str, Any]:
    """Statistics of independent samples x against y (no seed in common to pair by)."""
    w = stats.welch(x, y, alpha)
    eq = stats.welch(x, y, 2 * alpha)
    same = identical(x) and identical(y)
    sd1 = float(np.std(x, ddof=1)) if len(x) >= 2 else math.nan
    sd2 = float(np.std(y, ddof=1)) if len(y) >= 2 else math.nan
    row: dict[str, Any] = {
        "design": "welch",
        "n": len(x),
        "n_baseline": len(y),
        "mean": float(np.mean(x)) if len(x) else math.nan,
        "mean_baseline": float(np.mean(y)) if len(y) else math.nan,
        **{k: w[k] for k in ("diff", "diff_ci_low", "diff_ci_high", "t", "df", "p")},
        "sd_diff": math.nan,
        "identical": same,
        "ci_method": "identical in every run: exact difference" if same else stats.DIFF_METHOD,
        "hedges_g": stats.hedges_g(x, y),
        "mde": stats.mde_welch(len(x), len(y), sd1, sd2, alpha),
        "seeds_needed": stats.seeds_needed_welch(w["diff"], sd1, sd2, alpha),
        "p_perm": math.nan,
        "perm_method": "",
        "_eq": (eq["diff_ci_low"], eq["diff_ci_high"]),
    }
    row["ratio"], row["ratio_ci_low"], row["ratio_ci_high"] = stats.fieller_ratio(x, y, alpha)
    row["ratio_method"] = stats.RATIO_METHOD
    if margin is not None:
        row.update(stats.welch_tost(x, y, margin, alpha))
    return row


def compare(
    runs: pd.DataFrame,
    baseline: str,
    alpha: float | None = None,
    tost_margin: float | None = None,
    metrics: Sequence[Metric] = COMPARED,
    thresholds: Mapping[str, float] | None = None,
    drift_table: pd.DataFrame | None = None,
    adjusted: Mapping[tuple[str, str], tuple[float, float, float]] | None = None,
) -> pd.DataFrame:
    """Every arm against the baseline, paired by seed wherever two seeds or more pair up.

    Paired rows: mean difference with its t-interval, paired t and exact sign-flip p,
    paired Fieller ratio, paired TOST on accuracy. Welch only where pairing is impossible
    (fewer than two seeds with an ok run on both sides). Every row carries the minimum
    detectable effect at 80% power, the seeds that would resolve the observed difference,
    and a practical verdict against `thresholds`. A difference equal in every pair is
    `identical`: the exact difference, no test. Holm runs within each metric family, the
    A/A control (the baseline's replica) in families of its own. Where `drift_table`
    shows a significant drift for a metric, `adjusted` gives the drift-adjusted
    difference (see `drift`). None arguments take the schema's defaults.
    """
    defaults = analysis_defaults()
    alpha = defaults["alpha"] if alpha is None else alpha
    tost_margin = defaults["tost_margin"] if tost_margin is None else tost_margin
    thresholds = {**defaults["thresholds"], **(thresholds or {})}
    drift_p = {}
    if drift_table is not None and not drift_table.empty:
        drift_p = dict(zip(drift_table["metric"], drift_table["p_within_blocks"], strict=True))
    ok = ok_runs(runs)
    rows = []
    for metric in metrics:
        if not metric.compared:
            continue
        base = _by_seed(ok, baseline, metric.key)
        margin = tost_margin if metric.accuracy else None
        for backend in backend_order(runs, baseline):
            if backend == baseline:
                continue
            mine = _by_seed(ok, backend, metric.key)
            common = mine.index.intersection(base.index)
            notes = []
            if len(common) >= 2:
                row = _paired_row(mine[common], base[common], alpha, margin)
                notes.append(PAIRED_NOTE)
                unpaired = sorted(set(mine.index).symmetric_difference(base.index))
                if unpaired:
                    seeds = ", ".join(str(int(s)) for s in unpaired)
                    notes.append(f"seed(s) {seeds} left out: no ok run on both sides")
                seeds_used = common
            else:
                row = _welch_row(mine.to_numpy(), base.to_numpy(), alpha, margin)
                if not (len(mine) and len(base)):
                    row["design"] = ""  # nothing to compare
                seeds_used = mine.index.union(base.index)
                if len(mine) and len(base):
                    notes.append(
                        f"Welch: pairing impossible ({len(common)} seed(s) with an ok run on "
                        "both sides)"
                    )
                if len(mine) < 2 or len(base) < 2:
                    notes.append(
                        f"fewer than 2 usable runs ({backend}: {len(mine)}, "
                        f"{baseline}: {len(base)})"
                    )
                elif not row["identical"] and np.isnan(row["p"]):
                    notes.append("no variance in either group")
            left_out = shared_left_out(runs, [backend, baseline], metric.key)
            if left_out:
                notes.append(f"{left_out} {SHARED_GPU_NOTE}")
            if row["identical"]:
                notes.append(f"identical across {row['n']} seeds: the exact difference")
            eq_ci = row.pop("_eq")
            threshold, rule = threshold_for(metric, row["mean_baseline"], thresholds, tost_margin)
            diff, mean_base = row["diff"], row["mean_baseline"]
            mde = row["mde"]
            finite_base = np.isfinite(mean_base) and mean_base != 0
            row.update(
                backend=backend,
                baseline=baseline,
                metric=metric.key,
                label=metric.label,
                unit=metric.unit,
                replica=is_control(backend, baseline),
                family=metric.family + (" (A/A)" if is_control(backend, baseline) else ""),
                seeds=" ".join(str(int(s)) for s in seeds_used),
                diff_pct=100 * diff / abs(mean_base) if finite_base else math.nan,
                confidence=1 - alpha,
                mde_pct=100 * mde / abs(mean_base) if finite_base else math.nan,
                power=stats.POWER,
                threshold=threshold,
                threshold_rule=rule,
                verdict=stats.practical_verdict(
                    diff,
                    (row["diff_ci_low"], row["diff_ci_high"]),
                    eq_ci,
                    threshold,
                    row["identical"],
                ),
                tost_margin=tost_margin if metric.accuracy else math.nan,
                drift_p=drift_p.get(metric.key, math.nan),
                note="; ".join(notes),
            )
            fixed = (adjusted or {}).get((metric.key, backend))
            if fixed is not None and drift_p.get(metric.key, math.nan) < alpha:
                row.update(
                    diff_drift_adjusted=fixed[0],
                    diff_drift_adjusted_ci_low=fixed[1],
                    diff_drift_adjusted_ci_high=fixed[2],
                )
            rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    table = table.reindex(columns=COMPARISON_COLUMNS)
    for col in ("p_holm", "p_perm_holm", "tost_p_holm"):
        table[col] = np.nan
    for _, index in table.groupby("family", sort=False).groups.items():
        table.loc[index, "p_holm"] = stats.holm(table.loc[index, "p"])
        table.loc[index, "p_perm_holm"] = stats.holm(table.loc[index, "p_perm"])
        table.loc[index, "tost_p_holm"] = stats.holm(table.loc[index, "tost_p"])
    table["significant"] = [bool(p < alpha) if np.isfinite(p) else None for p in table["p_holm"]]
    accuracy = {m.key: m.accuracy for m in metrics}
    table["equivalence"] = [
        _equivalence(r, tost_margin, alpha) if accuracy[r["metric"]] else ""
        for _, r in table.iterrows()
    ]
    return table[COMPARISON_COLUMNS]


def _equivalence(row: pd.Series, margin: float, alpha: float) -> str:
    if bool(row["identical"]) and np.isfinite(row["diff"]):
        return "equivalent" if abs(row["diff"]) < margin else "different"
    return stats.equivalence_label(row["tost_p_holm"], row["p_holm"], alpha)
