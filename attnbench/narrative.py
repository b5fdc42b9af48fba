"""The report's narrative: the answer in a few sentences, and what limits it.

The wording follows the statistics (significance, equivalence, too few runs), so the page
never claims more than the tests in the comparisons table show.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import pandas as pd

from attnbench import tables
from attnbench.formatting import (
    blank,
    confidence_text,
    fmt_map_diff,
    interval,
    is_finite,
    is_missing,
    metric_fmt,
    na_text,
    p_is,
)

# The metrics that answer the question, in the headline's order.
MEMORY = "peak_alloc_mb"
GPU_TIME = "gpu_ms_per_step"
ATTENTION_TIME = "attention_ms_per_step"
STEP = "step_ms_median"
SPEED = "epoch_loop_s"  # the speed of runs without step keys (older metrics files)
ACCURACY = "mAP50_95"
HOST_BOUND, GPU_BOUND = 0.5, 0.8  # GPU-busy fraction below / above which a step is ...


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


def _finite(table: pd.DataFrame, metric: str, column: str = "mean") -> pd.DataFrame:
    if table is None or table.empty or "metric" not in table:
        return pd.DataFrame()
    rows = table[table["metric"] == metric]
    return rows[pd.to_numeric(rows[column], errors="coerce").notna()]


def _arms(comparisons: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The comparison rows of a metric that have something to compare (no A/A control)."""
    rows = _finite(comparisons, metric, "diff")
    if not rows.empty and "replica" in rows:
        rows = rows[~rows["replica"].astype(str).str.lower().isin(["true", "1"])]
    return rows


def _flag(value: Any) -> bool:
    return str(value).lower() in ("true", "1", "1.0")


def _on_cpu(runs: pd.DataFrame) -> bool:
    ok = tables.ok_runs(runs)
    return "device" in ok and not ok["device"].astype(str).str.startswith("cuda").any()


def speed_metric(comparisons: pd.DataFrame, summary: pd.DataFrame) -> str:
    """Median step time where runs recorded it, else the epoch-loop time of older runs."""
    return STEP if not _finite(summary, STEP).empty else SPEED


def difference_text(row: pd.Series, alpha: float) -> str:
    """'−336 MB (−14.0%), identical across 3 seeds' or '−1.70 ms (−12.5%, 95% CI [..])'."""
    metric = str(row["metric"])
    unit = f" {tables.METRIC_BY_KEY[metric].unit}" if tables.METRIC_BY_KEY[metric].unit else ""
    diff = metric_fmt(metric, row["diff"], signed=True) + unit
    pct = f", {float(row['diff_pct']):+.1f}%" if is_finite(row.get("diff_pct")) else ""
    if _flag(row.get("identical")):
        return (
            f"{diff}{pct}; identical across {int(row['n'])} seeds, so this is the exact difference"
        )
    ci = interval(row["diff_ci_low"], row["diff_ci_high"], partial(metric_fmt, metric))
    return f"{diff} ({confidence_text(alpha)} CI {ci}{pct})"


def headline(
    summary: pd.DataFrame,
    comparisons: pd.DataFrame,
    runs: pd.DataFrame,
    baseline: str,
    alpha: float,
    tost_margin: float,
    replica: pd.DataFrame | None = None,
) -> list[str]:
    """The answer, most certain first: 1 which kernel ran, 2 peak memory, 3 GPU time per
    step and attention's share, 4 the regime (host- or GPU-bound, Amdahl ceiling), 5 speed
    with its interval and minimum detectable effect, 6 accuracy equivalence; then the
    A/A noise floor and the tally. Each claim is as strong as its test, no stronger.
    """
    if tables.ok_runs(runs).empty:
        return [
            "No run finished training, so there is no answer yet: see Availability and Runs "
            "below for what was skipped or failed and why."
        ]
    cpu = _on_cpu(runs)
    out = [
        provenance_sentence(runs),
        memory_sentence(summary, comparisons, baseline, alpha),
        gpu_time_sentence(summary, comparisons, baseline, alpha, cpu),
        regime_sentence(summary, baseline, cpu),
        speed_sentence(summary, comparisons, baseline, alpha),
        accuracy_sentence(comparisons, baseline, tost_margin, alpha),
        noise_floor_sentence(comparisons, replica, baseline, alpha),
        _tally(comparisons, alpha, speed_metric(comparisons, summary)),
    ]
    return [s for s in out if s]


