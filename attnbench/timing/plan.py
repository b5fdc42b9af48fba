"""Paired, interleaved timing in one process: the point, the arms and the block schedule.

Light and torch-free: the rules read `settings` at parse time. `attnbench.timing.paired`
runs the plan and `attnbench.timing.paired_stats` does its statistics.

The schedule. Every arm (a backend, or `bare`: stock Ultralytics without the harness)
trains in blocks of k steps. A *round* runs one block of every arm, in the order the
schedule gives. Measured rounds come in cycles of 2m rounds for m arms: the m rows of a
Williams Latin square (arm labels and row order shuffled by a seed per cycle), each row
followed at once by its reverse (ABBA...). Within a whole cycle every arm therefore takes
every position exactly twice, and within each pair of rounds every arm's mean position is
the same, which cancels a linear drift inside the pair. The number of rounds is rounded up
to whole cycles. Warm-up rounds (seeded random orders, round numbers below 0) run first
and are excluded from the statistics.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from attnbench.train.settings import StepSettings, pick

BARE = "bare"


def step_train(train: Mapping[str, Any]) -> dict[str, Any]:
    """The effective train section cut to the timed step's settings (StepSettings.KEYS: not
    epochs or seeds, so changing those reruns no paired timing): rule paired_timing's and
    rule sweep_paired's `train` params."""
    return pick(train, StepSettings.KEYS)


# --------------------------------------------------------------------------- #
# The plan (config -> settings), read at parse time


def _stem(model: str) -> str:
    return model.rsplit("/", 1)[-1].rsplit(".", 1)[0]


def settings(config: Mapping[str, Any], train: Mapping[str, Any]) -> dict[str, Any]:
    """The paired_timing section resolved: the point, the arms, the baseline; checked.

    `train` is the effective train section (attnbench.config.effective_train): the point
    defaults to its model, batch and imgsz. Raises attnbench.config.ConfigError when
    paired timing is enabled and its baseline or arms do not fit.
    """
    from attnbench.errors import ConfigError

    section = dict(config["paired_timing"])
    enabled = bool(section["enabled"])
    backends = list(section["backends"] or config["backends"])
    baseline = section["baseline"]
    if enabled and baseline not in backends:
        raise ConfigError(
            f"config value paired_timing.baseline = {baseline!r} is not among the timed "
            f"backends ({', '.join(backends)}): add it to paired_timing.backends"
        )
    arms = [*backends, BARE] if section["bare"] else backends
    if enabled and len(arms) < 2:
        raise ConfigError(
            "paired_timing times one arm only: list two backends, or keep paired_timing.bare"
        )
    model = section["model"] or train["model"]
    point = {
        "model": model,
        "model_name": _stem(model),
        "batch": int(section["batch"] or train["batch"]),
        "imgsz": int(section["imgsz"] or train["imgsz"]),
    }
    keys = ("steps_per_block", "rounds", "warmup_rounds", "batches", "seed", "weights_seed",
            "time_limit_s", "target_halfwidth_pct")  # fmt: skip
    return {
        "enabled": enabled,
        **point,
        "backends": backends,
        "arms": arms,
        "bare": bool(section["bare"]),
        "baseline": baseline,
        "alpha": float(config["analysis"]["alpha"]),
        **{k: section[k] for k in keys},
        "rounds_planned": whole_cycles(int(section["rounds"]), len(arms)),
    }


def target_dir(point: Mapping[str, Any]) -> str:
    """results/timing/<model>/imgsz<I>/b<B>: where the point's tables go."""
    return f"results/timing/{point['model_name']}/imgsz{point['imgsz']}/b{point['batch']}"


# --------------------------------------------------------------------------- #
# The schedule


@dataclass(frozen=True)
class Block:
    """One block of the plan: `round` < 0 for warm-up rounds, `position` within its round."""

    index: int
    round: int
    position: int
    arm: str

    @property
    def warmup(self) -> bool:
        return self.round < 0


def cycle_length(n_arms: int) -> int:
    """Rounds per balanced cycle: each of the m rows of a Latin square and its reverse."""
    return 2 * n_arms


def whole_cycles(rounds: int, n_arms: int) -> int:
    """`rounds` rounded up to whole cycles (the balance is exact over whole cycles only)."""
    cycle = cycle_length(n_arms)
    return max(1, math.ceil(rounds / cycle)) * cycle


def williams_rows(n: int) -> list[list[int]]:
    """A Williams Latin square of n symbols: row i is (0, 1, n-1, 2, n-2, ...) + i mod n."""
    first, low, high = [0], 1, n - 1
    while len(first) < n:
        first.append(low)
        low += 1
        if len(first) < n:
            first.append(high)
            high -= 1
    return [[(x + i) % n for x in first] for i in range(n)]


def cycle_orders(arms: Sequence[str], seed: int, cycle: int) -> list[tuple[str, ...]]:
    """The 2m rounds of cycle `cycle`: shuffled Latin-square rows, each then reversed."""
    rng = random.Random(f"paired-timing/{seed}/cycle{cycle}")
    labels = list(arms)
    rng.shuffle(labels)
    rows = williams_rows(len(labels))
    rng.shuffle(rows)
    orders: list[tuple[str, ...]] = []
    for row in rows:
        order = tuple(labels[i] for i in row)
        orders += [order, order[::-1]]
    return orders


def warmup_orders(arms: Sequence[str], rounds: int, seed: int) -> list[tuple[str, ...]]:
    """Seeded random orders for the warm-up rounds."""
    orders = []
    for r in range(rounds):
        order = list(arms)
        random.Random(f"paired-timing/{seed}/warmup{r}").shuffle(order)
        orders.append(tuple(order))
    return orders


def round_orders(arms: Sequence[str], rounds: int, seed: int) -> list[tuple[str, ...]]:
    """The measured rounds' orders, whole cycles (`rounds` rounded up by `whole_cycles`)."""
    total = whole_cycles(rounds, len(arms))
    orders: list[tuple[str, ...]] = []
    cycle = 0
    while len(orders) < total:
        orders += cycle_orders(arms, seed, cycle)
        cycle += 1
    return orders[:total]


def plan(arms: Sequence[str], rounds: int, warmup_rounds: int, seed: int) -> list[Block]:
    """Every block in run order: warm-up rounds (round -W..-1), then the measured rounds."""
    if len(set(arms)) != len(arms) or len(arms) < 2:
        raise ValueError(f"paired timing needs two or more distinct arms, got {list(arms)}")
    orders = [
        (r - warmup_rounds, o) for r, o in enumerate(warmup_orders(arms, warmup_rounds, seed))
    ]
    orders += list(enumerate(round_orders(arms, rounds, seed)))
    blocks, index = [], 0
    for round_, order in orders:
        for position, arm in enumerate(order):
            blocks.append(Block(index, round_, position, arm))
            index += 1
    return blocks


def position_counts(blocks: Iterable[Block]) -> dict[str, Counter]:
    """How often each arm took each position, over the measured rounds."""
    counts: dict[str, Counter] = {}
    for block in blocks:
        if not block.warmup:
            counts.setdefault(block.arm, Counter())[block.position] += 1
    return counts
