"""The kernel benchmark on CPU at tiny sizes: FLOP counting, rows and their columns,
unavailable and skipped rows, the CSV contract, the backend's context entered once
around the measurement, repetitions (median and spread), graph columns and progress
lines, graphs off after a failed capture; timing and CUDA-graph capture of every backend
on a GPU when present (a deliberately failing capture runs in a child process)."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from attnbench import host
from attnbench.backends import parity, shapes
from attnbench.backends import registry as backends
from attnbench.env import envinfo
from attnbench.measure import graph_repair, kernelbench, kerneltiming

CPU = torch.device("cpu")
SHAPES = {
    "model": "yolo12n.yaml",
    "calls": [
        {"layer": "model.6", "phase": "train", "B": 4, "heads": 2, "N": 16, "head_dim": 32,
         "calls_per_forward": 2},
        {"layer": "model.8", "phase": "val", "B": 2, "heads": 4, "N": 16, "head_dim": 32,
         "calls_per_forward": 2},
        {"layer": "model.8b", "phase": "val", "B": 2, "heads": 4, "N": 16, "head_dim": 32,
         "calls_per_forward": 2},
    ],
}  # fmt: skip
TINY = {
    "dtypes": ["float16", "bfloat16", "float32"],
    "warmup": 1,
    "repeats": 50,
    "seq_lens": [400, 1600],
    "cpu_seq_lens": [32],
    "cpu_repeats": 3,
    "repetitions": 2,
}


def test_flops_follow_the_stated_convention():
    assert shapes.attention_flops(8, 4, 400, 32) == 4 * 8 * 4 * 400**2 * 32
    p = shapes.AttentionProblem("model", "train", 8, 4, 400, 32)
    assert p.fwdbwd_flops == 3.5 * p.fwd_flops  # backward counted as 2.5x forward


def test_problems_dedupe_model_calls_then_sweep():
    todo = shapes.problems(SHAPES, [1600, 400, 400])
    assert [(p.kind, p.phase, p.B, p.N) for p in todo] == [
        ("model", "train", 4, 16),
        ("model", "val", 2, 16),
        ("sweep", "sweep", 8, 400),
        ("sweep", "sweep", 8, 1600),
    ]
    assert all(p.heads == 4 and p.head_dim == 32 for p in todo if p.kind == "sweep")


def test_views_are_aattn_layout():
    p = shapes.AttentionProblem("model", "train", 2, 3, 5, 4)
    buf = torch.arange(2 * 5 * 3 * 12, dtype=torch.float32).view(2, 5, 36)
    q, k, v = kernelbench._views(buf, p, channels_last=True)
    assert q.shape == (2, 3, 5, 4) and q.stride(-1) == 1
    # head 1's q is channels 12..15 of the interleaved (h, 3d) block, as in AAttn
    assert torch.equal(q[0, 1, 0], buf[0, 0, 12:16])
    assert torch.equal(v[1, 2, 4], buf[1, 4, 32:36])
    conv = buf.transpose(1, 2).contiguous()  # the conv's (B, C, N) layout
    q2, _, v2 = kernelbench._views(conv, p, channels_last=False)
    assert torch.equal(q2, q) and torch.equal(v2, v)


def test_cpu_rows_for_an_available_backend():
    rows = kernelbench.run("sdpa_math", SHAPES, TINY, CPU, matmul_peak=0.1)
    assert all(list(r) == kernelbench.COLUMNS for r in rows)
    assert {r["dtype"] for r in rows} == {"bfloat16", "float32"}  # no fp16 on a CPU
    assert {(r["kind"], r["N"]) for r in rows} == {("model", 16), ("sweep", 32)}
    assert len(rows) == 2 * 3  # (2 model + 1 sweep) x 2 dtypes
    for r in rows:
        assert r["status"] == "ok", r
        assert r["repeats"] == 3 and r["device"] == "cpu" and r["peak_mem_mb"] is None
        assert r["repetitions"] == 2
        assert r["fwd_ms"] > 0 and r["fwdbwd_ms"] > 0
        assert r["fwd_tflops"] == pytest.approx(r["fwd_flops"] / r["fwd_ms"] / 1e9, rel=1e-3)
        assert r["pct_of_matmul_peak"] == pytest.approx(100 * r["fwdbwd_tflops"] / 0.1, rel=1e-3)
        assert r["matmul_peak_tflops"] == 0.1


def test_unavailable_backend_writes_rows_with_the_reason():
    rows = kernelbench.run("sdpa_cudnn", SHAPES, TINY, CPU)
    assert rows and all(r["status"] == "unavailable" for r in rows)
    assert all("needs a CUDA GPU" in r["reason"] for r in rows)
    assert all(r["fwd_ms"] is None and r["matmul_peak_tflops"] is None for r in rows)


def test_problem_over_half_the_free_memory_is_skipped(monkeypatch):
    monkeypatch.setattr(host, "free_bytes", lambda device: 10_000)
    rows = kernelbench.run("eager", SHAPES, TINY, CPU, matmul_peak=0.1)
    assert all(r["status"] == "skipped" for r in rows)
    assert "over 50% of the" in rows[0]["reason"]


def test_materializing_backends_are_estimated_larger():
    p = shapes.AttentionProblem("sweep", "sweep", 8, 4, 25600, 32)
    math_bytes = kernelbench.estimate_bytes("sdpa_math", p, torch.float16, 2)
    fused_bytes = kernelbench.estimate_bytes("sdpa_flash", p, torch.float16, 2)
    assert math_bytes > 8 * 8 * 4 * 25600**2 * 2 > 100 * fused_bytes


def test_kernel_failure_at_one_size_is_a_row(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("No available kernel. Aborting execution.\nmore")

    monkeypatch.setattr(kernelbench, "bench_problem", refuse)
    rows = kernelbench.run("sdpa_flash", SHAPES, TINY, CPU, matmul_peak=0.1)
    assert {r["status"] for r in rows} == {"failed"}
    assert rows[0]["reason"] == "No available kernel. Aborting execution."


def test_write_csv_has_the_design_columns(tmp_path):
    rows = kernelbench.run("sdpa_cudnn", SHAPES, TINY, CPU)
    path = tmp_path / "kernels" / "sdpa_cudnn.csv"
    kernelbench.write_csv(path, rows)
    with path.open() as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == kernelbench.COLUMNS
        first = next(reader)
    assert first["status"] == "unavailable" and first["fwd_ms"] == ""


def test_backend_context_is_entered_once_around_the_measurement(monkeypatch):
    """A forced SDPA kernel is selected once per run, outside the timed calls, not per call."""
    entered, active = [], []

    @contextlib.contextmanager
    def activate():
        entered.append(1)
        active.append(1)
        try:
            yield
        finally:
            active.pop()

    def attention(q, k, v):
        assert active, "attention ran outside the backend's context"
        return backends.sdpa_attention(q, k, v)

    entry = dataclasses.replace(backends.REGISTRY["sdpa_math"], fn=attention, activate=activate)
    monkeypatch.setitem(backends.REGISTRY, "sdpa_math", entry)
    rows = kernelbench.run("sdpa_math", SHAPES, TINY, CPU, matmul_peak=0.1)
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
    # One availability check per (dtype, head_dim) enters it too; then once for all 6 rows.
    assert len(entered) == 2 + 1


def test_probe_parity_and_bench_library_calls_on_cpu(tmp_path):
    """What rules probe_backends, parity and kernel_bench call, on a CPU."""
    probe = envinfo.probe_backends(["eager", "sdpa_flash", "sdpa_cudnn"], CPU, torch.float32)
    assert probe["eager"]["available"] is True
    assert probe["sdpa_cudnn"]["available"] is False
    calls = SHAPES["calls"]
    for name in ("eager", "sdpa_cudnn"):
        rows = parity.run(name, calls, {"float32": 1e-4}, CPU)
        assert {r["status"] for r in rows} == ({"ok"} if name == "eager" else {"unavailable"})
        settings = {**TINY, "dtypes": ["float32"], "cpu_repeats": 2}
        kernelbench.write_csv(
            tmp_path / f"{name}.csv", kernelbench.run(name, SHAPES, settings, CPU)
        )
    with (tmp_path / "eager.csv").open() as fh:
        assert {r["status"] for r in csv.DictReader(fh)} == {"ok"}


@pytest.mark.gpu
def test_gpu_timing_memory_and_ceiling():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    device = torch.device("cuda", 0)
    settings = {**TINY, "dtypes": ["float16", "float32"], "seq_lens": [400]}
    rows = kernelbench.run("sdpa_flash", SHAPES, settings, device)
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok and all(r["dtype"] == "float16" for r in ok)  # flash refuses fp32 on CUDA
    assert all(r["repeats"] >= kernelbench.MIN_GPU_REPEATS for r in ok)
    assert all(r["peak_mem_mb"] is not None and r["peak_mem_mb"] >= 0 for r in ok)
    assert all(0 < r["pct_of_matmul_peak"] < 100 for r in ok)
    assert all("fp16/bf16" in r["reason"] for r in rows if r["dtype"] == "float32")


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["eager", "sdpa", "sdpa_efficient", "sdpa_cudnn"])
def test_gpu_backends_give_rows(name):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if backends.check(name, torch.device("cuda", 0), torch.float16):
        pytest.skip(f"{name} is unavailable on this GPU")
    settings = {**TINY, "dtypes": ["float16"], "seq_lens": [400]}
    rows = kernelbench.run(name, SHAPES, settings, torch.device("cuda", 0), min_repeats=50)
    assert {r["status"] for r in rows} == {"ok"}


# --------------------------------------------------------------------------- #
# Graph columns, repetitions, progress


GRAPH_COLUMNS = ["graph_fwd_ms", "graph_fwdbwd_ms", "graph_fwd_tflops", "graph_fwdbwd_tflops"]
NEW_COLUMNS = [*GRAPH_COLUMNS, "graph_note", *kernelbench.SPREADS, "repetitions"]


def test_new_columns_and_their_types_on_cpu(tmp_path):
    """Graph columns exist and are NaN on a CPU (no graphs there), with the reason; spreads
    and the repetition count are numbers; every earlier column is kept in its place."""
    old = kernelbench.COLUMNS[: kernelbench.COLUMNS.index("repeats") + 1]
    assert [*old, *NEW_COLUMNS] == kernelbench.COLUMNS
    rows = kernelbench.run("sdpa_math", SHAPES, {**TINY, "repetitions": 3}, CPU, matmul_peak=0.1)
    rows += kernelbench.run("sdpa_cudnn", SHAPES, TINY, CPU)
    path = tmp_path / "kernels.csv"
    kernelbench.write_csv(path, rows)
    frame = pd.read_csv(path)
    assert list(frame.columns) == kernelbench.COLUMNS
    for column in (*GRAPH_COLUMNS, "graph_fwd_ms_spread_pct", "graph_fwdbwd_ms_spread_pct"):
        assert frame[column].dtype == float and frame[column].isna().all(), column
    ok = frame[frame["status"] == "ok"]
    assert (ok["graph_note"] == "no CUDA graphs on cpu").all()
    assert (ok["repetitions"] == 3).all() and frame["repetitions"].dtype.kind == "i"
    for column in ("fwd_ms_spread_pct", "fwdbwd_ms_spread_pct"):
        assert ok[column].dtype == float and (ok[column] >= 0).all()
    unavailable = frame[frame["status"] == "unavailable"]
    assert (unavailable["repetitions"] == 0).all() and unavailable["graph_note"].isna().all()


def test_spread_pct_of_known_values():
    assert kerneltiming.spread_pct([1.0, 1.2, 0.9]) == pytest.approx(30.0)
    assert kerneltiming.spread_pct([2.0, 2.0, 2.0]) == 0.0
    assert kerneltiming.spread_pct([2.0, None, float("nan"), 3.0]) == pytest.approx(40.0)
    assert kerneltiming.spread_pct([2.0]) is None and kerneltiming.spread_pct([]) is None


def _rep(fwd, fwdbwd, gfwd, gfwdbwd, mem=10.0, note=None, status="ok", reason=None):
    return {"status": status, "reason": reason, "repeats": 50, "fwd_ms": fwd,
            "fwdbwd_ms": fwdbwd, "graph_fwd_ms": gfwd, "graph_fwdbwd_ms": gfwdbwd,
            "peak_mem_mb": mem, "graph_note": note}  # fmt: skip


def test_combine_takes_the_median_and_spread_of_the_repetitions():
    reps = [_rep(0.30, 1.0, 0.10, 0.50), _rep(0.20, 1.2, 0.11, 0.40), _rep(0.25, 0.9, 0.09, 0.45)]
    row = kernelbench.combine(reps)
    assert row["status"] == "ok" and row["reason"] is None and row["repetitions"] == 3
    assert row["repeats"] == 50 and row["peak_mem_mb"] == 10.0
    assert (row["fwd_ms"], row["fwdbwd_ms"]) == (0.25, 1.0)
    assert (row["graph_fwd_ms"], row["graph_fwdbwd_ms"]) == (0.10, 0.45)
    assert row["fwd_ms_spread_pct"] == pytest.approx(100 * 0.10 / 0.25)
    assert row["fwdbwd_ms_spread_pct"] == pytest.approx(30.0)
    assert row["graph_fwd_ms_spread_pct"] == pytest.approx(100 * 0.02 / 0.10)
    assert row["graph_fwdbwd_ms_spread_pct"] == pytest.approx(100 * 0.10 / 0.45)
    # Rates come from the medians, as every row of the CSV does.
    p = shapes.AttentionProblem("model", "train", 8, 4, 400, 32)
    rated = kernelbench._rates(p, row, peak=100.0)
    assert rated["fwdbwd_tflops"] == pytest.approx(p.fwdbwd_flops / 1.0 / 1e9, rel=1e-4)
    assert rated["graph_fwdbwd_tflops"] == pytest.approx(p.fwdbwd_flops / 0.45 / 1e9, rel=1e-4)
    assert rated["pct_of_matmul_peak"] == pytest.approx(rated["fwdbwd_tflops"], rel=1e-4)


def test_combine_with_a_missing_graph_time_and_a_failed_repetition():
    note = "fwd+bwd: capture failed: RuntimeError: operation not permitted when stream is capturing"
    reps = [
        _rep(0.3, 1.0, 0.1, None, note=note),
        _rep(0.2, 1.2, 0.2, None, note=note),
        {"status": "skipped", "reason": "out of memory: CUDA out of memory"},
    ]
    row = kernelbench.combine(reps)
    assert row["status"] == "ok" and row["repetitions"] == 2
    assert row["reason"] == "1 of 3 repetitions skipped: out of memory: CUDA out of memory"
    assert row["fwdbwd_ms"] == pytest.approx(1.1) and row["graph_fwd_ms"] == pytest.approx(0.15)
    assert row["graph_fwdbwd_ms"] is None and row["graph_fwdbwd_ms_spread_pct"] is None
    assert row["graph_note"] == note  # the same note once, not once per repetition
    failed = kernelbench.combine([{"status": "failed", "reason": "boom"}] * 3)
    assert failed == {"status": "failed", "reason": "boom", "repetitions": 0}


def test_graph_failure_is_a_note_in_an_ok_row(monkeypatch):
    """A call that cannot be captured keeps its direct times; its graph columns are empty."""

    def refused(*args, **kwargs):
        return {"graph_fwd_ms": None, "graph_fwdbwd_ms": None, "graph_note": "fwd: capture failed"}

    monkeypatch.setattr(kernelbench, "graph_times", refused)
    rows = kernelbench.run("eager", SHAPES, {**TINY, "dtypes": ["float32"]}, CPU, matmul_peak=0.1)
    assert {r["status"] for r in rows} == {"ok"}
    assert all(r["graph_note"] == "fwd: capture failed" and r["fwd_ms"] > 0 for r in rows)
    assert all(r["graph_fwdbwd_tflops"] is None for r in rows)


def test_graph_timing_says_why_it_did_not_run():
    assert kerneltiming.graph_ms(lambda: (), CPU, 3) == (None, "CUDA graphs need a CUDA GPU (cpu)")
    off = kerneltiming.graph_times(lambda i: torch.zeros(1), torch.zeros(1), torch.zeros(1),
                                   CPU, 3, switch=False, log=kernelbench.LOG)  # fmt: skip
    assert off["graph_note"] == "CUDA graphs switched off (kernels.graphs: false)"
    rows = kernelbench.run(
        "eager", SHAPES, {**TINY, "dtypes": ["float32"], "graphs": False}, CPU, matmul_peak=0.1
    )
    assert {r["graph_note"] for r in rows} == {"CUDA graphs switched off (kernels.graphs: false)"}


def _fake_timer(fail_at: int, calls: list):
    """A stand-in for kerneltiming.replay_ms: 0.1 ms, except that call `fail_at` breaks."""

    def timer(call):
        calls.append(call)
        if len(calls) == fail_at:
            raise kerneltiming.GraphBroke("capture failed: Boom: capturing", "Boom: capturing")
        return 0.1, None

    return timer


def test_graph_switch_stops_after_the_first_failure():
    calls = []
    switch, timer = kerneltiming.GraphSwitch(), _fake_timer(2, calls)
    cols = (("graph_fwd_ms", "fwd", "f"), ("graph_fwdbwd_ms", "fwd+bwd", "fb"))
    first = kerneltiming.time_graphs(switch, cols, timer)
    assert first == {"graph_fwd_ms": 0.1, "graph_fwdbwd_ms": None,
                     "graph_note": "fwd+bwd: capture failed: Boom: capturing"}  # fmt: skip
    later = kerneltiming.time_graphs(switch, cols, timer)
    assert calls == ["f", "fb"]  # nothing is captured after the failure
    assert later == {"graph_fwd_ms": None, "graph_fwdbwd_ms": None,
                     "graph_note": "graphs off after a failed capture: Boom: capturing"}  # fmt: skip
    # A new benchmark captures again, unless a failure left the process unrepaired.
    assert kerneltiming.time_graphs(kerneltiming.GraphSwitch(), cols, timer)["graph_note"] is None
    off = kerneltiming.GraphSwitch(enabled=False)
    assert kerneltiming.time_graphs(off, cols, timer)["graph_note"] == (
        "CUDA graphs switched off (kernels.graphs: false)"
    )
    assert len(calls) == 4


def test_an_unrepaired_failure_switches_graphs_off_for_the_process(monkeypatch):
    monkeypatch.setattr(kerneltiming, "_PROCESS_BROKEN", "Boom (generator still unusable)")
    calls = []
    cols = (("graph_fwd_ms", "fwd", "f"),)
    times = kerneltiming.time_graphs(kerneltiming.GraphSwitch(), cols, _fake_timer(0, calls))
    assert not calls and times["graph_fwd_ms"] is None
    assert times["graph_note"] == (
        "graphs off in this process after an unrepaired failed capture: "
        "Boom (generator still unusable)"
    )


def test_run_captures_nothing_after_its_first_failed_capture(monkeypatch):
    """The first failure (here: in the second timed problem) turns graphs off for the rest of
    the run, every repetition included; the direct times of every row stand; the untimed
    pass over the first problem runs once per repetition and is not in the rows."""
    calls, measured = [], []
    timer = _fake_timer(2 * 3, calls)  # warm-up pass and first problem: 2 calls each

    def graph_times(forward, buf, dout, device, repeats, switch, log):
        measured.append(switch)
        cols = (("graph_fwd_ms", "fwd", "f"), ("graph_fwdbwd_ms", "fwd+bwd", "fb"))
        return kerneltiming.time_graphs(switch, cols, timer)

    monkeypatch.setattr(kernelbench, "graph_times", graph_times)
    settings = {**TINY, "dtypes": ["float32"], "repetitions": 2}
    rows = kernelbench.run("eager", SHAPES, settings, CPU, matmul_peak=0.1)
    assert len(measured) == 2 * (1 + 3) and len({id(s) for s in measured}) == 1
    assert len(calls) == 6  # nothing after the failure
    assert {r["status"] for r in rows} == {"ok"} and all(r["fwdbwd_ms"] > 0 for r in rows)
    off = "graphs off after a failed capture: Boom: capturing"
    first, second, third = rows
    assert first["graph_fwd_ms"] == 0.1 and first["graph_note"] == off  # rep 2 was off
    assert first["graph_fwd_ms_spread_pct"] is None  # one value: no spread
    assert second["graph_fwd_ms"] == 0.1 and second["graph_fwdbwd_ms"] is None
    assert second["graph_note"] == f"fwd+bwd: capture failed: Boom: capturing | {off}"
    assert third["graph_fwd_ms"] is None and third["graph_note"] == off


def test_each_repetition_starts_with_an_untimed_pass_over_the_first_problem(monkeypatch):
    seen = []
    real = kernelbench.bench_problem

    def bench_problem(backend, p, *args, **kwargs):
        seen.append(p.N)
        return real(backend, p, *args, **kwargs)

    monkeypatch.setattr(kernelbench, "bench_problem", bench_problem)
    settings = {**TINY, "dtypes": ["float32"], "repetitions": 2, "cpu_seq_lens": [8]}
    rows = kernelbench.run("eager", SHAPES, settings, CPU, matmul_peak=0.1)
    assert seen == [16, 16, 16, 8] * 2 and len(rows) == 3
    assert all(r["repetitions"] == 2 for r in rows)


def test_root_cause_names_the_error_that_started_it():
    try:
        try:
            raise RuntimeError("operation not permitted when stream is capturing\nmore")
        except RuntimeError:
            raise RuntimeError("CUDA error: operation failed due to a previous error") from None
    except RuntimeError as exc:
        assert (
            kerneltiming.root_cause(exc)
            == "RuntimeError: CUDA error: operation failed due to a previous error"
        )
    try:
        try:
            raise ValueError("the op")
        except ValueError:
            raise RuntimeError("capture_end failed")  # noqa: B904 - the context is the point
    except RuntimeError as exc:
        assert kerneltiming.root_cause(exc) == "ValueError: the op"


def test_progress_lines_name_shape_repetition_and_times(caplog):
    settings = {**TINY, "dtypes": ["float32"], "repetitions": 3}
    with caplog.at_level(logging.INFO, logger="attnbench.measure.kernelbench"):
        kernelbench.run("sdpa_math", SHAPES, settings, CPU, matmul_peak=0.1)
    lines = caplog.messages
    progress = [m for m in lines if m.startswith("[shape ")]
    assert len(progress) == 3 * 3  # (2 model + 1 sweep) x 3 repetitions, one line each
    assert progress[0].startswith("[shape 1/3, repetition 1/3, ")
    assert progress[-1].startswith("[shape 3/3, repetition 3/3, ")
    assert all(" fwd " in m and "fwd+bwd" in m and " ms" in m for m in progress)
    assert sum(m.startswith("repetition ") and "matmul ceiling" in m for m in lines) == 3
    summary = [m for m in lines if "median of 3:" in m]
    assert len(summary) == 3 and all("%" in m for m in summary)


# --------------------------------------------------------------------------- #
# CUDA graphs on a GPU


def _cuda() -> torch.device:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU: CUDA graphs exist only there")
    return torch.device("cuda", 0)


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(backends.REGISTRY))
def test_gpu_graph_capture_of_every_backend(name):
    """Every available backend's call is captured and replayed, forward and fwd+bwd."""
    device = _cuda()
    reason = backends.check(name, device, torch.float16)
    if reason:
        pytest.skip(reason)
    settings = {**TINY, "dtypes": ["float16"], "seq_lens": [1600], "repetitions": 3}
    rows = kernelbench.run(name, SHAPES, settings, device, min_repeats=20)
    assert {r["status"] for r in rows} == {"ok"}, rows
    for r in rows:
        assert r["graph_note"] is None, r["graph_note"]
        assert r["graph_fwd_ms"] > 0 and r["graph_fwdbwd_ms"] > 0, r
        assert r["graph_fwdbwd_tflops"] > 0 and r["repetitions"] == 3
        assert r["graph_fwdbwd_ms_spread_pct"] >= 0 and r["fwdbwd_ms_spread_pct"] >= 0
        # Kernels alone cannot take much longer than the same kernels plus host dispatch.
        assert r["graph_fwdbwd_ms"] < 1.5 * r["fwdbwd_ms"], r


