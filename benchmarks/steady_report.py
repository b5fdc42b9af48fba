"""Render the tables of docs/reference/h200/steady/README.md from the runs' own files.

    python benchmarks/steady_report.py docs/reference/h200/steady > /tmp/tables.md

Every number in the README's tables comes from here: runs.csv and kernels.csv of each
run folder (run-a, run-b), never typed by hand.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from attnbench import stats  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from steady_state import cv_pct  # noqa: E402

MODEL_PHASES = ("train", "val")


def _f(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or value != value else f"{value:.{digits}f}"


def _cv(values: pd.Series) -> float | None:
    return cv_pct(values.dropna().tolist())


def breakdown(runs: pd.DataFrame) -> str:
    """Per arm: medians over repeats of the per-step keys, and the CV of step and GPU time."""
    lines = [
        "| arm | runs | step ms | step CV % | GPU ms/step | GPU CV % | attention ms/step "
        "| attention share of GPU | GPU busy | Amdahl ceiling % | launches/step | peak alloc MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ok = runs[runs["status"] == "ok"]
    for arm, group in sorted(ok.groupby("arm"), key=lambda kv: (kv[0] == "bare", kv[0])):
        med = group.median(numeric_only=True)
        lines.append(
            f"| {arm} | {len(group)} | {_f(med['step_ms_median'])} "
            f"| {_f(_cv(group['step_ms_median']))} | {_f(med.get('gpu_ms_per_step'))} "
            f"| {_f(_cv(group['gpu_ms_per_step']), 3)} | {_f(med.get('attention_ms_per_step'), 3)} "
            f"| {_f(med.get('attention_share_of_gpu'), 3)} | {_f(med.get('gpu_busy_fraction'), 3)} "
            f"| {_f(med.get('max_step_saving_pct'))} | {_f(med.get('launches_per_step'), 0)} "
            f"| {_f(med.get('peak_alloc_mb'), 0)} |"
        )
    return "\n".join(lines)


def overhead(runs: pd.DataFrame, job: str = "eager") -> str:
    ok = runs[runs["status"] == "ok"]
    a = ok.loc[ok["arm"] == job, "step_ms_median"].dropna().tolist()
    b = ok.loc[ok["arm"] == "bare", "step_ms_median"].dropna().tolist()
    if len(a) < 2 or len(b) < 2:
        return "too few runs for an interval"
    ratio, low, high = stats.fieller_ratio(a, b, alpha=0.05)
    return (
        f"{job} train job / bare Ultralytics = {ratio:.3f} "
        f"(95% {stats.RATIO_METHOD} interval {_f(low, 3)} to {_f(high, 3)}; n = {len(a)} and {len(b)})"
    )


def order(runs: pd.DataFrame) -> str:
    return ", ".join(f"{r.order}. {r.arm}" for r in runs.itertuples())


def graph_spread(kernels: pd.DataFrame) -> str:
    """Largest spread of the 3 repetitions at the model's shapes, per backend and timing."""
    model = kernels[kernels["phase"].isin(MODEL_PHASES) & (kernels["status"] == "ok")]
    lines = [
        "| backend | direct fwd+bwd spread % (max) | graph fwd+bwd spread % (max) "
        "| graph fwd+bwd spread % (rows within 5%) |",
        "|---|---|---|---|",
    ]
    for backend, g in model.groupby("backend", sort=False):
        within = int((g["graph_fwdbwd_ms_spread_pct"] <= 5).sum())
        lines.append(
            f"| {backend} | {_f(g['fwdbwd_ms_spread_pct'].max(), 1)} "
            f"| {_f(g['graph_fwdbwd_ms_spread_pct'].max(), 1)} | {within} of {len(g)} |"
        )
    return "\n".join(lines)


def main(root: Path) -> int:
    for name in sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("run-")):
        runs = pd.read_csv(root / name / "runs.csv")
        print(f"### {name}: per-step breakdown (`{name}/runs.csv`)\n")
        print(f"Run order: {order(runs)}.\n")
        print(breakdown(runs) + "\n")
        print(f"Overhead: {overhead(runs)}.\n")
        kernels = root / name / "kernels.csv"
        if kernels.exists():
            frame = pd.read_csv(kernels)
            print(f"### {name}: kernel benchmark (`{name}/kernels.csv`)\n")
            table = subprocess.run(
                [sys.executable, str(REPO / "benchmarks" / "kernel_table.py"), str(kernels)],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            print(table.replace(str(REPO) + "/", ""))
            print("Repeatability of the three repetitions at the model's shapes:\n")
            print(graph_spread(frame) + "\n")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "root", type=Path, help="folder of run-* folders (docs/reference/h200/steady)"
    )
    raise SystemExit(main(parser.parse_args().root))
