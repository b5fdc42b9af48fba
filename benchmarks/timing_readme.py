"""Render a paired-timing run's README.md from its tables, so no number in it is typed.

    python benchmarks/timing_readme.py docs/reference/gpu/timing \\
        --from results/timing/yolo12n/imgsz640/b8

`--from` first copies blocks.csv, summary.csv and timing.json of rule paired_timing into
the folder; then README.md is written there from those three files: the paired ratios
(summary.csv), the harness's overhead as measured directly per step (timing.json), each
arm's blocks (blocks.csv), and whether issue 22's targets were met. With
`--environment`, environment.txt is written from timing.json where none is there yet
(tools/gpu-host/dag.sh writes its own).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from attnbench.io import read_csv, write_text  # noqa: E402
from attnbench.report.formatting import fixed, markdown_table  # noqa: E402

FILES = ("blocks.csv", "summary.csv", "timing.json")
OVERHEAD = "train job vs bare"
MAX_OVERHEAD_PCT = 3.0  # issue 22: the harness overhead point estimate is at most 3%


def summary_table(summary) -> list[str]:
    header = ["arm", "baseline", "comparison", "ratio", "95% CI", "half-width %", "±target met",
              "MDE %", "rounds paired", "block CV %", "arm ms/step", "baseline ms/step",
              "status"]  # fmt: skip
    rows = []
    for _, r in summary.iterrows():
        ci = f"{fixed(r['ratio_ci_low'])} – {fixed(r['ratio_ci_high'])}"
        met = "n/a" if str(r["status"]) != "ok" else ("yes" if r["resolved"] else "no")
        rows.append([
            str(r["arm"]), str(r["baseline"]), str(r["comparison"]), fixed(r["ratio"]), ci,
            fixed(r["halfwidth_pct"], ".2f"), met, fixed(r["mde_pct"], ".2f"),
            fixed(r["blocks"], ".0f"), fixed(100 * float(r["block_cv"]), ".2f")
            if fixed(r["block_cv"]) != "–" else "–",
            fixed(r["ms_per_step"], ".2f"), fixed(r["baseline_ms_per_step"], ".2f"),
            str(r["status"]) + (f" ({r['reason']})" if str(r["status"]) != "ok" else ""),
        ])  # fmt: skip
    return markdown_table(header, rows)


def arm_table(info: dict[str, Any], blocks) -> list[str]:
    header = ["arm", "status", "dispatched", "blocks (measured)", "ms/step mean", "ms/step median",
              "block CV %", "optimizer steps/block", "peak alloc MiB", "harness ms/step (direct)",
              "of which dispatch"]  # fmt: skip
    measured = blocks[~blocks["warmup"].astype(str).str.lower().isin(["true", "1"])]
    rows = []
    for name, arm in info["arms"].items():
        mine = measured[measured["arm"] == name]
        ms = mine["ms_per_step"].astype(float)
        cv = 100 * ms.std(ddof=1) / ms.mean() if len(ms) >= 2 else math.nan
        opt = mine["optimizer_steps"].astype(float)
        opt_text = "–" if opt.empty else (
            f"{opt.iloc[0]:.0f}" if opt.nunique() == 1 else f"{opt.min():.0f}–{opt.max():.0f}"
        )  # fmt: skip
        rows.append([
            name, str(arm["status"]), str(arm.get("dispatched") or "–"), str(len(mine)),
            fixed(ms.mean(), ".2f"), fixed(ms.median(), ".2f"), fixed(cv, ".2f"), opt_text,
            fixed(arm.get("peak_alloc_mb"), ".0f"), fixed(arm.get("harness_overhead_ms_per_step"), ".3f"),
            fixed(arm.get("harness_dispatch_ms_per_step"), ".3f"),
        ])  # fmt: skip
    return markdown_table(header, rows)


def targets(summary, info: dict[str, Any]) -> list[str]:
    """Issue 22's done-when lines, judged from the tables."""
    lines = []
    target = float(info["settings"]["target_halfwidth_pct"])
    baseline = info["settings"]["baseline"]

    def row(comparison: str, arm: str | None = None):
        rows = summary[summary["comparison"] == comparison]
        if arm is not None:
            rows = rows[rows["arm"] == arm]
        return rows.iloc[0] if len(rows) else None

    for label, r in (
        (f"sdpa_cudnn against {baseline}", row("backend vs baseline", "sdpa_cudnn")),
        ("the train job against bare", row(OVERHEAD)),
    ):
        if r is None or str(r["status"]) != "ok":
            lines.append(f"- {label}: not timed here.")
            continue
        hw = float(r["halfwidth_pct"])
        verdict = "met" if math.isfinite(hw) and hw <= target else "**not met**"
        lines.append(
            f"- 95% half-width ≤ {target:g}% for {label}: ±{fixed(hw, '.2f')}%, {verdict}."
        )
    over = row(OVERHEAD)
    if over is not None and str(over["status"]) == "ok":
        pct = 100 * (float(over["ratio"]) - 1)
        verdict = "met" if pct <= MAX_OVERHEAD_PCT else "**not met**"
        lines.append(
            f"- Harness overhead point estimate ≤ {MAX_OVERHEAD_PCT:g}%: {pct:+.2f}% "
            f"({over['arm']} against bare), {verdict}."
        )
    return lines


