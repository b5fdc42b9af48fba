"""The report's sections as data: per-backend views of the aggregate tables, provenance,
availability, dataset, environment and the seed study beside ours.

Each function returns a DataFrame or plain rows; `report` turns them into cell text and
the template lays them out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from functools import partial
from importlib import resources
from typing import Any

import pandas as pd
import yaml

from attnbench import tables
from attnbench.formatting import (
    Formatter,
    blank,
    fmt_map_diff,
    fmt_ratio,
    interval,
    is_finite,
    is_missing,
    metric_fmt,
    na_text,
    num,
    pval,
    yes_no,
)
from attnbench.narrative import ACCURACY, MEMORY, SPEED, row_where

SEED_STUDY_FILE = "data/seed_study.yaml"

# The metrics of the summary and comparison views, in this order (the CSVs keep all).
SHOWN_METRICS = [SPEED, "images_per_s", MEMORY, "peak_reserved_mb", "mAP50", ACCURACY]
# Columns shown in the report's tables (the CSVs keep everything).
RUN_COLUMNS = [
    "backend", "seed", "status", "reason", "device_name", "dtype", "epoch_loop_s",
    "epoch_time_s", "images_per_s", "peak_alloc_mb", "peak_reserved_mb", "mAP50", "mAP50_95",
]  # fmt: skip
KERNEL_COLUMNS = [
    "backend", "status", "reason", "dtype", "phase", "B", "heads", "N", "head_dim", "fwd_ms",
    "fwdbwd_ms", "fwdbwd_tflops", "pct_of_matmul_peak", "peak_mem_mb",
]  # fmt: skip
PARITY_COLUMNS = [
    "backend", "status", "reason", "dtype", "B", "heads", "N", "head_dim", "rel_err_out",
    "rel_err_dq", "rel_err_dk", "rel_err_dv", "threshold", "passed",
]  # fmt: skip
ENV_RUN_KEYS = ["device_name", "torch", "cuda", "cudnn", "flash_attn", "ultralytics", "python"]
PLOTS = [
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


def accuracy_verdicts(comparisons: pd.DataFrame) -> list[dict[str, str]]:
    """Per backend, the TOST verdict on mAP50-95 with the difference, for the seed-study claim."""
    if comparisons.empty:
        return []
    rows = comparisons[comparisons["metric"] == ACCURACY]
    return [
        {
            "backend": str(r["backend"]),
            "verdict": blank(r["equivalence"]) or "not shown"
            if is_finite(r["diff"])
            else "not testable (no finished runs)",
            "diff": fmt_map_diff(r["diff"]) if is_finite(r["diff"]) else "n/a",
        }
        for _, r in rows.iterrows()
    ]


def _with_ci(value: Any, low: Any, high: Any, fmt: Formatter) -> str:
    """'value [low, high]', or the value alone when there is no interval."""
    text = fmt(value)
    return f"{text} [{fmt(low)}, {fmt(high)}]" if is_finite(low) else text


def backend_summary_view(summary: pd.DataFrame) -> pd.DataFrame:
    """Wide view for people: one row per backend, 'mean [CI]' per metric, ratio of time."""
    if summary.empty:
        return pd.DataFrame()
    rows = []
    for backend, group in summary.groupby("backend", sort=False):
        g = group.set_index("metric")
        row: dict[str, Any] = {
            "backend": backend,
            "finished / runs": f"{int(g['runs_ok'].iloc[0])} / {int(g['runs'].iloc[0])}",
        }
        for key in SHOWN_METRICS:
            if key not in g.index:
                continue
            r = g.loc[key]
            fmt = partial(metric_fmt, key)
            row[tables.METRIC_BY_KEY[key].heading] = _with_ci(
                r["mean"], r["ci_low"], r["ci_high"], fmt
            )
            if key in (SPEED, MEMORY):
                ratio = _with_ci(r["ratio"], r["ratio_ci_low"], r["ratio_ci_high"], fmt_ratio)
                row[f"{'time' if key == SPEED else 'memory'} ratio to {r['baseline']}"] = ratio
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_view(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The comparisons people read: difference with CI, p, Holm p, g, equivalence."""
    if comparisons.empty:
        return pd.DataFrame()
    view = comparisons[comparisons["metric"].isin(SHOWN_METRICS)].copy()
    view["metric"] = pd.Categorical(view["metric"], SHOWN_METRICS, ordered=True)
    view = view.sort_values(["metric"], kind="stable")
    out = pd.DataFrame(
        {
            "metric": view["label"],
            "backend": view["backend"],
            "n": [
                f"{int(a)} vs {int(b)}" for a, b in zip(view["n"], view["n_baseline"], strict=True)
            ],
            "difference": [
                metric_fmt(m, d) for m, d in zip(view["metric"], view["diff"], strict=True)
            ],
            "95% CI": [
                interval(lo, hi, partial(metric_fmt, m))
                for m, lo, hi in zip(
                    view["metric"], view["diff_ci_low"], view["diff_ci_high"], strict=True
                )
            ],
            "p (Welch)": [pval(p) for p in view["p"]],
            "p (Holm)": [pval(p) for p in view["p_holm"]],
            "Hedges' g": [num(g, 3) for g in view["hedges_g"]],
            "TOST p (Holm)": [pval(p) if is_finite(p) else "" for p in view["tost_p_holm"]],
            "significant (Holm)": [yes_no(s) for s in view["significant"]],
            "equivalence": view["equivalence"].fillna(""),
            "note": view["note"].fillna(""),
        }
    )
    return out


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
