"""Paired timing end to end through Snakemake's CLI on a CPU: two backends and bare in one
process, a few blocks, and the report's speed statement taken from it (about a minute)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import REPO, job_stats, output_of, prepare_workdir, snakemake

from attnbench import config as cfg
from attnbench.timing import paired_stats
from attnbench.timing import plan as timing_plan

pytestmark = pytest.mark.slow

TINY = REPO / "tests" / "configs" / "timing-tiny.yaml"
GPU_CONFIG = REPO / "docs" / "reference" / "gpu" / "timing" / "config.yaml"
POINT = Path("results/timing/yolo12n/imgsz64/b2")
ARMS = ["eager", "sdpa", timing_plan.BARE]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, str, str]:
    """The tiny config's default target, planned then run: (workdir, plan, run output)."""
    workdir = prepare_workdir(tmp_path_factory.mktemp("timing"))
    plan = output_of(snakemake(workdir, "-n", "--cores", "2", configfile=TINY))
    result = output_of(snakemake(workdir, "--cores", "2", configfile=TINY, timeout_s=600))
    return workdir, plan, result


def test_preload_runs_more_epochs_when_one_holds_too_few_batches():
    """A dataset smaller than `batches` x batch (8 images, batch 2: 4 batches an epoch)."""
    from attnbench.timing import paired

    class Trainer:
        train_loader = [{"i": i} for i in range(3)]

    assert [b["i"] for b in paired._preload(Trainer, 7)] == [0, 1, 2, 0, 1, 2, 0]
    Trainer.train_loader = []
    with pytest.raises(RuntimeError, match="yields no batch"):
        paired._preload(Trainer, 2)


def test_the_plan_has_one_paired_timing_job(run):
    _, plan, result = run
    stats = job_stats(plan)
    assert stats["paired_timing"] == 1 and stats["report"] == 1
    assert job_stats(result) == stats


def test_the_timing_target_alone_needs_only_the_dataset(tmp_path):
    workdir = prepare_workdir(tmp_path)
    text = output_of(snakemake(workdir, "timing", "-n", "--cores", "2", configfile=TINY))
    assert job_stats(text) == {
        "fetch_dataset": 1, "validate_dataset": 1, "paired_timing": 1, "timing": 1,
    }  # fmt: skip


def test_blocks_csv(run):
    blocks = pd.read_csv(run[0] / POINT / "blocks.csv")
    assert list(blocks.columns) == paired_stats.BLOCK_COLUMNS
    # One warm-up round and one cycle of 6 measured rounds, 3 arms each, 2 steps a block.
    assert len(blocks) == 3 * 7 and set(blocks["arm"]) == set(ARMS)
    assert sorted(blocks["round"].unique()) == list(range(-1, 6))
    assert blocks["warmup"].sum() == 3 and (blocks["steps"] == 2).all()
    assert (blocks["ms_per_step"] > 0).all()
    assert blocks["total_ms"].to_numpy() == pytest.approx(2 * blocks["ms_per_step"].to_numpy())
    assert blocks["block"].tolist() == list(range(len(blocks)))
    assert set(blocks["clock"]) == {"perf_counter"} and blocks["device_name"].notna().all()
    # Every arm ran the same steps: the same batches in the same order.
    for arm, group in blocks.groupby("arm"):
        assert group["first_step"].tolist() == list(range(0, 14, 2)), arm
    measured = blocks[~blocks["warmup"]]
    for arm in ARMS:  # each arm twice in each position in the cycle
        positions = measured.loc[measured["arm"] == arm, "position"].value_counts()
        assert positions.to_dict() == {0: 2, 1: 2, 2: 2}, arm


def test_summary_csv(run):
    summary = pd.read_csv(run[0] / POINT / "summary.csv")
    assert list(summary.columns) == paired_stats.SUMMARY_COLUMNS
    rows = summary.set_index(["arm", "baseline"])
    assert list(rows.index) == [("sdpa", "eager"), ("eager", timing_plan.BARE)]
    assert (summary["status"] == "ok").all() and (summary["blocks"] == 6).all()
    for _, row in summary.iterrows():
        assert row["ratio_ci_low"] < row["ratio"] < row["ratio_ci_high"]
        assert row["halfwidth_pct"] > 0 and row["mde_pct"] > 0 and row["block_cv"] > 0
    assert summary["device_name"].notna().all()


