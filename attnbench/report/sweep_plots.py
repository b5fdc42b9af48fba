"""The sweep's figures, drawn with seaborn from sweep_summary.csv and sweep_max_batch.csv.

One look with the study's other figures (`attnbench.report.plot_style`: theme, colours, atomic PNGs).
Every figure renders when its data is missing (a CPU run has no GPU memory, a sweep
without `find_max_batch` has no largest batches) and then says so.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import ListedColormap

from attnbench import grid
from attnbench.report.plot_style import message, palette, save, theme

EFFECTS = (
    ("step_speedup", "wall-time speed-up (x, paired)", 1.0),
    ("gpu_speedup", "GPU-time speed-up (x)", 1.0),
    ("memory_saving_pct", "peak memory saving (%)", 0.0),
)


def setting_label(row: pd.Series) -> str:
    """A facet's name: image size and batch (and the compile mode when it is on)."""
    label = f"imgsz {int(row['imgsz'])}, batch {int(row['batch'])}"
    return label if row.get("compile", "off") == "off" else f"{label}, compile {row['compile']}"


def _prepare(summary: pd.DataFrame) -> pd.DataFrame:
    frame = summary.copy()
    frame["setting"] = frame.apply(setting_label, axis=1)
    frame["scale_rank"] = frame["model_name"].map(grid.scale_rank)
    return frame.sort_values(["scale_rank", "imgsz", "batch"], kind="stable")


def _settings(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame.sort_values(["imgsz", "batch"])["setting"]))


def _scale_axis(ax: plt.Axes, frame: pd.DataFrame) -> None:
    ticks = frame[["scale_rank", "model_name"]].drop_duplicates().sort_values("scale_rank")
    ax.set_xticks(ticks["scale_rank"].tolist(), ticks["model_name"].tolist())
    ax.set_xlabel("model")


def _lines(ax, data: pd.DataFrame, y: str, colours: dict, backends: Sequence[str]) -> None:
    data = data.dropna(subset=[y])
    if data.empty:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return
    sns.lineplot(
        data=data, x="scale_rank", y=y, hue="backend", hue_order=[b for b in backends if b in set(data["backend"])],
        palette=colours, marker="o", ax=ax, legend=False, errorbar=None,
    )  # fmt: skip


def _legend(fig: plt.Figure, colours: dict, backends: Sequence[str]) -> None:
    handles = [plt.Line2D([], [], color=colours[b], marker="o", label=b) for b in backends]
    fig.legend(handles=handles, loc="outside right upper", title="backend")


def speedup(
    summary: pd.DataFrame, baseline: str, backends: Sequence[str], path: str | os.PathLike
) -> None:
    """Speed-up (paired wall time, GPU time) and memory saving against the baseline, by scale."""
    theme()
    others = [b for b in backends if b != baseline]
    frame = _prepare(summary) if not summary.empty else summary
    if (
        frame.empty
        or not others
        or frame[frame["backend"].isin(others)][[e[0] for e in EFFECTS]].isna().all().all()
    ):
        message(
            path,
            "Speed-up and memory saving",
            f"No backend besides {baseline} finished with a {baseline} run beside it.",
        )
        return
    settings = _settings(frame)
    colours = palette(backends)
    fig, axes = plt.subplots(
        len(EFFECTS), len(settings), figsize=(3.6 * len(settings) + 1.6, 2.6 * len(EFFECTS)),
        squeeze=False, sharex=True, sharey="row", layout="constrained",
    )  # fmt: skip
    data = frame[frame["backend"].isin(others)]
    for i, (column, label, reference) in enumerate(EFFECTS):
        for j, setting in enumerate(settings):
            ax = axes[i][j]
            _lines(ax, data[data["setting"] == setting], column, colours, others)
            ax.axhline(reference, color="0.4", lw=1, ls="--")
            _scale_axis(ax, frame)
            ax.set_ylabel(label if j == 0 else "")
            if i == 0:
                ax.set_title(setting)
    _legend(fig, colours, others)
    fig.suptitle(
        f"Against {baseline} in the same cell (wall time: paired blocks in one process; "
        "GPU time and memory: median of repeats; dashed: no change)"
    )
    save(fig, path)


