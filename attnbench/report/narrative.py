"""The report's narrative: the answer in a few sentences (what limits it is in `caveats`).

The wording follows the statistics (significance, equivalence, too few runs), so the page
never claims more than the tests in the comparisons table show.
"""

from __future__ import annotations

import pandas as pd

from attnbench.analysis import tables
from attnbench.report import narrative_scope, timing_report
from attnbench.report.clauses import certainty_clause, difference_text, power_clause, verdict_clause
from attnbench.report.formatting import (
    confidence_text,
    fmt_map_diff,
    interval,
    is_finite,
    metric_fmt,
    p_is,
)
from attnbench.report.lookups import (
    ACCURACY,
    ATTENTION_TIME,
    GPU_TIME,
    MEMORY,
    SPEED,
    STEP,
    compared_arms,
    finite_rows,
    on_cpu,
    row_where,
    speed_metric,
    truthy,
)

HOST_BOUND, GPU_BOUND = 0.5, 0.8  # GPU-busy fraction below / above which a step is ...


def headline(
    summary: pd.DataFrame,
    comparisons: pd.DataFrame,
    runs: pd.DataFrame,
    baseline: str,
    alpha: float,
    tost_margin: float,
    replica: pd.DataFrame | None = None,
    paired: pd.DataFrame | None = None,
) -> list[str]:
    """The answer, most certain first: 1 which kernel ran, 2 peak memory, 3 GPU time per
    step and attention's share, 4 the regime (host- or GPU-bound, Amdahl ceiling), 5 speed
    (`speed_statement`: from the paired timing when it ran, else "not resolved"),
    6 accuracy equivalence; then the A/A noise floor. Each claim is as strong as its test,
    no stronger.
    """
    if tables.ok_runs(runs).empty:
        return [
            "No run finished training, so there is no answer yet: see Availability and Runs "
            "below for what was skipped or failed and why."
        ]
    cpu = on_cpu(runs)
    out = [
        provenance_sentence(runs),
        memory_sentence(summary, comparisons, baseline, alpha),
        gpu_time_sentence(summary, comparisons, baseline, alpha, cpu),
        regime_sentence(summary, baseline, cpu),
        speed_statement(summary, comparisons, baseline, paired, cpu),
        accuracy_sentence(comparisons, baseline, tost_margin, alpha, summary),
        noise_floor_sentence(comparisons, replica, baseline, alpha, cpu),
    ]
    return [s for s in out if s]


def speed_statement(
    summary: pd.DataFrame,
    comparisons: pd.DataFrame,
    baseline: str,
    paired: pd.DataFrame | None,
    cpu: bool = False,
) -> str:
    """5. Wall time only as resolved: the paired timing's ratios with their intervals when
    it ran, else that wall time was not resolved and why (never an across-process claim)."""
    if paired is not None:
        return timing_report.paired_sentence(paired)
    return timing_report.unresolved_sentence(comparisons, summary, baseline, cpu)


def across_processes(
    summary: pd.DataFrame, comparisons: pd.DataFrame, baseline: str, alpha: float
) -> str:
    """The separate train jobs' speed comparison and tally, for the wall-time section
    (labelled there as unresolved: it is not the headline's speed statement)."""
    text = speed_sentence(summary, comparisons, baseline, alpha)
    tally = _tally(comparisons, alpha, speed_metric(comparisons, summary))
    return " ".join(s for s in (text, tally) if s)


def provenance_sentence(runs: pd.DataFrame) -> str:
    """1. Whether every finished run ran the kernel its backend names."""
    ok = tables.ok_runs(runs)
    if "provenance.matched" not in ok:
        return "Kernel provenance was not recorded for these runs: which kernel ran is unproven."
    matched = ok["provenance.matched"].map(truthy)
    if "window_provenance_matched" in ok:
        window = ok["window_provenance_matched"]
        matched &= window.isna() | window.map(truthy)
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
    rows = compared_arms(comparisons, MEMORY)
    if base is None or not is_finite(base["mean"]) or rows.empty:
        if finite_rows(summary, MEMORY).empty:
            return "No GPU memory was recorded for these runs (CPU), so memory is not compared."
        return f"Peak GPU memory cannot be compared with {baseline} (no finished baseline run)."
    how = "identical across seeds" if truthy(base.get("identical")) else "varying across seeds"
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
        f"{difference_text(r, alpha)}{verdict_clause(r)}"
        for _, r in compared_arms(comparisons, GPU_TIME).iterrows()
    ]
    return (
        f"{what}: {baseline} {metric_fmt(GPU_TIME, base['mean'])} ms{share(baseline)}"
        + ("; " + "; ".join(parts) if parts else "")
        + "."
    )


