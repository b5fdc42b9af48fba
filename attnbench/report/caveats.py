"""What limits the report's answer, one line each: first its scope (a smoke test on demo
data, a run without a GPU), which the page says before anything else; then too few
seeds, runs that did not finish, kernel mismatches and drift over run order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from attnbench.analysis import tables
from attnbench.report.formatting import is_finite, metric_fmt, na_text, p_is
from attnbench.report.lookups import on_cpu


def scope(runs: pd.DataFrame, dataset: Mapping[str, Any], reason: str) -> dict[str, Any] | None:
    """What the page must say before anything else: a smoke test (the demo dataset) or a
    run without a GPU. None for a real study on a GPU.

    Returns {"title": ..., "lines": [...]}: the box's heading and one line per limit.
    """
    demo, cpu = is_demo(dataset), on_cpu(runs)
    if not (demo or cpu):
        return None
    lines = []
    if demo:
        lines.append(
            f"The dataset is the embedded synthetic demo ({reason}). These numbers are a smoke "
            "test of the workflow, not a result: do not quote them."
        )
    if cpu:
        lines.append(
            "No GPU was used: every finished run trained on the CPU. Times are CPU times, "
            '"op time" is the profiler\'s CPU op time, GPU memory was not recorded, and '
            "nothing here says how an attention kernel behaves on a GPU."
        )
    what = "these numbers are a smoke test" if demo else "these numbers are not a GPU result"
    title = f"Read this first: {what}" + (" on a CPU" if demo and cpu else "")
    return {"title": title, "lines": lines}


def caveats(
    runs: pd.DataFrame, drift: pd.DataFrame | None = None, alpha: float = 0.05
) -> list[str]:
    """What limits the answer beyond `scope` (demo data, no GPU), which the page says
    first: single seeds, skipped or failed runs, kernel mismatch, drift over run order."""
    out = []
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
    out += drift_caveats(drift, alpha)
    return out


def drift_caveats(drift: pd.DataFrame | None, alpha: float) -> list[str]:
    """A line per metric whose value drifted with run order (OLS slope, p < alpha)."""
    if drift is None or drift.empty or "p" not in drift:
        return []
    out = []
    for _, row in drift.iterrows():
        whole, within = row.get("p_holm"), row.get("p_within_blocks_holm")
        drifts = is_finite(whole) and float(whole) < alpha and row.get("family") != "accuracy"
        if not drifts and not (is_finite(within) and float(within) < alpha):
            continue  # accuracy differs by seed, and seed blocks run in order: not drift
        metric = str(row["metric"])
        unit = tables.METRIC_BY_KEY[metric].unit if metric in tables.METRIC_BY_KEY else ""
        text = (
            f"{row['label']} drifted with run order: "
            f"{metric_fmt(metric, row['slope_per_run'], True)}{' ' + unit if unit else ''} per run "
            f"(Holm-adjusted over metrics {p_is(whole)}"
        )
        if is_finite(row.get("drift_pct_over_study")):
            text += f", {float(row['drift_pct_over_study']):+.1f}% over the study"
        text += "). Pairing by seed cancels drift between seed blocks"
        if is_finite(within) and float(within) < alpha:
            text += (
                f", but it persists within blocks (Holm-adjusted {p_is(within)}): the "
                "comparisons add a "
                "drift-adjusted difference."
            )
        else:
            text += " and none is shown within blocks, so the paired differences stand."
        out.append(text)
    return out


def is_demo(dataset: Mapping[str, Any]) -> bool:
    """Whether the dataset is the embedded synthetic demo (its numbers are no result)."""
    return dataset.get("source") == "demo" or dataset.get("name") == "demo"
