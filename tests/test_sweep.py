"""The sweep's pure parts: plan, order, the largest-batch search, tables, figures, report section."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import pandas as pd
import pytest

from attnbench import config as cfg
from attnbench import grid, io
from attnbench.analysis import sweep_tables
from attnbench.errors import ConfigError
from attnbench.report import sweep_plots, sweep_report
from attnbench.report.formatting import fmt_ratio
from attnbench.sweep import cost as sweep_cost
from attnbench.sweep import max_batch
from attnbench.sweep import plan as sweep
from attnbench.sweep import run as sweep_run
from attnbench.timing import paired_stats
from attnbench.train.settings import TimingWindow

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "docs" / "reference" / "gpu" / "sweep" / "config.yaml"


def _config(**sweep_keys) -> dict:
    return cfg.validate({"sweep": {"enabled": True, **sweep_keys}})


# --------------------------------------------------------------------------- #
# Plan and order


def test_default_config_plans_no_sweep():
    plan = sweep.plan(cfg.load_file(REPO / "config.yaml"))
    assert not plan.enabled and plan.points() == [] and plan.searches() == []


def test_reference_config_is_the_issues_grid(gpu_host_data):
    plan = sweep.plan(cfg.load_file(REFERENCE))
    # Issue 24: n, s, m, l (x trimmed to fit the hour, not the repeats).
    assert [grid.stem(m) for m in plan.models] == [f"yolo12{s}" for s in "nsml"]
    assert set(plan.cells) == {(640, 8), (640, 32), (1280, 8)}
    assert plan.backends == ("eager", "sdpa_cudnn", "flash_attn")
    assert plan.repeats == 3 and plan.compiles == ("off",)
    assert len(plan.groups()) == 12 and len(plan.points()) == 12 * 3 * 3
    assert len(plan.paired_groups()) == 12
    assert {(grid.stem(m), i) for m, i, _ in plan.searches()} == {
        ("yolo12n", 640), ("yolo12n", 1280), ("yolo12l", 640), ("yolo12l", 1280),
    }  # fmt: skip
    assert len(plan.searches()) == 12


def test_group_order_interleaves_backends_within_each_repeat():
    plan = sweep.plan(_config(backends=["eager", "sdpa", "sdpa_math"], repeats=3))
    group = plan.groups()[0]
    points = plan.group_points(group)
    assert [p.rep for p in points] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for rep in range(3):
        assert sorted(p.backend for p in points if p.rep == rep) == ["eager", "sdpa", "sdpa_math"]
    orders = {tuple(p.backend for p in points if p.rep == r) for r in range(3)}
    assert len(orders) > 1  # shuffled per repeat, not one fixed order
    again = sweep.plan(_config(backends=["eager", "sdpa", "sdpa_math"], repeats=3))
    assert again.group_points(group) == points  # reproducible from the seed
    other = sweep.plan(_config(backends=["eager", "sdpa", "sdpa_math"], repeats=3, order_seed=5))
    assert other.group_points(group) != points


def test_points_paths_and_specs():
    plan = sweep.plan(
        _config(
            models=["yolo12s.yaml"], imgsizes=[640], batches=[8], compile=[False, "max-autotune"]
        )
    )
    ids = {p.id for p in plan.points()}
    assert "yolo12s/imgsz640/b8/off/eager/rep2" in ids
    assert "yolo12s/imgsz640/b8/max-autotune/sdpa/rep0" in ids
    point = plan.point("yolo12s", 640, 8, "off", "sdpa", 1)
    assert point.path == "results/sweep/yolo12s/imgsz640/b8/off/sdpa/rep1/metrics.json"
    spec = point.spec(3)
    assert spec["seed"] == 1 and spec["scale"] == "s" and spec["run_order"] == 3
    assert grid.COMPILE_ARGS["off"] is False and grid.COMPILE_ARGS["max-autotune"] == "max-autotune"


def test_exclude_removes_cells():
    plan = sweep.plan(
        _config(imgsizes=[640, 1280], batches=[8, 32], exclude=[{"imgsz": 1280, "batch": 32}])
    )
    assert plan.cells == ((640, 8), (640, 32), (1280, 8))


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"baseline": "sdpa_flash"}, "sweep.baseline"),
        (
            {"find_max_batch": True, "max_batch": {"models": ["yolo12x.yaml"]}},
            "sweep.max_batch.models",
        ),
        ({"exclude": [{"imgsz": 640, "batch": 8}]}, "sweep.exclude"),
        ({"max_batch": {"start": 64, "limit": 32}}, "sweep.max_batch.start"),
    ],
)
def test_inconsistent_sweep_config_is_one_line(keys, message):
    with pytest.raises(ConfigError, match=message):
        sweep.plan(_config(**keys))


def test_schema_rejects_an_unknown_compile_mode():
    with pytest.raises(ConfigError, match="sweep.compile"):
        _config(compile=["fast"])


def test_estimate_of_the_reference_grid_counts_every_part(gpu_host_data):
    config = cfg.load_file(REFERENCE)
    parts = sweep_cost.estimate(sweep.plan(config), config["train"])
    assert parts["points"] == 108 and parts["jobs"] == 12
    assert parts["total_s"] == pytest.approx(
        sum(v for k, v in parts.items() if k.endswith("_s") and k != "total_s")
    )
    assert 0 < parts["max_batch_s"] < parts["points_s"]


# --------------------------------------------------------------------------- #
# The largest batch: doubling, then bisection, with a fake trainer


def _fake(threshold: int, calls: list[int] | None = None):
    def probe(batch: int) -> dict:
        if calls is not None:
            calls.append(batch)
        return {"status": "ok" if batch <= threshold else "oom"}

    return probe


@pytest.mark.parametrize("threshold", [1, 7, 8, 100, 1000, 4095])
def test_search_finds_the_exact_largest_batch(threshold):
    result = sweep.search_max_batch(_fake(threshold), start=8, limit=4096, tolerance=0)
    if threshold < 8:
        assert result["max_batch"] == threshold
    else:
        assert result["max_batch"] == threshold and result["first_oom"] == threshold + 1
    assert result["limited_by"] == "memory"
    assert result["probes"][0]["batch"] == 8


def test_search_doubles_then_bisects_and_records_every_probe():
    calls: list[int] = []
    result = sweep.search_max_batch(_fake(100, calls), start=8, limit=4096, tolerance=0)
    assert calls[:5] == [8, 16, 32, 64, 128]  # doubling until the first OOM
    assert calls[5:] == [96, 112, 104, 100, 102, 101]  # bisection between 64 and 128
    assert [p["batch"] for p in result["probes"]] == calls
    assert [p["status"] for p in result["probes"]][:5] == ["ok"] * 4 + ["oom"]


def test_search_stops_within_tolerance():
    calls: list[int] = []
    result = sweep.search_max_batch(_fake(100, calls), start=8, limit=4096, tolerance=0.1)
    assert 64 <= result["max_batch"] <= 100 < result["first_oom"]
    assert result["first_oom"] - result["max_batch"] <= 0.1 * result["max_batch"]
    assert len(calls) < 11


def test_search_reports_the_limit_when_nothing_runs_out_of_memory():
    calls: list[int] = []
    result = sweep.search_max_batch(_fake(10**6, calls), start=8, limit=100, tolerance=0)
    assert calls == [8, 16, 32, 64, 100]
    assert result["max_batch"] == 100 and result["first_oom"] is None
    assert result["limited_by"] == "limit"


def test_search_when_even_the_start_does_not_fit():
    result = sweep.search_max_batch(_fake(0), start=8, limit=64, tolerance=0)
    assert result["max_batch"] is None and result["first_oom"] == 1


def test_forced_oom_matches_ids_and_batches():
    from attnbench import host

    env = {host.FORCE_OOM_ENV: "yolo12s/*/eager/rep1, batch>6"}
    assert host.forced_oom("yolo12s/imgsz64/b2/off/eager/rep1", 2, env)
    assert not host.forced_oom("yolo12s/imgsz64/b2/off/eager/rep0", 2, env)
    assert host.forced_oom("max_batch/yolo12n/imgsz64/eager", 7, env)
    assert not host.forced_oom("max_batch/yolo12n/imgsz64/eager", 6, env)
    assert not host.forced_oom("anything", 100, {})


def test_out_of_memory_is_a_reason_and_other_errors_are_raised_again():
    from attnbench import host

    error = host.forced_error("yolo12s/imgsz64/b2/off/eager/rep1")
    assert host.oom_reason(error) == f"out of memory: {host.first_line(error)}"
    assert host.first_line(RuntimeError()) == "RuntimeError"
    with pytest.raises(ValueError, match="bad shape"):
        host.oom_reason(ValueError("bad shape\nmore"))


def test_tile_repeats_images_with_their_own_labels():
    import torch

    sample = {
        "img": torch.arange(3, dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 3, 4, 4).contiguous(),
        "cls": torch.tensor([[0.0], [1.0], [2.0], [2.0]]),
        "bboxes": torch.rand(4, 4),
        "batch_idx": torch.tensor([0.0, 1.0, 2.0, 2.0]),
    }
    batch = max_batch.tile(sample, 7, torch.device("cpu"))
    assert batch["img"].shape == (7, 3, 4, 4)
    assert batch["img"][:, 0, 0, 0].mul(255).round().tolist() == [0, 1, 2, 0, 1, 2, 0]
    # image k holds the labels of source image k % 3, renumbered to k
    assert batch["batch_idx"].tolist() == [0, 1, 2, 2, 3, 4, 5, 5, 6]
    assert batch["cls"].flatten().tolist() == [0, 1, 2, 2, 0, 1, 2, 2, 0]


# --------------------------------------------------------------------------- #
# Tables on known inputs


def _point(model, backend, rep, step, gpu, peak, status="ok", **extra) -> dict:
    return {
        "model_name": model, "scale": grid.scale_of(model), "imgsz": 640, "batch": 8,
        "compile": "off", "backend": backend, "rep": rep, "seed": rep, "status": status,
        "step_ms_median": step, "gpu_ms_per_step": gpu, "peak_alloc_mb": peak,
        "gpu_busy_fraction": gpu / step if step else None, "point_id": f"{model}/{backend}/{rep}",
        "started": f"2026-01-01T00:00:{rep:02d}.{len(backend):03d}", "provenance": {"matched": True, "dispatched": backend},
        **extra,
    }  # fmt: skip


POINTS = [
    _point("yolo12n", "eager", 0, 100.0, 20.0, 1000.0),
    _point("yolo12n", "eager", 1, 102.0, 21.0, 1000.0),
    _point("yolo12n", "eager", 2, 98.0, 19.0, 1000.0),
    _point("yolo12n", "sdpa", 0, 95.0, 16.0, 800.0),
    _point("yolo12n", "sdpa", 1, 100.0, 17.0, 800.0),
    _point("yolo12n", "sdpa", 2, 96.0, 15.0, 800.0),
    _point("yolo12l", "eager", 0, 200.0, 150.0, 9000.0),
    _point("yolo12l", "eager", 1, None, None, None, status="oom", reason="out of memory"),
    _point("yolo12l", "sdpa", 0, 160.0, 110.0, 6000.0),
    _point("yolo12l", "sdpa", 1, 170.0, 120.0, 6000.0),
]


@pytest.fixture
def point_files(tmp_path) -> list[Path]:
    paths = []
    for i, point in enumerate(POINTS):
        path = tmp_path / f"p{i}.json"
        path.write_text(json.dumps(point))
        paths.append(path)
    return paths


# Paired blocks of known timings: yolo12n's sdpa takes 0.90-0.93 of eager's step in each
# round (the baseline drifts, the ratio does not); yolo12l's sdpa ran out of memory.
N_RATIOS = [0.90, 0.92, 0.91, 0.93]


def _paired_summary(model: str, status: dict | None = None) -> pd.DataFrame:
    rows = []
    for r, ratio in enumerate(N_RATIOS if not status else []):
        for arm, ms in (("eager", 100.0 + 3 * r), ("sdpa", (100.0 + 3 * r) * ratio)):
            rows.append({"arm": arm, "block": len(rows), "round": r, "position": 0, "warmup": False,
                         "steps": 4, "total_ms": 4 * ms, "ms_per_step": ms, "clock": "perf_counter",
                         "device_name": "Test GPU"})  # fmt: skip
    blocks = pd.DataFrame(rows, columns=paired_stats.BLOCK_COLUMNS)
    summary = paired_stats.summarize(blocks, ["eager", "sdpa"], "eager", 0.05, 1.0, status)
    point = {"model_name": model, "scale": grid.scale_of(model), "imgsz": 640, "batch": 8,
             "compile": "off"}  # fmt: skip
    return sweep_tables.paired_cell(summary, point)


@pytest.fixture
def paired_files(tmp_path) -> list[Path]:
    paths = []
    for model, status in (("yolo12n", None), ("yolo12l", {"sdpa": ("oom", "out of memory")})):
        path = tmp_path / f"paired_{model}.csv"
        sweep_tables.write(_paired_summary(model, status), path)
        paths.append(path)
    return paths


def _tables(point_files, paired_files, skips=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    points = sweep_tables.points_frame(point_files)
    paired = sweep_tables.paired_frame(paired_files, points, "eager", skips or {"off": None})
    return paired, sweep_tables.summary(points, "eager", paired)


def test_points_table_keeps_failed_points(point_files):
    frame = sweep_tables.points_frame(point_files)
    assert len(frame) == len(POINTS)
    assert list(frame.columns) == sweep_tables.POINT_COLUMNS
    oom = frame[frame["status"] == "oom"]
    assert len(oom) == 1 and oom["reason"].iloc[0] == "out of memory"
    assert frame["provenance_matched"].all()


def test_summary_against_an_independent_computation(point_files, paired_files):
    _, summary = _tables(point_files, paired_files)
    row = summary.set_index(["model_name", "backend"])
    n_sdpa = row.loc[("yolo12n", "sdpa")]
    assert n_sdpa["step_ms"] == 96.0 and n_sdpa["gpu_ms"] == 16.0
    assert n_sdpa["gpu_speedup"] == pytest.approx(20.0 / 16.0)
    same_seed = [20 / 16, 21 / 17, 19 / 15]
    assert n_sdpa["gpu_speedup_lo"] == pytest.approx(min(same_seed))
    assert n_sdpa["gpu_speedup_hi"] == pytest.approx(max(same_seed))
    assert n_sdpa["memory_saving_pct"] == pytest.approx(20.0)
    steps = pd.Series([95.0, 100.0, 96.0])
    assert n_sdpa["step_ms_cv_pct"] == pytest.approx(100 * steps.std() / steps.mean())
    l_eager = row.loc[("yolo12l", "eager")]
    assert (l_eager["points"], l_eager["ok"], l_eager["oom"]) == (2, 1, 1)
    assert l_eager["status"] == "1 ok, 1 oom" and l_eager["step_ms"] == 200.0
    l_sdpa = row.loc[("yolo12l", "sdpa")]
    assert l_sdpa["gpu_speedup"] == pytest.approx(150.0 / 115.0)
    assert l_sdpa["gpu_speedup_lo"] == l_sdpa["gpu_speedup_hi"] == pytest.approx(150 / 110)
    assert l_sdpa["memory_saving_pct"] == pytest.approx(100 * (1 - 6000 / 9000))
    # yolo12n: sdpa is faster in paired wall time; yolo12l's sdpa ran out of memory there,
    # so the cell has no paired winner (its unpaired step times would have named sdpa).
    assert summary.groupby("model_name", sort=False)["fastest"].sum().tolist() == [1, 0]
    assert bool(row.loc[("yolo12n", "sdpa"), "fastest"])
    assert summary["model_name"].tolist() == [
        "yolo12n",
        "yolo12n",
        "yolo12l",
        "yolo12l",
    ]  # by scale


def test_the_wall_time_ratio_is_the_paired_summarys(point_files, paired_files):
    """The summary's wall-time ratio and interval are the paired summary's, as written;
    step_speedup is their reciprocal, and the unpaired step times play no part."""
    expected = _paired_summary("yolo12n").set_index("arm").loc["sdpa"]
    written = io.read_csv(paired_files[0]).set_index("arm").loc["sdpa"]
    assert expected["status"] == "ok" and expected["blocks"] == len(N_RATIOS)
    assert expected["ratio"] == pytest.approx(
        sum(100.0 * r + 3 * i * r for i, r in enumerate(N_RATIOS)) / sum(100.0 + 3 * i for i in range(4))
    )  # fmt: skip
    assert expected["ratio_ci_low"] < expected["ratio"] < expected["ratio_ci_high"] < 1
    paired, summary = _tables(point_files, paired_files)
    row = summary.set_index(["model_name", "backend"]).loc[("yolo12n", "sdpa")]
    for column in ("ratio", "ratio_ci_low", "ratio_ci_high", "halfwidth_pct", "block_cv"):
        assert row[f"wall_{column}"] == written[column]
        assert row[f"wall_{column}"] == pytest.approx(expected[column], rel=1e-12)
    assert row["wall_blocks"] == 4 and row["wall_status"] == "ok"
    assert row["step_speedup"] == pytest.approx(1 / expected["ratio"])
    assert row["step_speedup_lo"] == pytest.approx(1 / expected["ratio_ci_high"])
    assert row["step_speedup_hi"] == pytest.approx(1 / expected["ratio_ci_low"])
    base = summary.set_index(["model_name", "backend"]).loc[("yolo12n", "eager")]
    assert (base["wall_ratio"], base["step_speedup"], base["wall_status"]) == (1.0, 1.0, "baseline")
    # An arm out of memory in the paired timing is a status with its reason, not a ratio.
    oom = summary.set_index(["model_name", "backend"]).loc[("yolo12l", "sdpa")]
    assert oom["wall_status"] == "oom" and "out of memory" in oom["wall_reason"]
    assert pd.isna(oom["wall_ratio"]) and pd.isna(oom["step_speedup"])
    assert list(paired.columns) == sweep_tables.PAIRED_COLUMNS
    assert paired[["model_name", "arm", "status"]].values.tolist() == [
        ["yolo12n", "sdpa", "ok"], ["yolo12l", "sdpa", "oom"],
    ]  # fmt: skip


def test_compiled_cells_are_skipped_with_their_reason(point_files, paired_files, tmp_path):
    """A compile mode's cells state no wall-time ratio and say why, in both tables."""
    compiled = tmp_path / "compiled.json"
    point = _point("yolo12n", "sdpa", 0, 50.0, 10.0, 800.0, compile="default")
    compiled.write_text(json.dumps({**point, "point_id": "yolo12n/default/sdpa/0"}))
    reason = sweep.plan(_config(backends=["eager", "sdpa"])).paired_skip("default")
    assert reason and "eager-mode modules only" in reason
    paired, summary = _tables(
        [*point_files, compiled], paired_files, {"off": None, "default": reason}
    )
    skipped = paired[paired["compile"] == "default"]
    assert skipped[["arm", "status", "reason"]].values.tolist() == [["sdpa", "skipped", reason]]
    row = summary[(summary["compile"] == "default")].iloc[0]
    assert row["wall_status"] == "skipped" and row["wall_reason"] == reason
    assert pd.isna(row["wall_ratio"]) and pd.isna(row["step_speedup"]) and not row["fastest"]
    assert row["gpu_ms"] == 10.0  # GPU time is still stated


