"""The run design: which training arms exist, and the order their jobs run in.

Arms are the configured backends plus, with `analysis.replica`, `<baseline>_replica`:
the baseline's kernel trained again in a separate job (an A/A control whose
difference from the baseline is the noise floor of every metric).

Order is a variable, so it is randomised and recorded. Jobs run in blocks of one
seed each (seeds in config order); within a block the arms are shuffled by a
seeded key (`attnbench.grid`), so backends interleave and every backend meets every
position. Each job's place is a pure function of (order seed, arm, seed) and its block:
adding a seed or an arm never reorders, and never reruns, the jobs already there.
Snakemake runs ready jobs by `priority:` (higher first), which carries this order.

Torch-free: the Snakefile imports it at parse time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from attnbench import grid

REPLICA_SUFFIX = "_replica"
# Priorities below this band stay free for other rules (Snakemake's default is 0).
PRIORITY_BASE = 1_000_000


def replica_name(baseline: str) -> str:
    return f"{baseline}{REPLICA_SUFFIX}"


def is_replica(arm: str) -> bool:
    return arm.endswith(REPLICA_SUFFIX)


def kernel_of(arm: str) -> str:
    """The backend an arm trains with: a replica uses its baseline's kernel."""
    return arm.removesuffix(REPLICA_SUFFIX)


def arms(backends: Sequence[str], baseline: str, replica: bool) -> list[str]:
    """The training arms: every backend, then the baseline's replica if asked for."""
    result = list(backends)
    if replica and baseline in backends:
        result.append(replica_name(baseline))
    return result


def priority(order_seed: int, arm: str, seed: int, seeds: Sequence[int]) -> int:
    """Snakemake priority of a train job: earlier seed blocks first, shuffled within."""
    block = list(seeds).index(seed) if seed in seeds else len(seeds)
    return grid.priority(PRIORITY_BASE, order_seed, arm, seed, block=block)


def planned_order(
    order_seed: int, arms_: Iterable[str], seeds: Sequence[int]
) -> list[tuple[str, int]]:
    """Every (arm, seed) job in the order the priorities schedule them on one GPU."""
    arms_ = list(arms_)
    blocks = [[(arm, seed) for arm in arms_] for seed in seeds]
    return grid.blocked_order(blocks, lambda job: (order_seed, *job))


def position(config: Mapping[str, Any], arm: str, seed: int) -> int | None:
    """1-based place of (arm, seed) in the planned order of a validated config."""
    analysis = config["analysis"]
    arms_ = arms(config["backends"], analysis["baseline"], analysis["replica"])
    order = planned_order(analysis["order_seed"], arms_, config["seeds"])
    return order.index((arm, seed)) + 1 if (arm, seed) in order else None
