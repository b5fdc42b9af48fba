"""The HTML report: one self-contained page that answers the question first.

Every number in it is read from the `aggregate` tables, backends.json and the dataset
summary; the wording of the headline follows the statistics (significance, equivalence,
too few runs) so the page never claims more than the tests show. Figures are embedded as
data URIs and the page has no external CSS, JS or fonts, so it opens offline.
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup, escape

from attnbench import io, tables

SPEED = "epoch_loop_s"
MEMORY = "peak_alloc_mb"
ACCURACY = "mAP50_95"

# The seed study (FACTS.md section 1): its published numbers and what its files show.
SEED_STUDY = {
    "title": "SDPA vs Flash Attention: A Comparative Study for Production ML Systems (Kitoko 2025)",
    "setup": "YOLOv12n on Roboflow Weeds-3, 20 epochs, batch 8, AdamW lr 0.001, RTX 4060 laptop, "
    "PyTorch 2.2.2",
    "rows": [
        ("training time", "37.49 min", "35.24 min"),
        ('"memory"', "2,668.71 MB", "518.86 MB"),
        ("mAP50 / mAP50-95", "0.967 / 0.753", "0.967 / 0.753"),
    ],
    "flaws": [
        "Both arms ran the same code: Ultralytics' YOLO12 attention (AAttn) never calls SDPA or "
        "flash-attn; the 'switch' was two environment variables that no library reads. The "
        "per-epoch CSVs of the two arms are identical in every loss and metric column.",
        '"Memory" was host RSS (psutil) end minus start, in one process, SDPA arm first: '
        "first-run warm-up against second run. It is not GPU memory.",
        "The 6% time gap is setup outside the epoch loop (175 s first run vs 42 s second); "
        "Ultralytics' own cumulative epoch times differ by 0.09%.",
        "One run per arm, fixed order, same process, fine-tuned from COCO weights, amp=False: "
        "no seeds, no test, no proof of which kernel ran.",
    ],
}

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


# --------------------------------------------------------------------------- #
# Formatting


def is_missing(value: Any) -> bool:
    """None, NaN, empty text and pandas' NA all read as missing ('n/a')."""
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() in ("", "nan", "NaN", "None")


def num(value: Any, digits: int = 3) -> str:
    """A number for people: `digits` significant figures, thousands separated, 'n/a' if absent."""
    if is_missing(value):
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(x):
        return "n/a"
    if x == int(x) and abs(x) < 1e15:
        return f"{int(x):,}"
    if abs(x) >= 10 ** (digits - 1):
        return f"{x:,.0f}"
    return f"{x:.{digits}g}" if abs(x) >= 1e-3 else f"{x:.2e}"


def pval(value: Any) -> str:
    """p-values: two significant figures, '< 0.001' below that."""
    if is_missing(value) or not math.isfinite(float(value)):
        return "n/a"
    p = float(value)
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def sig(value: Any, digits: int = 3) -> str:
    """`digits` significant figures, keeping trailing zeros (0.8510, 4.10) so columns align."""
    if not _finite(value):
        return "n/a"
    text = f"{float(value):#.{digits}g}"
    return text[:-1] if text.endswith(".") else text


def p_is(value: Any) -> str:
    """'p = 0.012' or 'p < 0.001' for running text."""
    text = pval(value)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def metric_fmt(metric: str, value: Any) -> str:
    """Metric-appropriate precision: mAP differences live in the third decimal."""
    if is_missing(value):
        return "n/a"
    if metric.startswith("mAP"):
        return f"{float(value):.4f}"
    if metric.endswith("_mb"):
        return f"{float(value):,.0f}"
    return f"{float(value):,.1f}" if abs(float(value)) >= 10 else sig(value, 3)


def interval(low: Any, high: Any, fmt=num) -> str:
    if is_missing(low) or is_missing(high):
        return "n/a"
    return f"[{fmt(low)}, {fmt(high)}]"