def test_paired_skip_reasons():
    plan = sweep.plan(_config(backends=["eager", "sdpa"], compile=[False, "default"]))
    assert plan.paired_skip("off") is None and [g.compile for g in plan.paired_groups()] == ["off"]
    assert plan.paired_point(plan.paired_groups()[0])["arms"] == ["eager", "sdpa"]
    off = sweep.plan(_config(backends=["eager", "sdpa"], paired={"enabled": False}))
    assert off.paired_groups() == [] and off.paired_skip("off") == sweep.PAIRED_OFF
    single = sweep.plan(_config(backends=["eager"]))
    assert single.paired_groups() == [] and "one backend" in single.paired_skip("off")


@pytest.mark.parametrize(
    ("paired", "message"),
    [
        ({"steps_per_block": 0}, r"sweep\.paired\.steps_per_block = 0 is invalid: .*\(minimum 1\)"),
        ({"rounds": 1}, r"sweep\.paired\.rounds = 1 is invalid: .*\(minimum 2\)"),
        ({"block_size": 4}, r"config key 'sweep\.paired\.block_size' is unknown"),
    ],
)
def test_bad_paired_settings_are_one_line_config_errors(paired, message):
    with pytest.raises(ConfigError, match=message) as error:
        _config(backends=["eager", "sdpa"], paired=paired)
    assert "\n" not in str(error.value)


