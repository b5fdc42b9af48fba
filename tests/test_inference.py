"""The inference benchmark: its plan, box matching, tables, figures and report section on known
inputs (fast), and a tiny bench end to end through Snakemake's CLI on a CPU (slow, ~1 min)
with one job forced out of memory and the prediction-agreement check.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from workflow_helpers import REPO, job_stats, output_of, plan_and_run, snakemake

from attnbench import config as cfg
from attnbench import grid
from attnbench.analysis import inference_tables
from attnbench.errors import ConfigError
from attnbench.inference import plan as inference
from attnbench.report import inference_plots, inference_report

TINY = REPO / "tests" / "configs" / "inference-tiny.yaml"
FORCED = "inference/yolo12n/imgsz96/b1/off/sdpa"
PNG = b"\x89PNG\r\n\x1a\n"


def _config(**inference_keys) -> dict:
    return cfg.validate({"inference": {"enabled": True, **inference_keys}})


# --------------------------------------------------------------------------- #
# The plan


def test_disabled_plans_nothing_and_defaults_follow_the_issue():
    config = cfg.validate({})
    s = config["inference"]
    assert not s["enabled"] and inference.plan(config).jobs() == []
    assert s["imgsizes"] == [640, 1280, 2048] and s["batches"] == [1, 32]
    assert s["dtype"] == "fp16" and s["iterations"] >= 100


def test_one_job_per_cell_with_paths_and_a_seeded_order():
    plan = inference.plan(
        _config(models=["yolo12n.yaml", "yolo12l.yaml"], compile=[False, "reduce-overhead"])
    )
    jobs = plan.jobs()
    assert len(jobs) == 2 * 3 * 2 * 2 * 2
    job = plan.job("yolo12l", 1280, 32, "reduce-overhead", "sdpa")
    assert job.path == "results/inference/yolo12l/imgsz1280/b32/reduce-overhead/sdpa.json"
    order = plan.planned_order()
    assert sorted(j.id for j in order) == sorted(j.id for j in jobs)
    assert order != jobs  # shuffled, not grid order
    other = inference.plan(_config(models=["yolo12n.yaml", "yolo12l.yaml"], order_seed=1,
                                   compile=[False, "reduce-overhead"]))  # fmt: skip
    assert [j.id for j in other.planned_order()] != [j.id for j in order]
    assert all(plan.priority(j) > inference.PRIORITY_BASE - grid.BLOCK for j in jobs)


def test_compile_where_keeps_compiled_jobs_to_the_named_points():
    plan = inference.plan(_config(
        models=["yolo12n.yaml", "yolo12l.yaml"], compile=[False, "reduce-overhead"],
        compile_where={"models": ["yolo12n.yaml"], "imgsizes": [640], "batches": [1]},
    ))  # fmt: skip
    compiled = [j for j in plan.jobs() if j.compile != "off"]
    assert {(j.model, j.imgsz, j.batch) for j in compiled} == {("yolo12n.yaml", 640, 1)}
    assert len(compiled) == len(plan.backends)
    assert len(plan.jobs()) == 2 * 3 * 2 * len(plan.backends) + len(compiled)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"baseline": "sdpa_cudnn"}, "inference.baseline = 'sdpa_cudnn' is not in"),
        ({"compile_where": {"imgsizes": [4096]}}, r"compile_where.imgsizes = \[4096\] is not in"),
        ({"models": ["yolo12n.yaml", "yolo12n.yml"]}, "names one model twice"),
        ({"weights": {"source": "train", "arm": "flex"}}, "inference.weights.arm = 'flex'"),
    ],
)
def test_inconsistent_settings_name_the_key(keys, message):
    with pytest.raises(ConfigError, match=message):
        inference.plan(_config(**keys))


def test_weights_come_from_the_study_only_for_the_model_it_trains():
    s = _config()["inference"]
    trained = inference.weights_choice("yolo12n.yaml", s, "yolo12n.yaml")
    assert trained["best_pt"] == "results/train/eager/seed0/ultralytics/weights/best.pt"
    assert inference.weights_choice("yolo12l.yaml", s, "yolo12n.yaml")["best_pt"] is None
    s["weights"]["source"] = "yaml"
    assert inference.weights_choice("yolo12n.yaml", s, "yolo12n.yaml")["source"] == "yaml"


def test_the_gpu_time_estimate_counts_compiles_and_calls(gpu_host_data):
    config = yaml_config(REPO / "docs" / "reference" / "gpu" / "inference" / "config.yaml")
    parts = inference.estimate(inference.plan(config))
    # Issue 24: n and l x 3 sizes x 2 batches x 3 backends, reduce-overhead for n only.
    assert parts["jobs"] == 36 + 18
    assert parts["total_s"] == pytest.approx(
        sum(parts[k] for k in ("job_start_s", "compile_s", "calls_s", "agreement_s"))
    )
    assert parts["compile_s"] == 18 * inference.COMPILE_S["reduce-overhead"]


def yaml_config(path: Path) -> dict:
    return cfg.load_file(path)


# --------------------------------------------------------------------------- #
# Box matching


def test_box_matching_is_one_to_one_by_class_and_iou():
    from attnbench.inference.agreement import match_boxes

    ref = [{"xyxy": np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), "cls": np.array([0, 1])}]
    same = [{"xyxy": np.array([[20, 20, 30, 30], [0, 0, 10, 10]]), "cls": np.array([1, 0])}]
    assert match_boxes(ref, same, 0.99)["matched_share"] == 1.0
    shifted = [{"xyxy": np.array([[0, 0, 10, 10.5], [20, 20, 30, 30]]), "cls": np.array([0, 0])}]
    result = match_boxes(ref, shifted, 0.99)
    # the first box moved (IoU 0.95); the second changed class: neither counts at 0.99
    assert result["matched"] == 0 and result["boxes_ref"] == result["boxes"] == 2
    assert result["pair_iou_median"] == pytest.approx(10 * 10 / (10 * 10.5))
    extra = [{"xyxy": np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]]),
              "cls": np.array([0, 1, 1])}]  # fmt: skip
    assert match_boxes(ref, extra, 0.99)["matched_share"] == pytest.approx(2 / 3)
    empty = [{"xyxy": np.zeros((0, 4)), "cls": np.zeros(0)}]
    assert match_boxes(empty, empty, 0.99)["matched_share"] is None


# --------------------------------------------------------------------------- #
# Tables, figures and the report section on known inputs


def _job(tmp: Path, backend: str, imgsz: int, status: str = "ok", batch: int = 1,
         compile_: str = "off", latency: float | None = 10.0, peak: float | None = 100.0) -> str:  # fmt: skip
    doc = {
        "id": f"yolo12n/imgsz{imgsz}/b{batch}/{compile_}/{backend}", "model_name": "yolo12n",
        "scale": "n", "imgsz": imgsz, "batch": batch, "compile": compile_, "backend": backend,
        "status": status, "reason": None if status == "ok" else "out of memory: forced",
        "dtype": "float16", "latency_ms_median": latency if status == "ok" else None,
        "peak_alloc_mb": peak, "device_name": "GPU", "torch": "2.x",
        "provenance": {"matched": True, "dispatched": "cudnn"} if status == "ok" else None,
    }  # fmt: skip
    path = tmp / f"{doc['id'].replace('/', '_')}.json"
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.fixture
def known(tmp_path) -> pd.DataFrame:
    paths = [
        _job(tmp_path, "eager", 640, latency=8.0, peak=400.0),
        _job(tmp_path, "sdpa", 640, latency=4.0, peak=100.0),
        _job(tmp_path, "eager", 1280, status="oom", peak=None),
        _job(tmp_path, "sdpa", 1280, latency=12.0, peak=300.0),
        _job(tmp_path, "sdpa", 640, compile_="reduce-overhead", latency=2.0, peak=120.0),
        _job(tmp_path, "eager", 640, batch=2, latency=9.0),
    ]
    return inference_tables.jobs_frame(paths, "eager")


def test_jobs_table_has_effects_against_the_baseline_and_uncompiled(known):
    row = known.set_index(["imgsz", "batch", "compile", "backend"])
    assert row.loc[(640, 1, "off", "sdpa"), "speedup"] == pytest.approx(2.0)
    assert row.loc[(640, 1, "off", "sdpa"), "memory_saving_pct"] == pytest.approx(75.0)
    assert row.loc[(640, 1, "off", "eager"), "speedup"] == pytest.approx(1.0)
    assert pd.isna(row.loc[(1280, 1, "off", "sdpa"), "speedup"])  # its baseline ran out of memory
    assert row.loc[(640, 1, "reduce-overhead", "sdpa"), "compile_speedup"] == pytest.approx(2.0)
    assert row.loc[(1280, 1, "off", "eager"), "status"] == "oom"
    assert row.loc[(640, 1, "off", "sdpa"), "provenance_matched"]


def test_largest_image_size_at_batch_one(known):
    table = inference_tables.max_imgsz(known).set_index(["compile", "backend"])
    assert table.loc[("off", "eager"), ["largest_imgsz", "first_oom_imgsz", "limited_by"]].tolist() == [640, 1280, "memory"]  # fmt: skip
    assert table.loc[("off", "sdpa"), "limited_by"] == "grid"
    assert table.loc[("off", "sdpa"), "largest_imgsz"] == 1280
    assert set(table["batch"]) == {1}


def test_agreement_table_keeps_the_baseline_row(tmp_path):
    doc = {"model_name": "yolo12n", "baseline": "eager", "imgsz": 640, "conf": 0.25,
           "backends": [{"backend": "eager", "status": "ok", "passed": True, "map50_95": 0.5},
                        {"backend": "sdpa", "status": "ok", "passed": False, "map50_95": 0.49,
                         "map50_95_diff": -0.01, "matched_share": 0.9}]}  # fmt: skip
    path = tmp_path / "a.json"
    path.write_text(json.dumps(doc))
    frame = inference_tables.agreement_frame([path])
    assert frame["backend"].tolist() == ["eager", "sdpa"]
    assert frame["imgsz"].tolist() == [640, 640] and frame["passed"].tolist() == [True, False]


def test_figures_and_report_section(known, tmp_path):
    latency, memory = tmp_path / "inference_latency.png", tmp_path / "inference_memory.png"
    inference_plots.latency(known, ["eager", "sdpa"], latency)
    inference_plots.memory(known.assign(peak_alloc_mb=None), ["eager", "sdpa"], memory)
    assert latency.read_bytes()[:8] == PNG and memory.read_bytes()[:8] == PNG
    table = tmp_path / "inference.csv"
    limits = tmp_path / "inference_max_imgsz.csv"
    inference_tables.write(known, table)
    inference_tables.write(inference_tables.max_imgsz(known), limits)
    ctx = inference_report.context(
        [table, limits], [latency, memory], lambda p: f"data:{Path(p).name}"
    )
    assert ctx["n_jobs"] == 6 and "1 oom" in ctx["status"]
    assert [p["latency_ms"] for p in ctx["published"][:2]] == [1.60, 2.3]
    here = [p for p in ctx["published"] if p["measured_here"]]
    assert {p["latency_ms"] for p in here} == {8.0, 4.0, 2.0}
    assert any("fits batch 1 up to imgsz 640" in s for s in ctx["findings"])
    assert inference_report.context([], [], str) is None
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(REPO / "report"), autoescape=True)
    macro = "{% macro table(t) %}[{{ t.columns | length }}]{% endmacro %}"
    html = env.from_string(macro + '{% include "inference.html.j2" %}').render(inference=ctx)
    assert "TensorRT FP16" in html and "1.60" in html and "data:inference_latency.png" in html
    assert inference_report.section_inputs(False) == {"tables": [], "plots": []}


# --------------------------------------------------------------------------- #
# End to end through Snakemake's CLI


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, str, str]:
    return plan_and_run(tmp_path_factory.mktemp("inference"), "inference", TINY, FORCED)


@pytest.mark.slow
def test_end_to_end_plan(run):
    _, plan, result = run
    assert job_stats(plan) == {
        "fetch_dataset": 1, "validate_dataset": 1, "infer_bench": 4, "infer_agreement": 1,
        "infer_aggregate": 1, "infer_plots": 1, "inference": 1,
    }  # fmt: skip
    assert job_stats(result) == job_stats(plan)


@pytest.mark.slow
def test_end_to_end_jobs_and_forced_oom(run):
    workdir = run[0]
    for imgsz in (64, 96):
        for backend in ("eager", "sdpa"):
            job_id = f"yolo12n/imgsz{imgsz}/b1/off/{backend}"
            doc = json.loads((workdir / "results" / "inference" / f"{job_id}.json").read_text())
            assert doc["id"] == job_id and doc["device"] == "cpu" and doc["dtype"] == "float32"
            assert doc["dtype_requested"] == "fp16" and "CPU runs fp32" in doc["dtype_note"]
            if f"inference/{job_id}" == FORCED:
                assert doc["status"] == "oom" and doc["forced_oom"] is True
                assert doc["latency_ms_median"] is None
                continue
            assert doc["status"] == "ok" and doc["iterations"] == 3
            assert 0 < doc["latency_ms_p10"] <= doc["latency_ms_median"] <= doc["latency_ms_p90"]
            assert doc["images_per_s"] > 0 and doc["gpu_ms_per_call"] > 0
            assert 0 < doc["attention_share_of_gpu"] < 1 and doc["profiled_calls"] == 1
            assert doc["provenance"]["matched"] is True and not doc["provenance"]["bwd_ops"]
            assert doc["weights"].startswith("yaml") and doc["planned_position"] is not None


@pytest.mark.slow
def test_end_to_end_tables_figures_and_agreement(run):
    workdir = run[0]
    tables = workdir / "results" / "tables"
    jobs = pd.read_csv(tables / "inference.csv")
    assert sorted(jobs["status"]) == ["ok", "ok", "ok", "oom"]
    limits = pd.read_csv(tables / "inference_max_imgsz.csv").set_index("backend")
    assert limits.loc["sdpa", ["largest_imgsz", "first_oom_imgsz", "limited_by"]].tolist() == [64, 96, "memory"]  # fmt: skip
    assert limits.loc["eager", "limited_by"] == "grid"
    agreement = pd.read_csv(tables / "inference_agreement.csv").set_index("backend")
    assert agreement.loc["sdpa", "passed"] and agreement.loc["sdpa", "boxes_ref"] > 0
    assert agreement.loc["sdpa", "matched_share"] >= 0.95
    assert agreement.loc["sdpa", "map50_95_diff"] == pytest.approx(0, abs=0.005)
    # Every CSV names the device it ran on (the GPU's name there, the CPU's model here).
    assert agreement["device_name"].notna().all() and jobs["device_name"].notna().all()
    for plot in inference.PLOTS:
        assert (workdir / "results" / "plots" / f"{plot}.png").read_bytes()[:8] == PNG


@pytest.mark.slow
def test_end_to_end_rerun_plans_nothing(run):
    text = output_of(snakemake(run[0], "inference", "-n", "--cores", "2", configfile=TINY))
    assert job_stats(text) == {}
