"""The HTML report renders from fixtures through the real scripts, answers first, stays offline."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures_runs import PLOT_NAMES, TABLE_NAMES, make_study, rendered_study

from attnbench.analysis import tables
from attnbench.report import (
    caveats,
    clauses,
    formatting,
    narrative,
    narrative_scope,
    sections,
    stat_views,
)
from attnbench.report import page as report

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return rendered_study(tmp_path_factory.getbasetemp(), "gpu")


@pytest.fixture(scope="module")
def html(results) -> str:
    return (results / "report.html").read_text()


def _section(html: str, name: str) -> str:
    start = html.index(f'<section id="{name}">')
    return html[start : html.index("</section>", start)]


class _Tags(HTMLParser):
    """Collect tags and check that the document's structure closes."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.seen: list[tuple[str, dict]] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.seen.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()


def test_scripts_write_every_table_and_plot(results):
    for name in TABLE_NAMES:
        assert (results / "tables" / f"{name}.csv").stat().st_size > 0
    for name in PLOT_NAMES:
        assert (results / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "wrote" in (results / "logs" / "report.log").read_text()


def test_html_is_well_formed_and_self_contained(html):
    parser = _Tags()
    parser.feed(html)
    assert parser.errors == [] and parser.stack == []
    tags = [t for t, _ in parser.seen]
    assert "script" not in tags and "link" not in tags
    images = [a for t, a in parser.seen if t == "img"]
    assert len(images) == len(PLOT_NAMES)
    for attrs in images:
        assert attrs["src"].startswith("data:image/png;base64,")
        png = base64.b64decode(attrs["src"].split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert attrs.get("alt")
    # Nothing that a browser would fetch: no remote URLs, no CSS imports or url().
    assert not re.search(r"""(src|href)=["'](https?:|//)""", html)
    assert "@import" not in html and "url(" not in html


def _sentences(html: str) -> list[str]:
    answer = html[html.index('<div class="answer">') : html.index("</div>", html.index('<div class="answer">'))]  # fmt: skip
    return [re.sub(r"\s+", " ", p).strip() for p in re.findall(r"<p>(.*?)</p>", answer, re.S)]


def test_headline_leads_with_what_is_certain(results, html):
    """Order: provenance, memory, GPU time, regime, speed, accuracy, then the noise floor."""
    assert html.index('<section id="answer">') < html.index('<section id="tables">')
    said = _sentences(html)
    leads = ["Kernel provenance:", "Peak GPU memory allocated:", "GPU time per step:",
             "Regime:", "Speed:", "Accuracy (mAP50-95", "Noise floor (A/A:"]  # fmt: skip
    assert [s.split(" ")[0] for s in said[: len(leads)]] == [lead.split(" ")[0] for lead in leads]
    for sentence, lead in zip(said, leads, strict=False):
        assert sentence.startswith(lead), (lead, sentence)
    assert "all 11 finished runs" in said[0]
    # Memory is deterministic here: exact, never a zero-width interval or a test.
    assert "identical across 3 seeds, so this is the exact difference" in said[1]
    assert "CI [-360, -360]" not in html and "[2,040, 2,040]" not in html
    assert "host-bound" in said[3] and "Amdahl ceiling" in said[3]
    # No paired timing ran: wall time is not resolved, and the headline says so.
    assert said[4].startswith("Speed: wall time was not resolved")
    assert "No backend is called faster or slower" in said[4]
    # The across-process comparison is in the wall-time section, labelled unresolved.
    across = re.sub(r"\s+", " ", _section(html, "wall-time"))
    comp = pd.read_csv(results / "tables" / "comparisons.csv")
    step = comp[(comp.metric == "step_ms_median") & ~comp.replica & comp["diff"].notna()]
    best = step.loc[step["diff"].idxmin()]
    significant = best["p_holm"] < 0.05
    lead = f"Speed: {best.backend} was fastest" if significant else f"Speed: {best.backend} had the shortest"  # fmt: skip
    assert "not a resolved wall-time comparison" in across and lead in across
    assert ("the difference is statistically significant" in across) == significant
    assert "smallest difference detectable at 80% power" in across
    assert f"about {int(best.seeds_needed)} seeds would resolve" in across
    assert "bit-identical in 3 of 3 seed(s)" in said[6]


def test_noise_floor_families_and_drift_sections(html):
    tables_html = _section(html, "tables")
    assert "Noise floor: eager against its replica" in tables_html
    assert "eager_replica" in tables_html
    for family in ("memory", "gpu_time", "step_time", "epoch_time", "accuracy"):
        assert f"<strong>{family}</strong>" in tables_html
    assert "Drift over run order" in tables_html and "within seed blocks" in tables_html


def test_comparison_view_hides_empty_rows_and_renders_identical_exactly(results):
    comp = pd.read_csv(results / "tables" / "comparisons.csv")
    view = stat_views.comparison_view(comp)
    assert "flash_attn" not in set(view["backend"])  # unavailable: nothing to compare
    assert "eager_replica" not in set(view["backend"])  # shown as the noise floor instead
    assert len(comp[comp.backend == "flash_attn"]) > 0  # but still in the CSV
    mem = view[(view["metric"] == "peak GPU memory allocated") & (view["backend"] == "sdpa_flash")].iloc[0]  # fmt: skip
    assert mem["difference"] == "-360 (identical across 3 seeds)"
    assert mem["95% CI"] == "exact (no interval)" and mem["p (t)"] == "no test (identical)"
    step = view[(view["metric"] == "median step time") & (view["backend"] == "sdpa_flash")].iloc[0]
    assert step["design"] == "paired, 3 seeds" and step["95% CI"].startswith("[")
    assert step["verdict"] in ("meaningful", "negligible", "unresolved")
    floor = stat_views.noise_floor_view(comp)
    assert set(floor["replica"]) == {"eager_replica"}
    assert "identical across 3 seeds" in " ".join(floor["difference (A/A)"])


def test_caveats_name_demo_failures_and_skips(html):
    answer = _section(html, "answer")
    assert "smoke test" in answer and "not a result" in answer
    assert "sdpa: oom for seed(s) 2" in answer
    assert "flash_attn: unavailable for seed(s) 0, 1, 2" in answer
    # The reason is escaped, not interpreted as a tag.
    assert "&lt;try conda&gt;" in answer and "<try conda>" not in html


def test_sections_carry_provenance_availability_dataset_environment_config(html):
    prov = _section(html, "provenance")
    assert "pytorch_flash::flash_fwd_kernel&lt;" in prov  # kernel names, escaped
    assert "3/3 runs" in prov
    avail = _section(html, "availability")
    assert "flash_attn" in avail and "unavailable: 3" in avail and "oom: 1" in avail
    data = _section(html, "dataset")
    assert "ROBOFLOW_API_KEY is not set" in data and "smoke test" in data
    assert "crop, weed" in data
    env = _section(html, "environment")
    assert "0123456789abcdef0123456789abcdef01234567" in env and "580.65.06" in env
    config = _section(html, "config")
    assert "tost_margin" in config and "&#34;epochs&#34;: 5" in config


def test_seed_study_beside_ours_with_flaws(html):
    seed = _section(html, "seed-study")
    for number in ("37.49 min", "35.24 min", "2,668.71 MB", "518.86 MB", "0.967 / 0.753"):
        assert number in seed
    assert "host RSS" in seed and "identical in every loss" in seed
    assert "ours: eager" in seed and "ours: flash_attn" not in seed  # no finished runs
    assert "sdpa_flash: difference" in seed


def _write_tables(out: Path, runs: pd.DataFrame) -> list[Path]:
    frames = {
        "runs": runs,
        "summary": tables.summarize(runs, "eager"),
        "comparisons": tables.compare(runs, "eager"),
    }
    paths = []
    for name, frame in frames.items():
        path = out / f"{name}.csv"
        frame.to_csv(path, index=False)
        paths.append(path)
    return paths


def _context(tmp_path: Path, runs: pd.DataFrame, source: str = "roboflow") -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    study = make_study(tmp_path / "s", backends=("eager",), seeds=(0,), dataset_source=source)
    return report.build_context(
        _write_tables(tmp_path, runs),
        [],
        study.backends_json,
        study.dataset_summary,
        title="t",
        config={"analysis": {"baseline": "eager", "alpha": 0.05, "tost_margin": 0.01}},
        dataset_reason="dataset.source = roboflow",
    )


def _runs(
    times: dict[str, list[float]], maps: dict[str, list[float]] | None = None
) -> pd.DataFrame:
    rows = []
    for backend, values in times.items():
        for seed, value in enumerate(values):
            rows.append(
                {
                    "backend": backend,
                    "seed": seed,
                    "status": "ok",
                    "reason": None,
                    "epoch_loop_s": value,
                    "peak_alloc_mb": 2000.0 + seed,
                    "mAP50_95": (maps or {}).get(backend, [0.75] * len(values))[seed]
                    + 0.001 * seed,
                }
            )
    return pd.DataFrame(rows)


def _speed(ctx: dict) -> str:
    """The across-process speed sentence (the wall-time section's, not the headline's)."""
    return ctx["timing"]["across"]


def test_one_seed_is_worded_as_a_single_observation(tmp_path):
    ctx = _context(tmp_path, _runs({"eager": [100.0], "sdpa": [90.0]}))
    text = _speed(ctx)
    assert text.startswith("Speed: sdpa had the shortest epoch-loop time")
    assert "single observation" in text and "statistically significant" not in text
    assert any("Only one finished run per backend" in c for c in ctx["caveats"])
    assert not any("smoke test" in c for c in ctx["caveats"])  # not the demo


def test_not_significant_is_said_plainly(tmp_path):
    ctx = _context(tmp_path, _runs({"eager": [100.0, 110.0, 90.0], "sdpa": [99.0, 108.0, 91.0]}))
    text = _speed(ctx)
    assert text.startswith("Speed: sdpa had the shortest epoch-loop time")
    assert "not statistically significant (paired t-test" in text and "more seeds" in text
    assert "smallest difference detectable at 80% power" in text


def test_baseline_fastest(tmp_path):
    ctx = _context(tmp_path, _runs({"eager": [90.0, 90.5, 89.5], "sdpa": [100.0, 101.0, 99.0]}))
    assert _speed(ctx).startswith("Speed: No backend beat the baseline eager on epoch-loop time")
    assert any(s.startswith("Peak GPU memory allocated: eager") for s in ctx["headline"])
    assert "significantly slower (sdpa)" in _speed(ctx)


def test_nothing_finished(tmp_path):
    runs = _runs({"eager": [1.0], "sdpa": [1.0]})
    runs["status"] = "unavailable"
    ctx = _context(tmp_path, runs)
    assert ctx["headline"] == [
        "No run finished training, so there is no answer yet: see Availability and Runs "
        "below for what was skipped or failed and why."
    ]


def test_baseline_missing(tmp_path):
    runs = _runs({"eager": [1.0, 1.1], "sdpa": [0.9, 0.95], "sdpa_flash": [0.8, 0.85]})
    runs.loc[runs.backend == "eager", "status"] = "oom"
    ctx = _context(tmp_path / "two", runs)
    assert _speed(ctx).startswith("Speed: sdpa_flash had the shortest epoch-loop time")
    assert "the baseline eager has no finished run" in _speed(ctx)
    ctx = _context(tmp_path / "one", runs[runs.backend != "sdpa_flash"])
    assert _speed(ctx).startswith("Speed: only sdpa finished training")
    assert "the baseline eager has no finished run" in _speed(ctx)


def test_equivalent_accuracy_is_a_tested_statement(tmp_path):
    maps = {"eager": [0.750, 0.752, 0.748, 0.751], "sdpa": [0.751, 0.749, 0.750, 0.752]}
    runs = _runs({"eager": [100, 101, 99, 100.5], "sdpa": [90, 91, 89.5, 90.2]}, maps)
    ctx = _context(tmp_path, runs)
    accuracy = next(s for s in ctx["headline"] if s.startswith("Accuracy (mAP50-95"))
    assert "equivalent within ±0.01" in accuracy and "tested statement" in accuracy
    assert "90% CI" in accuracy


def test_old_metrics_without_step_keys_still_report(tmp_path):
    """docs/reference/h100 runs lack the new keys: the headline falls back, never crashes."""
    ctx = _context(tmp_path, _runs({"eager": [100.0, 101.0, 99.0], "sdpa": [90.0, 91.0, 89.5]}))
    said = " ".join(ctx["headline"])
    assert "GPU time per step was not recorded" in said
    assert "Kernel provenance was not recorded" in said
    assert "Speed: sdpa was fastest on epoch-loop time" in _speed(ctx)


def test_reference_h100_tables_render(tmp_path):
    """The committed H100 study's tables (older columns, no step keys) still render."""
    ref = REPO / "docs" / "reference" / "h100"
    paths = [ref / "tables" / f"{n}.csv" for n in ("runs", "summary", "comparisons")]
    ctx = report.build_context(
        paths,
        [],
        ref / "env" / "backends.json",
        make_study(tmp_path, backends=("eager",), seeds=(0,)).dataset_summary,
        title="t",
        config={"analysis": {"baseline": "eager"}},
        dataset_reason="r",
    )
    html = report.render(REPO / "report" / "report.html.j2", ctx)
    assert "Kernel provenance" in html and "No replica ran" in html


def test_cpu_one_seed_report_renders(tmp_path_factory):
    out = rendered_study(tmp_path_factory.getbasetemp(), "cpu-one-seed")
    html = (out / "report.html").read_text()
    assert "No GPU memory was recorded" in html
    assert "Only one finished run per backend" in html


def test_number_formatting():
    assert formatting.num(float("nan")) == "n/a" and formatting.num(None) == "n/a"
    assert formatting.num(2401.2) == "2,401" and formatting.num(0.01234) == "0.0123"
    assert formatting.pval(0.0004) == "< 0.001" and formatting.pval(0.0123) == "0.012"
    assert formatting.metric_fmt("mAP50_95", 0.75312) == "0.7531"
    assert formatting.interval(np.nan, 1.0) == "n/a"


def test_rule_jobs_match_the_rules():
    """The fake jobs use the same input/output/param names as rules/analysis.smk and report.smk."""
    text = "".join(
        (REPO / "rules" / f"{name}.smk").read_text() for name in ("analysis", "report", "common")
    )
    for name in ("runs", "summary", "comparisons", "epochs", "kernels", "parity", "curves",
                 "epoch_time", "memory", "speed_memory", "baseline", "title",
                 "config", "dataset_reason", "template", "backends", "dataset"):  # fmt: skip
        assert re.search(rf"\b{name}\s*=", text), name
    for name in ("analysis", "train"):  # one param per key: **cfg.keyed(name, ...)
        assert re.search(rf'cfg\.keyed\(\s*"{name}"', text), name


def test_zero_variance_difference_is_called_deterministic_not_a_single_observation():
    """Peak memory is identical across seeds on a GPU: say so, not 'one observation'."""
    comp = pd.Series(
        {"p_holm": float("nan"), "n": 3, "n_baseline": 3, "note": "", "identical": True}
    )
    text = clauses.certainty_clause(comp, 0.05)
    assert "identical in all 3 vs 3 runs" in text
    assert "single observation" not in text
    single = pd.Series(
        {"p_holm": float("nan"), "n": 1, "n_baseline": 3, "note": "fewer than 2 runs"}
    )
    assert "single observation" in clauses.certainty_clause(single, 0.05)


def test_zero_variance_rendering_in_the_summary_view():
    runs = _runs({"eager": [100.0, 101.0, 99.0], "sdpa": [90.0, 91.0, 89.5]})
    runs["peak_alloc_mb"] = np.where(runs["backend"] == "eager", 1588.7, 1203.2)
    view = stat_views.backend_summary_view(tables.summarize(runs, "eager")).set_index("backend")
    assert view.loc["sdpa", "peak GPU memory allocated (MB)"] == "1,203 (identical across 3 seeds)"
    assert view.loc["sdpa", "epoch-loop time (s)"].count("[") == 1
    assert view.loc["sdpa", "runs"] == "3 ok"
    comp = tables.compare(runs, "eager")
    row = comp[comp["metric"] == "peak_alloc_mb"].iloc[0]
    text = clauses.difference_text(row, 0.05)
    assert text.startswith("-386 MB") and "identical across 3 seeds" in text and "CI" not in text


# --------------------------------------------------------------------------- #
# What a run supports (issue 25): the scope first, names and claims by device, and a
# metric that measured nothing called so.


def _cpu_demo_html(tmp_path_factory) -> str:
    return (rendered_study(tmp_path_factory.getbasetemp(), "cpu-demo") / "report.html").read_text()


def test_scope_box_comes_first_for_a_smoke_test_or_a_cpu_run():
    cpu = pd.DataFrame({"backend": ["eager"], "seed": [0], "status": ["ok"], "device": ["cpu"]})
    gpu = cpu.assign(device="cuda:0")
    demo, real = {"source": "demo"}, {"source": "roboflow", "name": "weeds"}
    both = caveats.scope(cpu, demo, "dataset.source = demo")
    assert both["title"] == "Read this first: these numbers are a smoke test on a CPU"
    assert "smoke test" in both["lines"][0] and "No GPU was used" in both["lines"][1]
    assert (
        caveats.scope(gpu, demo, "r")["title"] == "Read this first: these numbers are a smoke test"
    )
    assert caveats.scope(cpu, real, "r")["title"] == (
        "Read this first: these numbers are not a GPU result"
    )
    assert caveats.scope(gpu, real, "r") is None
    assert not any("smoke test" in c for c in caveats.caveats(cpu))  # said once, in the scope


def test_scope_box_is_above_the_answer_in_the_demo_report(tmp_path_factory):
    html = _cpu_demo_html(tmp_path_factory)
    answer = _section(html, "answer")
    assert (
        answer.index('id="scope"')
        < answer.index("<h2>Answer</h2>")
        < answer.index('<div class="answer">')
    )
    assert "What else limits this answer" in answer


def test_no_regime_claim_without_a_gpu():
    summary = pd.DataFrame(
        [
            {"backend": "eager", "metric": "gpu_busy_fraction", "mean": 1.2},
            {"backend": "eager", "metric": "step_ms_median", "mean": 97.8},
            {"backend": "eager", "metric": "max_step_saving_pct", "mean": 2.1},
        ]
    )
    text = narrative.regime_sentence(summary, "eager", cpu=True)
    assert text.startswith("Regime: not measurable here: no GPU was used")
    assert "bound" not in text and "Amdahl" not in text and "120%" not in text
    gpu = narrative.regime_sentence(summary.replace({1.2: 0.9}), "eager", cpu=False)
    assert "the loop is GPU-bound" in gpu and "Amdahl ceiling" in gpu


def test_metric_names_follow_the_device():
    assert narrative_scope.label("gpu_ms_per_step", True) == "CPU op time per step"
    assert narrative_scope.label("gpu_ms_per_step", False) == "GPU time per step"
    assert narrative_scope.heading("attention_ms_per_step", True) == (
        "attention CPU op time per step (ms)"
    )
    assert narrative_scope.label("step_ms_median", True) == "median step time"
    frame = pd.DataFrame({"metric": ["gpu_ms_per_step", "mAP50"], "label": ["GPU time", "mAP50"]})
    assert list(narrative_scope.relabel(frame, True)["label"]) == ["CPU op time per step", "mAP50"]
    assert list(narrative_scope.relabel(frame, False)["label"]) == ["GPU time", "mAP50"]
    assert narrative_scope.summary_headings(True)["GPU time per step (ms)"] == (
        "CPU op time per step (ms)"
    )
    families = dict(sections.families(cpu=True))
    assert "GPU" not in families["gpu_time"].replace("no GPU", "")


def test_cpu_demo_tables_name_cpu_op_time(tmp_path_factory):
    tables_html = _section(_cpu_demo_html(tmp_path_factory), "tables")
    assert "<th>CPU op time per step (ms)</th>" in tables_html
    assert "<th>cpu_op_ms_per_step (gpu_ms_per_step)</th>" in tables_html
    assert "GPU time per step" not in tables_html and "attention GPU" not in tables_html


def _zero_map_runs(maps: dict[str, list[float]] | None = None) -> pd.DataFrame:
    runs = _runs({"eager": [100.0, 101.0, 99.0], "sdpa": [90.0, 91.0, 89.5]})
    runs["mAP50_95"] = 0.0
    for backend, values in (maps or {}).items():
        runs.loc[runs.backend == backend, "mAP50_95"] = values
    runs["peak_alloc_mb"] = np.where(runs["backend"] == "eager", 1588.7, 1203.2)
    return runs


def _accuracy(ctx: dict) -> str:
    return next(s for s in ctx["headline"] if s.startswith("Accuracy"))


def test_zero_accuracy_everywhere_is_not_measurable_never_equivalent(tmp_path):
    ctx = _context(tmp_path, _zero_map_runs())
    text = _accuracy(ctx)
    assert text.startswith("Accuracy (mAP50-95 against eager): not measurable here")
    assert "is 0 in every run of sdpa and eager" in text
    assert "equivalent within" not in text and "tested statement" not in text
    assert "identical" not in text
    # Memory identical in every seed is a measurement: still exact, still "identical".
    memory = next(s for s in ctx["headline"] if s.startswith("Peak GPU memory"))
    assert "identical across seeds" in memory and "not measurable" not in memory
    verdicts = ctx["accuracy_verdicts"]
    assert [v["verdict"].split(" (")[0] for v in verdicts] == ["not measurable here"]


def test_constant_accuracy_is_not_measurable_but_an_exact_difference_is_identical(tmp_path):
    constant = _zero_map_runs({"eager": [0.5] * 3, "sdpa": [0.5] * 3})
    text = _accuracy(_context(tmp_path / "constant", constant))
    assert "not measurable here" in text and "is 0.5000 in every run" in text
    assert "equivalent" not in text.replace("are equivalent cannot", "")
    # Same in each seed but varying across seeds (the A/A replica): exact, not untestable.
    exact = _zero_map_runs({"eager": [0.50, 0.52, 0.49], "sdpa": [0.50, 0.52, 0.49]})
    text = _accuracy(_context(tmp_path / "exact", exact))
    assert "identical in each of 3 seeds: the exact difference, not a test" in text
    assert "not measurable" not in text and "tested statement" not in text


def test_views_mark_a_comparison_that_measured_nothing():
    runs = _zero_map_runs()
    summary = tables.summarize(runs, "eager")
    shown = narrative_scope.mark_unmeasurable(tables.compare(runs, "eager"), summary)
    row = shown[shown["metric"] == "mAP50_95"].iloc[0]
    assert row["verdict"] == row["equivalence"] == "not measurable here"
    assert row["note"].startswith("not measurable here: mAP50-95 is 0 in every run")
    memory = shown[shown["metric"] == "peak_alloc_mb"].iloc[0]
    assert memory["verdict"] != "not measurable here" and bool(memory["identical"])
    view = report._flag_unmeasurable(stat_views.comparison_view(shown), shown, "difference")
    cells = view.set_index("metric").loc["mAP50-95"]
    assert cells["difference"] == "0.0000 (not measurable here)"
    assert cells["95% CI"] == "n/a" and cells["equivalence"] == "not measurable here"
    assert (
        view.set_index("metric")
        .loc["peak GPU memory allocated", "difference"]
        .endswith("(identical across 3 seeds)")
    )
    cells = report._summary_view(summary, cpu=False).set_index("backend")
    assert cells.loc["sdpa", "mAP50-95"] == "0 in every run: not measurable here"