def render(folder: Path) -> str:
    summary = read_csv(folder / "summary.csv")
    blocks = read_csv(folder / "blocks.csv")
    info = json.loads((folder / "timing.json").read_text())
    s, env, timing = info["settings"], info.get("environment") or {}, info.get("timing") or {}
    versions = ", ".join(
        f"{k} {env[k]}"
        for k in ("torch", "cuda", "cudnn", "flash_attn", "ultralytics")
        if env.get(k)
    )
    stopped = timing.get("stopped_early")
    lines = [
        f"# Paired timing: {s['model_name']}, imgsz {s['imgsz']}, batch {s['batch']} (issue 22)",
        "",
        "Generated by `benchmarks/timing_readme.py` from `summary.csv`, `blocks.csv` and",
        "`timing.json` beside it (rule `paired_timing`, `config.yaml` here); no number is typed.",
        "",
        f"Device: {info.get('device_name')} ({info.get('device')}); {versions}. "
        f"Started {info.get('started')}, {fixed(info.get('wall_s'), '.0f')} s in all "
        f"({fixed(info.get('setup_s'), '.0f')} s set-up, {fixed(timing.get('schedule_s'), '.0f')} s of "
        "blocks). Clock: " + str(info.get("clock")) + ".",
        "",
        f"Arms {', '.join(s['arms'])} in one process, each from the same initial weights and fed "
        f"the same {s['batches']} batches; blocks of {s['steps_per_block']} steps "
        f"({info.get('accumulate')} iterations per optimizer step), "
        f"{timing.get('rounds_done')} of {timing.get('rounds_planned')} planned rounds after "
        f"{s['warmup_rounds']} warm-up round(s)"
        + (f" (stopped: {stopped})" if stopped else "")
        + ".",
        "",
        "## Ratios of mean step time",
        "",
        "Each arm's blocks paired with the baseline's blocks of the same round; ratio of means "
        "with Fieller's interval for paired samples (n - 1 df); half-width in % of the baseline; "
        "MDE = smallest change the design detects at 80% power. `train job vs bare` is the "
        "harness's own per-step cost (patch dispatch and recorder callbacks on the stock "
        "arithmetic).",
        "",
        *summary_table(summary),
        "",
        "## Issue 22's targets",
        "",
        *targets(summary, info),
        "",
        "## Arms",
        "",
        "Measured blocks per arm; `harness ms/step (direct)` is the harness clock's own "
        "measurement of its callbacks and dispatch in this run (perf_counter around each).",
        "",
        *arm_table(info, blocks),
        "",
        "## What differs from a train job's loop",
        "",
        *(f"- {d}" for d in info.get("differences", [])),
        "",
    ]
    return "\n".join(lines)


def environment_text(info: dict[str, Any]) -> str:
    env = info.get("environment") or {}
    lines = [f"{k} {v}" for k, v in sorted(env.items()) if not isinstance(v, (dict, list))]
    return "\n".join([f"device {info.get('device_name')} ({info.get('device')})", *lines]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where README.md goes (and the tables are)")
    parser.add_argument(
        "--from",
        dest="source",
        type=Path,
        help="copy blocks.csv, summary.csv, timing.json from this folder first",
    )
    parser.add_argument(
        "--environment",
        action="store_true",
        help="write environment.txt from timing.json if the folder has none",
    )
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    if args.source:
        for name in FILES:
            shutil.copyfile(args.source / name, args.folder / name)
    write_text(args.folder / "README.md", render(args.folder))
    env = args.folder / "environment.txt"
    if args.environment and not env.exists():
        info = json.loads((args.folder / "timing.json").read_text())
        write_text(env, environment_text(info))
    print(args.folder / "README.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