def test_paired_block_settings_reach_the_rule_and_the_estimate():
    config = _config(backends=["eager", "sdpa"], paired={"steps_per_block": 3, "rounds": 6})
    plan = sweep.plan(config)
    got = plan.paired_block_settings(0.05)
    assert got["steps_per_block"] == 3 and got["rounds"] == 6 and got["alpha"] == 0.05
    assert got["deterministic"] is True
    cheap = sweep_cost.estimate(plan, config["train"])["paired_s"]
    costly = sweep_cost.estimate(
        sweep.plan(_config(backends=["eager", "sdpa"], paired={"steps_per_block": 30})),
        config["train"],
    )["paired_s"]
    assert 0 < cheap < costly
    assert (
        sweep_cost.estimate(sweep.plan(_config(backends=["eager"])), config["train"])["paired_s"]
        == 0
    )


def test_max_batch_table(tmp_path):
    docs = [
        {"model_name": "yolo12n", "scale": "n", "imgsz": 640, "backend": "eager", "status": "ok",
         "max_batch": 100, "first_oom": 101, "limited_by": "memory",
         "probes": [{"batch": 64, "status": "ok", "peak_alloc_mb": 60.0}, {"batch": 100, "status": "ok", "peak_alloc_mb": 99.0}]},
        {"model_name": "yolo12n", "scale": "n", "imgsz": 640, "backend": "sdpa", "status": "ok",
         "max_batch": 150, "first_oom": 151, "limited_by": "memory", "probes": [{"batch": 150, "status": "ok"}]},
        {"model_name": "yolo12n", "scale": "n", "imgsz": 640, "backend": "flash_attn", "status": "unavailable",
         "reason": "needs a GPU", "max_batch": None, "probes": []},
    ]  # fmt: skip
    paths = []
    for i, doc in enumerate(docs):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(doc))
    frame = sweep_tables.max_batch_frame(paths, "eager").set_index("backend")
    assert frame.loc["sdpa", "max_batch_ratio"] == pytest.approx(1.5)
    assert frame.loc["eager", "peak_alloc_mb_at_max"] == 99.0 and frame.loc["eager", "probes"] == 2
    assert frame.loc["flash_attn", "status"] == "unavailable"


