"""What every grid of jobs shares: the seeded order, Snakemake priorities, compile modes,
model names.

The study's train jobs (`train.schedule`), the sweep's groups and searches (`sweep.plan`)
and inference's jobs (`inference.plan`) run in a seeded random order: each item's place is
a pure function of the order seed and the item's own name (`order_key`), so adding an item
never reorders the ones already there. Items come in blocks (a seed, a repeat) run in turn,
shuffled within each (`blocked_order`). Snakemake runs ready jobs by `priority:` (higher
first), which carries the order: `priority` is a band's base less the block and the key.

Torch-free: the Snakefile imports it at parse time.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, TypeVar

T = TypeVar("T")

# Keys lie in [0, BLOCK): a block of a band's priorities holds every key.
BLOCK = 10_000

# Config value -> path segment; Ultralytics' own `compile` argument takes the value.
COMPILE_NAMES: dict[Any, str] = {
    False: "off",
    "default": "default",
    "reduce-overhead": "reduce-overhead",
    "max-autotune": "max-autotune",
}
# Path segment -> Ultralytics' `compile` argument; -> torch.compile's mode (None: none).
COMPILE_ARGS: dict[str, bool | str] = {name: value for value, name in COMPILE_NAMES.items()}
COMPILE_MODES: dict[str, str | None] = {
    name: None if value is False else value for value, name in COMPILE_NAMES.items()
}
COMPILE_OFF = COMPILE_NAMES[False]
SCALE = re.compile(r"^yolo\w*?(\d+)([nsmlx])$")
SCALES = "nsmlx"


def stem(model: str) -> str:
    """The model's name in paths and tables: yolo12n.yaml -> yolo12n."""
    return PurePosixPath(model).name.rsplit(".", 1)[0]


def scale_of(model: str) -> str:
    """The scale letter (n, s, m, l, x) of a YOLO model name, else its stem."""
    match = SCALE.match(stem(model))
    return match.group(2) if match else stem(model)


def scale_rank(model: str) -> int:
    """Order of scales for axes: n < s < m < l < x, unknown names last."""
    scale = scale_of(model)
    return SCALES.index(scale) if scale in SCALES else len(SCALES)


def cell_id(model: str, imgsz: int, batch: int, compile_: str) -> str:
    """A (model, imgsz, batch, compile) cell's name in paths: yolo12n/imgsz640/b8/off."""
    return f"{stem(model)}/imgsz{imgsz}/b{batch}/{compile_}"


@dataclass(frozen=True)
class Cell:
    """One (model, imgsz, batch, compile) point of a grid: what its jobs share."""

    model: str  # the yaml, e.g. yolo12n.yaml
    imgsz: int
    batch: int
    compile: str  # a COMPILE_NAMES value

    @property
    def cell(self) -> str:
        return cell_id(self.model, self.imgsz, self.batch, self.compile)

    def cell_spec(self) -> dict[str, Any]:
        """The cell's part of a job's spec (rule params)."""
        return {
            "model": self.model,
            "model_name": stem(self.model),
            "scale": scale_of(self.model),
            "imgsz": self.imgsz,
            "batch": self.batch,
            "compile": self.compile,
        }


def order_key(*parts: Any) -> int:
    """A stable pseudo-random number in [0, BLOCK) for the item these parts name."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") % BLOCK


def priority(base: int, *parts: Any, block: int = 0) -> int:
    """Snakemake priority of an item: its band's base, less its block, less its key."""
    return base - block * BLOCK - order_key(*parts)


def seeded_order(
    items: Iterable[T],
    parts: Callable[[T], Sequence[Any]],
    tie: Callable[[T], Any] | None = None,
) -> list[T]:
    """`items` by their key (`order_key(*parts(item))`), ties by `tie`, else as given."""
    if tie is None:
        return sorted(items, key=lambda item: order_key(*parts(item)))
    return sorted(items, key=lambda item: (order_key(*parts(item)), tie(item)))


def blocked_order(
    blocks: Iterable[Iterable[T]],
    parts: Callable[[T], Sequence[Any]],
    tie: Callable[[T], Any] | None = None,
) -> list[T]:
    """The blocks in turn, each in its seeded order: every item meets every position."""
    return [item for block in blocks for item in seeded_order(block, parts, tie)]


def wildcard_pattern(values: Iterable[Any]) -> str:
    """A regex that matches exactly these values (for wildcard_constraints)."""
    return "|".join(re.escape(str(v)) for v in sorted(set(map(str, values)))) or "(?!)"
