"""Which files a report section adds: its figures and table columns (data in
`resources/report_sections.yaml`) and the report rule's extra inputs.

Read by the rules at parse time, so it imports neither pandas nor torch; the rendering
half is `attnbench.report.section_report`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache
from importlib import resources
from typing import Any

import yaml

SECTIONS_FILE = "resources/report_sections.yaml"
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


def inputs(enabled: bool, tables: Iterable[str], plots: Sequence[Plot]) -> dict[str, list[str]]:
    """The report rule's extra inputs for a section (its tables and figures), none when off."""
    if not enabled:
        return {"tables": [], "plots": []}
    return {
        "tables": [f"results/tables/{t}.csv" for t in tables],
        "plots": [f"results/plots/{key}.png" for key, _, _ in plots],
    }