# --------------------------------------------------------------------------- #
# Figures and the report section


PNG = b"\x89PNG\r\n\x1a\n"


def test_figures_render_from_known_inputs_and_from_nothing(point_files, paired_files, tmp_path):
    _, summary = _tables(point_files, paired_files)
    max_batch = pd.DataFrame(
        [{"model_name": m, "imgsz": 640, "backend": b, "max_batch": n, "limited_by": "memory"}
         for m, b, n in [("yolo12n", "eager", 100), ("yolo12n", "sdpa", 150), ("yolo12l", "eager", 20), ("yolo12l", "sdpa", 30)]]
    )  # fmt: skip
    keys = ("speedup", "gpu_busy", "max_batch", "fastest")
    for name, (s, m) in {
        "full": (summary, max_batch),
        "empty": (summary.iloc[0:0], max_batch.iloc[0:0]),
    }.items():
        paths = {k: tmp_path / f"{name}_{k}.png" for k in keys}
        sweep_plots.draw_all(s, m, "eager", ["eager", "sdpa"], paths)
        for path in paths.values():
            assert path.read_bytes()[:8] == PNG, path


def test_fastest_heat_map_names_the_winner_of_each_cell(
    point_files, paired_files, tmp_path, monkeypatch
):
    _, summary = _tables(point_files, paired_files)
    seen = {}
    original = sweep_plots.sns.heatmap

    def spy(grid, **kwargs):
        seen["grid"], seen["annot"] = grid, kwargs["annot"]
        return original(grid, **kwargs)

    monkeypatch.setattr(sweep_plots.sns, "heatmap", spy)
    sweep_plots.fastest(summary, "eager", ["eager", "sdpa"], tmp_path / "f.png")
    assert seen["grid"].tolist() == [[1.0]]  # sdpa (code 1); yolo12l has no paired winner
    ratio = _paired_summary("yolo12n").set_index("arm").loc["sdpa", "ratio"]
    assert seen["annot"][0][0] == f"sdpa\n{1 / ratio:.2f}x vs eager"