def regime_sentence(summary: pd.DataFrame, baseline: str, cpu: bool) -> str:
    """4. Host- or GPU-bound, from the GPU-busy fraction, and the Amdahl ceiling.

    Only with a GPU: on a CPU the profiler's op time overlaps the step itself (ops run on
    several threads), so no regime and no ceiling follow from it.
    """
    busy = row_where(summary, backend=baseline, metric="gpu_busy_fraction")
    step = row_where(summary, backend=baseline, metric=STEP)
    if busy is None or not is_finite(busy["mean"]):
        return ""
    if cpu:
        return (
            "Regime: not measurable here: no GPU was used, so whether a faster attention "
            "kernel would reach the step time is not something these runs can say."
        )
    frac = float(busy["mean"])
    device = "the GPU"
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
    rows = compared_arms(comparisons, metric)
    speed = finite_rows(summary, metric)
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


def accuracy_sentence(
    comparisons: pd.DataFrame,
    baseline: str,
    margin: float,
    alpha: float,
    summary: pd.DataFrame | None = None,
) -> str:
    """6. Accuracy: paired TOST equivalence of mAP50-95 within ±margin, per arm.

    An accuracy that is 0 in every run of both arms, or one value in every run of both
    (per `summary`), measured nothing: "not measurable here", never "equivalent". A
    difference identical in every seed, where the accuracy itself varied, is exact.
    """
    rows = compared_arms(comparisons, ACCURACY)
    if rows.empty:
        return f"mAP50-95 cannot be compared with {baseline} (no finished runs on both sides)."
    summary = pd.DataFrame() if summary is None else summary
    why = {
        r["backend"]: narrative_scope.unmeasurable(summary, ACCURACY, r["backend"], baseline)
        for _, r in rows.iterrows()
    }
    if all(why.values()):
        reasons = "; ".join(dict.fromkeys(why.values()))
        return (
            f"Accuracy (mAP50-95 against {baseline}): {narrative_scope.NOT_MEASURABLE} "
            f"({reasons}), so whether the backends are equivalent cannot be judged from "
            "these runs."
        )
    parts = []
    for _, comp in rows.iterrows():
        name = comp["backend"]
        diff = f"{name} {fmt_map_diff(comp['diff'])}"
        label = comp["equivalence"]
        eq_ci = interval(comp.get("tost_ci_low"), comp.get("tost_ci_high"), fmt_map_diff)
        if why[name]:
            parts.append(f"{name}: {narrative_scope.NOT_MEASURABLE} ({why[name]})")
        elif truthy(comp.get("identical")):
            parts.append(
                f"{diff} (identical in each of {int(comp['n'])} seeds: the exact difference, "
                "not a test)"
            )
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
    tested = (rows["equivalence"] == "equivalent").all() and not any(
        truthy(v) for v in rows["identical"]
    )
    tail = (
        ": the seed study's 'identical accuracy' holds here as a tested statement."
        if tested
        else "."
    )
    return f"Accuracy (mAP50-95 minus {baseline}): " + "; ".join(parts) + tail


def noise_floor_sentence(
    comparisons: pd.DataFrame,
    replica: pd.DataFrame | None,
    baseline: str,
    alpha: float,
    cpu: bool = False,
) -> str:
    """The A/A control: baseline against its replica, and whether the runs were bit-identical."""
    if comparisons is None or comparisons.empty or "replica" not in comparisons:
        return ""
    rows = comparisons[comparisons["replica"].map(truthy)]
    rows = rows[pd.to_numeric(rows["diff"], errors="coerce").notna()]
    if rows.empty:
        return ""
    name = rows["backend"].iloc[0]
    parts = []
    for metric in (STEP, GPU_TIME, SPEED):
        row = row_where(rows, metric=metric)
        if row is not None:
            parts.append(f"{narrative_scope.label(metric, cpu)} {difference_text(row, alpha)}")
    text = (
        f"Noise floor (A/A: {baseline} trained again as {name}, same kernel and seeds, its "
        "own jobs): " + ("; ".join(parts) if parts else "see the noise-floor table")
    )
    if replica is not None and not replica.empty and "bit_identical" in replica:
        judged = replica[replica["bit_identical"].notna()]
        same = int(judged["bit_identical"].map(truthy).sum())
        if len(judged):
            text += (
                f". The two runs were bit-identical in {same} of {len(judged)} seed(s) "
                "(results.csv losses and metrics, metrics.json accuracy and memory)"
            )
    return text + "."


def _tally(comparisons: pd.DataFrame, alpha: float, metric: str = SPEED) -> str:
    comp = compared_arms(comparisons, metric)
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
