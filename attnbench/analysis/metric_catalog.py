"""The run-level metrics the aggregate tables describe and compare, and their Holm families.

The catalog is data (`resources/metrics.yaml`), one row per metric; this module gives it types.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import yaml

CATALOG_FILE = "resources/metrics.yaml"


@dataclass(frozen=True)
class Metric:
    """A run-level quantity; `better` orders the headline, `kind` picks its practical
    threshold (time: relative, memory: MiB, accuracy: the TOST margin) and `family` its
    Holm family. Metrics without a family are described per arm but not compared."""

    key: str
    label: str
    unit: str
    better: str  # "lower" | "higher"
    kind: str = "time"  # "time" | "memory" | "accuracy" | "ratio"
    family: str = ""

    @property
    def accuracy(self) -> bool:
        return self.kind == "accuracy"

    @property
    def compared(self) -> bool:
        return bool(self.family)

    @property
    def heading(self) -> str:
        """'label (unit)', or the label alone for unitless metrics: axis and column titles."""
        return f"{self.label} ({self.unit})" if self.unit else self.label


def _catalog() -> dict:
    text = resources.files("attnbench").joinpath(CATALOG_FILE).read_text(encoding="utf-8")
    return yaml.safe_load(text)


_CATALOG = _catalog()
# Holm families: one question each (is memory different? GPU time? step time? ...).
FAMILIES: dict[str, str] = dict(_CATALOG["families"])
METRICS: tuple[Metric, ...] = tuple(Metric(**row) for row in _CATALOG["metrics"])
METRIC_BY_KEY = {m.key: m for m in METRICS}
COMPARED = tuple(m for m in METRICS if m.compared)
