"""The statistics of paired, interleaved timing (`attnbench.timing.plan` plans the blocks).

Torch-free, so the tests check the arithmetic on a CPU against synthetic timings.

An arm's block and the baseline's block of the same round form a pair. The ratio is
mean(arm ms/step) / mean(baseline ms/step) over the paired rounds, with Fieller's interval
for paired samples (`stats.paired_fieller`: it inverts the paired t-test of
arm - r * baseline = 0 with n - 1 df, so whatever the two blocks of one round share, a
drifting clock or a warmer GPU, cancels; a ratio of means keeps the interval asymmetric as
a ratio's should be). The half-width is half the interval's width in percent of the
baseline. The minimum detectable effect is the paired t-test's on the per-round log ratios
(80% power, two-sided alpha; `stats.mde_paired`), in percent. A ratio that is the same in
every round is `identical`: that exact ratio, a zero-width interval, no test. Block CV is
the sample coefficient of variation of an arm's blocks (a fraction).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from attnbench import backend_records, stats
from attnbench.timing.plan import BARE

RATIO_METHOD = stats.PAIRED_RATIO_METHOD
IDENTICAL_METHOD = "identical in every round: exact ratio"
OVERHEAD_COMPARISON = "train job vs bare"
BACKEND_COMPARISON = "backend vs baseline"
BLOCK_COLUMNS = [
    "arm", "block", "round", "position", "warmup", "steps", "total_ms", "ms_per_step",
    "optimizer_steps", "first_step", "peak_alloc_mb", "clock", "device_name",
]  # fmt: skip
SUMMARY_COLUMNS = [
    "arm", "baseline", "comparison", "status", "reason", "ratio", "ratio_ci_low",
    "ratio_ci_high", "halfwidth_pct", "diff_pct", "resolved", "identical", "mde_pct",
    "blocks", "steps_per_block", "block_cv", "baseline_block_cv", "ms_per_step",
    "baseline_ms_per_step", "sd_log_ratio", "peak_alloc_mb", "baseline_peak_alloc_mb",
    "confidence", "ratio_method", "target_halfwidth_pct", "clock", "device_name",
]  # fmt: skip


# --------------------------------------------------------------------------- #
# Statistics


def paired_blocks(blocks: pd.DataFrame, arm: str, baseline: str) -> tuple[np.ndarray, np.ndarray]:
    """ms/step of `arm` and `baseline` in the measured rounds where both have a block."""
    measured = blocks[~blocks["warmup"].astype(str).str.lower().isin(["true", "1"])]
    measured = measured[pd.to_numeric(measured["ms_per_step"], errors="coerce").notna()]
    a = measured[measured["arm"] == arm].set_index("round")["ms_per_step"].astype(float)
    b = measured[measured["arm"] == baseline].set_index("round")["ms_per_step"].astype(float)
    rounds = sorted(set(a.index) & set(b.index))
    return a.loc[rounds].to_numpy(), b.loc[rounds].to_numpy()


def block_cv(values: Iterable[float]) -> float:
    """Sample coefficient of variation (sd / mean, a fraction) of blocks' ms/step."""
    x = stats.clean(values)
    if len(x) < 2 or not np.mean(x):
        return math.nan
    return float(np.std(x, ddof=1) / np.mean(x))


def paired_ratio(a: Iterable[float], b: Iterable[float], alpha: float) -> dict[str, Any]:
    """mean(a) / mean(b) over paired blocks, its paired Fieller interval, half-width and MDE.

    `halfwidth_pct` is half the interval's width in percent of the baseline (the ratio's
    units x 100); `mde_pct` the smallest true change the design detects at 80% power.
    """
    x, y = stats.aligned(a, b)
    out: dict[str, Any] = {
        "blocks": len(x), "ratio": math.nan, "ratio_ci_low": math.nan, "ratio_ci_high": math.nan,
        "halfwidth_pct": math.nan, "diff_pct": math.nan, "identical": False, "mde_pct": math.nan,
        "sd_log_ratio": math.nan, "ratio_method": RATIO_METHOD,
    }  # fmt: skip
    keep = (x > 0) & (y > 0)
    x, y = x[keep], y[keep]
    out["blocks"] = len(x)
    if not len(x):
        return out
    ratio = float(np.mean(x) / np.mean(y))
    out.update(ratio=ratio, diff_pct=100 * (ratio - 1))
    if len(x) < 2:
        return out
    logs = np.log(x / y)
    if float(np.ptp(logs)) <= 1e-12:
        out.update(
            ratio_ci_low=ratio, ratio_ci_high=ratio, halfwidth_pct=0.0, identical=True,
            sd_log_ratio=0.0, ratio_method=IDENTICAL_METHOD,
        )  # fmt: skip
        return out
    _, low, high = stats.paired_fieller(x, y, alpha)
    sd = float(np.std(logs, ddof=1))
    mde = stats.mde_paired(len(x), sd, alpha)
    out.update(
        ratio_ci_low=low,
        ratio_ci_high=high,
        halfwidth_pct=50 * (high - low) if np.isfinite(low) and np.isfinite(high) else math.nan,
        sd_log_ratio=sd,
        mde_pct=100 * math.expm1(mde) if np.isfinite(mde) else math.nan,
    )
    return out


