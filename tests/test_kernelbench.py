"""The kernel benchmark on CPU at tiny sizes: FLOP counting, rows and their columns,
unavailable and skipped rows, the CSV contract, the backend's context entered once
around the measurement; timing on a GPU when present."""

from __future__ import annotations

import contextlib
import csv
import dataclasses

import pytest
import torch

from attnbench import backends, envinfo, host, kernelbench, parity, shapes

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
