"""The statistics tables as people read them: one row per arm with its intervals, the
comparisons against the baseline, the A/A noise floor, the replica check and drift.

Each view returns a DataFrame of cell text; identical (deterministic) differences are shown
exact, with no interval and no test. The CSVs keep every column.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pandas as pd

from attnbench.analysis import tables
from attnbench.report.formatting import (
    Formatter,
    blank,
    interval,
    is_finite,
    metric_fmt,
    num,
    pval,
    yes_no,
)
from attnbench.report.lookups import ACCURACY, MEMORY, SPEED, truthy

# The metrics of the summary and comparison views, in this order (the CSVs keep all).
SHOWN_METRICS = [
    MEMORY, "peak_reserved_mb", "gpu_ms_per_step", "attention_ms_per_step", "step_ms_median",
    "steady_images_per_s", SPEED, "images_per_s", "mAP50", ACCURACY,
]  # fmt: skip


def _with_ci(value: Any, low: Any, high: Any, fmt: Formatter) -> str:
    """'value [low, high]', or the value alone when there is no interval."""
    text = fmt(value)
    return f"{text} [{fmt(low)}, {fmt(high)}]" if is_finite(low) else text


def _runs_text(row: pd.Series) -> str:
    """'3 ok' or '2 ok, 1 oom' or '0 ok, 3 unavailable': nothing silently dropped."""
    parts = [f"{int(row['runs_ok'])} ok"]
    for key in ("oom", "unavailable", "other"):
        col = f"runs_{key}"
        if col in row and is_finite(row[col]) and int(row[col]):
            parts.append(f"{int(row[col])} {key if key != 'other' else 'failed'}")
    return ", ".join(parts)


def backend_summary_view(summary: pd.DataFrame) -> pd.DataFrame:
    """Wide view for people: one row per arm, 'mean [CI]' per metric ('= value' when
    identical across seeds), runs by status."""
    if summary.empty:
        return pd.DataFrame()
    rows = []
    for backend, group in summary.groupby("backend", sort=False):
        g = group.set_index("metric")
        first = g.iloc[0]
        row: dict[str, Any] = {
            "backend": backend,
            "runs": _runs_text(first) if "runs_oom" in g else f"{int(first['runs_ok'])} ok",
        }
        for key in SHOWN_METRICS:
            if (
                key not in g.index
                or not summary.loc[summary["metric"] == key, "mean"].notna().any()
            ):
                continue  # a metric no arm recorded (CPU memory, older runs' step keys)
            r = g.loc[key]
            fmt = partial(metric_fmt, key)
            cell = _with_ci(r["mean"], r["ci_low"], r["ci_high"], fmt)
            if truthy(r.get("identical")):
                cell = f"{fmt(r['mean'])} (identical across {int(r['n'])} seeds)"
            row[tables.METRIC_BY_KEY[key].heading] = cell
        rows.append(row)
    return pd.DataFrame(rows)


def _difference_cell(r: pd.Series) -> str:
    metric = str(r["metric"])
    diff = metric_fmt(metric, r["diff"], signed=True)
    if truthy(r.get("identical")):
        return f"{diff} (identical across {int(r['n'])} seeds)"
    pct = f" ({float(r['diff_pct']):+.1f}%)" if is_finite(r.get("diff_pct")) else ""
    return diff + pct


def _ci_cell(r: pd.Series) -> str:
    if truthy(r.get("identical")):
        return "exact (no interval)"
    return interval(r["diff_ci_low"], r["diff_ci_high"], partial(metric_fmt, str(r["metric"])))


def _p_cell(r: pd.Series, col: str) -> str:
    if truthy(r.get("identical")):
        return "no test (identical)"
    return pval(r.get(col))


def _design_cell(r: pd.Series) -> str:
    if r.get("design") == "paired":
        return f"paired, {int(r['n'])} seeds"
    if r.get("design") == "welch":
        return f"Welch, {int(r['n'])} vs {int(r['n_baseline'])}"
    return "n/a"


def _mde_cell(r: pd.Series) -> str:
    if not is_finite(r.get("mde")):
        return "n/a"
    pct = f" ({float(r['mde_pct']):.1f}%)" if is_finite(r.get("mde_pct")) else ""
    return metric_fmt(str(r["metric"]), r["mde"]) + pct


def _needed_cell(value: Any) -> str:
    if is_finite(value):
        return f"{int(float(value)):,}"
    return "> 10,000" if str(value) == "inf" else "n/a"


def comparable(comparisons: pd.DataFrame, replica: bool | None = False) -> pd.DataFrame:
    """Comparison rows with something to compare (a difference), shown metrics only, in
    `SHOWN_METRICS` order; `replica` True keeps only the A/A control, False drops it."""
    if comparisons.empty:
        return comparisons
    extra = [c for c in comparisons.columns if c not in tables.COMPARISON_COLUMNS]
    # Older tables (docs/reference) lack the newer columns: they read as blank.
    comparisons = comparisons.reindex(columns=[*tables.COMPARISON_COLUMNS, *extra])
    view = comparisons[comparisons["metric"].isin(SHOWN_METRICS)].copy()
    view = view[pd.to_numeric(view["diff"], errors="coerce").notna()]
    if replica is not None:
        view = view[view["replica"].map(truthy) == replica]
    view["metric"] = pd.Categorical(view["metric"], SHOWN_METRICS, ordered=True)
    view = view.sort_values(["metric"], kind="stable")
    view["metric"] = view["metric"].astype(str)
    return view


def comparison_view(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The comparisons people read: rows with nothing to compare hidden; identical
    differences exact, with no interval and no test."""
    view = comparable(comparisons)
    if view.empty:
        return pd.DataFrame()
    cols = {
        "metric": view["label"],
        "family (Holm)": [blank(v) for v in view["family"]],
        "backend": view["backend"],
        "design": [_design_cell(r) for _, r in view.iterrows()],
        "difference": [_difference_cell(r) for _, r in view.iterrows()],
        "95% CI": [_ci_cell(r) for _, r in view.iterrows()],
        "p (t)": [_p_cell(r, "p") for _, r in view.iterrows()],
        "p (Holm)": [_p_cell(r, "p_holm") for _, r in view.iterrows()],
        "p (sign-flip)": [_p_cell(r, "p_perm") for _, r in view.iterrows()],
        "MDE (80% power)": [_mde_cell(r) for _, r in view.iterrows()],
        "seeds needed": [_needed_cell(v) for v in view["seeds_needed"]],
        "verdict": [blank(v) for v in view["verdict"]],
        "equivalence": [blank(v) for v in view["equivalence"]],
        "significant (Holm)": [yes_no(s) for s in view["significant"]],
        "note": pd.Series([blank(v) for v in view["note"]], index=view.index, dtype=object)
        .str.replace(tables.PAIRED_NOTE + "; ", "", regex=False)
        .str.replace(tables.PAIRED_NOTE, "", regex=False),
    }
    return pd.DataFrame(cols)


