"""What the sweep's and the inference benchmark's report sections share: finding their
tables and figures among the report's inputs, and the inputs they add to the report rule.

A section's figures are `(key, title, caption)` rows; a figure is `results/plots/<key>.png`
and its table `results/tables/<name>.csv`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench import io

Plot = tuple[str, str, str]  # key, title, caption


def by_stem(paths: Iterable[str | os.PathLike]) -> dict[str, Path]:
    """The paths by file name without its suffix (a table's or figure's name)."""
    return {Path(p).stem: Path(p) for p in paths}


def optional_table(found: Mapping[str, Path], name: str) -> pd.DataFrame:
    """The table `name` among `found`, or an empty frame when the section did not write it."""
    return io.read_csv(found[name]) if name in found else pd.DataFrame()


def status_counts(frame: pd.DataFrame) -> str:
    """'3 ok, 1 oom': how many rows have each status, statuses in alphabetical order."""
    status = frame["status"].value_counts().to_dict()
    return ", ".join(f"{n} {s}" for s, n in sorted(status.items()))


def figures(
    plots: Sequence[Plot], paths: Iterable[str | os.PathLike], data_uri: Callable[[Path], str]
) -> list[dict[str, Any]]:
    """The section's figures that were drawn, in `plots` order, each embedded by `data_uri`."""
    found = by_stem(paths)
    return [
        {"key": key, "title": title, "caption": caption, "src": data_uri(found[key])}
        for key, title, caption in plots
        if key in found
    ]


def inputs(enabled: bool, tables: Iterable[str], plots: Sequence[Plot]) -> dict[str, list[str]]:
    """The report rule's extra inputs for a section (its tables and figures), none when off."""
    if not enabled:
        return {"tables": [], "plots": []}
    return {
        "tables": [f"results/tables/{t}.csv" for t in tables],
        "plots": [f"results/plots/{key}.png" for key, _, _ in plots],
    }
