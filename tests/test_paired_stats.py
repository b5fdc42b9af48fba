"""Paired timing's schedule and statistics on a CPU, against synthetic block timings.

The timings are made here with a known ratio, a drift that both blocks of a round share
and block noise: the ratio must come back, its interval must cover it, the half-width must
shrink with more blocks, identical timings must give 1 exactly, and the schedule must put
every arm equally often in every position, the same for the same seed.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from attnbench import config as cfg
from attnbench.errors import ConfigError
from attnbench.timing import paired_stats
from attnbench.timing import plan as timing_plan
from attnbench.timing.plan import BARE

ARMS = ["eager", "sdpa_cudnn", "flash_attn", BARE]


def _blocks(
    ratios: dict[str, float], rounds: int, cv: float, seed: int = 0, base_ms: float = 80.0
) -> pd.DataFrame:
    """blocks.csv rows of the plan, each block's ms/step = base * ratio * drift * noise."""
    rng = np.random.default_rng(seed)
    arms = list(ratios)
    drift = 1 + 0.05 * np.sin(np.arange(rounds) / 3)  # shared by the blocks of a round
    rows = []
    for block in timing_plan.plan(arms, rounds, 1, seed):
        shared = drift[block.round] if block.round >= 0 else 1.3  # warm-up blocks: slow
        ms = base_ms * ratios[block.arm] * shared * (1 + cv * rng.standard_normal())
        rows.append(
            {"arm": block.arm, "block": block.index, "round": block.round,
             "position": block.position, "warmup": block.warmup, "steps": 20,
             "total_ms": 20 * ms, "ms_per_step": ms, "clock": "perf_counter",
             "device_name": "synthetic", "peak_alloc_mb": None}
        )  # fmt: skip
    return pd.DataFrame(rows)


def test_known_ratio_is_recovered_and_covered():
    blocks = _blocks({"eager": 1.0, "sdpa_cudnn": 0.86, BARE: 0.97}, rounds=48, cv=0.03)
    a, b = paired_stats.paired_blocks(blocks, "sdpa_cudnn", "eager")
    assert len(a) == len(b) == 48  # warm-up rounds are not paired
    r = paired_stats.paired_ratio(a, b, 0.05)
    assert r["ratio"] == pytest.approx(0.86, abs=0.01)
    assert r["ratio_ci_low"] < 0.86 < r["ratio_ci_high"]
    assert r["halfwidth_pct"] == pytest.approx(50 * (r["ratio_ci_high"] - r["ratio_ci_low"]))
    assert not r["identical"] and r["ratio_method"] == paired_stats.RATIO_METHOD
    # The planning rule predicts the half-width of independent blocks within a factor.
    predicted = paired_stats.halfwidth_for(0.03, 48)
    assert predicted / 2 < r["halfwidth_pct"] < predicted * 2
    assert 0 < r["mde_pct"] < 5


def test_interval_covers_the_true_ratio_about_95_percent_of_the_time():
    hits = 0
    trials = 200
    for seed in range(trials):
        blocks = _blocks({"eager": 1.0, "sdpa": 1.05}, rounds=8, cv=0.04, seed=seed)
        r = paired_stats.paired_ratio(*paired_stats.paired_blocks(blocks, "sdpa", "eager"), 0.05)
        hits += r["ratio_ci_low"] <= 1.05 <= r["ratio_ci_high"]
    assert 0.9 <= hits / trials <= 0.99


def test_pairing_removes_the_shared_drift():
    """A drift of ±5% that both blocks of a round share does not widen the paired interval."""
    blocks = _blocks({"eager": 1.0, "sdpa": 0.9}, rounds=32, cv=0.005)
    a, b = paired_stats.paired_blocks(blocks, "sdpa", "eager")
    assert paired_stats.block_cv(b) > 0.02  # the drift is in each arm's blocks
    assert paired_stats.paired_ratio(a, b, 0.05)["halfwidth_pct"] < 0.5  # not in the pairs


def test_halfwidth_shrinks_with_more_blocks():
    widths = []
    for rounds in (8, 32, 128):
        blocks = _blocks({"eager": 1.0, "sdpa": 0.95}, rounds=rounds, cv=0.03, seed=1)
        a, b = paired_stats.paired_blocks(blocks, "sdpa", "eager")
        widths.append(paired_stats.paired_ratio(a, b, 0.05)["halfwidth_pct"])
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < 1.0  # 128 rounds at 3% block CV reach ±1%


def test_identical_timings_give_one_exactly_with_a_zero_width_interval():
    times = [80.0, 81.5, 79.2, 80.7]
    r = paired_stats.paired_ratio(times, times, 0.05)
    assert r["identical"] and r["ratio"] == 1.0
    assert r["ratio_ci_low"] == r["ratio_ci_high"] == 1.0 and r["halfwidth_pct"] == 0.0
    assert r["ratio_method"] == paired_stats.IDENTICAL_METHOD
    half = paired_stats.paired_ratio([t / 2 for t in times], times, 0.05)
    assert half["identical"] and half["ratio"] == pytest.approx(0.5)
    assert half["ratio_ci_low"] == half["ratio_ci_high"] == pytest.approx(0.5)


def test_too_few_pairs_give_no_interval():
    r = paired_stats.paired_ratio([80.0], [81.0], 0.05)
    assert r["blocks"] == 1 and r["ratio"] == pytest.approx(80 / 81)
    assert math.isnan(r["ratio_ci_low"]) and math.isnan(r["halfwidth_pct"])
    assert paired_stats.paired_ratio([], [], 0.05)["blocks"] == 0