def _render(context) -> str:
    macro = (REPO / "report" / "report.html.j2").read_text()
    start = macro.index("{% macro table(t)")
    end = macro.index("{%- endmacro %}") + len("{%- endmacro %}")
    page = macro[start:end] + '\n{% if sweep %}{% include "sweep.html.j2" %}{% endif %}'
    env = jinja2.Environment(
        loader=jinja2.DictLoader({"page": page, "sweep.html.j2": (REPO / "report" / "sweep.html.j2").read_text()}),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )  # fmt: skip
    return env.get_template("page").render(sweep=context)


def test_report_section_renders_and_is_absent_without_a_sweep(point_files, paired_files, tmp_path):
    points = sweep_tables.points_frame(point_files)
    paired, summary = _tables(point_files, paired_files)
    paths = {name: tmp_path / f"{name}.csv" for name in ("sweep", "sweep_summary", "sweep_paired")}
    sweep_tables.write(points, paths["sweep"])
    sweep_tables.write(summary, paths["sweep_summary"])
    sweep_tables.write(paired, paths["sweep_paired"])
    plot = tmp_path / "sweep_speedup.png"
    plot.write_bytes(PNG)
    context = sweep_report.context(
        paths.values(), [plot], "eager", lambda p: "data:image/png;base64,AA=="
    )
    html = _render(context)
    assert 'id="sweep"' in html and "data:image/png;base64,AA==" in html
    assert "1 point(s) ran out of memory" in html
    assert "Fastest by paired wall time at imgsz 640, batch 8: yolo12n: sdpa." in html
    row = paired.set_index("model_name").loc["yolo12n"]
    ci = f"[{fmt_ratio(row['ratio_ci_low'])}, {fmt_ratio(row['ratio_ci_high'])}]"
    assert (
        "yolo12n, imgsz 640, batch 8: wall time against eager (paired, 95% CI): "
        f"sdpa {fmt_ratio(row['ratio'])} {ci} over 4 rounds." in html
    )
    assert (
        "yolo12l, imgsz 640, batch 8: wall time against eager (paired, 95% CI): sdpa oom "
        "(sdpa: out of memory)." in html
    )
    assert "interleaved blocks of 4 step(s)" in html and "<strong>one process</strong>" in html
    assert "Wall time was not resolved" not in html
    # Without paired timing the section says wall time was not resolved.
    sweep_tables.write(sweep_tables.summary(points, "eager"), paths["sweep_summary"])
    bare = _render(sweep_report.context([paths["sweep"], paths["sweep_summary"]], [], "eager", str))
    assert "Wall time was not resolved" in bare and "Fastest by" not in bare
    assert sweep_report.context([], [], "eager", str) is None
    assert 'id="sweep"' not in _render(None)