# A failed capture can damage process-wide state (torch 2.11 left the default CUDA
# generator in capture mode): it runs in a child process, so it cannot poison the others.
UNCAPTURABLE = """
import dataclasses, json, sys
import torch
from attnbench.backends import registry as backends
from attnbench.measure import kernelbench
from attnbench.measure import kerneltiming

shapes, settings = json.loads(sys.argv[1]), json.loads(sys.argv[2])
device = torch.device("cuda", 0)

def syncing(q, k, v):
    out = backends.sdpa_attention(q, k, v)
    float(out.float().sum())  # .item(): not allowed while a stream is capturing
    return out

entry = dataclasses.replace(backends.REGISTRY["sdpa_math"], fn=syncing)
backends.REGISTRY["sdpa_math"] = entry
out = {"failing": kernelbench.run("sdpa_math", shapes, settings, device, min_repeats=5)}
out["default_stream"] = torch.cuda.current_stream(device) == torch.cuda.default_stream(device)
out["process_broken"] = kerneltiming._PROCESS_BROKEN
out["after"] = kernelbench.run("eager", shapes, settings, device, min_repeats=5)
try:
    torch.randn(64, device=device).sum().item()
    out["rng"] = None
except Exception as exc:
    out["rng"] = kerneltiming.root_cause(exc)
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def uncapturable():
    """A run whose call syncs inside the capture, then an eager run, in one child process."""
    _cuda()
    root = Path(__file__).resolve().parents[1]
    settings = {**TINY, "dtypes": ["float16"], "seq_lens": [], "repetitions": 1}
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", UNCAPTURABLE, json.dumps(SHAPES), json.dumps(settings)],
        cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


@pytest.mark.gpu
def test_gpu_uncapturable_call_is_a_note_and_the_run_carries_on(uncapturable):
    """A host sync inside the call breaks the capture: the rows keep their direct times,
    and after the first failure (in the untimed first pass) the run captures nothing more."""
    rows = uncapturable["failing"]
    assert rows and {r["status"] for r in rows} == {"ok"}
    assert all(r["fwd_ms"] > 0 and r["fwdbwd_ms"] > 0 for r in rows)
    assert all(r["graph_fwd_ms"] is None and r["graph_fwdbwd_ms"] is None for r in rows)
    for r in rows:
        assert r["graph_note"].startswith("graphs off after a failed capture: "), r["graph_note"]
        assert "capturing" in r["graph_note"], r["graph_note"]
    assert uncapturable["default_stream"]


@pytest.mark.gpu
def test_gpu_failed_capture_is_repaired_for_the_rest_of_the_process(uncapturable):
    """After the repair the default generator draws again and a later run captures graphs
    (if the repair could not be verified, process_broken says why and graphs stay off)."""
    assert uncapturable["process_broken"] is None
    assert uncapturable["rng"] is None
    after = uncapturable["after"]
    assert after and {r["status"] for r in after} == {"ok"}
    assert all(r["graph_note"] is None and r["graph_fwd_ms"] > 0 for r in after), after


@pytest.mark.gpu
def test_gpu_graph_ms_of_a_known_call():
    """A replayed matmul is timed near its FLOP floor and agrees with a direct call."""
    device = _cuda()
    a = torch.randn(4096, 4096, device=device, dtype=torch.bfloat16)
    ms, why = kerneltiming.graph_ms(lambda: (a @ a,), device, repeats=20)
    assert graph_repair.recover(device) is None  # the check after a failure passes here
    assert why is None and ms > 0
    tflops = 2 * 4096**3 / ms / 1e9
    assert 50 < tflops < 2000, tflops
    assert not math.isnan(ms)