def html_table(
    frame: pd.DataFrame,
    columns: Sequence[str] | None = None,
    formats: Mapping[str, Any] | None = None,
    classes: str = "data",
    row_class: Any = None,
    default: Any = None,
) -> Markup:
    """A small escaped HTML table; missing values read 'n/a'.

    `formats` maps a column to a formatter; other columns use `default` (numbers by default).
    """
    formats = formats or {}
    default = default or (lambda v: "n/a" if is_missing(v) else num(v))
    if frame is None or frame.empty:
        return Markup('<p class="empty">No rows.</p>')
    columns = [c for c in (columns or list(frame.columns)) if c in frame.columns]
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for _, row in frame.iterrows():
        cells = []
        for c in columns:
            text = formats.get(c, default)(row[c])
            wrap = ' class="wrap"' if len(text) > 40 else ""  # short cells stay on one line
            cells.append(f"<td{wrap}>{escape(text)}</td>")
        cls = f' class="{escape(row_class(row))}"' if row_class and row_class(row) else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return Markup(
        f'<div class="scroll"><table class="{escape(classes)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _text(value: Any) -> str:
    return "n/a" if is_missing(value) else str(value)


def _blank(value: Any) -> str:
    """For notes and reasons: nothing to say is an empty cell, not 'n/a'."""
    return "" if is_missing(value) else str(value)


def data_uri(path: str | os.PathLike) -> str:
    """Embed a PNG so the report stays one file."""
    payload = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{payload}"


# --------------------------------------------------------------------------- #
# The headline


def _row(table: pd.DataFrame, **where: Any) -> pd.Series | None:
    if table is None or table.empty:
        return None
    mask = pd.Series(True, index=table.index)
    for key, value in where.items():
        if key not in table:
            return None
        mask &= table[key] == value
    hits = table[mask]
    return None if hits.empty else hits.iloc[0]


def _finite(value: Any) -> bool:
    try:
        return not is_missing(value) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


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
    conf = f"{100 * (1 - alpha):.0f}%"
    out: list[str] = []
    base = _row(summary, backend=baseline, metric=SPEED)
    has_base = base is not None and _finite(base["mean"])
    if len(speed) == 1:
        out.append(
            f"Only {name} finished training (epoch-loop time {metric_fmt(SPEED, fastest['mean'])} s, "
            f"n = {int(fastest['n'])}); there is nothing to compare it with"
            + ("." if name == baseline else f" (the baseline {baseline} has no finished run).")
        )
    elif name == baseline:
        others = speed[speed["backend"] != baseline].sort_values("mean")
        second = others.iloc[0]
        comp = _row(comparisons, backend=second["backend"], metric=SPEED)
        out.append(
            f"No backend beat the baseline {baseline}: it had the shortest mean epoch-loop time "
            f"({metric_fmt(SPEED, fastest['mean'])} s, n = {int(fastest['n'])}). The closest, "
            f"{second['backend']}, took {sig(second['ratio'], 4)}x as long "
            f"({conf} Fieller CI {interval(second['ratio_ci_low'], second['ratio_ci_high'], lambda v: sig(v, 4))})"
            f"{_certainty(comp, alpha)}."
        )
    elif not has_base:
        out.append(
            f"{name} had the shortest mean epoch-loop time ({metric_fmt(SPEED, fastest['mean'])} s, "
            f"n = {int(fastest['n'])}), but the baseline {baseline} has no finished run, so "
            "nothing can be said about how much faster it is than the baseline."
        )
    else:
        comp = _row(comparisons, backend=name, metric=SPEED)
        pct = 100 * (1 - float(fastest["ratio"]))
        shown = comp is not None and _finite(comp["p_holm"]) and float(comp["p_holm"]) < alpha
        # "fastest" only when the test backs it; otherwise just the observed ordering.
        lead = f"{name} was fastest:" if shown else f"{name} had the shortest"
        out.append(
            f"{lead} mean epoch-loop time {metric_fmt(SPEED, fastest['mean'])} s "
            f"against {metric_fmt(SPEED, base['mean'])} s for the baseline {baseline}, "
            f"{pct:.1f}% less (time ratio {sig(fastest['ratio'], 4)}, {conf} Fieller CI "
            f"{interval(fastest['ratio_ci_low'], fastest['ratio_ci_high'], lambda v: sig(v, 4))})"
            f"{_certainty(comp, alpha)}."
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


def _certainty(comp: pd.Series | None, alpha: float) -> str:
    if (
        comp is not None
        and not _finite(comp["p_holm"])
        and min(comp["n"], comp["n_baseline"]) >= 2
        and "no variance" in str(comp.get("note", ""))
    ):
        return (
            f"; identical in all {int(comp['n'])} vs {int(comp['n_baseline'])} runs (no variance), "
            "so the difference is deterministic rather than a sampling question"
        )
    if comp is None or not _finite(comp["p_holm"]):
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


def _memory_sentence(
    summary: pd.DataFrame, comparisons: pd.DataFrame, name: str, baseline: str, alpha: float
) -> str:
    mine, base = (
        _row(summary, backend=name, metric=MEMORY),
        _row(summary, backend=baseline, metric=MEMORY),
    )
    if mine is None or base is None or not _finite(mine["mean"]) or not _finite(base["mean"]):
        return "No GPU memory was recorded for these runs (CPU), so memory is not compared."
    comp = _row(comparisons, backend=name, metric=MEMORY)
    pct = 100 * (float(mine["ratio"]) - 1)
    direction = "more" if pct > 0 else "less"
    return (
        f"Peak GPU memory allocated by {name} was {metric_fmt(MEMORY, mine['mean'])} MB against "
        f"{metric_fmt(MEMORY, base['mean'])} MB for {baseline} ({abs(pct):.1f}% {direction}, ratio "
        f"{sig(mine['ratio'], 4)}, {100 * (1 - alpha):.0f}% Fieller CI "
        f"{interval(mine['ratio_ci_low'], mine['ratio_ci_high'], lambda v: sig(v, 4))})"
        f"{_certainty(comp, alpha)}."
    )


def _accuracy_sentence(
    comparisons: pd.DataFrame, name: str, baseline: str, margin: float, conf: str
) -> str:
    comp = _row(comparisons, backend=name, metric=ACCURACY)
    if comp is None or not _finite(comp["diff"]):
        return f"mAP50-95 of {name} cannot be compared with {baseline} (no finished runs)."
    diff = (
        f"mAP50-95 of {name} differed from {baseline} by {float(comp['diff']):+.4f} "
        f"({conf} CI {interval(comp['diff_ci_low'], comp['diff_ci_high'], lambda v: f'{float(v):+.4f}')})"
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
    if not _finite(comp["tost_p"]):
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
        why = _text(group["reason"].iloc[0]) if "reason" in group else "n/a"
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
    return dataset.get("source") == "demo" or dataset.get("name") == "demo"


# --------------------------------------------------------------------------- #
# Sections


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
            "; ".join(dict.fromkeys(_text(r) for r in mine.loc[mine["status"] != "ok", "reason"]))
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
            items.append((f"{prefix}{key}", _text(value)))
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
    table = pd.DataFrame(
        SEED_STUDY["rows"], columns=["metric", "seed: SDPA", "seed: Flash Attention 2"]
    )
    if summary.empty:
        return table
    for backend in dict.fromkeys(summary["backend"]):

        def mean(metric: str, backend: str = backend) -> float:
            row = _row(summary, backend=backend, metric=metric)
            return float(row["mean"]) if row is not None and _finite(row["mean"]) else math.nan

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
            "verdict": _blank(r["equivalence"]) or "not shown"
            if _finite(r["diff"])
            else "not testable (no finished runs)",
            "diff": "n/a" if not _finite(r["diff"]) else f"{float(r['diff']):+.4f}",
        }
        for _, r in rows.iterrows()
    ]


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Wide view for people: one row per backend, 'mean [CI]' per metric, ratio of time."""
    if summary.empty:
        return pd.DataFrame()
    keys = [SPEED, "images_per_s", MEMORY, "peak_reserved_mb", "mAP50", ACCURACY]
    rows = []
    for backend, group in summary.groupby("backend", sort=False):
        g = group.set_index("metric")
        row: dict[str, Any] = {
            "backend": backend,
            "finished / runs": f"{int(g['runs_ok'].iloc[0])} / {int(g['runs'].iloc[0])}",
        }
        for key in keys:
            if key not in g.index:
                continue
            r = g.loc[key]
            label = tables.METRIC_BY_KEY[key]
            head = f"{label.label} ({label.unit})" if label.unit else label.label
            cell = metric_fmt(key, r["mean"])
            if _finite(r["ci_low"]):
                cell += f" [{metric_fmt(key, r['ci_low'])}, {metric_fmt(key, r['ci_high'])}]"
            row[head] = cell
            if key in (SPEED, MEMORY):
                ratio = sig(r["ratio"], 4)
                if _finite(r["ratio_ci_low"]):
                    ratio += f" [{sig(r['ratio_ci_low'], 4)}, {sig(r['ratio_ci_high'], 4)}]"
                row[f"{'time' if key == SPEED else 'memory'} ratio to {r['baseline']}"] = ratio
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_view(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The comparisons people read: difference with CI, p, Holm p, g, equivalence."""
    if comparisons.empty:
        return pd.DataFrame()
    keys = [SPEED, "images_per_s", MEMORY, "peak_reserved_mb", "mAP50", ACCURACY]
    view = comparisons[comparisons["metric"].isin(keys)].copy()
    view["metric"] = pd.Categorical(view["metric"], keys, ordered=True)
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
                interval(lo, hi, lambda v, m=m: metric_fmt(m, v))
                for m, lo, hi in zip(
                    view["metric"], view["diff_ci_low"], view["diff_ci_high"], strict=True
                )
            ],
            "p (Welch)": [pval(p) for p in view["p"]],
            "p (Holm)": [pval(p) for p in view["p_holm"]],
            "Hedges' g": [num(g, 3) for g in view["hedges_g"]],
            "TOST p (Holm)": [pval(p) if _finite(p) else "" for p in view["tost_p_holm"]],
            "significant (Holm)": [
                "n/a" if is_missing(s) else _bool(s) for s in view["significant"]
            ],
            "equivalence": view["equivalence"].fillna(""),
            "note": view["note"].fillna(""),
        }
    )
    return out