def noise_floor_view(comparisons: pd.DataFrame) -> pd.DataFrame:
    """Baseline against its replica (same kernel, own jobs) on every shown metric."""
    view = comparable(comparisons, replica=True)
    if view.empty:
        return pd.DataFrame()
    return pd.DataFrame(
        {
            "metric": view["label"],
            "replica": view["backend"],
            "design": [_design_cell(r) for _, r in view.iterrows()],
            "difference (A/A)": [_difference_cell(r) for _, r in view.iterrows()],
            "95% CI": [_ci_cell(r) for _, r in view.iterrows()],
            "p (t)": [_p_cell(r, "p") for _, r in view.iterrows()],
            "MDE (80% power)": [_mde_cell(r) for _, r in view.iterrows()],
        }
    )


def replica_view(replica: pd.DataFrame) -> pd.DataFrame:
    """Per seed: were baseline and replica bit-identical, and where not, what differed."""
    if replica is None or replica.empty:
        return pd.DataFrame()
    return pd.DataFrame(
        {
            "seed": replica["seed"],
            "status": replica["status"].astype(str) + " / " + replica["status_replica"].astype(str),
            "results.csv identical": [yes_no(v) for v in replica["results_identical"]],
            "differing columns": [blank(v) for v in replica["results_differing"]],
            "largest gap": [num(v, 3) for v in replica["results_max_abs_diff"]],
            "metrics.json identical": [yes_no(v) for v in replica["metrics_identical"]],
            "differing keys": [blank(v) for v in replica["metrics_differing"]],
            "bit-identical": [yes_no(v) for v in replica["bit_identical"]],
        }
    )


def drift_view(drift: pd.DataFrame) -> pd.DataFrame:
    """Slope against run order per metric, whole study and within seed blocks."""
    if drift is None or drift.empty:
        return pd.DataFrame()
    rows = drift[drift["metric"].isin(SHOWN_METRICS)]
    if rows.empty:
        return pd.DataFrame()

    def slope(r: pd.Series, key: str) -> str:
        m = str(r["metric"])
        fmt = partial(metric_fmt, m, signed=True)
        if not is_finite(r.get(key)):
            return "n/a"
        return f"{fmt(r[key])} [{fmt(r.get(key + '_ci_low'))}, {fmt(r.get(key + '_ci_high'))}]"

    return pd.DataFrame(
        {
            "metric": rows["label"],
            "runs": rows["n"],
            "slope per run [CI]": [slope(r, "slope_per_run") for _, r in rows.iterrows()],
            "p": [pval(v) for v in rows["p"]],
            "over the study": [
                f"{float(v):+.2f}%" if is_finite(v) else "n/a" for v in rows["drift_pct_over_study"]
            ],
            "within seed blocks [CI]": [
                slope(r, "slope_within_blocks") for _, r in rows.iterrows()
            ],
            "p (within)": [pval(v) for v in rows["p_within_blocks"]],
            "note": rows["note"].fillna(""),
        }
    )