def test_summary_rows_and_columns():
    blocks = _blocks({"eager": 1.0, "sdpa_cudnn": 0.86, BARE: 0.98}, rounds=24, cv=0.01)
    summary = paired_stats.summarize(
        blocks, ["eager", "sdpa_cudnn", "flash_attn", BARE], "eager", 0.05, 1.0,
        status={"flash_attn": ("unavailable", "flash_attn needs a CUDA GPU")},
    )  # fmt: skip
    assert list(summary.columns) == paired_stats.SUMMARY_COLUMNS
    rows = summary.set_index(["arm", "baseline"])
    assert list(rows.index) == [("sdpa_cudnn", "eager"), ("flash_attn", "eager"), ("eager", BARE)]
    assert rows.loc[("eager", BARE), "comparison"] == paired_stats.OVERHEAD_COMPARISON
    assert rows.loc[("eager", BARE), "ratio"] == pytest.approx(1 / 0.98, abs=0.01)
    assert rows.loc[("sdpa_cudnn", "eager"), "blocks"] == 24
    assert rows.loc[("sdpa_cudnn", "eager"), "resolved"]
    assert 0 < rows.loc[("sdpa_cudnn", "eager"), "block_cv"] < 0.1
    assert rows.loc[("flash_attn", "eager"), "status"] == "unavailable"
    assert "needs a CUDA GPU" in rows.loc[("flash_attn", "eager"), "reason"]
    assert math.isnan(rows.loc[("flash_attn", "eager"), "ratio"])
    assert set(summary["device_name"]) == {"synthetic"}


# --------------------------------------------------------------------------- #
# The schedule


@pytest.mark.parametrize("n_arms", [2, 3, 4, 5])
def test_schedule_is_balanced_over_positions(n_arms):
    arms = ARMS[:n_arms] if n_arms <= 4 else [*ARMS, "sdpa"]
    blocks = timing_plan.plan(
        arms, rounds=3 * timing_plan.cycle_length(n_arms), warmup_rounds=2, seed=7
    )
    counts = timing_plan.position_counts(blocks)
    assert set(counts) == set(arms)
    for arm in arms:
        assert counts[arm] == Counter({p: 6 for p in range(n_arms)}), arm  # 2 per cycle
    measured = [b for b in blocks if not b.warmup]
    for r in {b.round for b in measured}:
        assert sorted(b.arm for b in measured if b.round == r) == sorted(arms)  # one block each


def test_each_pair_of_rounds_is_a_permutation_and_its_reverse():
    orders = timing_plan.round_orders(ARMS, 16, seed=3)
    for first, second in zip(orders[::2], orders[1::2], strict=True):
        assert second == first[::-1]
    # ABBA: within a pair every arm's mean position is the same.
    for k in range(0, len(orders), 2):
        mean = {a: (orders[k].index(a) + orders[k + 1].index(a)) / 2 for a in ARMS}
        assert set(mean.values()) == {(len(ARMS) - 1) / 2}


def test_schedule_is_seeded_and_reproducible():
    one = timing_plan.plan(ARMS, 16, 2, seed=0)
    assert one == timing_plan.plan(ARMS, 16, 2, seed=0)
    assert one != timing_plan.plan(ARMS, 16, 2, seed=1)
    # More rounds extend the plan: the first cycles stay as they were.
    longer = timing_plan.round_orders(ARMS, 24, seed=0)
    assert longer[:8] == timing_plan.round_orders(ARMS, 8, seed=0)
    assert [b.index for b in one] == list(range(len(one)))


def test_rounds_are_rounded_up_to_whole_cycles_and_warmup_comes_first():
    assert timing_plan.whole_cycles(5, 3) == 6 and timing_plan.whole_cycles(13, 3) == 18
    blocks = timing_plan.plan(["a", "b", "c"], 5, 2, seed=0)
    assert [b.round for b in blocks[:6]] == [-2, -2, -2, -1, -1, -1]
    assert all(b.warmup for b in blocks[:6]) and not any(b.warmup for b in blocks[6:])
    assert len(blocks) == 6 + 6 * 3


def test_williams_rows_are_a_latin_square():
    for n in range(2, 8):
        rows = timing_plan.williams_rows(n)
        assert all(sorted(r) == list(range(n)) for r in rows)
        assert all(sorted(col) == list(range(n)) for col in zip(*rows, strict=True))


def test_settings_resolve_the_point_and_check_the_baseline():
    config = cfg.validate({"paired_timing": {"enabled": True, "backends": ["eager", "sdpa"]}})
    train = cfg.effective_train(config, cfg.DatasetChoice("local", "x", "r"))
    got = timing_plan.settings(config, train)
    assert got["arms"] == ["eager", "sdpa", BARE] and got["baseline"] == "eager"
    assert (got["model_name"], got["imgsz"], got["batch"]) == ("yolo12n", 640, 8)
    assert got["rounds_planned"] == timing_plan.whole_cycles(config["paired_timing"]["rounds"], 3)
    assert timing_plan.target_dir(got) == "results/timing/yolo12n/imgsz640/b8"
    bad = {"backends": ["sdpa"], "baseline": "eager"}
    off = cfg.validate({"paired_timing": bad})
    assert not timing_plan.settings(off, train)["enabled"]  # not checked while off
    with pytest.raises(ConfigError, match="paired_timing.baseline"):
        timing_plan.settings(cfg.validate({"paired_timing": {**bad, "enabled": True}}), train)
