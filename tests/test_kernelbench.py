"""The kernel benchmark on CPU at tiny sizes: FLOP counting, rows and their columns,
unavailable and skipped rows, the CSV contract, the CLI; timing on a GPU when present."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from attnbench import backends, kernelbench

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
    assert kernelbench.attention_flops(8, 4, 400, 32) == 4 * 8 * 4 * 400**2 * 32
    p = kernelbench.Problem("model", "train", 8, 4, 400, 32)
    assert p.fwdbwd_flops == 3.5 * p.fwd_flops  # backward counted as 2.5x forward


def test_problems_dedupe_model_calls_then_sweep():
    todo = kernelbench.problems(SHAPES, [1600, 400, 400])
    assert [(p.kind, p.phase, p.B, p.N) for p in todo] == [
        ("model", "train", 4, 16),
        ("model", "val", 2, 16),
        ("sweep", "sweep", 8, 400),
        ("sweep", "sweep", 8, 1600),
    ]
    assert all(p.heads == 4 and p.head_dim == 32 for p in todo if p.kind == "sweep")


def test_views_are_aattn_layout():
    p = kernelbench.Problem("model", "train", 2, 3, 5, 4)
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
    monkeypatch.setattr(kernelbench, "free_bytes", lambda device: 10_000)
    rows = kernelbench.run("eager", SHAPES, TINY, CPU, matmul_peak=0.1)
    assert all(r["status"] == "skipped" for r in rows)
    assert "over 50% of the" in rows[0]["reason"]


def test_materializing_backends_are_estimated_larger():
    p = kernelbench.Problem("sweep", "sweep", 8, 4, 25600, 32)
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


def test_cli_probe_parity_bench_and_table_on_cpu(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(
        "backends: [eager, sdpa_flash, sdpa_cudnn]\n"
        "kernels: {cpu_seq_lens: [32], cpu_repeats: 2, dtypes: [float32]}\n"
        "train: {device: cpu}\n"
    )
    shapes = tmp_path / "shapes.json"
    shapes.write_text(json.dumps(SHAPES))
    common = ["--config", str(config)]
    out = tmp_path / "results"
    assert kernelbench.main(["probe", *common, "--out", str(out / "env/backends.json")]) == 0
    probe = json.loads((out / "env/backends.json").read_text())
    assert probe["backends"]["eager"]["available"] is True
    assert probe["backends"]["sdpa_cudnn"]["available"] is False
    assert probe["environment"]["torch"] == torch.__version__
    args = [*common, "--shapes", str(shapes), "--backends", "eager", "sdpa_cudnn"]
    assert kernelbench.main(["parity", *args, "--out-dir", str(out / "parity")]) == 0
    assert kernelbench.main(["bench", *args, "--out-dir", str(out / "kernels")]) == 0
    assert sorted(p.name for p in (out / "kernels").iterdir()) == ["eager.csv", "sdpa_cudnn.csv"]
    capsys.readouterr()
    assert kernelbench.main(
        ["table", "--kernels-dir", str(out / "kernels"), "--parity-dir", str(out / "parity")]
    ) == 0  # fmt: skip
    table = capsys.readouterr().out
    assert "eager" in table and "unavailable" in table and "max rel err" in table
    assert "sweep (B=8, h=4, d=32)" in table


def test_cli_reports_a_bad_device_in_one_line(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("backends: [eager]\n")
    shapes = tmp_path / "shapes.json"
    shapes.write_text(json.dumps(SHAPES))
    code = kernelbench.main(
        ["bench", "--config", str(config), "--shapes", str(shapes), "--device", "gpu7"]
    )
    assert code == 1 and "device 'gpu7' is not valid" in capsys.readouterr().err


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
