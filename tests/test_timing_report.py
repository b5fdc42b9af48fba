"""The report states wall time only as resolved: from the paired timing when it ran (its
ratios with their intervals), else "not resolved" and why, with no wall-time claim."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures_runs import NamedList, make_study, rendered_study, rule_jobs, run_script

from attnbench.report import page as report
from attnbench.timing import paired_stats
from attnbench.timing import plan as timing_plan

REPO = Path(__file__).resolve().parent.parent
ARMS = ["eager", "sdpa_cudnn", "flash_attn", timing_plan.BARE]


def _paired_summary(path: Path, ratios: dict[str, float], rounds: int = 18) -> Path:
    """summary.csv of synthetic paired blocks with known ratios (flash_attn unavailable)."""
    rng = np.random.default_rng(0)
    arms = list(ratios)
    rows = []
    for block in timing_plan.plan(arms, rounds, 1, seed=0):
        ms = 80.0 * ratios[block.arm] * (1 + 0.01 * rng.standard_normal())
        rows.append(
            {"arm": block.arm, "block": block.index, "round": block.round,
             "position": block.position, "warmup": block.warmup, "steps": 16,
             "total_ms": 16 * ms, "ms_per_step": ms, "clock": "perf_counter",
             "device_name": "NVIDIA H100 80GB HBM3", "peak_alloc_mb": 2400.0}
        )  # fmt: skip
    summary = paired_stats.summarize(
        pd.DataFrame(rows), [*arms[:2], "flash_attn", *arms[2:]], "eager", 0.05, 1.0,
        {"flash_attn": ("unavailable", "flash_attn is not installed")},
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    summary.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return rendered_study(tmp_path_factory.getbasetemp(), "gpu")


def _context(study: Path, paired: list[Path]) -> dict:
    tables = [study / "tables" / f"{n}.csv" for n in ("runs", "summary", "comparisons", "replica")]
    dataset = next((study / "data").glob("*/summary.json"))
    return report.build_context(
        tables, [], study / "env" / "backends.json", dataset,
        title="t", config={"analysis": {"baseline": "eager"}}, dataset_reason="r",
        paired_timing=paired,
    )  # fmt: skip


def _speed(ctx: dict) -> str:
    return next(s for s in ctx["headline"] if s.startswith("Speed"))


def test_paired_timing_makes_the_speed_statement(study, tmp_path):
    path = _paired_summary(
        tmp_path / "summary.csv", {"eager": 1.0, "sdpa_cudnn": 0.86, timing_plan.BARE: 0.97}
    )
    ctx = _context(study, [path])
    text = _speed(ctx)
    assert text.startswith("Speed (paired in-process timing on NVIDIA H100 80GB HBM3: 18 rounds")
    assert re.search(
        r"sdpa_cudnn 0\.8\d{3}x \(-1\d\.\d\d%; 95% CI 0\.8\d{3}-0\.8\d{3}, ±0\.\d\d%\)", text
    )
    assert "Harness overhead: the train job's step (eager" in text
    assert re.search(r"took 1\.0\d{3}x \(\+\d\.\d\d%; 95% CI", text)
    assert "Not timed: flash_attn (unavailable)" in text
    assert "not resolved" not in text
    html = report.render(REPO / "report" / "report.html.j2", ctx)
    section = re.sub(r"\s+", " ", html[html.index('<section id="wall-time">') :])
    assert "Fieller (paired, n-1 df)" in section
    assert "<td>sdpa_cudnn</td><td>eager</td><td>backend vs baseline</td>" in section
    assert "train job vs bare" in section and "flash_attn is not installed" in section


def test_a_wide_interval_is_said_to_miss_the_target(study, tmp_path):
    path = _paired_summary(tmp_path / "summary.csv", {"eager": 1.0, "sdpa_cudnn": 0.9}, rounds=4)
    frame = pd.read_csv(path)
    frame.loc[0, ["ratio_ci_low", "ratio_ci_high", "halfwidth_pct", "resolved"]] = [
        0.88, 0.92, 2.0, False,
    ]  # fmt: skip
    frame.to_csv(path, index=False)
    text = _speed(_context(study, [path]))
    assert "±2.00%, wider than the ±1% target" in text and "Harness overhead" not in text


def test_without_paired_timing_wall_time_is_not_resolved(study):
    ctx = _context(study, [])
    text = _speed(ctx)
    assert text.startswith("Speed: wall time was not resolved")
    assert "paired_timing.enabled: true" in text and "80% power" in text
    assert "fastest" not in text and "significant" not in text
    assert not any("significantly faster" in s for s in ctx["headline"])
    # Memory and GPU time lead; the speed statement comes after them.
    leads = [s.split(":")[0] for s in ctx["headline"]]
    assert leads.index("Peak GPU memory allocated") < leads.index("GPU time per step")
    assert leads.index("GPU time per step") < leads.index("Speed")
    html = report.render(REPO / "report" / "report.html.j2", ctx)
    section = html[html.index('<section id="wall-time">') :]
    assert "Wall time was not resolved" in section and "not a resolved wall-time" in section


def test_unresolved_speed_on_a_cpu_names_no_gpu_metric():
    """A CPU run's "not resolved" sentence points to the CPU op time, never to GPU time."""
    from attnbench.report import timing_report

    empty = pd.DataFrame()
    on_cpu = timing_report.unresolved_sentence(empty, empty, "eager", cpu=True)
    on_gpu = timing_report.unresolved_sentence(empty, empty, "eager", cpu=False)
    assert "GPU" not in on_cpu and "CPU op time per step" in on_cpu
    assert "GPU time per step and peak memory" in on_gpu