def comparisons(arms: Sequence[str], baseline: str) -> list[tuple[str, str, str]]:
    """(arm, against, comparison): each backend against the baseline, then the train job
    (the stock arithmetic's backend if timed, eager, else the baseline) against bare."""
    rows = [(a, baseline, BACKEND_COMPARISON) for a in arms if a not in (baseline, BARE)]
    if BARE in arms:
        job = next((a for a in arms if backend_records.is_stock(a)), baseline)
        rows.append((job, BARE, OVERHEAD_COMPARISON))
    return rows


def summarize(
    blocks: pd.DataFrame,
    arms: Sequence[str],
    baseline: str,
    alpha: float,
    target_halfwidth_pct: float,
    status: Mapping[str, tuple[str, str | None]] | None = None,
) -> pd.DataFrame:
    """summary.csv: one row per comparison (`comparisons`) with its paired ratio.

    `status` maps an arm to (status, reason) where it did not time ("unavailable",
    "mismatch", "oom"): its rows keep the reason and no numbers.
    """
    status = dict(status or {})
    device = next(iter(blocks["device_name"].dropna()), None) if "device_name" in blocks else None
    clock = next(iter(blocks["clock"].dropna()), None) if "clock" in blocks else None
    steps = next(iter(blocks["steps"].dropna()), None) if "steps" in blocks else None
    rows = []
    for arm, against, comparison in comparisons(arms, baseline):
        row: dict[str, Any] = {
            "arm": arm, "baseline": against, "comparison": comparison, "status": "ok",
            "reason": None, "confidence": 1 - alpha, "target_halfwidth_pct": target_halfwidth_pct,
            "steps_per_block": steps, "clock": clock, "device_name": device,
        }  # fmt: skip
        failed = [(n, *status[n]) for n in (arm, against) if n in status and status[n][0] != "ok"]
        if failed:
            name, state, reason = failed[0]
            row.update(status=state, reason=f"{name}: {reason}", blocks=0)
            rows.append(row)
            continue
        a, b = paired_blocks(blocks, arm, against)
        row.update(paired_ratio(a, b, alpha))
        row.update(
            block_cv=block_cv(a),
            baseline_block_cv=block_cv(b),
            ms_per_step=float(np.mean(a)) if len(a) else math.nan,
            baseline_ms_per_step=float(np.mean(b)) if len(b) else math.nan,
            peak_alloc_mb=_peak(blocks, arm),
            baseline_peak_alloc_mb=_peak(blocks, against),
        )
        hw = row["halfwidth_pct"]
        row["resolved"] = bool(np.isfinite(hw) and hw <= target_halfwidth_pct)
        rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _peak(blocks: pd.DataFrame, arm: str) -> float:
    if "peak_alloc_mb" not in blocks:
        return math.nan
    values = pd.to_numeric(blocks.loc[blocks["arm"] == arm, "peak_alloc_mb"], errors="coerce")
    return float(values.max()) if values.notna().any() else math.nan


def halfwidth_for(cv: float, rounds: int, alpha: float = 0.05) -> float:
    """Expected half-width (% of the baseline) of `rounds` paired rounds whose blocks have
    coefficient of variation `cv` each and are independent: t * sqrt(2) * cv / sqrt(n).
    Correlated blocks of a round (shared drift) do better; the design's planning rule."""
    if rounds < 2:
        return math.nan
    from scipy import stats as sps

    return float(100 * sps.t.ppf(1 - alpha / 2, rounds - 1) * math.sqrt(2) * cv / math.sqrt(rounds))