def provenance_sentence(runs: pd.DataFrame) -> str:
    """1. Whether every finished run ran the kernel its backend names."""
    ok = tables.ok_runs(runs)
    if "provenance.matched" not in ok:
        return "Kernel provenance was not recorded for these runs: which kernel ran is unproven."
    matched = ok["provenance.matched"].map(_flag)
    if "window_provenance_matched" in ok:
        window = ok["window_provenance_matched"]
        matched &= window.isna() | window.map(_flag)
    arms = []
    if "provenance.dispatched" in ok:
        for backend, group in ok.groupby("backend", sort=False):
            what = "; ".join(dict.fromkeys(str(v) for v in group["provenance.dispatched"].dropna()))
            arms.append(f"{backend}: {what or 'n/a'}")
    bad = ok.loc[~matched, "backend"]
    if not bad.empty:
        names = ", ".join(dict.fromkeys(bad))
        return (
            f"Kernel provenance: {len(bad)} of {len(ok)} finished runs did not match their "
            f"backend's kernel signature ({names}); their numbers do not describe the backend "
            "they are labelled with (see Provenance)."
        )
    return (
        f"Kernel provenance: all {len(ok)} finished runs ran the kernels their backend names, "
        "proven from a profile of real training steps (" + "; ".join(arms) + ")."
    )


def memory_sentence(
    summary: pd.DataFrame, comparisons: pd.DataFrame, baseline: str, alpha: float
) -> str:
    """2. Peak GPU memory: exact where identical across seeds (deterministic)."""
    base = row_where(summary, backend=baseline, metric=MEMORY)
    rows = _arms(comparisons, MEMORY)
    if base is None or not is_finite(base["mean"]) or rows.empty:
        if _finite(summary, MEMORY).empty:
            return "No GPU memory was recorded for these runs (CPU), so memory is not compared."
        return f"Peak GPU memory cannot be compared with {baseline} (no finished baseline run)."
    how = "identical across seeds" if _flag(base.get("identical")) else "varying across seeds"
    parts = [
        f"{r['backend']} {metric_fmt(MEMORY, r['mean'])} MB ({difference_text(r, alpha)})"
        for _, r in rows.iterrows()
    ]
    return (
        f"Peak GPU memory allocated: {baseline} {metric_fmt(MEMORY, base['mean'])} MB "
        f"({how}); " + "; ".join(parts) + "."
    )


def gpu_time_sentence(
    summary: pd.DataFrame, comparisons: pd.DataFrame, baseline: str, alpha: float, cpu: bool
) -> str:
    """3. Device time per step, and attention's share of it."""
    what = "CPU op time per step (no GPU: the profiler's op times)" if cpu else "GPU time per step"
    base = row_where(summary, backend=baseline, metric=GPU_TIME)
    if base is None or not is_finite(base["mean"]):
        return f"{what[0].upper()}{what[1:]} was not recorded (no profiled window in these runs)."

    def share(backend: str) -> str:
        att = row_where(summary, backend=backend, metric=ATTENTION_TIME)
        gpu = row_where(summary, backend=backend, metric=GPU_TIME)
        if att is None or gpu is None or not is_finite(att["mean"]) or not float(gpu["mean"]):
            return ""
        pct = 100 * float(att["mean"]) / float(gpu["mean"])
        return f", attention {metric_fmt(ATTENTION_TIME, att['mean'])} ms of it ({pct:.1f}%)"

    parts = [
        f"{r['backend']} {metric_fmt(GPU_TIME, r['mean'])} ms{share(r['backend'])}: "
        f"{difference_text(r, alpha)}{_verdict(r)}"
        for _, r in _arms(comparisons, GPU_TIME).iterrows()
    ]
    return (
        f"{what}: {baseline} {metric_fmt(GPU_TIME, base['mean'])} ms{share(baseline)}"
        + ("; " + "; ".join(parts) if parts else "")
        + "."
    )


def _verdict(row: pd.Series) -> str:
    verdict = blank(row.get("verdict"))
    if not verdict:
        return ""
    rule = blank(row.get("threshold_rule"))
    return f", {verdict}" + (f" against a threshold of {rule}" if rule else "")