def test_section_inputs_only_when_enabled():
    assert sweep_report.section_inputs(False) == {"tables": [], "plots": []}
    inputs = sweep_report.section_inputs(True)
    assert "results/tables/sweep.csv" in inputs["tables"]
    assert len(inputs["plots"]) == len(sweep_report.PLOTS)


def test_reference_config_matches_the_default_schema_keys(gpu_host_data):
    """The docs config sets every sweep key the issue names, and nothing the schema lacks."""
    raw = cfg.load_file(REFERENCE)["sweep"]
    for key in ("models", "batches", "imgsizes", "backends", "repeats", "steps", "compile",
                "deterministic", "find_max_batch", "max_batch", "order_seed"):  # fmt: skip
        assert key in raw


def test_a_point_counts_timed_steps_as_the_timer_will():
    """Warm-up, excluded (window) and optimizer-step intervals do not count toward `steps`."""
    import torch

    recorder = sweep_run.PointRecorder(
        "eager", torch.device("cpu"), 1, TimingWindow(warmup_iters=1, profile_iters=0), 2, "p", 2
    )
    timer = recorder.timer
    timer.epoch_start()
    for excluded in (False, True, False, False, False):
        timer.mark(exclude=excluded)
    if hasattr(timer, "optimizer_stepped"):  # the timer keeps optimizer iterations apart
        timer._marks[2][3] = True
        assert recorder.timed() == 1  # marks 0 warm-up, 1 excluded, 2 optimizer, 3 timed
    else:
        assert recorder.timed() == 2
    timer.mark()
    expected = recorder.timed()
    timer.epoch_end()
    assert len(timer.step_ms) == expected
