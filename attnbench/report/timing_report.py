"""Wall time in the report: the paired timing's section and the headline's speed statement.

Wall time is stated only as resolved. With paired timing (rule paired_timing, its
summary.csv among the report's inputs) the speed statement is its paired ratios with their
intervals; without it the statement says that wall time was not resolved and why, and the
across-process comparison stays in this section, labelled as such (`narrative` chooses).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import pandas as pd

from attnbench import io
from attnbench.analysis import tables
from attnbench.report.formatting import blank, is_finite, na_text, num, text_table, yes_no
from attnbench.report.lookups import STEP, compared_arms, finite_rows, truthy

# attnbench.timing.paired_stats.OVERHEAD_COMPARISON (torch-free, heavy)
OVERHEAD = "train job vs bare"
COLUMNS = [
    "arm", "baseline", "comparison", "status", "ratio", "ratio_ci_low", "ratio_ci_high",
    "halfwidth_pct", "resolved", "mde_pct", "blocks", "steps_per_block", "block_cv",
    "ms_per_step", "baseline_ms_per_step", "peak_alloc_mb", "device_name", "reason",
]  # fmt: skip
ENABLE = "paired_timing.enabled: true (rule paired_timing)"


def _fixed(value: Any) -> str:
    return f"{float(value):.4f}" if is_finite(value) else "n/a"


def read(paths: Iterable[str | os.PathLike] | None) -> pd.DataFrame | None:
    """The paired timing's summary.csv, or None when it was not among the inputs."""
    paths = list(paths or [])
    return io.read_csv(paths[0]) if paths else None


def _ratio(row: pd.Series) -> str:
    """'0.8620x (-13.80%; 95% CI 0.8570-0.8670, ±0.50%)', or the exact ratio when identical."""
    ratio = float(row["ratio"])
    if truthy(row.get("identical")):
        return f"{ratio:.4f}x (identical in every round, exact)"
    if not (is_finite(row.get("ratio_ci_low")) and is_finite(row.get("ratio_ci_high"))):
        return f"{ratio:.4f}x (no interval: fewer than two paired blocks)"
    conf = f"{100 * float(row['confidence']):.0f}%" if is_finite(row.get("confidence")) else "95%"
    text = (
        f"{ratio:.4f}x ({100 * (ratio - 1):+.2f}%; {conf} CI {float(row['ratio_ci_low']):.4f}-"
        f"{float(row['ratio_ci_high']):.4f}, ±{float(row['halfwidth_pct']):.2f}%"
    )
    if not truthy(row.get("resolved")) and is_finite(row.get("target_halfwidth_pct")):
        text += f", wider than the ±{float(row['target_halfwidth_pct']):g}% target"
    return text + ")"


def paired_sentence(paired: pd.DataFrame) -> str:
    """The headline's speed statement from the paired timing's summary."""
    ok = paired[
        (paired["status"] == "ok") & pd.to_numeric(paired["ratio"], errors="coerce").notna()
    ]
    if ok.empty:
        reasons = "; ".join(dict.fromkeys(blank(r) for r in paired["reason"] if blank(r)))
        return (
            "Speed: paired in-process timing ran but resolved no ratio"
            + (f" ({reasons})" if reasons else "")
            + ", so wall time is not resolved."
        )
    first = ok.iloc[0]
    how = (
        f"paired in-process timing on {na_text(first.get('device_name'))}: "
        f"{int(first['blocks'])} rounds of {int(first['steps_per_block'])} steps per arm, "
        "arms interleaved in one process"
    )
    parts = [
        f"{r['arm']} {_ratio(r)} of {r['baseline']}'s step time"
        for _, r in ok[ok["comparison"] != OVERHEAD].iterrows()
    ]
    overhead = ok[ok["comparison"] == OVERHEAD]
    text = f"Speed ({how}): " + ("; ".join(parts) if parts else "no backend besides the baseline")
    if not overhead.empty:
        row = overhead.iloc[0]
        text += (
            f". Harness overhead: the train job's step ({row['arm']}, patched and recorded) "
            f"took {_ratio(row)} of bare Ultralytics'"
        )
    skipped = paired[paired["status"] != "ok"]
    if not skipped.empty:
        text += ". Not timed: " + "; ".join(
            f"{r['arm']} ({r['status']})" for _, r in skipped.iterrows()
        )
    return text + "."