def regime_sentence(summary: pd.DataFrame, baseline: str, cpu: bool) -> str:
    """4. Host- or GPU-bound, from the GPU-busy fraction, and the Amdahl ceiling."""
    busy = row_where(summary, backend=baseline, metric="gpu_busy_fraction")
    step = row_where(summary, backend=baseline, metric=STEP)
    if busy is None or not is_finite(busy["mean"]):
        return ""
    frac = float(busy["mean"])
    device = "the CPU's ops" if cpu else "the GPU"
    if frac < HOST_BOUND:
        regime = (
            "the loop is host-bound (Python and kernel launches), so a faster kernel hardly "
            "reaches the step time"
        )
    elif frac >= GPU_BOUND:
        regime = "the loop is GPU-bound, so kernel savings reach the step time"
    else:
        regime = "the loop is partly host-bound, so only part of a kernel saving reaches the step"
    text = (
        f"Regime: {device} worked {100 * frac:.0f}% of each step of {baseline}"
        + (f" (median step {metric_fmt(STEP, step['mean'])} ms)" if step is not None else "")
        + f": {regime}."
    )
    ceiling = row_where(summary, backend=baseline, metric="max_step_saving_pct")
    if ceiling is not None and is_finite(ceiling["mean"]):
        text += (
            f" Amdahl ceiling: even a zero-cost attention could save at most "
            f"{float(ceiling['mean']):.1f}% of a step of {baseline}."
        )
    return text


def speed_sentence(
    summary: pd.DataFrame, comparisons: pd.DataFrame, baseline: str, alpha: float
) -> str:
    """5. Speed: the difference with its interval, its test, MDE and seeds needed."""
    metric = speed_metric(comparisons, summary)
    label = tables.METRIC_BY_KEY[metric].label
    rows = _arms(comparisons, metric)
    speed = _finite(summary, metric)
    if rows.empty:
        if speed.empty:
            return ""
        best = speed.loc[speed["mean"].astype(float).idxmin()]
        value = f"{label} {metric_fmt(metric, best['mean'])} {tables.METRIC_BY_KEY[metric].unit}"
        if len(speed) == 1:
            return (
                f"Speed: only {best['backend']} finished training ({value}, n = {int(best['n'])}); "
                "there is nothing to compare it with"
                + (
                    "."
                    if best["backend"] == baseline
                    else f" (the baseline {baseline} has no finished run)."
                )
            )
        return (
            f"Speed: {best['backend']} had the shortest {value} (n = {int(best['n'])}), but the "
            f"baseline {baseline} has no finished run, so nothing can be said about how much "
            "faster it is than the baseline."
        )
    best = rows.loc[rows["diff"].astype(float).idxmin()]
    name = best["backend"]
    shown = is_finite(best["p_holm"]) and float(best["p_holm"]) < alpha
    if float(best["diff"]) >= 0:
        lead = f"No backend beat the baseline {baseline} on {label}: the closest, {name},"
    elif shown:
        lead = f"{name} was fastest on {label}:"
    else:
        lead = f"{name} had the shortest {label}:"
    unit = tables.METRIC_BY_KEY[metric].unit
    text = (
        f"Speed: {lead} {metric_fmt(metric, best['mean'])} {unit} against "
        f"{metric_fmt(metric, best['mean_baseline'])} {unit} for {baseline}, "
        f"{difference_text(best, alpha)}{certainty_clause(best, alpha)}"
    )
    return text + power_clause(best) + "."


def power_clause(row: pd.Series) -> str:
    """The minimum detectable effect and the seeds that would resolve the difference."""
    if _flag(row.get("identical")) or not is_finite(row.get("mde")):
        return ""
    metric = str(row["metric"])
    unit = tables.METRIC_BY_KEY[metric].unit
    pct = f" ({float(row['mde_pct']):.1f}%)" if is_finite(row.get("mde_pct")) else ""
    n = "pairs of runs" if row.get("design") == "paired" else "runs a side"
    text = (
        f"; with {int(row['n'])} {n} the smallest difference detectable at 80% power is "
        f"{metric_fmt(metric, row['mde'])} {unit}{pct}"
    )
    needed = row.get("seeds_needed")
    if is_finite(needed):
        text += f", and about {int(float(needed))} seeds would resolve a difference this size"
    elif not is_missing(needed) and str(needed) == "inf":
        text += ", and no practical number of seeds would resolve a difference this size"
    return text + _verdict(row)


