"""Numbers and table cells as the report prints them: 'n/a' for anything missing.

Text only, no HTML: the template escapes and lays out what these functions return.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

Formatter = Callable[[Any], str]


def is_missing(value: Any) -> bool:
    """None, NaN, empty text and pandas' NA all read as missing ('n/a')."""
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() in ("", "nan", "NaN", "None")


def is_finite(value: Any) -> bool:
    """A value that reads as a finite number (text such as '1.5' included)."""
    try:
        return not is_missing(value) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def num(value: Any, digits: int = 3) -> str:
    """A number for people: `digits` significant figures, thousands separated, 'n/a' if absent."""
    if is_missing(value):
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(x):
        return "n/a"
    if x == int(x) and abs(x) < 1e15:
        return f"{int(x):,}"
    if abs(x) >= 10 ** (digits - 1):
        return f"{x:,.0f}"
    return f"{x:.{digits}g}" if abs(x) >= 1e-3 else f"{x:.2e}"


def pval(value: Any) -> str:
    """p-values: two significant figures, '< 0.001' below that."""
    if is_missing(value) or not math.isfinite(float(value)):
        return "n/a"
    p = float(value)
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def sig(value: Any, digits: int = 3) -> str:
    """`digits` significant figures, keeping trailing zeros (0.8510, 4.10) so columns align."""
    if not is_finite(value):
        return "n/a"
    text = f"{float(value):#.{digits}g}"
    return text[:-1] if text.endswith(".") else text


def fmt_ratio(value: Any) -> str:
    """A ratio to the baseline: four significant figures."""
    return sig(value, 4)


def fmt_map_diff(value: Any) -> str:
    """A difference in mAP: sign and four decimals."""
    return f"{float(value):+.4f}"


def confidence_text(alpha: float) -> str:
    """The confidence level of a test at `alpha`, as '95%'."""
    return f"{100 * (1 - alpha):.0f}%"


def p_is(value: Any) -> str:
    """'p = 0.012' or 'p < 0.001' for running text."""
    text = pval(value)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def metric_fmt(metric: str, value: Any, signed: bool = False) -> str:
    """Metric-appropriate precision: mAP differences live in the third decimal; `signed`
    puts a sign on differences."""
    if not is_finite(value):
        return "n/a"
    x = float(value)
    sign = "+" if signed and x > 0 else ""
    if metric.startswith("mAP"):
        return f"{sign}{x:.4f}"
    if metric.endswith("_mb") and abs(x) >= 10:
        return f"{sign}{x:,.0f}"
    return f"{sign}{x:,.1f}" if abs(x) >= 10 else sign + sig(x, 3)


def interval(low: Any, high: Any, fmt: Formatter = num) -> str:
    """'[low, high]' in `fmt`, or 'n/a' when either end is missing."""
    if is_missing(low) or is_missing(high):
        return "n/a"
    return f"[{fmt(low)}, {fmt(high)}]"


def na_text(value: Any) -> str:
    """Text as it is, 'n/a' when missing."""
    return "n/a" if is_missing(value) else str(value)


def blank(value: Any) -> str:
    """For notes and reasons: nothing to say is an empty cell, not 'n/a'."""
    return "" if is_missing(value) else str(value)


def yes_no(value: Any) -> str:
    """A flag read from a CSV ('True', '1', bool) as yes/no."""
    if is_missing(value):
        return "n/a"
    return "yes" if str(value).lower() in ("true", "1") else "no"


@dataclass(frozen=True)
class TextTable:
    """A table of display text for the template's `table` macro: no HTML in it."""

    columns: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # {"cells": [str], "cls": str}
    empty: bool = True


def text_table(
    frame: pd.DataFrame | None,
    columns: Sequence[str] | None = None,
    formats: Mapping[str, Formatter] | None = None,
    row_class: Callable[[pd.Series], str] | None = None,
    default: Formatter = num,
) -> TextTable:
    """Each cell of `frame` as text: `formats` per column, `default` elsewhere (numbers).

    `columns` picks and orders the columns (absent ones are skipped); `row_class` names a
    CSS class per row ('failed', 'sig') or ''.
    """
    if frame is None or frame.empty:
        return TextTable()
    formats = formats or {}
    shown = [c for c in (columns or list(frame.columns)) if c in frame.columns]
    rows = [
        {
            "cells": [formats.get(c, default)(row[c]) for c in shown],
            "cls": (row_class(row) if row_class else "") or "",
        }
        for _, row in frame.iterrows()
    ]
    return TextTable(columns=[str(c) for c in shown], rows=rows, empty=False)


def fixed(value: Any, fmt: str = ".4f", missing: str = "–") -> str:
    """`value` in format `fmt` ('.2f'), or `missing` when it is not a finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return missing
    return format(number, fmt) if math.isfinite(number) else missing


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A GitHub-flavoured Markdown table, one line per element (header, rule, rows)."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
