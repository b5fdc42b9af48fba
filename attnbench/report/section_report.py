"""What the sweep's and the inference benchmark's report sections share: finding their
tables and figures among the report's inputs, and the inputs they add to the report rule.

What each section shows (its figures as `(key, title, caption)` rows, the columns of its
tables) is data: `resources/report_sections.yaml`. A figure is `results/plots/<key>.png` and a
table `results/tables/<name>.csv`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench import io
from attnbench.section_files import Plot, inputs, section_columns, section_figures

__all__ = [
    "Plot",
    "by_stem",
    "figures",
    "inputs",
    "optional_table",
    "section_columns",
    "section_figures",
    "section_tables",
    "status_counts",
]


def by_stem(paths: Iterable[str | os.PathLike]) -> dict[str, Path]:
    """The paths by file name without its suffix (a table's or figure's name)."""
    return {Path(p).stem: Path(p) for p in paths}


def optional_table(found: Mapping[str, Path], name: str) -> pd.DataFrame:
    """The table `name` among `found`, or an empty frame when the section did not write it."""
    return io.read_csv(found[name]) if name in found else pd.DataFrame()


def section_tables(
    tables: Iterable[str | os.PathLike], main: str, *optional: str
) -> tuple[pd.DataFrame, ...] | None:
    """A section's main table and its optional ones (empty frames when absent), or None
    when the main table is missing or empty (the section did not run)."""
    found = by_stem(tables)
    if main not in found:
        return None
    frame = io.read_csv(found[main])
    if frame.empty:
        return None
    return (frame, *(optional_table(found, name) for name in optional))


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