def certainty_clause(comp: pd.Series | None, alpha: float) -> str:
    """How sure a comparison row lets us be, as a clause: tested, deterministic or untestable."""
    if comp is not None and (
        _flag(comp.get("identical"))
        or (
            not is_finite(comp["p_holm"])
            and min(comp["n"], comp["n_baseline"]) >= 2
            and "no variance" in str(comp.get("note", ""))
        )
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
    paired = comp.get("design") == "paired"
    test = "paired t-test" if paired else "Welch t-test"
    n = (
        f"{int(comp['n'])} pairs"
        if paired
        else f"n = {int(comp['n'])} vs {int(comp['n_baseline'])}"
    )
    perm = (
        f", sign-flip permutation {p_is(comp['p_perm'])}"
        if paired and is_finite(comp.get("p_perm"))
        else ""
    )
    if p < alpha:
        return f"; the difference is statistically significant ({test}, Holm-adjusted {p_is(p)}{perm}, {n})"
    return (
        f"; the difference is not statistically significant ({test}, Holm-adjusted "
        f"{p_is(p)}{perm}, {n}): more seeds would be needed to tell them apart"
    )


def accuracy_sentence(comparisons: pd.DataFrame, baseline: str, margin: float, alpha: float) -> str:
    """6. Accuracy: paired TOST equivalence of mAP50-95 within ±margin, per arm."""
    rows = _arms(comparisons, ACCURACY)
    if rows.empty:
        return f"mAP50-95 cannot be compared with {baseline} (no finished runs on both sides)."
    parts = []
    for _, comp in rows.iterrows():
        name = comp["backend"]
        diff = f"{name} {fmt_map_diff(comp['diff'])}"
        label = comp["equivalence"]
        eq_ci = interval(comp.get("tost_ci_low"), comp.get("tost_ci_high"), fmt_map_diff)
        if _flag(comp.get("identical")):
            parts.append(f"{diff} (identical across {int(comp['n'])} seeds: {label})")
        elif label == "equivalent":
            parts.append(
                f"{diff}: equivalent within ±{margin:g} ({confidence_text(2 * alpha)} CI "
                f"{eq_ci}, TOST Holm-adjusted {p_is(comp['tost_p_holm'])})"
            )
        elif label == "different":
            parts.append(
                f"{diff}: a real accuracy difference (Holm-adjusted {p_is(comp['p_holm'])}), "
                f"not equivalent within ±{margin:g}"
            )
        elif not is_finite(comp["tost_p"]):
            parts.append(f"{diff}: equivalence cannot be tested with fewer than two runs a side")
        else:
            parts.append(
                f"{diff}: equivalence within ±{margin:g} not shown ({confidence_text(2 * alpha)} "
                f"CI {eq_ci}, TOST Holm-adjusted {p_is(comp['tost_p_holm'])}), nor a difference"
            )
    tested = (rows["equivalence"] == "equivalent").all()
    tail = (
        ": the seed study's 'identical accuracy' holds here as a tested statement."
        if tested
        else "."
    )
    return f"Accuracy (mAP50-95 minus {baseline}): " + "; ".join(parts) + tail


def noise_floor_sentence(
    comparisons: pd.DataFrame, replica: pd.DataFrame | None, baseline: str, alpha: float
) -> str:
    """The A/A control: baseline against its replica, and whether the runs were bit-identical."""
    if comparisons is None or comparisons.empty or "replica" not in comparisons:
        return ""
    rows = comparisons[comparisons["replica"].map(_flag)]
    rows = rows[pd.to_numeric(rows["diff"], errors="coerce").notna()]
    if rows.empty:
        return ""
    name = rows["backend"].iloc[0]
    parts = []
    for metric in (STEP, GPU_TIME, SPEED):
        row = row_where(rows, metric=metric)
        if row is not None:
            parts.append(f"{tables.METRIC_BY_KEY[metric].label} {difference_text(row, alpha)}")
    text = (
        f"Noise floor (A/A: {baseline} trained again as {name}, same kernel and seeds, its "
        "own jobs): " + ("; ".join(parts) if parts else "see the noise-floor table")
    )
    if replica is not None and not replica.empty and "bit_identical" in replica:
        judged = replica[replica["bit_identical"].notna()]
        same = int(judged["bit_identical"].map(_flag).sum())
        if len(judged):
            text += (
                f". The two runs were bit-identical in {same} of {len(judged)} seed(s) "
                "(results.csv losses and metrics, metrics.json accuracy and memory)"
            )
    return text + "."


def _tally(comparisons: pd.DataFrame, alpha: float, metric: str = SPEED) -> str:
    comp = _arms(comparisons, metric)
    if comp.empty or not comp["p_holm"].notna().any():
        return ""
    label = tables.METRIC_BY_KEY[metric].label
    tested = comp[comp["p_holm"].notna()]
    faster = tested[(tested["p_holm"] < alpha) & (tested["diff"] < 0)]["backend"].tolist()
    slower = tested[(tested["p_holm"] < alpha) & (tested["diff"] > 0)]["backend"].tolist()
    base = tested["baseline"].iloc[0]
    parts = [f"Of {len(tested)} backend(s) tested against {base} on {label}"]
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


def caveats(
    runs: pd.DataFrame,
    dataset: Mapping[str, Any],
    reason: str,
    drift: pd.DataFrame | None = None,
    alpha: float = 0.05,
) -> list[str]:
    """What limits the answer: demo data, single seeds, skipped or failed runs, kernel
    mismatch, drift over run order."""
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
