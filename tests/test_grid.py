"""The grid machinery every plan shares (attnbench.grid): the seeded order and priorities
the plans produce are the ones the per-plan code gave before it was shared."""

from __future__ import annotations

import hashlib
import json

from attnbench import config as cfg
from attnbench import grid
from attnbench.inference import plan as inference
from attnbench.sweep import plan as sweep
from attnbench.train import schedule

SEEDS = [0, 3, 1]
ARMS = ["eager", "sdpa", "sdpa_math", "eager_replica"]
# sha256 (first 16 hex digits) of each plan's order and priorities, from the code before
# attnbench.grid (per-plan `_key` functions; the rules' own sort of the searches).
EXPECTED = {
    "train_order": "0fd6cb832d84a267",
    "train_priority": "219d350f5cc9c6ec",
    "sweep_order": "91369d6726d1b080",
    "sweep_priority": "ca2aa79f78f088ce",
    "sweep_searches": "275427f78829a5a5",
    "inference_order": "e5269d26f00a2b45",
    "inference_priority": "3dbf60f0b9bba16f",
}


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()[:16]


def _sweep() -> sweep.Plan:
    return sweep.plan(cfg.validate({"sweep": {
        "enabled": True, "order_seed": 5, "models": ["yolo12n.yaml", "yolo12s.yaml"],
        "imgsizes": [320, 640], "batches": [4, 8], "compile": [False, "default"],
        "backends": ["eager", "sdpa", "sdpa_cudnn"], "repeats": 2, "find_max_batch": True,
    }}))  # fmt: skip


def _inference() -> inference.Plan:
    return inference.plan(cfg.validate({"inference": {
        "enabled": True, "order_seed": 3, "models": ["yolo12n.yaml", "yolo12s.yaml"],
        "imgsizes": [320, 640], "batches": [1, 8], "compile": [False, "default"],
        "backends": ["eager", "sdpa"],
    }}))  # fmt: skip


def test_orders_and_priorities_are_those_of_the_code_before_the_shared_helper():
    s, i = _sweep(), _inference()
    got = {
        "train_order": schedule.planned_order(7, ARMS, SEEDS),
        "train_priority": [schedule.priority(7, a, n, SEEDS) for n in SEEDS for a in ARMS],
        "sweep_order": [p.id for p in s.planned_order()],
        "sweep_priority": [s.group_priority(g.id) for g in s.groups()],
        "sweep_searches": [s.search_order(m, n) for m in s.max_batch_models for n in s.imgsizes()],
        "inference_order": [j.id for j in i.planned_order()],
        "inference_priority": [i.priority(j) for j in i.jobs()],
    }
    assert {k: _digest(v) for k, v in got.items()} == EXPECTED


def test_planned_order_is_the_order_of_the_priorities():
    s, i = _sweep(), _inference()
    by_priority = sorted(s.groups(), key=lambda g: -s.group_priority(g.id))
    assert [p.id for p in s.planned_order()] == [
        p.id for g in by_priority for p in s.group_points(g)
    ]
    assert i.planned_order() == sorted(i.jobs(), key=lambda j: (-i.priority(j), j.id))
    jobs = schedule.planned_order(7, ARMS, SEEDS)
    assert jobs == sorted(jobs, key=lambda j: -schedule.priority(7, *j, SEEDS))


def test_order_key_and_priority_bands():
    assert grid.order_key(0, "eager", 1) == grid.order_key("0/eager/1")
    assert 0 <= grid.order_key("anything") < grid.BLOCK
    assert grid.priority(100_000, "x", block=2) == 100_000 - 2 * grid.BLOCK - grid.order_key("x")
    blocks = [["a", "b", "c"], ["a", "b"]]
    order = grid.blocked_order(blocks, lambda x: (0, x))
    assert sorted(order[:3]) == ["a", "b", "c"] and sorted(order[3:]) == ["a", "b"]


def test_one_compile_list():
    assert grid.COMPILE_ARGS[grid.COMPILE_OFF] is False
    assert grid.COMPILE_MODES == {
        "off": None, "default": "default", "reduce-overhead": "reduce-overhead",
        "max-autotune": "max-autotune",
    }  # fmt: skip
