"""A tiny sweep end to end through Snakemake's CLI: two model scales, two backends, CPU.

One point is forced out of memory (ATTNBENCH_FORCE_OOM) and must be a result, not a
crash; so is one backend of one cell's paired timing; the largest-batch search meets a
forced OOM above batch 6. The wall-time ratios come from the paired timing of each cell
(rule sweep_paired). About two minutes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import REPO, job_stats, output_of, plan_and_run, planned_jobs, snakemake

from attnbench.analysis import sweep_tables
from attnbench.sweep import plan as sweep
from attnbench.timing import paired_stats

pytestmark = pytest.mark.slow

TINY = REPO / "tests" / "configs" / "sweep-tiny.yaml"
FORCED = "yolo12s/imgsz64/b2/off/eager/rep1"
FORCED_PAIRED = "sweep_paired/yolo12s/imgsz64/b2/sdpa"
CELLS = [f"yolo12{s}/imgsz64/b2/off" for s in "ns"]
BACKENDS = ["eager", "sdpa"]
PAIRED = Path("results/sweep/paired")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, str, str]:
    """The tiny sweep, planned then run: (working directory, dry-run output, run output)."""
    return plan_and_run(
        tmp_path_factory.mktemp("sweep"), "sweep", TINY, f"{FORCED},{FORCED_PAIRED},batch>6"
    )


def test_the_plan_has_one_job_per_cell_and_search(run):
    _, plan, result = run
    assert job_stats(plan) == {
        "fetch_dataset": 1, "validate_dataset": 1, "sweep_shapes": 2, "sweep_parity": 2,
        "sweep_kernel_bench": 2, "sweep_point": 2, "sweep_paired": 2, "sweep_max_batch": 1,
        "sweep_aggregate": 1, "sweep_plots": 1, "sweep": 1,
    }  # fmt: skip
    cells = sorted(
        f"{w['model']}/imgsz{w['imgsz']}/b{w['batch']}/{w['compile']}"
        for rule, w in planned_jobs(plan)
        if rule == "sweep_point"
    )
    assert cells == CELLS
    paired = sorted(
        f"{w['model']}/imgsz{w['imgsz']}/b{w['batch']}/off"
        for rule, w in planned_jobs(plan)
        if rule == "sweep_paired"
    )
    assert paired == CELLS
    assert job_stats(result) == job_stats(plan)


def test_every_point_is_recorded_and_the_forced_one_is_oom(run):
    workdir = run[0]
    for cell in CELLS:
        for rep, backend in ((r, b) for r in (0, 1) for b in BACKENDS):
            point_id = f"{cell}/{backend}/rep{rep}"
            m = json.loads((workdir / "results" / "sweep" / point_id / "metrics.json").read_text())
            assert m["point_id"] == point_id and m["device"] == "cpu" and m["seed"] == rep
            assert m["run_order"] // len(BACKENDS) == rep  # repeat blocks, backends shuffled
            assert m["planned_position"] is not None and m["started"]
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
    assert sorted(points["status"]) == ["ok"] * 7 + ["oom"]
    summary = pd.read_csv(tables / "sweep_summary.csv").set_index(["model_name", "backend"])
    assert summary.loc[("yolo12s", "eager"), "status"] == "1 ok, 1 oom"
    assert summary.loc[("yolo12n", "eager"), "ok"] == 2
    # The paired winner of yolo12n; yolo12s's sdpa ran out of memory in its paired timing.
    assert summary.groupby("model_name")["fastest"].sum().to_dict() == {"yolo12n": 1, "yolo12s": 0}
    max_batch = pd.read_csv(tables / "sweep_max_batch.csv")
    found = max_batch[["model_name", "backend", "max_batch", "first_oom", "limited_by"]]
    assert found.values.tolist() == [["yolo12n", b, 6, 7, "memory"] for b in BACKENDS]
    kernels = pd.read_csv(tables / "sweep_kernels.csv")
    assert set(kernels["model"]) == {"yolo12n", "yolo12s"} and set(kernels["phase"]) == {"train"}
    parity = pd.read_csv(tables / "sweep_parity.csv")
    assert set(parity["model"]) == {"yolo12n", "yolo12s"} and parity["passed"].all()


def test_each_cell_is_paired_timed_in_one_process(run):
    workdir = run[0]
    n = workdir / PAIRED / "yolo12n" / "imgsz64" / "b2"
    blocks = pd.read_csv(n / "blocks.csv")
    # One warm-up round and one balanced cycle of 4 rounds, 2 backends, 1 step a block.
    assert list(blocks.columns) == paired_stats.BLOCK_COLUMNS and len(blocks) == 2 * 5
    assert set(blocks["arm"]) == set(BACKENDS) and (blocks["steps"] == 1).all()
    assert sorted(blocks["round"].unique()) == list(range(-1, 4))
    assert (blocks["ms_per_step"] > 0).all()
    for arm, group in blocks.groupby("arm"):  # the same batches in the same order
        assert group["first_step"].tolist() == list(range(5)), arm
    summary = pd.read_csv(n / "summary.csv")
    assert list(summary.columns) == sweep_tables.PAIRED_COLUMNS
    row = summary.iloc[0]
    assert len(summary) == 1
    assert (row["arm"], row["baseline"], row["status"]) == ("sdpa", "eager", "ok")
    assert row["blocks"] == 4 and row["block_cv"] > 0 and row["compile"] == "off"
    assert row["ratio_ci_low"] < row["ratio"] < row["ratio_ci_high"]
    assert isinstance(row["device_name"], str) and row["device_name"]
    info = json.loads((n / "timing.json").read_text())
    assert info["same_initial_weights"] is True and "bare" not in info["arms"]
    assert info["settings"]["arms"] == BACKENDS and info["timing"]["rounds_done"] == 4
    assert info["arms"]["sdpa"]["provenance_matched"] is True
    # The forced paired OOM is a status with its reason, not a failed job.
    s = pd.read_csv(workdir / PAIRED / "yolo12s" / "imgsz64" / "b2" / "summary.csv").iloc[0]
    assert s["status"] == "oom" and "out of memory" in s["reason"] and s["blocks"] == 0


def test_the_summary_reads_its_wall_time_ratio_from_the_paired_summary(run):
    workdir = run[0]
    tables = workdir / "results" / "tables"
    paired = pd.read_csv(tables / "sweep_paired.csv")
    cells = [
        pd.read_csv(workdir / PAIRED / m / "imgsz64" / "b2" / "summary.csv")
        for m in ("yolo12n", "yolo12s")
    ]
    pd.testing.assert_frame_equal(paired, pd.concat(cells, ignore_index=True), check_dtype=False)
    summary = pd.read_csv(tables / "sweep_summary.csv").set_index(["model_name", "backend"])
    n_sdpa, source = summary.loc[("yolo12n", "sdpa")], cells[0].iloc[0]
    for column in ("ratio", "ratio_ci_low", "ratio_ci_high", "halfwidth_pct", "blocks", "block_cv"):
        assert n_sdpa[f"wall_{column}"] == source[column], column
    assert n_sdpa["wall_status"] == "ok"
    assert n_sdpa["step_speedup"] == pytest.approx(1 / source["ratio"])
    assert n_sdpa["step_speedup_lo"] == pytest.approx(1 / source["ratio_ci_high"])
    assert n_sdpa["step_speedup_hi"] == pytest.approx(1 / source["ratio_ci_low"])
    s_sdpa = summary.loc[("yolo12s", "sdpa")]
    assert s_sdpa["wall_status"] == "oom" and pd.isna(s_sdpa["wall_ratio"])
    assert pd.isna(s_sdpa["step_speedup"]) and s_sdpa["gpu_speedup"] > 0  # GPU time still stated
    assert (summary.xs("eager", level="backend")["wall_status"] == "baseline").all()


def test_the_readme_states_the_paired_ratios(run, tmp_path):
    import runpy

    readme = runpy.run_path(str(REPO / "benchmarks" / "sweep_readme.py"))
    assert readme["main"]([str(tmp_path), "--from", str(run[0] / "results" / "tables")]) == 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert "interleaved blocks" in text and "one process" in text
    paired = pd.read_csv(tmp_path / "sweep_paired.csv")
    ok = paired[paired["status"] == "ok"].iloc[0]
    assert f"| {ok['ratio']:.4f} | {ok['ratio_ci_low']:.4f} – {ok['ratio_ci_high']:.4f} |" in text
    assert "| yolo12s | 64 | 2 | off | sdpa | eager | oom |" in text


def test_changing_only_the_paired_blocks_reruns_only_what_depends_on_them(run, tmp_path):
    config = yaml.safe_load(TINY.read_text())
    config["sweep"]["paired"]["steps_per_block"] = 2
    changed = tmp_path / "k2.yaml"
    changed.write_text(yaml.safe_dump(config))
    text = output_of(snakemake(run[0], "sweep", "-n", "--cores", "2", configfile=changed))
    expected = {"sweep_paired": 2, "sweep_aggregate": 1, "sweep_plots": 1, "sweep": 1}
    assert job_stats(text) == expected  # not the points, searches, kernels or parity


def _replan(run, tmp_path, name, change) -> dict[str, int]:
    config = yaml.safe_load(TINY.read_text())
    change(config)
    changed = tmp_path / f"{name}.yaml"
    changed.write_text(yaml.safe_dump(config))
    return job_stats(
        output_of(snakemake(run[0], "sweep", "-n", "--cores", "2", configfile=changed))
    )


def test_study_only_train_settings_rerun_no_sweep_job(run, tmp_path):
    """Narrow params: a sweep job gets only the train keys its step uses, so the study's
    epochs, batch, imgsz, timing window, trackers and on_unavailable reach none of them."""

    def study_only(config):
        config["dataset"]["demo"].setdefault("train", {}).update(
            epochs=5, batch=4, imgsz=128, timing={"warmup_iters": 3, "profile_iters": 1}
        )
        config["train"].update(on_unavailable="fail")

    assert _replan(run, tmp_path, "study", study_only) == {}


def test_a_step_setting_reruns_the_points_searches_and_paired_cells(run, tmp_path):
    stats = _replan(run, tmp_path, "lr", lambda c: c["train"].update(lr0=0.002))
    assert stats == {"sweep_point": 2, "sweep_paired": 2, "sweep_max_batch": 1,
                     "sweep_aggregate": 1, "sweep_plots": 1, "sweep": 1}  # fmt: skip


def test_provenance_steps_do_not_reach_the_largest_batch_search(run, tmp_path):
    """The search proves no kernel (ProbeSettings has no provenance_steps)."""
    stats = _replan(run, tmp_path, "prov", lambda c: c["train"].update(provenance_steps=2))
    assert stats == {"sweep_point": 2, "sweep_paired": 2, "sweep_aggregate": 1,
                     "sweep_plots": 1, "sweep": 1}  # fmt: skip


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
    for key, _, _ in __import__("attnbench.report.sweep_report", fromlist=["PLOTS"]).PLOTS:
        assert (plots / f"{key}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", key


def test_a_rerun_plans_nothing(run):
    text = output_of(snakemake(run[0], "sweep", "-n", "--cores", "2", configfile=TINY))
    assert job_stats(text) == {}
