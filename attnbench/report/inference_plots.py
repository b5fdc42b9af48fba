"""The inference figures, from inference.csv: latency and peak memory against image size.

A line per backend, a panel per (model, batch, compile); out-of-memory jobs are marked
with an x at the top of their panel. A figure whose data is missing (a CPU run has no GPU
memory) still renders and says so.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd

from attnbench import grid
from attnbench.report.plots import message, palette, save, theme


def panel_label(model: str, batch: int, compile_: str) -> str:
    label = f"{model}, batch {int(batch)}"
    return label if compile_ == "off" else f"{label}, compile {compile_}"


def _panels(jobs: pd.DataFrame) -> list[tuple[str, int, str]]:
    keys = jobs[["model_name", "batch", "compile"]].drop_duplicates()
    keys = keys.assign(_s=keys["model_name"].map(grid.scale_rank))
    keys = keys.sort_values(["_s", "model_name", "batch", "compile"], kind="stable")
    return [(r.model_name, int(r.batch), r.compile) for r in keys.itertuples()]


def _draw(jobs: pd.DataFrame, column: str, ylabel: str, title: str, backends: Sequence[str],
          path: str | os.PathLike, empty: str) -> None:  # fmt: skip
    theme()
    ok = jobs[jobs["status"] == "ok"] if not jobs.empty else jobs
    values = pd.to_numeric(ok[column], errors="coerce") if not ok.empty else pd.Series([])
    if ok.empty or values.isna().all():
        message(path, title, empty)
        return
    panels = _panels(jobs)
    cols = min(len(panels), 4)
    rows = -(-len(panels) // cols)
    colours = palette(backends)
    fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols + 1.8, 3.2 * rows), squeeze=False,
                             layout="constrained")  # fmt: skip
    for ax in axes.flat[len(panels) :]:
        ax.set_axis_off()
    shown = []
    for ax, (model, batch, comp) in zip(axes.flat, panels, strict=False):
        here = jobs[
            (jobs["model_name"] == model) & (jobs["batch"] == batch) & (jobs["compile"] == comp)
        ]
        sizes = sorted(pd.to_numeric(here["imgsz"]).unique())
        top = pd.to_numeric(here.loc[here["status"] == "ok", column], errors="coerce").max()
        for backend in [b for b in backends if b in set(here["backend"])]:
            mine = here[here["backend"] == backend].sort_values("imgsz")
            good = mine[mine["status"] == "ok"]
            y = pd.to_numeric(good[column], errors="coerce")
            if y.notna().any():
                ax.plot(good["imgsz"], y, marker="o", color=colours[backend], label=backend)
                shown.append(backend)
            oom = mine[mine["status"] == "oom"]
            if len(oom) and pd.notna(top):
                ax.scatter(oom["imgsz"], [top * 1.15] * len(oom), marker="x", s=60,
                           color=colours[backend])  # fmt: skip
        ax.set_xticks(sizes, [str(int(s)) for s in sizes])
        ax.set_xlabel("image size (px)")
        ax.set_ylabel(ylabel)
        ax.set_yscale("log")
        ax.set_title(panel_label(model, batch, comp))
    handles = [plt.Line2D([], [], color=colours[b], marker="o", label=b)
               for b in backends if b in shown]  # fmt: skip
    handles.append(plt.Line2D([], [], color="0.3", marker="x", ls="", label="out of memory"))
    fig.legend(handles=handles, loc="outside right upper", title="backend")
    fig.suptitle(title)
    save(fig, path)


def latency(jobs: pd.DataFrame, backends: Sequence[str], path: str | os.PathLike) -> None:
    """Median latency of one forward against image size (log scale), a line per backend."""
    _draw(jobs, "latency_ms_median", "median latency (ms)",
          "Latency of one eval forward (median of the timed calls)", backends, path,
          "No inference job finished.")  # fmt: skip


def memory(jobs: pd.DataFrame, backends: Sequence[str], path: str | os.PathLike) -> None:
    """Peak GPU memory allocated by torch against image size, a line per backend."""
    _draw(jobs, "peak_alloc_mb", "peak allocated (MiB)",
          "Peak GPU memory of inference (torch allocated, weights included)", backends, path,
          "No GPU memory to show: the jobs ran on a CPU or none finished.")  # fmt: skip
