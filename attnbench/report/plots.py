"""The report's figures, drawn with seaborn from the tables that `stats` writes.

Every figure renders with matplotlib's Agg backend and its bundled DejaVu Sans (nothing is
downloaded), and every figure still renders when its data is missing: CPU runs have no GPU
memory, a single seed has no interval, a CPU host may have no kernel sweep. In those cases
the figure says so instead of failing the workflow. The look is `plot_style`'s, the
numbers drawn come from `plot_data`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullFormatter

from attnbench import stats
from attnbench.analysis import tables
from attnbench.report.plot_data import (
    BREAKDOWN_PARTS,
    ci_label,
    confidence_of,
    error_bars,
    step_breakdown_frame,
)
from attnbench.report.plot_style import message, palette, save, theme

CURVES = (
    ("metrics/mAP50-95(B)", "mAP50-95"),
    ("metrics/mAP50(B)", "mAP50"),
    ("train/box_loss", "train box loss"),
    ("val/box_loss", "val box loss"),
    ("train/cls_loss", "train cls loss"),
    ("val/cls_loss", "val cls loss"),
)
GPU_METRICS = {"peak_alloc_mb", "peak_reserved_mb", "peak_device_used_mb"}
ACCURACY_CURVES = {"metrics/mAP50-95(B)", "metrics/mAP50(B)"}


def _backend_legend(fig: plt.Figure, colours: Mapping[str, tuple], order: Sequence[str]) -> None:
    """One legend for the figure, below the panels, so it covers neither data nor titles."""
    handles = [Line2D([], [], color=colours[b], marker="o", label=b) for b in order]
    fig.legend(
        handles=handles, title="backend", loc="outside lower center", ncols=min(len(order), 6)
    )


def plot_curves(
    epochs: pd.DataFrame,
    path: str | os.PathLike,
    order: Sequence[str] | None = None,
    confidence: float | None = None,
) -> None:
    """Per-epoch mAP and losses, mean over seeds with a t-interval band, per backend.

    `confidence` None is the schema's default level (1 - analysis.alpha).
    """
    if confidence is None:
        confidence = confidence_of(pd.DataFrame())
    data = epochs
    if "status" in data:
        data = data[data["status"] == "ok"]
    present = [(col, label) for col, label in CURVES if col in data and data[col].notna().any()]
    if data.empty or not present or "epoch" not in data:
        message(path, "Training curves", "no per-epoch results (no run finished training)")
        return
    order = [b for b in (order or []) if b in set(data["backend"])] or list(
        dict.fromkeys(data["backend"])
    )
    colours = palette(order)
    ncols = 2
    nrows = math.ceil(len(present) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(11, 3.2 * nrows), squeeze=False, layout="constrained"
    )
    for ax, (col, label) in zip(axes.flat, present, strict=False):
        frame = data[["backend", "epoch", col]].dropna()
        ax.set_title(label)
        if col in ACCURACY_CURVES and (frame[col] == 0).all():
            # Nothing learned yet (the demo's one epoch): no flat line that looks like a result.
            ax.text(0.5, 0.5, f"{label} is 0 in every run and epoch:\nnot measurable here",
                    ha="center", va="center", transform=ax.transAxes)  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        sns.lineplot(
            data=frame,
            x="epoch",
            y=col,
            hue="backend",
            hue_order=order,
            palette=colours,
            # The same t-interval as the tables (NaN, so no band, below two seeds).
            errorbar=lambda v: stats.t_interval(v, confidence),
            marker="o",  # one epoch is one point: still visible
            ax=ax,
            legend=False,
        )
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in list(axes.flat)[len(present) :]:
        ax.set_axis_off()
    _backend_legend(fig, colours, order)
    n_seeds = sorted(set(data.groupby("backend")["seed"].nunique()))
    seeds = "-".join(str(n) for n in dict.fromkeys([n_seeds[0], n_seeds[-1]]))
    band = f"band = {ci_label(confidence)} t-interval" if n_seeds[-1] > 1 else "no band: one seed"
    fig.suptitle(f"Training curves: mean over seeds ({seeds} per backend), {band}")
    save(fig, path)


def _per_seed_panel(
    ax: plt.Axes,
    ok: pd.DataFrame,
    summary: pd.DataFrame,
    metric: str,
    order: Sequence[str],
    colours: Mapping[str, tuple[float, float, float]],
    baseline: str | None,
) -> bool:
    """One panel: a dot per seed, the mean with its t-interval; False if no data at all."""
    info = tables.METRIC_BY_KEY.get(metric)
    label = info.heading if info else metric
    ax.set_title(label)
    frame = ok[["backend", metric]].dropna() if metric in ok else pd.DataFrame()
    have = [b for b in order if not frame.empty and b in set(frame["backend"])]
    if not have:
        why = "no GPU memory recorded (CPU runs)" if metric in GPU_METRICS else "no data"
        ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return False
    sns.stripplot(
        data=frame,
        x="backend",
        y=metric,
        order=have,
        hue="backend",
        hue_order=have,
        palette=colours,
        legend=False,
        jitter=0.12,
        size=7,
        alpha=0.75,
        ax=ax,
    )
    rows = summary[summary["metric"] == metric].set_index("backend") if not summary.empty else None
    for i, backend in enumerate(have):
        if rows is None or backend not in rows.index:
            continue
        row = rows.loc[backend]
        mean = row["mean"]
        ax.errorbar(
            i + 0.3, mean, yerr=error_bars(row), fmt="D", color="black", capsize=5, markersize=6
        )
        if baseline == backend:
            ax.axhline(mean, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("")
    ax.set_ylabel(label)
    ax.tick_params(axis="x", rotation=30)
    return True


def plot_per_seed(
    runs: pd.DataFrame,
    summary: pd.DataFrame,
    metrics: Sequence[str],
    path: str | os.PathLike,
    title: str,
    baseline: str | None = None,
) -> None:
    """Dots per seed, black diamond = mean with its t-interval, dashed line = baseline mean."""
    order = tables.backend_order(runs, baseline)
    colours = palette(order)
    ok = tables.ok_runs(runs)
    ncols = min(2, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    width = max(5.5, 0.9 * len(order) + 2.5)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width * ncols, 3.8 * nrows), squeeze=False, layout="constrained"
    )
    for ax, metric in zip(axes.flat, metrics, strict=False):
        _per_seed_panel(ax, ok, summary, metric, order, colours, baseline)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_axis_off()
    fig.suptitle(
        f"{title}: dot = one seed, diamond = mean with {ci_label(confidence_of(summary))} t-interval"
    )
    save(fig, path)


def plot_epoch_time(
    runs: pd.DataFrame, summary: pd.DataFrame, path: str | os.PathLike, baseline: str | None
) -> None:
    plot_per_seed(runs, summary, ["epoch_loop_s", "epoch_time_s"], path, "Epoch time", baseline)


def plot_memory(
    runs: pd.DataFrame, summary: pd.DataFrame, path: str | os.PathLike, baseline: str | None
) -> None:
    metrics = ["peak_alloc_mb", "peak_reserved_mb", "peak_device_used_mb", "host_peak_rss_mb"]
    plot_per_seed(runs, summary, metrics, path, "Peak memory", baseline)


def plot_speed_memory(
    runs: pd.DataFrame, summary: pd.DataFrame, path: str | os.PathLike, baseline: str | None
) -> None:
    """Throughput against peak GPU memory (host RSS when no GPU memory exists, said so)."""
    ok = tables.ok_runs(runs)
    x_metric = "peak_alloc_mb"
    note = ""
    if x_metric not in ok or ok[x_metric].notna().sum() == 0:
        x_metric, note = "host_peak_rss_mb", " (no GPU memory recorded: host RSS instead)"
    y_metric = "images_per_s"
    if ok.empty or ok[[x_metric, y_metric]].dropna().empty:
        message(path, "Speed against memory", "no finished runs with speed and memory")
        return
    order = tables.backend_order(runs, baseline)
    colours = palette(order)
    frame = ok[["backend", x_metric, y_metric]].dropna()
    fig, ax = plt.subplots(figsize=(7.5, 5), layout="constrained")
    sns.scatterplot(
        data=frame,
        x=x_metric,
        y=y_metric,
        hue="backend",
        hue_order=[b for b in order if b in set(frame["backend"])],
        palette=colours,
        alpha=0.45,
        s=35,
        ax=ax,
    )
    table = summary.set_index(["backend", "metric"]) if not summary.empty else None
    for backend in dict.fromkeys(frame["backend"]):
        if table is None or (backend, x_metric) not in table.index:
            continue
        xs, ys = table.loc[(backend, x_metric)], table.loc[(backend, y_metric)]
        xerr = error_bars(xs)
        yerr = error_bars(ys)
        ax.errorbar(
            xs["mean"],
            ys["mean"],
            xerr=xerr,
            yerr=yerr,
            fmt="D",
            color=colours[backend],
            markeredgecolor="black",
            capsize=4,
        )
        ax.annotate(
            backend,
            (xs["mean"], ys["mean"]),
            textcoords="offset points",
            xytext=(6, 6),
            fontsize=9,
        )
    x_info, y_info = tables.METRIC_BY_KEY[x_metric], tables.METRIC_BY_KEY[y_metric]
    ax.set_xlabel(f"{x_info.heading}{note}")
    ax.set_ylabel(y_info.heading)
    ax.set_title(
        "Speed against memory: up and left is better; diamond = mean, "
        f"bars = {ci_label(confidence_of(summary))} CI"
    )
    if ax.get_legend() is not None:
        ax.get_legend().remove()  # the figure's own legend, beside the axes, covers no point
    shown = [b for b in order if b in set(frame["backend"])]
    _backend_legend(fig, colours, shown)
    save(fig, path)


def plot_kernels(
    kernels: pd.DataFrame, path: str | os.PathLike, order: Sequence[str] | None = None
) -> None:
    """Kernel time against sequence length from the sweep rows, log-log, one panel per dtype."""
    needed = {"kind", "N", "backend"}
    if kernels.empty or not needed <= set(kernels):
        message(path, "Kernel micro-benchmark", "no kernel data")
        return
    data = kernels[kernels["kind"] == "sweep"].copy()
    if "status" in data:
        data = data[data["status"] == "ok"]
    y = "fwdbwd_ms" if "fwdbwd_ms" in data and data["fwdbwd_ms"].notna().any() else "fwd_ms"
    if y not in data:
        message(path, "Kernel micro-benchmark", "no kernel data")
        return
    data["N"] = pd.to_numeric(data["N"], errors="coerce")
    data[y] = pd.to_numeric(data[y], errors="coerce")
    data = data.dropna(subset=["N", y])
    if data.empty:
        message(path, "Kernel micro-benchmark", "no kernel data")
        return
    if "dtype" not in data:
        data["dtype"] = "n/a"
    data["dtype"] = data["dtype"].fillna("n/a")
    shape_cols = [c for c in ("B", "heads", "head_dim") if c in data]
    data["shape"] = (
        (data[shape_cols].apply(pd.to_numeric, errors="coerce").astype("Int64").astype(str)).agg(
            "x".join, axis=1
        )
        if shape_cols
        else "-"
    )
    order = [b for b in (order or []) if b in set(data["backend"])] or list(
        dict.fromkeys(data["backend"])
    )
    grid = sns.relplot(
        data=data,
        x="N",
        y=y,
        hue="backend",
        hue_order=order,
        palette=palette(order),
        style="shape" if data["shape"].nunique() > 1 else None,
        col="dtype",
        kind="line",
        marker="o",
        errorbar=None,
        height=3.8,
        aspect=1.1,
        facet_kws={"sharey": False},
    )
    grid.set(xscale="log", yscale="log")
    lengths = sorted(data["N"].unique())
    for ax in grid.axes.flat:
        ax.set_xticks(lengths, [f"{n:g}" for n in lengths])
        ax.xaxis.set_minor_formatter(NullFormatter())
        low, high = ax.get_ylim()
        if low > 0 and high / low < 10:
            # Less than a decade: log ticks would be minor labels (1.8595 x 10^0) that run
            # into the next panel; a linear axis reads better there.
            ax.set_yscale("linear")
    what = "forward+backward" if y == "fwdbwd_ms" else "forward"
    grid.set_axis_labels("sequence length N (tokens)", f"{what} time (ms)")
    title = f"Kernel {what} time against sequence length"
    if shape_cols and data["shape"].nunique() == 1:
        title += f" (B x heads x head_dim = {data['shape'].iloc[0]})"
    grid.figure.suptitle(title, y=1.03)
    save(grid.figure, path, tight=True)


def plot_step_breakdown(
    runs: pd.DataFrame, path: str | os.PathLike, baseline: str | None = None
) -> None:
    """One stacked bar per arm: where a training step's time goes (medians over seeds)."""
    frame = step_breakdown_frame(runs, baseline)
    title = "Where a training step goes"
    if frame.empty:
        message(path, title, "no per-step breakdown recorded (no run with the step keys)")
        return
    ok = tables.ok_runs(runs)
    cpu = "device" in ok and not ok["device"].astype(str).str.startswith("cuda").any()
    colours = sns.color_palette("colorblind", len(BREAKDOWN_PARTS))
    fig, ax = plt.subplots(figsize=(9, 1.6 + 0.55 * len(frame)), layout="constrained")
    y = np.arange(len(frame))[::-1]
    left = np.zeros(len(frame))
    for (key, label), colour in zip(BREAKDOWN_PARTS, colours, strict=True):
        if cpu:
            label = label.replace("GPU time", "CPU op time").replace("by the GPU", "by ops")
        values = frame[key].to_numpy(float)
        ax.barh(y, values, left=left, color=colour, label=label, height=0.6)
        left += values
    for yi, (_, row) in zip(y, frame.iterrows(), strict=True):
        total = max(row["step_ms"], row["attention_ms"] + row["other_gpu_ms"])
        share = 100 * row["attention_ms"] / total if total else math.nan
        ax.annotate(
            f"{row['step_ms']:.3g} ms (attention {share:.1f}%, n = {int(row['n'])})",
            (total, yi),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax.set_yticks(y, frame["backend"])
    ax.set_xlabel("ms per training step (median over seeds)")
    ax.set_xlim(0, float(left.max()) * 1.45 or 1.0)
    # Below the axes: inside, it covered the last bar's label.
    fig.legend(loc="outside lower center", ncols=len(BREAKDOWN_PARTS), fontsize=8)
    what = "CPU op time (no GPU)" if cpu else "profiled GPU time"
    ax.set_title(f"{title}: {what} against the median step time", loc="left")
    save(fig, path)


def make_all(
    runs: pd.DataFrame,
    epochs: pd.DataFrame,
    kernels: pd.DataFrame,
    summary: pd.DataFrame,
    outputs: Mapping[str, str | os.PathLike],
    baseline: str | None = None,
) -> None:
    """Every figure of the `plots` rule; `outputs` maps its output names to paths."""
    theme()
    order = tables.backend_order(runs, baseline)
    plot_curves(epochs, outputs["curves"], order, confidence_of(summary))
    plot_epoch_time(runs, summary, outputs["epoch_time"], baseline)
    plot_memory(runs, summary, outputs["memory"], baseline)
    plot_speed_memory(runs, summary, outputs["speed_memory"], baseline)
    plot_kernels(kernels, outputs["kernels"], order)
    if "step_breakdown" in outputs:
        plot_step_breakdown(runs, outputs["step_breakdown"], baseline)