def gpu_busy(summary: pd.DataFrame, backends: Sequence[str], path: str | os.PathLike) -> None:
    """GPU-busy fraction (GPU time per step over step time) by scale: host- or GPU-bound."""
    theme()
    if summary.empty or summary["gpu_busy_fraction"].isna().all():
        message(path, "GPU-busy fraction", "No point finished with a profiled window.")
        return
    frame = _prepare(summary)
    settings = _settings(frame)
    colours = palette(backends)
    fig, axes = plt.subplots(1, len(settings), figsize=(3.6 * len(settings) + 1.6, 3.2),
                             squeeze=False, sharey=True, layout="constrained")  # fmt: skip
    for j, setting in enumerate(settings):
        ax = axes[0][j]
        _lines(ax, frame[frame["setting"] == setting], "gpu_busy_fraction", colours, backends)
        ax.axhline(1.0, color="0.4", lw=1, ls="--")
        _scale_axis(ax, frame)
        ax.set_title(setting)
        ax.set_ylabel("GPU time / step time" if j == 0 else "")
        ax.set_ylim(bottom=0)
    _legend(fig, colours, backends)
    fig.suptitle("How busy the GPU is (1 = GPU-bound; well below 1 = host-bound)")
    save(fig, path)


def max_batch(frame: pd.DataFrame, backends: Sequence[str], path: str | os.PathLike) -> None:
    """The largest batch that trains, by scale, per backend and image size."""
    theme()
    data = frame.dropna(subset=["max_batch"]) if not frame.empty else frame
    if data.empty:
        message(
            path,
            "Largest batch",
            "No largest-batch search ran (sweep.find_max_batch: false) or none fitted.",
        )
        return
    data = data.assign(scale_rank=data["model_name"].map(grid.scale_rank)).sort_values("scale_rank")
    sizes = sorted(data["imgsz"].unique())
    colours = palette(backends)
    order = list(dict.fromkeys(data["model_name"]))
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes) + 1.6, 3.4), squeeze=False,
                             layout="constrained")  # fmt: skip
    present = [b for b in backends if b in set(data["backend"])]
    for j, imgsz in enumerate(sizes):
        ax = axes[0][j]
        part = data[data["imgsz"] == imgsz]
        sns.barplot(data=part, x="model_name", y="max_batch", hue="backend", order=order,
                    hue_order=present, palette=colours, ax=ax, legend=False)  # fmt: skip
        for container in ax.containers:
            ax.bar_label(container, fmt="%d", fontsize=8)
        limited = part[part["limited_by"] == "limit"]
        note = " (some at the search limit)" if len(limited) else ""
        ax.set_title(f"imgsz {int(imgsz)}{note}")
        ax.set_xlabel("model")
        ax.set_ylabel("largest batch that trains" if j == 0 else "")
    _legend(fig, colours, present)
    save(fig, path)


def fastest(
    summary: pd.DataFrame, baseline: str, backends: Sequence[str], path: str | os.PathLike
) -> None:
    """Heat map: the fastest backend (paired wall time) per model and setting."""
    theme()
    winners = (
        summary[summary["fastest"].astype(str).str.lower() == "true"]
        if not summary.empty
        else summary
    )
    if winners.empty:
        message(path, "Fastest backend", "No cell has a paired wall-time ratio.")
        return
    frame = _prepare(winners)
    settings = _settings(frame)
    models = list(dict.fromkeys(frame["model_name"]))
    codes = {b: i for i, b in enumerate(backends)}
    grid = np.full((len(models), len(settings)), np.nan)
    text = [["" for _ in settings] for _ in models]
    for _, row in frame.iterrows():
        i, j = models.index(row["model_name"]), settings.index(row["setting"])
        grid[i, j] = codes.get(row["backend"], np.nan)
        ratio = row.get("step_speedup")
        versus = (
            f"\n{ratio:.2f}x vs {baseline}"
            if pd.notna(ratio) and row["backend"] != baseline
            else ""
        )
        text[i][j] = f"{row['backend']}{versus}"
    colours = palette(backends)
    cmap = ListedColormap([colours[b] for b in backends])
    fig, ax = plt.subplots(
        figsize=(2.4 * len(settings) + 2, 0.8 * len(models) + 1.6), layout="constrained"
    )
    sns.heatmap(grid, ax=ax, cmap=cmap, vmin=-0.5, vmax=len(backends) - 0.5, cbar=False,
                annot=np.array(text, dtype=object), fmt="", linewidths=1, linecolor="white",
                annot_kws={"fontsize": 9})  # fmt: skip
    ax.set_xticklabels(settings, rotation=0)
    ax.set_yticklabels(models, rotation=0)
    ax.set_xlabel("")
    ax.set_ylabel("model")
    ax.set_title(
        "Fastest backend by paired wall time (within its interval a tie is possible: see the table)"
    )
    save(fig, path)


def draw_all(summary: pd.DataFrame, max_batches: pd.DataFrame, baseline: str,
             backends: Sequence[str], paths: dict[str, str | os.PathLike]) -> None:  # fmt: skip
    """Every sweep figure; `paths` maps speedup, gpu_busy, max_batch, fastest to PNG paths."""
    speedup(summary, baseline, backends, paths["speedup"])
    gpu_busy(summary, backends, paths["gpu_busy"])
    max_batch(max_batches, backends, paths["max_batch"])
    fastest(summary, baseline, backends, paths["fastest"])
