"""The report's sections as data: provenance, availability, dataset, environment and the
seed study beside ours (the statistics tables' views are in `stat_views`).

Each function returns a DataFrame or plain rows; `report` turns them into cell text and
the template lays them out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from importlib import resources
from typing import Any

import pandas as pd
import yaml

from attnbench.analysis import tables
from attnbench.report import narrative_scope
from attnbench.report.formatting import (
    blank,
    fmt_map_diff,
    is_finite,
    is_missing,
    metric_fmt,
    na_text,
)
from attnbench.report.lookups import ACCURACY, MEMORY, SPEED, row_where, truthy
from attnbench.stats import PERM_EXACT_MAX

SEED_STUDY_FILE = "resources/seed_study.yaml"

# Columns shown in the report's tables (the CSVs keep everything).
RUN_COLUMNS = [
    "backend", "seed", "status", "reason", "run_order", "planned_order", "device_name",
    "dtype", "step_ms_median", "gpu_ms_per_step", "attention_ms_per_step",
    "gpu_busy_fraction", "epoch_loop_s", "images_per_s", "peak_alloc_mb", "peak_reserved_mb",
    "mAP50", "mAP50_95",
]  # fmt: skip
# Both times of a call: direct (as training makes it, host dispatch included) and replayed
# from a CUDA graph (kernels only), each with the spread of the benchmark's repetitions.
KERNEL_COLUMNS = [
    "backend", "status", "reason", "dtype", "phase", "B", "heads", "N", "head_dim", "fwd_ms",
    "fwdbwd_ms", "fwdbwd_ms_spread_pct", "graph_fwdbwd_ms", "graph_fwdbwd_ms_spread_pct",
    "fwdbwd_tflops", "graph_fwdbwd_tflops", "pct_of_matmul_peak", "peak_mem_mb", "graph_note",
]  # fmt: skip
PARITY_COLUMNS = [
    "backend", "status", "reason", "dtype", "B", "heads", "N", "head_dim", "rel_err_out",
    "rel_err_dq", "rel_err_dk", "rel_err_dv", "threshold", "passed",
]  # fmt: skip
ENV_RUN_KEYS = ["device_name", "torch", "cuda", "cudnn", "flash_attn", "ultralytics", "python"]
PLOTS = [
    ("step_breakdown", "Where a training step goes", "One bar per arm, medians over seeds: "
     "attention GPU time, other GPU time, and host time the GPU does not overlap."),
    ("curves", "Training curves", "mAP and losses per epoch: mean over seeds per backend, "
     "band = t-interval (none with one seed)."),
    ("epoch_time", "Epoch time", "Epoch-loop time and median epoch time: a dot per seed, the "
     "mean with its t-interval, dashed line = baseline mean."),
    ("memory", "Peak memory", "Peak GPU memory allocated, reserved and device-level, and host "
     "RSS (what the seed study called memory), per seed with mean and t-interval."),
    ("speed_memory", "Speed against memory", "Training throughput against peak GPU memory "
     "allocated: up and to the left is better."),
    ("kernels", "Kernel micro-benchmark", "Attention forward+backward time against sequence "
     "length, per backend and dtype (log-log), from the kernel sweep."),
]  # fmt: skip
# The captions that name the GPU, as they read when no GPU was used.
CPU_CAPTIONS = {
    "step_breakdown": "One bar per arm, medians over seeds: attention CPU op time, other CPU "
    "op time, and step time the ops do not account for (no GPU was used).",
    "memory": "Peak host RSS (what the seed study called memory), per seed with mean and "
    "t-interval; no GPU was used, so the GPU memory panels are empty.",
    "speed_memory": "Training throughput against peak host RSS (no GPU was used, so no GPU "
    "memory): up and to the left is better.",
}


def plots(cpu: bool) -> list[tuple[str, str, str]]:
    """(key, title, caption) of each figure, captions worded for the device the runs used."""
    return [(k, t, CPU_CAPTIONS.get(k, c) if cpu else c) for k, t, c in PLOTS]


def seed_study() -> dict[str, Any]:
    """The seed study's title, setup, published numbers and flaws (package data, not code)."""
    text = resources.files("attnbench").joinpath(SEED_STUDY_FILE).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _names(value: Any) -> list[str]:
    """Kernel/op names from a provenance cell: JSON dict (name -> count), list or text."""
    if is_missing(value):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return [value]
    if isinstance(value, dict):
        return [str(k) for k in value]
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def provenance_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per backend, the kernels (GPU) or ops (CPU) seen when profiling real steps, and the verdict."""
    rows = []
    ok = tables.ok_runs(runs)
    for backend, group in ok.groupby("backend", sort=False):
        row: dict[str, Any] = {"backend": backend, "runs": len(group)}

        def union(*cols: str, group: pd.DataFrame = group) -> str:
            names: dict[str, None] = {}
            for col in cols:
                if col in group:
                    for cell in group[col]:
                        names.update(dict.fromkeys(_names(cell)))
            return "; ".join(names) or "n/a"

        row["dispatched"] = union("provenance.dispatched")
        row["forward kernels"] = union("provenance.fwd_kernels", "provenance.fwd")
        row["backward kernels"] = union("provenance.bwd_kernels", "provenance.bwd")
        row["forward ops"] = union("provenance.fwd_ops", "provenance.ops")
        if "provenance.matched" in group:
            matched = group["provenance.matched"].astype(str).str.lower().isin(["true", "1"])
            row["matched"] = f"{int(matched.sum())}/{len(group)} runs"
        else:
            row["matched"] = "not recorded"
        row["mismatch"] = union("provenance.mismatch")
        rows.append(row)
    return pd.DataFrame(rows)


def availability_table(backends_json: Mapping[str, Any], runs: pd.DataFrame) -> pd.DataFrame:
    """Per backend: could it run here (probe), and how its training runs ended."""
    probe = backends_json.get("backends", {}) or {}
    names = list(dict.fromkeys([*probe, *runs["backend"]]))
    rows = []
    for name in names:
        info = probe.get(name, {})
        mine = runs[runs["backend"] == name]
        counts = mine["status"].value_counts().to_dict() if "status" in mine else {}
        reasons = (
            "; ".join(dict.fromkeys(na_text(r) for r in mine.loc[mine["status"] != "ok", "reason"]))
            if "reason" in mine
            else ""
        )
        rows.append(
            {
                "backend": name,
                "available": info.get("available"),
                "probe reason": info.get("reason"),
                "dtype": info.get("dtype"),
                "device": info.get("device"),
                "runs": ", ".join(f"{k}: {v}" for k, v in counts.items()) or "none",
                "why runs did not finish": reasons or "",
            }
        )
    return pd.DataFrame(rows)


def _flat_items(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    items = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            items += _flat_items(value, f"{prefix}{key}.")
        elif isinstance(value, (list, tuple)):
            items.append((f"{prefix}{key}", ", ".join(map(str, value)) or "n/a"))
        else:
            items.append((f"{prefix}{key}", na_text(value)))
    return items


def environment_tables(
    backends_json: Mapping[str, Any], runs: pd.DataFrame
) -> tuple[list[tuple[str, str]], pd.DataFrame]:
    """The probe's environment (GPU, driver, versions, commit) and each backend's run versions."""
    env = _flat_items(backends_json.get("environment", {}) or {})
    cols = [c for c in ["backend", *ENV_RUN_KEYS, "dtype", "cast"] if c in runs]
    per_run = runs[cols].astype(str).drop_duplicates() if cols else pd.DataFrame()
    return env, per_run


def seed_study_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The seed study's numbers beside ours (means over finished runs), same rows."""
    rows = seed_study()["rows"]
    table = pd.DataFrame(
        {
            "metric": [r["metric"] for r in rows],
            "seed: SDPA": [r["sdpa"] for r in rows],
            "seed: Flash Attention 2": [r["flash_attention_2"] for r in rows],
        }
    )
    if summary.empty:
        return table
    for backend in dict.fromkeys(summary["backend"]):

        def mean(metric: str, backend: str = backend) -> float:
            row = row_where(summary, backend=backend, metric=metric)
            return float(row["mean"]) if row is not None and is_finite(row["mean"]) else math.nan

        loop = mean(SPEED)
        if not math.isfinite(loop):
            continue
        table[f"ours: {backend}"] = [
            f"{loop / 60:.2f} min (epoch loop)",
            f"{metric_fmt(MEMORY, mean(MEMORY))} MB (peak GPU allocated)"
            if math.isfinite(mean(MEMORY))
            else f"{metric_fmt(MEMORY, mean('host_peak_rss_mb'))} MB (host peak RSS; no GPU)",
            f"{metric_fmt('mAP50', mean('mAP50'))} / {metric_fmt('mAP50', mean(ACCURACY))}",
        ]
    return table


