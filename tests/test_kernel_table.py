"""benchmarks/kernel_table.py: the README's kernel table rendered from one run's kernels CSV."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "kernel_table.py"
FIXTURE = REPO / "tests" / "fixtures" / "kernels_h200.csv"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO
    )


def test_table_names_its_source_and_gpu_and_shows_both_times():
    result = _run(str(FIXTURE.relative_to(REPO)))
    assert result.returncode == 0, result.stderr
    caption, blank, *table = result.stdout.splitlines()
    assert caption.startswith(
        "Kernel benchmark from `tests/fixtures/kernels_h200.csv`: NVIDIA H200"
    )
    assert "float16" in caption and "median of 3 repetitions" in caption
    assert "spread at most 6.0%" in caption and "790 TFLOP/s" in caption
    assert blank == ""
    assert table == [
        "| shape (B', h, N, d) | eager | sdpa_math | sdpa_cudnn | flash_attn |",
        "|---|---|---|---|---|",
        "| (32, 2, 400, 32), train | 0.850 / 0.310 ms | 1.08 / 0.405 ms | 0.433 / 0.0456 ms | n/a |",
        "| (8, 4, 6400, 32), sweep | 34.9 / 34.2 ms (17 TFLOP/s) | too big "
        "| 2.87 / 2.81 ms (209 TFLOP/s) | n/a |",
    ]


def test_dtype_and_sweep_filters(tmp_path):
    result = _run(str(FIXTURE), "--dtype", "bfloat16")
    assert result.returncode == 0, result.stderr
    assert "bfloat16" in result.stdout.splitlines()[0]
    assert "| (32, 2, 400, 32), train | 1.50 / 0.600 ms |" in result.stdout
    result = _run(str(FIXTURE), "--seq-lens", "25600")
    assert "sweep" not in result.stdout.split("\n\n", 1)[1]


def test_a_csv_without_graph_columns_shows_the_direct_time(tmp_path):
    old = pd.read_csv(FIXTURE)
    old = old[[c for c in old.columns if not c.startswith("graph_") and "spread" not in c]]
    path = tmp_path / "kernels.csv"
    old.drop(columns=["repetitions"]).to_csv(path, index=False)
    result = _run(str(path))
    assert result.returncode == 0, result.stderr
    assert "direct / graph" not in result.stdout
    assert "| (32, 2, 400, 32), train | 0.850 ms | 1.08 ms | 0.433 ms | n/a |" in result.stdout


def test_bad_input_is_one_line(tmp_path):
    path = tmp_path / "kernels.csv"
    path.write_text("backend,status\neager,ok\n")
    result = _run(str(path))
    assert result.returncode == 1
    assert (
        result.stderr.count("\n") == 1 and "column" in result.stderr and str(path) in result.stderr
    )
    result = _run(str(FIXTURE), "--dtype", "float32")
    assert result.returncode == 1 and "no float32 rows" in result.stderr
