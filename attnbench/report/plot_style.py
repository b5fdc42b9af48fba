"""One look for every figure of the study (training, sweep, inference): the theme, a fixed
colour per backend, atomic PNG writes, and the figure that says why nothing is plotted.

Matplotlib's Agg backend and its bundled DejaVu Sans: nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import seaborn as sns

from attnbench import io

FONT = "DejaVu Sans"  # bundled with matplotlib


DPI = 110


def theme() -> None:
    """One look for every figure; DejaVu Sans so no font lookup or download happens."""
    sns.set_theme(context="notebook", style="whitegrid", font=FONT)
    plt.rcParams.update({"font.family": FONT, "figure.dpi": DPI, "savefig.dpi": DPI})


def palette(backends: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """A fixed colour per backend, so a backend looks the same in every figure."""
    colours = sns.color_palette("colorblind", max(len(backends), 1))
    return {b: colours[i % len(colours)] for i, b in enumerate(backends)}


def save(fig: plt.Figure, path: str | os.PathLike, tight: bool = False) -> None:
    """Write a PNG atomically (no timestamp metadata, so reruns give the same bytes).

    Figures use constrained layout; `tight` (a second draw pass) only for seaborn's
    FacetGrid, whose legend sits outside the axes.
    """
    with io.atomic_path(path) as tmp:
        fig.savefig(
            tmp,
            format="png",
            dpi=DPI,
            bbox_inches="tight" if tight else None,
            metadata={"Software": None},
        )
    plt.close(fig)


def message(path: str | os.PathLike, title: str, text: str) -> None:
    """A small figure that states why there is nothing to plot (never a missing file)."""
    fig, ax = plt.subplots(figsize=(6, 2.2), layout="constrained")
    ax.set_axis_off()
    ax.set_title(title, loc="left")
    ax.text(0.5, 0.45, text, ha="center", va="center", fontsize=12, wrap=True)
    save(fig, path)