def unresolved_sentence(
    comparisons: pd.DataFrame, summary: pd.DataFrame, baseline: str, cpu: bool = False
) -> str:
    """The headline's speed statement without paired timing: not resolved, and why. On a
    CPU it points to the op time and names no GPU metric (nothing ran on a GPU)."""
    why = (
        "every run was timed in a process of its own, and the step time of the same arm "
        "differs between processes by more than backends differ, while no paired in-process "
        f"timing ran ({ENABLE} resolves it)"
    )
    metric = STEP if not finite_rows(summary, STEP).empty else None
    rows = compared_arms(comparisons, metric) if metric else pd.DataFrame()
    mde = pd.to_numeric(rows["mde_pct"], errors="coerce").dropna() if "mde_pct" in rows else None
    if mde is not None and not mde.empty:
        why += (
            f"; across processes these runs detect only step-time differences of "
            f"{mde.min():.1f}% or more against {baseline} (80% power)"
        )
    return (
        f"Speed: wall time was not resolved: {why}. No backend is called faster or slower "
        f"here; {measured(cpu)} above."
    )


def measured(cpu: bool) -> str:
    """What was measured in place of wall time, named for the device the runs used."""
    if cpu:
        return "CPU op time per step is the measured difference"
    return "GPU time per step and peak memory are the measured differences"


#: The fixed per-run seconds a train job's metrics.json records (attnbench.train.recorder.FIXED).
FIXED_PARTS = ("setup", "provenance", "profile_window", "run_callbacks", "results")
#: What the per-step share is of (metrics.json's harness_overhead_share_of).
SHARE_BASIS = {"step_ms_median": "the median step time", "mean iteration": "the mean iteration"}


def _numbers(frame: pd.DataFrame, column: str) -> pd.Series:
    """A column's finite numbers (none when the column is absent)."""
    if column not in frame:
        return pd.Series(dtype=float)
    return pd.to_numeric(frame[column], errors="coerce").dropna()


def overhead_sentence(runs: pd.DataFrame | None) -> str:
    """The harness's own cost as the train jobs measured it (attnbench.train.recorder: its batch
    callbacks and patch dispatch per step; set-up, provenance profiling and the rest once
    per run): medians over the finished runs, per step in ms and as a share of the step,
    and the fixed seconds apart. Empty when no finished run recorded it."""
    if runs is None or "harness_overhead_ms_per_step" not in runs:
        return ""
    ok = tables.ok_runs(runs)
    per_step = _numbers(ok, "harness_overhead_ms_per_step")
    if per_step.empty:
        return ""
    text = (
        f"Harness overhead, measured inside the {len(per_step)} finished train job(s): "
        f"{per_step.median():.3g} ms per step (median; its batch callbacks and patch dispatch)"
    )
    share = _numbers(ok, "harness_overhead_share")
    if not share.empty:
        bases = set(ok.get("harness_overhead_share_of", pd.Series(dtype=object)).dropna())
        basis = SHARE_BASIS.get(bases.pop(), "the step") if len(bases) == 1 else "the step"
        text += f", {100 * share.median():.2f}% of {basis}"
    fixed = _numbers(ok, "harness_fixed_s")
    if not fixed.empty:
        parts = []
        for part in FIXED_PARTS:
            values = _numbers(ok, f"harness_{part}_s")
            if not values.empty:
                parts.append(f"{part.replace('_', ' ')} {values.median():.3g} s")
        text += f"; fixed per run {fixed.median():.3g} s" + (
            f" ({', '.join(parts)})" if parts else ""
        )
    return text + "."


def context(
    paired: pd.DataFrame | None,
    across: str,
    cpu: bool = False,
    runs: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """What report/timing.html.j2 shows: the paired table, or why wall time is unresolved,
    and the harness's overhead as the train jobs measured it."""
    overhead = overhead_sentence(runs)
    if paired is None:
        return {
            "paired": False,
            "across": across,
            "enable": ENABLE,
            "measured": measured(cpu),
            "overhead": overhead,
        }
    first = paired.iloc[0] if not paired.empty else pd.Series(dtype=object)
    return {
        "overhead": overhead,
        "paired": True,
        "across": across,
        "enable": ENABLE,
        "device": na_text(first.get("device_name")),
        "clock": na_text(first.get("clock")),
        "method": na_text(first.get("ratio_method")),
        "table": text_table(
            paired,
            columns=[c for c in COLUMNS if c in paired],
            formats={"status": na_text, "reason": blank, "resolved": yes_no}
            | {c: _fixed for c in ("ratio", "ratio_ci_low", "ratio_ci_high")}
            | {c: na_text for c in ("arm", "baseline", "comparison", "device_name")}
            | {c: lambda v: num(v, 4) for c in ("halfwidth_pct", "mde_pct", "block_cv")},
            row_class=lambda r: "" if r.get("status") == "ok" else "failed",
        ),
        "metric_label": tables.METRIC_BY_KEY[STEP].label,
    }
