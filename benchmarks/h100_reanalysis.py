"""What the H100 study's epoch-loop timing could resolve, from its own runs.csv.

    python benchmarks/h100_reanalysis.py [docs/reference/h100/tables/runs.csv]

Prints the three figures docs/reference/h100/README.md quotes: the within-backend
coefficient of variation of `epoch_loop_s` (pooled), the Spearman correlation of time
with run order (rank of `started`), and the smallest difference a Welch design with the
study's n per arm detects at 80% power (alpha 0.05), relative to eager's mean.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from scipy import stats
from statsmodels.stats.power import TTestIndPower

REPO = Path(__file__).resolve().parents[1]


def main(path: Path) -> int:
    runs = pd.read_csv(path)
    runs = runs[runs["status"] == "ok"].copy()
    loop = runs["epoch_loop_s"]
    sd = runs.groupby("backend")["epoch_loop_s"].std().mean()  # pooled within backends
    order = pd.to_datetime(runs["started"]).rank()
    rho = stats.spearmanr(order, loop)
    n = int(runs.groupby("backend").size().min())
    d = TTestIndPower().solve_power(nobs1=n, alpha=0.05, power=0.8, ratio=1)
    eager = runs.loc[runs["backend"] == "eager", "epoch_loop_s"].mean()
    print(f"runs: {len(runs)}, n per arm: {n}  ({path})")
    print(f"epoch-loop CV within backends, pooled: {sd / loop.mean() * 100:.1f}%")
    print(f"Spearman rho, run order vs epoch-loop time: {rho.statistic:.2f} (p = {rho.pvalue:.3f})")
    print(f"smallest effect detectable at 80% power: {d * sd / eager * 100:.0f}% of eager's mean")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "runs", type=Path, nargs="?", help="runs.csv (default: docs/reference/h100/tables/runs.csv)",
        default=REPO / "docs" / "reference" / "h100" / "tables" / "runs.csv",
    )  # fmt: skip
    raise SystemExit(main(parser.parse_args().runs))
