"""The whole workflow, end to end on the demo, through Snakemake's CLI (about 3 min on 2 cores).

One run makes every output; dry runs then check the caching contract: a config change
replans exactly the jobs whose params it reaches, and nothing upstream of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from workflow_helpers import (
    DEMO_CONFIG,
    REPO,
    carried_subset,
    config_variant,
    job_stats,
    output_of,
    planned_jobs,
    prepare_workdir,
    reason_lines,
    snakemake,
    without_file_lists,
)

from attnbench.train import schedule

pytestmark = pytest.mark.slow

DEMO = yaml.safe_load(DEMO_CONFIG.read_text())
BACKENDS = DEMO["backends"]
SEEDS = DEMO["seeds"]
# Training arms: the backends and the baseline's A/A replica (analysis.replica: true).
ARMS = [*BACKENDS, "eager_replica"]
CPU_BACKENDS = [b for b in BACKENDS if b != "sdpa_cudnn"]
CPU_ARMS = [*CPU_BACKENDS, "eager_replica"]
TABLES = ("runs", "summary", "comparisons", "epochs", "kernels", "parity")
PLOTS = ("curves", "epoch_time", "memory", "speed_memory", "kernels")
UPSTREAM = (
    "fetch_dataset", "validate_dataset", "build_flash_attn", "probe_backends",
    "attention_shapes", "parity", "kernel_bench",
)  # fmt: skip
DOWNSTREAM = {"aggregate": 1, "plots": 1, "report": 1, "all": 1}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, str]:
    """The demo, run once: (working directory, Snakemake's output)."""
    workdir = prepare_workdir(tmp_path_factory.mktemp("workflow"))
    result = snakemake(workdir, "--cores", "2", timeout_s=840)
    return workdir, output_of(result)


@pytest.fixture
def workdir(run) -> Path:
    return run[0]


def _plan(workdir: Path, configfile: Path = DEMO_CONFIG) -> tuple[dict[str, int], list]:
    """What `snakemake -n` would run now: (job counts per rule, [(rule, wildcards)])."""
    text = output_of(snakemake(workdir, "-n", "--cores", "2", configfile=configfile))
    return job_stats(text), planned_jobs(text)


def test_the_run_made_every_job_once(run):
    stats = job_stats(run[1])
    runs = len(ARMS) * len(SEEDS)
    assert stats == {
        "attention_shapes": 1, "build_flash_attn": 1, "fetch_dataset": 1,
        "kernel_bench": len(BACKENDS), "parity": len(BACKENDS), "probe_backends": 1,
        "validate_dataset": 1, "train": runs, **DOWNSTREAM,
    }  # fmt: skip


def test_every_output_exists(workdir):
    results = workdir / "results"
    for name in TABLES:
        assert (results / "tables" / f"{name}.csv").stat().st_size > 0, name
    for name in PLOTS:
        assert (results / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    for backend in BACKENDS:
        assert (results / "parity" / f"{backend}.csv").stat().st_size > 0
        assert (results / "kernels" / f"{backend}.csv").stat().st_size > 0
    for backend in ARMS:
        for seed in SEEDS:
            run_dir = results / "train" / backend / f"seed{seed}"
            assert (run_dir / "metrics.json").exists() and (run_dir / "results.csv").exists()
    for name in ("summary.json", "data.yaml"):
        assert (results / "data" / "demo" / name).exists()
    html = (results / "report.html").read_text()
    assert "Which attention kernel should YOLOv12 train with?" in html
    assert "data:image/png;base64," in html


def test_backends_json_says_what_runs_here(workdir):
    probe = json.loads((workdir / "results/env/backends.json").read_text())
    assert list(probe["backends"]) == BACKENDS
    for backend in CPU_BACKENDS:
        assert probe["backends"][backend]["available"] is True, backend
    cudnn = probe["backends"]["sdpa_cudnn"]
    assert cudnn["available"] is False and "CUDA" in cudnn["reason"]
    assert probe["environment"]["device"] == "cpu"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("backend", ARMS)
def test_each_run_records_its_status(workdir, backend, seed):
    run_dir = workdir / "results" / "train" / backend / f"seed{seed}"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["backend"], metrics["seed"], metrics["device"]) == (backend, seed, "cpu")
    assert metrics["epochs"] == DEMO["dataset"]["demo"]["train"]["epochs"]
    assert metrics["kernel_backend"] == backend.removesuffix("_replica")
    assert metrics["replica"] is (backend == "eager_replica")
    if backend in CPU_ARMS:
        assert metrics["status"] == "ok" and metrics["reason"] is None
        assert metrics["provenance"]["matched"] is True
        assert len(metrics["epoch_times_s"]) == metrics["epochs"]
        assert metrics["mAP50_95"] is not None and metrics["images_per_s"] > 0
        assert metrics["steps_timed"] > 0 and metrics["gpu_ms_per_step"] > 0
        assert (run_dir / "results.csv").read_text().startswith("epoch,")
    else:
        assert metrics["status"] == "unavailable"
        assert metrics["reason"] == "sdpa_cudnn needs a CUDA GPU; this host runs on the CPU"
        assert (run_dir / "results.csv").read_text() == ""


def test_demo_report_says_smoke_test_first_and_makes_no_gpu_claim(workdir):
    """The real CPU demo's page: the smoke-test box before the answer, CPU names, no regime,
    and no "identical: equivalent" for its mAP (tests/test_browser.py checks this in Chromium)."""
    html = (workdir / "results" / "report.html").read_text()
    start = html.index('<section id="answer">')
    answer = html[start : html.index("</section>", start)]
    assert answer.index("Read this first: these numbers are a smoke test on a CPU") < answer.index(
        '<div class="answer">'
    )
    for claim in ("GPU-bound", "host-bound", "GPU time", "Amdahl", "tested statement"):
        assert claim not in answer, claim
    assert "Regime: not measurable here" in answer and "CPU op time per step" in answer
    # After one epoch the demo learns nothing (mAP 0): never "identical ...: equivalent".
    assert "seeds: equivalent)" not in answer


def test_unchanged_config_plans_nothing(workdir):
    assert _plan(workdir) == ({}, [])


def test_new_title_replans_only_the_report(workdir, tmp_path):
    config = config_variant(
        tmp_path / "title.yaml", lambda c: c.setdefault("report", {}).update(title="T2")
    )
    stats, _ = _plan(workdir, config)
    assert stats == {"report": 1, "all": 1}


def test_new_seed_trains_only_that_seed(workdir, tmp_path):
    new = max(SEEDS) + 1
    config = config_variant(tmp_path / "seed.yaml", lambda c: c.update(seeds=[*SEEDS, new]))
    stats, jobs = _plan(workdir, config)
    assert stats == {"train": len(ARMS), **DOWNSTREAM}
    trained = sorted((w["backend"], int(w["seed"])) for rule, w in jobs if rule == "train")
    assert trained == sorted((backend, new) for backend in ARMS)


def test_new_epochs_retrain_every_run_and_nothing_upstream(workdir, tmp_path):
    """On the demo, dataset.demo.train.epochs is the epochs that training uses."""
    epochs = DEMO["dataset"]["demo"]["train"]["epochs"] + 1
    config = config_variant(
        tmp_path / "epochs.yaml", lambda c: c["dataset"]["demo"]["train"].update(epochs=epochs)
    )
    stats, jobs = _plan(workdir, config)
    assert stats == {"train": len(ARMS) * len(SEEDS), **DOWNSTREAM}
    assert not set(stats) & set(UPSTREAM)
    trained = sorted((w["backend"], int(w["seed"])) for rule, w in jobs if rule == "train")
    assert trained == sorted((b, s) for b in ARMS for s in SEEDS)


def test_train_jobs_ran_in_the_planned_random_order(workdir):
    """One train job at a time here (2 threads, 2 cores): start times follow the priorities."""
    started = {
        (b, s): json.loads(
            (workdir / "results" / "train" / b / f"seed{s}" / "metrics.json").read_text()
        )["started"]
        for b in ARMS
        for s in SEEDS
    }
    assert sorted(started, key=started.get) == schedule.planned_order(0, ARMS, SEEDS)


def test_new_order_seed_reruns_nothing(workdir, tmp_path):
    """The order is a priority, not a param: a new order seed changes no result."""
    config = config_variant(
        tmp_path / "order.yaml", lambda c: c.setdefault("analysis", {}).update(order_seed=7)
    )
    assert _plan(workdir, config)[0] in ({}, {"report": 1, "all": 1})


def test_train_epochs_overridden_on_the_demo_retrains_nothing(workdir, tmp_path):
    """The demo's own epochs win, so train.epochs reaches only the report (it shows the config)."""
    config = config_variant(tmp_path / "ignored.yaml", lambda c: c["train"].update(epochs=7))
    assert _plan(workdir, config)[0] == {"report": 1, "all": 1}


def test_roboflow_timeout_on_the_demo_refetches_nothing(workdir, tmp_path):
    """An unused setting (no Roboflow download on the demo) reaches only the report."""
    config = config_variant(
        tmp_path / "timeout.yaml",
        lambda c: c["dataset"].setdefault("roboflow", {}).update(timeout_s=123),
    )
    assert _plan(workdir, config)[0] == {"report": 1, "all": 1}


REASON_MAX = 500  # characters: a reason line one can read (issue 25: the report's was 4,431)
REFERENCE = REPO / "docs" / "reference" / "gpu"


def test_new_title_gives_a_short_reason_line(workdir, tmp_path):
    """The report's params are the keys it uses and a digest of the config it shows, not
    the config itself: the reason names the new title, not the whole config twice."""
    config = config_variant(
        tmp_path / "title.yaml", lambda c: c.setdefault("report", {}).update(title="T2")
    )
    reasons = reason_lines(output_of(snakemake(workdir, "-n", "--cores", "2", configfile=config)))
    assert reasons and any("'T2'" in r for r in reasons)
    assert [r for r in reasons if len(r) > REASON_MAX] == []


@pytest.mark.parametrize(
    "configfile",
    [None, REFERENCE / "sweep" / "config.yaml", REFERENCE / "inference" / "config.yaml"],
    ids=["default", "sweep", "inference"],
)
def test_other_configs_give_short_reason_lines(workdir, configfile):
    """After the demo, a dry run under the default, sweep or inference config says why each
    job would run in at most REASON_MAX characters: one param per setting (cfg.keyed), so a
    changed setting shows itself and nothing else. Snakemake's own lists of files (every
    input of a gathering rule) are counted here, not measured: they are not params. The
    GPU configs read the carried subset under .gpu/data: a stand-in lets them plan."""
    if configfile:
        carried_subset(workdir)
    text = output_of(snakemake(workdir, "-n", "--cores", "2", configfile=configfile))
    reasons = reason_lines(text)
    assert any("Params have changed" in r for r in reasons)
    too_long = [r[:300] for r in map(without_file_lists, reasons) if len(r) > REASON_MAX]
    assert too_long == []


def test_lint_is_clean(workdir):
    result = snakemake(workdir, "--lint", check=False)
    assert result.returncode == 0, output_of(result)[-4000:]


def test_snakemake_report_after_the_run(workdir):
    snakemake(workdir, "report", "--report", "report.html")
    html = (workdir / "report.html").read_text()
    for name in ("report.html", *(f"{p}.png" for p in PLOTS), *(f"{t}.csv" for t in TABLES)):
        assert name in html, name


def test_swapped_imgsz_and_batch_remeasure_the_attention_shapes(tmp_path):
    """Snakemake compares params as a set of values: imgsz 64/batch 32 -> 32/64 must still count."""
    workdir = prepare_workdir(tmp_path / "work")
    demo_train = {"epochs": 1, "batch": 32, "imgsz": 64}
    before = config_variant(
        tmp_path / "before.yaml", lambda c: c["dataset"]["demo"].update(train=demo_train)
    )
    swapped = {**demo_train, "batch": 64, "imgsz": 32}
    after = config_variant(
        tmp_path / "after.yaml", lambda c: c["dataset"]["demo"].update(train=swapped)
    )
    target = "results/attention/shapes.json"
    snakemake(workdir, target, "--cores", "2", configfile=before)
    assert json.loads((workdir / target).read_text())["batch"] == 32
    text = output_of(snakemake(workdir, target, "-n", "--cores", "2", configfile=after))
    assert job_stats(text) == {"attention_shapes": 1}
