"""What the sweep's and the inference benchmark's report sections share: finding their
tables and figures among the report's inputs, and the inputs they add to the report rule.

What each section shows (its figures as `(key, title, caption)` rows, the columns of its
tables) is data: `data/report_sections.yaml`. A figure is `results/plots/<key>.png` and a
table `results/tables/<name>.csv`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from attnbench import io

SECTIONS_FILE = "data/report_sections.yaml"
Plot = tuple[str, str, str]  # key, title, caption


@cache
def _sections() -> dict[str, Any]:
    text = resources.files("attnbench").joinpath(SECTIONS_FILE).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def section_figures(section: str) -> tuple[Plot, ...]:
    """A section's figures, in the order the report shows them."""
    return tuple((f["key"], f["title"], f["caption"]) for f in _sections()[section]["figures"])


def section_columns(section: str) -> dict[str, list[str]]:
    """The columns the report prints of each of a section's tables, by table."""
    return {name: list(cols) for name, cols in _sections()[section]["columns"].items()}


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
