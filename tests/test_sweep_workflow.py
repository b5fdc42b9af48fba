"""A tiny sweep end to end through Snakemake's CLI: two model scales, one backend, CPU.

One point is forced out of memory (ATTNBENCH_FORCE_OOM) and must be a result, not a
crash; the largest-batch search meets a forced OOM above batch 6. About a minute.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from workflow_helpers import REPO, job_stats, output_of, plan_and_run, planned_jobs, snakemake

from attnbench import sweep

pytestmark = pytest.mark.slow

TINY = REPO / "tests" / "configs" / "sweep-tiny.yaml"
FORCED = "yolo12s/imgsz64/b2/off/eager/rep1"
CELLS = [f"yolo12{s}/imgsz64/b2/off" for s in "ns"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, str, str]:
    """The tiny sweep, planned then run: (working directory, dry-run output, run output)."""
    return plan_and_run(tmp_path_factory.mktemp("sweep"), "sweep", TINY, f"{FORCED},batch>6")


def test_the_plan_has_one_job_per_cell_and_search(run):
    _, plan, result = run
    assert job_stats(plan) == {
        "fetch_dataset": 1, "validate_dataset": 1, "sweep_shapes": 2, "sweep_parity": 1,
        "sweep_kernel_bench": 1, "sweep_point": 2, "sweep_max_batch": 1, "sweep_aggregate": 1,
        "sweep_plots": 1, "sweep": 1,
    }  # fmt: skip
    cells = sorted(
        f"{w['model']}/imgsz{w['imgsz']}/b{w['batch']}/{w['compile']}"
        for rule, w in planned_jobs(plan)
        if rule == "sweep_point"
    )
    assert cells == CELLS
    assert job_stats(result) == job_stats(plan)


def test_every_point_is_recorded_and_the_forced_one_is_oom(run):
    workdir = run[0]
    for cell in CELLS:
        for rep in (0, 1):
            point_id = f"{cell}/eager/rep{rep}"
            m = json.loads((workdir / "results" / "sweep" / point_id / "metrics.json").read_text())
            assert m["point_id"] == point_id and m["device"] == "cpu" and m["seed"] == rep
            assert m["run_order"] == rep and m["planned_position"] is not None and m["started"]
            assert m["provenance"]["matched"] is True
            if point_id == FORCED:
                assert m["status"] == "oom" and "out of memory" in m["reason"]
                assert m["forced_oom"] is True and m["steps_timed"] == 0
                continue
            assert m["status"] == "ok" and m["reason"] is None
            # 1 warm-up, 1 profiled, 1 after the window, 2 timed, and the mark that ends them
            assert m["steps_timed"] == 2 and m["iterations_run"] == 6
            assert 0 < m["step_ms_p10"] <= m["step_ms_median"] <= m["step_ms_p90"]
            assert m["gpu_ms_per_step"] > 0 and m["launches_per_step"] > 0
            assert m["profiled_steps"] == 1 and m["window_provenance_matched"] is True
            assert m["attention_ms_per_step"] > 0 and m["gpu_busy_fraction"] > 0
            for key in ("peak_alloc_mb", "peak_reserved_mb", "peak_device_used_mb"):
                assert key in m  # null on a CPU


def test_the_order_follows_the_plan(run):
    workdir = run[0]
    frame = pd.read_csv(workdir / "results" / "tables" / "sweep.csv")
    planned = [p.id for p in _plan().planned_order()]
    assert dict(zip(frame["point_id"], frame["planned_position"], strict=True)) == {
        point_id: i for i, point_id in enumerate(planned)
    }
    # Two cell jobs may run side by side on 2 cores; within a job, points run in plan order.
    for _, job in frame.groupby(["model_name", "imgsz", "batch", "compile"]):
        ordered = job.sort_values("started")
        assert ordered["point_id"].tolist() == sorted(ordered["point_id"], key=planned.index)
        assert ordered["run_order"].tolist() == list(range(len(job)))


def _plan() -> sweep.Plan:
    from attnbench import config as cfg

    return sweep.plan(cfg.load_file(TINY))


def test_tables(run):
    tables = run[0] / "results" / "tables"
    points = pd.read_csv(tables / "sweep.csv")
    assert sorted(points["status"]) == ["ok", "ok", "ok", "oom"]
    summary = pd.read_csv(tables / "sweep_summary.csv").set_index("model_name")
    assert summary.loc["yolo12s", "status"] == "1 ok, 1 oom"
    assert summary.loc["yolo12n", "ok"] == 2 and bool(summary["fastest"].all())
    max_batch = pd.read_csv(tables / "sweep_max_batch.csv")
    assert max_batch[
        ["model_name", "backend", "max_batch", "first_oom", "limited_by"]
    ].values.tolist() == [["yolo12n", "eager", 6, 7, "memory"]]
    kernels = pd.read_csv(tables / "sweep_kernels.csv")
    assert set(kernels["model"]) == {"yolo12n", "yolo12s"} and set(kernels["phase"]) == {"train"}
    parity = pd.read_csv(tables / "sweep_parity.csv")
    assert set(parity["model"]) == {"yolo12n", "yolo12s"} and parity["passed"].all()


def test_max_batch_probes(run):
    doc = json.loads(
        (
            run[0] / "results" / "sweep" / "max_batch" / "yolo12n" / "imgsz64" / "eager.json"
        ).read_text()
    )
    assert [(p["batch"], p["status"]) for p in doc["probes"]] == [
        (2, "ok"), (4, "ok"), (8, "oom"), (6, "ok"), (7, "oom"),
    ]  # fmt: skip


def test_figures(run):
    plots = run[0] / "results" / "plots"
    for key, _, _ in __import__("attnbench.sweep_report", fromlist=["PLOTS"]).PLOTS:
        assert (plots / f"{key}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", key


def test_a_rerun_plans_nothing(run):
    text = output_of(snakemake(run[0], "sweep", "-n", "--cores", "2", configfile=TINY))
    assert job_stats(text) == {}