def accuracy_verdicts(
    comparisons: pd.DataFrame, summary: pd.DataFrame | None = None
) -> list[dict[str, str]]:
    """Per backend, the TOST verdict on mAP50-95 with the difference, for the seed-study
    claim; "not measurable here" where the accuracy measured nothing (per `summary`)."""
    if comparisons.empty:
        return []
    summary = pd.DataFrame() if summary is None else summary
    rows = comparisons[comparisons["metric"] == ACCURACY]
    if "replica" in rows:
        rows = rows[~rows["replica"].map(truthy)]
    out = []
    for _, r in rows.iterrows():
        backend = str(r["backend"])
        if not is_finite(r["diff"]):
            verdict = "not testable (no finished runs)"
        elif why := narrative_scope.unmeasurable(summary, ACCURACY, backend, str(r["baseline"])):
            verdict = f"{narrative_scope.NOT_MEASURABLE} ({why})"
        else:
            verdict = blank(r["equivalence"]) or "not shown"
        diff = fmt_map_diff(r["diff"]) if is_finite(r["diff"]) else "n/a"
        out.append({"backend": backend, "verdict": verdict, "diff": diff})
    return out


def families(cpu: bool = False) -> list[tuple[str, str]]:
    """The Holm families: (name, what it holds, with its metrics), worded for the device."""
    out = []
    for name, what in tables.FAMILIES.items():
        what = narrative_scope.CPU_FAMILIES.get(name, what) if cpu else what
        keys = ", ".join(
            narrative_scope.label(m.key, cpu) for m in tables.COMPARED if m.family == name
        )
        out.append((name, f"{what}: {keys}"))
    return out