def test_the_harness_overhead_is_stated_per_step_and_per_run():
    """Issue 22: the train jobs' own measure of the harness, ms per step and share of the
    step, and the fixed per-run seconds apart; failed runs do not count."""
    from attnbench.report import timing_report

    runs = pd.DataFrame(
        {
            "backend": ["eager", "eager", "sdpa", "sdpa"],
            "status": ["ok", "ok", "ok", "failed"],
            "harness_overhead_ms_per_step": [0.5, 0.7, 0.6, 99.0],
            "harness_overhead_share": [0.005, 0.007, 0.006, 0.9],
            "harness_overhead_share_of": ["step_ms_median"] * 4,
            "harness_fixed_s": [20.0, 22.0, 21.0, 99.0],
            "harness_setup_s": [5.0, 6.0, 7.0, 99.0],
            "harness_provenance_s": [12.0, 13.0, 14.0, 99.0],
        }
    )
    text = timing_report.overhead_sentence(runs)
    assert "3 finished train job(s): 0.6 ms per step" in text
    assert "0.60% of the median step time" in text
    assert "fixed per run 21 s (setup 6 s, provenance 13 s)" in text
    assert timing_report.overhead_sentence(runs.drop(columns="harness_overhead_ms_per_step")) == ""
    assert timing_report.overhead_sentence(None) == ""


def test_the_wall_time_section_shows_the_harness_overhead(study, tmp_path):
    """runs.csv with the train jobs' harness keys -> the section's overhead line."""
    runs = pd.read_csv(study / "tables" / "runs.csv")
    runs["harness_overhead_ms_per_step"] = 0.8
    runs["harness_overhead_share"] = 0.01
    runs["harness_overhead_share_of"] = "step_ms_median"
    runs["harness_fixed_s"] = 20.0
    copy_dir = tmp_path / "study"
    shutil.copytree(study, copy_dir)
    runs.to_csv(copy_dir / "tables" / "runs.csv", index=False)
    html = report.render(REPO / "report" / "report.html.j2", _context(copy_dir, []))
    section = html[html.index('<section id="wall-time">') :]
    assert "0.8 ms per step" in section and "1.00% of the median step time" in section
    assert "fixed per run 20 s" in section


def test_the_report_script_reads_the_timing_input(tmp_path):
    """scripts/render_report.py takes the summary from the rule's `timing` input."""
    study = make_study(tmp_path / "s")
    out = tmp_path / "results"
    jobs = rule_jobs(study, REPO, out)
    for job, script in (("aggregate", "aggregate.py"), ("plots", "plots.py")):
        run_script(REPO / "scripts" / script, jobs[job])
    job = copy.copy(jobs["report"])
    summary = _paired_summary(tmp_path / "timing" / "summary.csv", {"eager": 1.0, "sdpa": 0.8})
    job.input = NamedList(**{**job.input._names, "timing": [str(summary)]})
    run_script(REPO / "scripts" / "render_report.py", job)
    html = (out / "report.html").read_text()
    assert "Speed (paired in-process timing" in html and re.search(r"sdpa 0\.\d{4}x", html)