def dataset_view(dataset: Mapping[str, Any]) -> tuple[list[tuple[str, str]], pd.DataFrame]:
    """Key facts and a per-split table from the dataset's summary.json."""
    facts = [
        ("name", _text(dataset.get("name"))),
        ("source", _text(dataset.get("source"))),
        ("classes", ", ".join(map(str, dataset.get("classes", []))) or "n/a"),
        ("problems found", str(len(dataset.get("problems", []) or []))),
        ("policy for problems", _text(dataset.get("policy"))),
        ("files dropped", _text(dataset.get("dropped"))),
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


# --------------------------------------------------------------------------- #
# Putting it together


def _by_stem(paths: Iterable[str | os.PathLike]) -> dict[str, Path]:
    return {Path(p).stem: Path(p) for p in paths}


def build_context(
    table_paths: Iterable[str | os.PathLike],
    plots: Iterable[str | os.PathLike],
    backends_json: str | os.PathLike,
    dataset_json: str | os.PathLike,
    *,
    title: str,
    config: str | Mapping[str, Any],
    dataset_reason: str,
    train: str | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the template shows, from the `report` rule's inputs and params."""
    config = json.loads(config) if isinstance(config, str) else dict(config)
    train = json.loads(train) if isinstance(train, str) else dict(train or {})
    settings = tables.analysis_settings(config)
    baseline, alpha, margin = settings["baseline"], settings["alpha"], settings["tost_margin"]
    t = {name: tables.read_table(path) for name, path in _by_stem(table_paths).items()}
    empty = pd.DataFrame()
    runs, summary = t.get("runs", empty), t.get("summary", empty)
    comparisons, kernels, parity = (t.get(k, empty) for k in ("comparisons", "kernels", "parity"))
    if runs.empty:
        runs = pd.DataFrame(columns=["backend", "seed", "status", "reason"])
    probe = io.read_json(backends_json)
    dataset = io.read_json(dataset_json)
    plot_paths = _by_stem(plots)

    availability = availability_table(probe, runs)
    env, env_runs = environment_tables(probe, runs)
    facts, splits = dataset_view(dataset)
    model_kernels = kernels[kernels["kind"] != "sweep"] if "kind" in kernels else kernels
    parity_failed = (
        parity[parity["passed"].astype(str).str.lower().isin(["false", "0"])]
        if "passed" in parity
        else parity.iloc[0:0]
    )
    parity_ok = parity[parity["status"] == "ok"] if "status" in parity else parity
    return {
        "title": title,
        "baseline": baseline,
        "alpha": alpha,
        "tost_margin": margin,
        "confidence": f"{100 * (1 - alpha):.0f}%",
        "headline": headline(summary, comparisons, runs, baseline, alpha, margin),
        "caveats": caveats(runs, dataset, dataset_reason),
        "demo": is_demo(dataset),
        "dataset_reason": dataset_reason,
        "summary_table": html_table(summary_table(summary)),
        "comparison_table": html_table(
            comparison_view(comparisons),
            default=_blank,
            row_class=lambda r: "sig" if r["significant (Holm)"] == "yes" else "",
        ),
        "summary_full": html_table(
            summary,
            formats={"ci_method": _text, "ratio_method": _text, "label": _text, "unit": _text},
        ),
        "comparisons_full": html_table(
            comparisons,
            formats={c: _text for c in ("label", "ci_method")}
            | {c: _blank for c in ("equivalence", "note", "significant")}
            | {"p": pval, "p_holm": pval, "tost_p": pval, "tost_p_holm": pval},
        ),
        "runs_table": html_table(
            runs,
            columns=RUN_COLUMNS,
            formats={c: _text for c in ("status", "device_name", "dtype")}
            | {"reason": _blank}
            | {m: (lambda v, m=m: metric_fmt(m, v)) for m in tables.METRIC_BY_KEY},
            row_class=lambda r: "" if r.get("status") == "ok" else "failed",
        ),
        "plots": [
            {"key": key, "title": name, "caption": caption, "src": data_uri(plot_paths[key])}
            for key, name, caption in PLOTS
            if key in plot_paths
        ],
        "provenance_table": html_table(provenance_table(runs), default=_text),
        "expected": [
            (name, json.dumps(info.get("expected"), indent=1))
            for name, info in (probe.get("backends", {}) or {}).items()
        ],
        "availability_table": html_table(
            availability,
            formats={"available": _bool},
            default=_text,
            row_class=lambda r: "failed" if r.get("available") is False else "",
        ),
        "kernels_table": html_table(
            model_kernels,
            columns=KERNEL_COLUMNS,
            formats={c: _text for c in ("status", "dtype", "phase")} | {"reason": _blank},
        ),
        "n_kernel_rows": len(model_kernels),
        "parity_table": html_table(
            parity,
            columns=PARITY_COLUMNS,
            formats={c: _text for c in ("status", "dtype")} | {"reason": _blank, "passed": _bool},
            row_class=lambda r: "failed" if str(r.get("passed")).lower() in ("false", "0") else "",
        ),
        "parity_checked": len(parity_ok),
        "parity_failed": parity_failed[["backend", "dtype"]].drop_duplicates().to_dict("records")
        if not parity_failed.empty
        else [],
        "dataset_facts": facts,
        "dataset_splits": html_table(splits, formats={"images": num, "boxes": num}, default=_text),
        "dataset_problems": (dataset.get("problems") or [])[:50],
        "environment": env,
        "environment_runs": html_table(env_runs, default=_text),
        "seed_study": SEED_STUDY,
        "seed_table": html_table(seed_study_table(summary), default=_text),
        "accuracy_verdicts": accuracy_verdicts(comparisons),
        "config_json": json.dumps(config, indent=2, sort_keys=True),
        "train_json": json.dumps(train, indent=2, sort_keys=True),
    }


def _bool(value: Any) -> str:
    if is_missing(value):
        return "n/a"
    return "yes" if str(value).lower() in ("true", "1") else "no"


def render(template: str | os.PathLike, context: Mapping[str, Any]) -> str:
    """Render the jinja2 template with autoescaping; unknown names are errors, not blanks."""
    template = Path(template)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template.parent),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(template.name).render(**context)


def write_report(
    out: str | os.PathLike,
    template: str | os.PathLike,
    table_paths: Iterable[str | os.PathLike],
    plots: Iterable[str | os.PathLike],
    backends_json: str | os.PathLike,
    dataset_json: str | os.PathLike,
    **params: Any,
) -> None:
    """Build the context, render, and write the HTML atomically."""
    context = build_context(table_paths, plots, backends_json, dataset_json, **params)
    io.write_text(out, render(template, context))
