"""What a run can support, for the report's words: the device its numbers came from, the
names its metrics get there, and the metrics it could not measure.

On a CPU the profiler's "GPU time" is the CPU's op time, there is no GPU regime, and
GPU memory is not recorded; the tables' metric keys keep their names (gpu_ms_per_step)
but every label a reader sees follows the device. A metric that is zero in every run
(the demo's mAP after one epoch), or an accuracy that is one value in every run of both
arms, measured nothing that could tell two kernels apart: it reads "not measurable
here", never "equivalent". Memory identical across seeds on a GPU is different: a
deterministic value, measured, shown as identical.
"""

from __future__ import annotations

import pandas as pd

from attnbench.analysis import tables
from attnbench.report.formatting import is_finite, metric_fmt
from attnbench.report.lookups import row_where, truthy

NOT_MEASURABLE = "not measurable here"

# Labels of the profiler's metrics when no GPU was used (the keys stay as the CSVs name them).
CPU_LABELS = {
    "gpu_ms_per_step": "CPU op time per step",
    "attention_ms_per_step": "attention CPU op time per step",
    "gpu_busy_fraction": "CPU-op share of a step",
    "attention_share_of_gpu": "attention share of CPU op time",
    "launches_per_step": "op calls per step",
}
CPU_FAMILIES = {"gpu_time": "CPU op time per step, no GPU (all ops; attention ops)"}
# runs.csv columns the runs table shows, as a reader should read them on a CPU.
CPU_RUN_COLUMNS = {
    "gpu_ms_per_step": "cpu_op_ms_per_step (gpu_ms_per_step)",
    "attention_ms_per_step": "attention_cpu_op_ms_per_step (attention_ms_per_step)",
    "gpu_busy_fraction": "cpu_op_share (gpu_busy_fraction)",
}
# What a metric being zero in every run means here.
ZERO_MEANS = {
    "mAP50": "nothing was learned in these runs",
    "mAP50_95": "nothing was learned in these runs",
}


def label(key: str, cpu: bool) -> str:
    """A metric's label on the device the runs used."""
    if cpu and key in CPU_LABELS:
        return CPU_LABELS[key]
    return tables.METRIC_BY_KEY[key].label if key in tables.METRIC_BY_KEY else key


def heading(key: str, cpu: bool) -> str:
    """'label (unit)' on the device the runs used: column and axis titles."""
    info = tables.METRIC_BY_KEY.get(key)
    text = label(key, cpu)
    return f"{text} ({info.unit})" if info is not None and info.unit else text


def relabel(frame: pd.DataFrame, cpu: bool) -> pd.DataFrame:
    """A table with a `metric` and a `label` column, its labels those of the device."""
    if not cpu or frame is None or frame.empty or not {"metric", "label"} <= set(frame):
        return frame
    out = frame.copy()
    out["label"] = [
        CPU_LABELS.get(str(m), lab) for m, lab in zip(out["metric"], out["label"], strict=True)
    ]
    return out


def summary_headings(cpu: bool) -> dict[str, str]:
    """Column renames of the per-backend summary view (it titles columns from the catalog)."""
    if not cpu:
        return {}
    return {tables.METRIC_BY_KEY[k].heading: heading(k, True) for k in CPU_LABELS}


def _arm(summary: pd.DataFrame, backend: str, metric: str) -> tuple[float, bool] | None:
    """(mean, whether every run had that one value) of an arm's metric, or None."""
    row = row_where(summary, backend=backend, metric=metric)
    if row is None or not is_finite(row.get("mean")) or not is_finite(row.get("n")):
        return None
    n = int(float(row["n"]))
    return float(row["mean"]), n >= 1 and (n == 1 or truthy(row.get("identical")))


def zero_everywhere(summary: pd.DataFrame, metric: str, backends: list[str]) -> bool:
    """Whether every run of every one of `backends` measured exactly 0."""
    arms = [_arm(summary, b, metric) for b in backends]
    return bool(arms) and all(a is not None and a[1] and a[0] == 0.0 for a in arms)


def unmeasurable(summary: pd.DataFrame, metric: str, backend: str, baseline: str) -> str:
    """Why a comparison of `metric` between two arms measured nothing, or "".

    Zero in every run of both, for any metric; for accuracy also one value in every run
    of both (it moved with neither seed nor kernel, so it cannot show equivalence).
    Memory identical in every run is a measurement, not this.
    """
    arms = [_arm(summary, b, metric) for b in (backend, baseline)]
    if any(a is None or not a[1] for a in arms):
        return ""
    (mine, _), (base, _) = arms
    name = label(metric, False)
    if mine == 0.0 and base == 0.0:
        means = ZERO_MEANS.get(metric, "the runs recorded nothing")
        return f"{name} is 0 in every run of {backend} and {baseline}: {means}"
    info = tables.METRIC_BY_KEY.get(metric)
    if info is not None and info.accuracy and mine == base:
        return (
            f"{name} is {metric_fmt(metric, mine)} in every run of {backend} and {baseline}: "
            "it moved with neither seed nor kernel"
        )
    return ""


def mark_unmeasurable(comparisons: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Comparison rows for the report's views, those that measured nothing marked: no
    interval, no test, verdict and equivalence "not measurable here" and the reason."""
    if comparisons is None or comparisons.empty or summary is None or summary.empty:
        return comparisons
    out = comparisons.copy()
    for index, row in out.iterrows():
        if not is_finite(row.get("diff")):
            continue
        why = unmeasurable(summary, str(row["metric"]), str(row["backend"]), str(row["baseline"]))
        if not why:
            continue
        out.loc[index, ["verdict", "equivalence"]] = NOT_MEASURABLE
        out.loc[index, "identical"] = False  # shown as a bare difference, not an exact result
        for col in ("diff_ci_low", "diff_ci_high", "p", "p_holm", "p_perm", "mde"):
            if col in out:
                out.loc[index, col] = float("nan")
        if "seeds_needed" in out:
            out["seeds_needed"] = out["seeds_needed"].astype(object)
            out.loc[index, "seeds_needed"] = None
        if "significant" in out:
            out["significant"] = out["significant"].astype(object)
            out.loc[index, "significant"] = None
        out.loc[index, "note"] = f"{NOT_MEASURABLE}: {why}"
    return out


def summary_cells(summary: pd.DataFrame, cpu: bool) -> dict[tuple[str, str], str]:
    """(backend, column heading) -> cell text for arms whose metric was 0 in every run."""
    if summary is None or summary.empty:
        return {}
    cells = {}
    for _, row in summary.iterrows():
        metric = str(row["metric"])
        if zero_everywhere(summary, metric, [str(row["backend"])]):
            cells[(str(row["backend"]), heading(metric, cpu))] = f"0 in every run: {NOT_MEASURABLE}"
    return cells