def test_timing_json_records_the_design(run):
    info = json.loads((run[0] / POINT / "timing.json").read_text())
    assert info["same_initial_weights"] is True and info["accumulate"] == 32
    assert info["timing"]["rounds_done"] == 6 and info["timing"]["stopped_early"] is None
    assert info["arms"]["eager"]["dispatched"] == "eager (matmul + softmax)"
    assert info["arms"]["sdpa"]["provenance_matched"] is True
    assert info["arms"]["bare"]["attention_calls"] == 0  # stock AAttn: no patch
    assert info["arms"]["eager"]["harness_overhead_ms_per_step"] > 0
    assert all(a["steps_run"] == 14 for a in info["arms"].values())
    assert info["differences"] and info["clock"] == "perf_counter"


def test_the_report_states_the_paired_result(run):
    html = (run[0] / "results" / "report.html").read_text()
    assert "Speed (paired in-process timing on" in html
    assert "wall time was not resolved" not in html
    section = html[html.index('<section id="wall-time">') :]
    assert "train job vs bare" in section and "Fieller (paired, n-1 df)" in section


def test_the_readme_is_generated_from_the_tables(run, tmp_path):
    import runpy

    readme = runpy.run_path(str(REPO / "benchmarks" / "timing_readme.py"))
    assert readme["main"]([str(tmp_path), "--from", str(run[0] / POINT), "--environment"]) == 0
    text = (tmp_path / "README.md").read_text()
    summary = pd.read_csv(tmp_path / "summary.csv")
    for _, row in summary.iterrows():  # every ratio and interval, as the CSV has it
        assert (
            f"| {row['arm']} | {row['baseline']} | {row['comparison']} | {row['ratio']:.4f} |"
            in text
        )
        assert f"{row['ratio_ci_low']:.4f} – {row['ratio_ci_high']:.4f}" in text
    assert "## Issue 22's targets" in text and "sdpa_cudnn against eager: not timed here" in text
    assert "| bare | ok | stock Ultralytics AAttn | 6 |" in text
    assert (tmp_path / "environment.txt").read_text().startswith("device ")


def test_a_rerun_plans_nothing(run):
    text = output_of(snakemake(run[0], "-n", "--cores", "2", configfile=TINY))
    assert job_stats(text) == {}


def _gpu_config(tmp_path: Path) -> Path:
    """The GPU run's config with its local dataset pointed at a stand-in folder."""
    config = yaml.safe_load(GPU_CONFIG.read_text())
    (tmp_path / "crop-or-weed").mkdir()
    (tmp_path / "crop-or-weed" / "data.yaml").write_text("names: [crop, weed]\n")
    config["dataset"]["local"] = str(tmp_path / "crop-or-weed")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_gpu_config_is_issue_22s_point(tmp_path):
    config = cfg.load_file(_gpu_config(tmp_path))
    train = cfg.effective_train(config, cfg.resolve_dataset(config))
    got = timing_plan.settings(config, train)
    assert (got["model"], got["batch"], got["imgsz"]) == ("yolo12n.yaml", 8, 640)
    assert got["arms"] == ["eager", "sdpa_cudnn", "flash_attn", timing_plan.BARE]
    assert got["baseline"] == "eager" and config["flash_attn"]["build"] == "never"
    assert config["dataset"]["source"] == "local" and train["amp"] is True
    assert got["steps_per_block"] % 8 == 0  # whole optimizer steps at batch 8
    assert got["rounds_planned"] == got["rounds"] and got["time_limit_s"] <= 420


def test_the_gpu_run_plans_only_the_dataset_and_paired_timing(tmp_path):
    workdir = prepare_workdir(tmp_path / "work")
    configfile = _gpu_config(tmp_path)
    target = "results/timing/yolo12n/imgsz640/b8/summary.csv"
    for args in (("timing",), (target,)):
        text = output_of(snakemake(workdir, *args, "-n", "--cores", "2", configfile=configfile))
        stats = job_stats(text)
        assert stats.pop("timing", 1) == 1
        assert stats == {
            "fetch_dataset": 1, "validate_dataset": 1, "build_flash_attn": 1, "paired_timing": 1,
        }, args  # fmt: skip
