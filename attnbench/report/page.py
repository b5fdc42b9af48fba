"""The HTML report: one self-contained page that answers the question first.

Every number in it is read from the `aggregate` tables, backends.json and the dataset
summary: `narrative` words the answer and `caveats` what limits it, `stat_views` and
`sections` build the views, `formatting` turns cells into text, and report/report.html.j2
lays it all out (its `table` macro draws every table). Figures are embedded as data URIs
and the page has no external CSS, JS or fonts, so it opens offline.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from attnbench import intermediates, io
from attnbench.analysis import tables
from attnbench.report import (
    caveats,
    inference_report,
    narrative,
    narrative_scope,
    sections,
    stat_views,
    sweep_report,
    timing_report,
)
from attnbench.report.formatting import (
    TextTable,
    blank,
    confidence_text,
    metric_fmt,
    na_text,
    num,
    pval,
    text_table,
    yes_no,
)
from attnbench.report.lookups import on_cpu


def data_uri(path: str | os.PathLike) -> str:
    """Embed a PNG so the report stays one file."""
    payload = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{payload}"


def _by_stem(paths: Iterable[str | os.PathLike]) -> dict[str, Path]:
    return {Path(p).stem: Path(p) for p in paths}


def _failed(row: pd.Series) -> str:
    return "failed" if str(row.get("passed")).lower() in ("false", "0") else ""


def _renamed(table: TextTable, names: Mapping[str, str]) -> TextTable:
    """A table with some column titles replaced (the device's names for them)."""
    return dataclasses.replace(table, columns=[names.get(c, c) for c in table.columns])


def _flag_unmeasurable(view: pd.DataFrame, shown: pd.DataFrame, column: str) -> pd.DataFrame:
    """A comparison view (its rows indexed as the comparisons they show) with the
    difference of each row that measured nothing followed by "not measurable here"."""
    if view.empty or column not in view or "verdict" not in shown:
        return view
    rows = shown.reindex(view.index)
    mask = (rows["verdict"] == narrative_scope.NOT_MEASURABLE).to_numpy()
    if mask.any():
        view = view.copy()
        view.loc[mask, column] = view.loc[mask, column] + f" ({narrative_scope.NOT_MEASURABLE})"
    return view


def _summary_view(summary: pd.DataFrame, cpu: bool) -> pd.DataFrame:
    """The per-backend summary view, its columns named for the device and a metric that was
    0 in every run of an arm said to be not measurable there."""
    view = stat_views.backend_summary_view(summary)
    if view.empty:
        return view
    view = view.rename(columns=narrative_scope.summary_headings(cpu))
    for (backend, column), text in narrative_scope.summary_cells(summary, cpu).items():
        if column in view:
            view.loc[view["backend"] == backend, column] = text
    return view


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
    paired_timing: Iterable[str | os.PathLike] | None = None,
) -> dict[str, Any]:
    """Everything the template shows, from the `report` rule's inputs and params
    (`paired_timing`: the paired timing's summary.csv, when it ran)."""
    config = json.loads(config) if isinstance(config, str) else dict(config)
    train = json.loads(train) if isinstance(train, str) else dict(train or {})
    table_paths, plots = list(table_paths), list(plots)  # each is read twice
    settings = tables.analysis_settings(config)
    baseline, alpha, margin = settings["baseline"], settings["alpha"], settings["tost_margin"]
    by_name = _by_stem(table_paths)
    t = {}
    if "runs" in by_name:  # first: with a finished run, epochs.csv must hold its epochs
        t["runs"] = tables.read_table(by_name.pop("runs"), intermediates.table("runs"))
    trained = tables.has_finished(t.get("runs", pd.DataFrame()))
    # The study's tables have a schema (attnbench.intermediates); the sections' have none here.
    t |= {n: tables.read_table(p, intermediates.table(n, trained)) for n, p in by_name.items()}
    empty = pd.DataFrame()
    runs, summary = t.get("runs", empty), t.get("summary", empty)
    comparisons, kernels, parity = (t.get(k, empty) for k in ("comparisons", "kernels", "parity"))
    drift, replica = t.get("drift", empty), t.get("replica", empty)
    if runs.empty:
        runs = pd.DataFrame(columns=["backend", "seed", "status", "reason"])
    probe = io.read_json(backends_json, schema=intermediates.BACKENDS)
    dataset = io.read_json(dataset_json, schema=intermediates.DATASET_SUMMARY)
    plot_paths = _by_stem(plots)
    # What the reader sees is named for the device the runs used, and a comparison that
    # measured nothing (0 everywhere) says so; the headline reads the tables as written.
    cpu = on_cpu(runs)
    shown_comparisons = narrative_scope.relabel(
        narrative_scope.mark_unmeasurable(comparisons, summary), cpu
    )
    shown_summary = narrative_scope.relabel(summary, cpu)
    shown_drift = narrative_scope.relabel(drift, cpu)

    env, env_runs = sections.environment_tables(probe, runs)
    facts, splits = sections.dataset_view(dataset)
    model_kernels = kernels[kernels["kind"] != "sweep"] if "kind" in kernels else kernels
    parity_failed = (
        parity[parity["passed"].astype(str).str.lower().isin(["false", "0"])]
        if "passed" in parity
        else parity.iloc[0:0]
    )
    parity_ok = parity[parity["status"] == "ok"] if "status" in parity else parity
    sweep_baseline = (config.get("sweep") or {}).get("baseline", baseline)
    paired = timing_report.read(paired_timing)
    return {
        "sweep": sweep_report.context(table_paths, plots, sweep_baseline, data_uri),
        "inference": inference_report.context(table_paths, plots, data_uri),
        "title": title,
        "baseline": baseline,
        "alpha": alpha,
        "tost_margin": margin,
        "confidence": confidence_text(alpha),
        "headline": narrative.headline(
            summary, comparisons, runs, baseline, alpha, margin, replica, paired
        ),
        "timing": timing_report.context(
            paired, narrative.across_processes(summary, comparisons, baseline, alpha), cpu, runs
        ),
        "scope": caveats.scope(runs, dataset, dataset_reason),
        "cpu": cpu,
        "caveats": caveats.caveats(runs, shown_drift, alpha),
        "thresholds": settings["thresholds"],
        "families": sections.families(cpu),
        "permutation_note": sections.PERMUTATION_NOTE,
        "paired_note": tables.PAIRED_NOTE,
        "noise_floor_table": text_table(
            _flag_unmeasurable(
                stat_views.noise_floor_view(shown_comparisons),
                shown_comparisons,
                "difference (A/A)",
            ),
            default=blank,
        ),
        "replica_table": text_table(stat_views.replica_view(replica), default=blank),
        "has_replica": not replica.empty,
        "drift_table": text_table(stat_views.drift_view(shown_drift), default=na_text),
        "drift_full": text_table(shown_drift, formats={"p": pval, "p_within_blocks": pval}),
        "demo": caveats.is_demo(dataset),
        "dataset_reason": dataset_reason,
        "backend_summary": text_table(_summary_view(summary, cpu)),
        "comparison_table": text_table(
            _flag_unmeasurable(
                stat_views.comparison_view(shown_comparisons), shown_comparisons, "difference"
            ),
            default=blank,
            row_class=lambda r: "sig" if r["significant (Holm)"] == "yes" else "",
        ),
        "summary_full": text_table(
            shown_summary,
            formats={c: na_text for c in ("ci_method", "ratio_method", "label", "unit")},
        ),
        "comparisons_full": text_table(
            narrative_scope.relabel(comparisons, cpu),
            formats={c: na_text for c in ("label", "ci_method")}
            | {
                c: blank
                for c in (
                    "equivalence",
                    "note",
                    "significant",
                    "design",
                    "family",
                    "seeds",
                    "perm_method",
                    "ratio_method",
                    "threshold_rule",
                    "verdict",
                    "unit",
                )
            }
            | {c: pval for c in ("p", "p_holm", "p_perm", "p_perm_holm", "tost_p", "tost_p_holm")}
            | {"drift_p": pval},
        ),
        "runs_table": _renamed(
            text_table(
                runs,
                columns=sections.RUN_COLUMNS,
                formats={c: na_text for c in ("status", "device_name", "dtype")}
                | {"reason": blank}
                | {m: partial(metric_fmt, m) for m in tables.METRIC_BY_KEY},
                row_class=lambda r: "" if r.get("status") == "ok" else "failed",
            ),
            narrative_scope.CPU_RUN_COLUMNS if cpu else {},
        ),
        "plots": [
            {"key": key, "title": name, "caption": caption, "src": data_uri(plot_paths[key])}
            for key, name, caption in sections.plots(cpu)
            if key in plot_paths
        ],
        "provenance_table": text_table(sections.provenance_table(runs), default=na_text),
        "expected": [
            (name, json.dumps(info.get("expected"), indent=1))
            for name, info in (probe.get("backends", {}) or {}).items()
        ],
        "availability_table": text_table(
            sections.availability_table(probe, runs),
            formats={"available": yes_no},
            default=na_text,
            row_class=lambda r: "failed" if r.get("available") is False else "",
        ),
        "kernels_table": text_table(
            model_kernels,
            columns=sections.KERNEL_COLUMNS,
            formats={c: na_text for c in ("status", "dtype", "phase")}
            | {"reason": blank, "graph_note": blank},
        ),
        "n_kernel_rows": len(model_kernels),
        "parity_table": text_table(
            parity,
            columns=sections.PARITY_COLUMNS,
            formats={c: na_text for c in ("status", "dtype")} | {"reason": blank, "passed": yes_no},
            row_class=_failed,
        ),
        "parity_checked": len(parity_ok),
        "parity_failed": parity_failed[["backend", "dtype"]].drop_duplicates().to_dict("records")
        if not parity_failed.empty
        else [],
        "dataset_facts": facts,
        "dataset_splits": text_table(
            splits, formats={"images": num, "boxes": num}, default=na_text
        ),
        "dataset_problems": (dataset.get("problems") or [])[:50],
        "environment": env,
        "environment_runs": text_table(env_runs, default=na_text),
        "seed_study": sections.seed_study(),
        "seed_table": text_table(sections.seed_study_table(summary), default=na_text),
        "accuracy_verdicts": sections.accuracy_verdicts(comparisons, summary),
        "config_json": json.dumps(config, indent=2, sort_keys=True),
        "train_json": json.dumps(train, indent=2, sort_keys=True),
    }


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
