"""The run design: arms (with the A/A replica) and the randomised, interleaved order."""

from __future__ import annotations

import pytest

from attnbench.train import schedule

BACKENDS = ["eager", "sdpa_cudnn", "flash_attn"]
SEEDS = [0, 1, 2, 3, 4]


def test_replica_arm_trains_the_baselines_kernel():
    arms = schedule.arms(BACKENDS, "eager", replica=True)
    assert arms == [*BACKENDS, "eager_replica"]
    assert schedule.kernel_of("eager_replica") == "eager"
    assert schedule.is_replica("eager_replica") and not schedule.is_replica("eager")
    assert schedule.arms(BACKENDS, "eager", replica=False) == BACKENDS
    assert schedule.arms(BACKENDS, "sdpa", replica=True) == BACKENDS  # baseline not trained


def test_order_is_reproducible_from_its_seed_and_differs_between_seeds():
    arms = schedule.arms(BACKENDS, "eager", replica=True)
    first = schedule.planned_order(0, arms, SEEDS)
    assert first == schedule.planned_order(0, arms, SEEDS)
    assert first != schedule.planned_order(1, arms, SEEDS)
    assert sorted(first) == sorted((a, s) for a in arms for s in SEEDS)


def test_order_runs_seed_blocks_with_every_arm_shuffled_inside():
    arms = schedule.arms(BACKENDS, "eager", replica=True)
    order = schedule.planned_order(3, arms, SEEDS)
    blocks = [order[i : i + len(arms)] for i in range(0, len(order), len(arms))]
    assert [{s for _, s in block} for block in blocks] == [{s} for s in SEEDS]
    within = [tuple(a for a, _ in block) for block in blocks]
    assert all(sorted(w) == sorted(arms) for w in within)
    assert len(set(within)) > 1  # interleaved differently from block to block
    # Every arm meets more than one position across blocks.
    for arm in arms:
        assert len({w.index(arm) for w in within}) > 1, arm


def test_adding_a_seed_or_an_arm_keeps_the_existing_relative_order():
    arms = schedule.arms(BACKENDS, "eager", replica=True)
    before = schedule.planned_order(0, arms, SEEDS)
    with_seed = schedule.planned_order(0, arms, [*SEEDS, 5])
    assert with_seed[: len(before)] == before
    with_arm = schedule.planned_order(0, [*arms, "sdpa"], SEEDS)
    assert [job for job in with_arm if job[0] != "sdpa"] == before


@pytest.mark.parametrize("seed", SEEDS)
def test_priorities_are_snakemake_ints_above_the_default(seed):
    value = schedule.priority(0, "eager", seed, SEEDS)
    assert isinstance(value, int) and 0 < value <= schedule.PRIORITY_BASE


def test_position_is_the_place_in_the_planned_order():
    config = {
        "backends": BACKENDS,
        "seeds": SEEDS,
        "analysis": {"baseline": "eager", "replica": True, "order_seed": 2},
    }
    order = schedule.planned_order(2, [*BACKENDS, "eager_replica"], SEEDS)
    assert [schedule.position(config, a, s) for a, s in order] == list(range(1, len(order) + 1))
    assert schedule.position(config, "sdpa", 0) is None