PERMUTATION_NOTE = (
    f"Sign-flip p-values are exact over all 2^n sign patterns up to {PERM_EXACT_MAX} pairs; "
    "with n pairs the smallest possible is 2/2^n (0.25 at 3 seeds, 0.0625 at 5, 0.031 at 6)."
)


def dataset_view(dataset: Mapping[str, Any]) -> tuple[list[tuple[str, str]], pd.DataFrame]:
    """Key facts and a per-split table from the dataset's summary.json."""
    facts = [
        ("name", na_text(dataset.get("name"))),
        ("source", na_text(dataset.get("source"))),
        ("classes", ", ".join(map(str, dataset.get("classes", []))) or "n/a"),
        ("problems found", str(len(dataset.get("problems", []) or []))),
        ("policy for problems", na_text(dataset.get("policy"))),
        ("files dropped", na_text(dataset.get("dropped"))),
    ]
    rows = []
    for split, info in (dataset.get("splits", {}) or {}).items():
        per_class = info.get("boxes_per_class", {}) or {}
        sizes = info.get("image_sizes", {}) or {}
        rows.append(
            {
                "split": split,
                "images": info.get("images"),
                "boxes": info.get("boxes"),
                "boxes per class": ", ".join(f"{k}: {v}" for k, v in per_class.items()),
                "image sizes": ", ".join(f"{k} ({v})" for k, v in sizes.items()),
            }
        )
    return facts, pd.DataFrame(rows)
