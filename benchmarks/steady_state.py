"""Steady-state step time and per-step GPU breakdown: repeatability, overhead, backends.

Runs, each in a fresh process, in a seeded random order interleaved across arms within
every repeat block (the order is recorded):
- `<backend>` arms: the train rule's library call (attnbench.train.training.train_one), so
  every number is the metrics.json a train job writes (step_ms_*, gpu_ms_per_step, ...);
- `bare`: `YOLO(model).train(**the same keyword arguments)` with stock Ultralytics
  attention, timed by the same StepTimer (first `warmup_iters` iterations of every epoch
  left out); no provenance, no profiler window, no attention patch.

It answers three questions of issue 12 and writes them to --out (runs.csv, summary.md,
summary.json): does a repeat of the same backend, seed and config give the same
step_ms_median and gpu_ms_per_step (coefficient of variation); how far is the train
job's step time from bare Ultralytics (ratio with a 95% Fieller interval); and what does
each backend's step consist of (GPU time, attention time, host time).

    python benchmarks/steady_state.py --data DATA_YAML --device 0 \\
        --backends eager sdpa_cudnn flash_attn --repeats 5 3 3 --bare-repeats 5 --out DIR
    python benchmarks/steady_state.py --data DATA_YAML --device cpu --imgsz 64 --batch 2 \\
        --backends eager --repeats 2 --bare-repeats 2 --out /tmp/steady   # a CPU smoke run
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

RUN_COLUMNS = [
    "order", "arm", "repeat", "status", "started", "wall_s", "step_ms_median", "step_ms_p10",
    "step_ms_p90", "steps_timed", "opt_steps_timed", "opt_step_ms_median",
    "steady_images_per_s", "host_step_ms_median",
    "gpu_ms_per_step", "attention_ms_per_step", "launches_per_step", "data_wait_ms_per_step",
    "gpu_busy_fraction", "attention_share_of_gpu", "max_step_saving_pct", "peak_alloc_mb",
    "peak_reserved_mb", "dispatched", "device_name",
]  # fmt: skip
BREAKDOWN = [
    "step_ms_median", "gpu_ms_per_step", "attention_ms_per_step", "attention_share_of_gpu",
    "gpu_busy_fraction", "max_step_saving_pct", "launches_per_step", "data_wait_ms_per_step",
    "peak_alloc_mb",
]  # fmt: skip


# --------------------------------------------------------------------------- #
# One run (child process)


def _train_settings(spec: dict[str, Any]) -> dict[str, Any]:
    from attnbench import config as cfg

    train = dict(cfg.load_file(REPO / "config.yaml")["train"])
    train.update(spec["train"])
    return train


def run_backend(spec: dict[str, Any], out: Path) -> dict[str, Any]:
    from attnbench import host
    from attnbench.train import training
    from attnbench.train.settings import TrainSettings

    train = _train_settings(spec)
    device = host.select_device(train["device"])
    metrics = training.train_one(
        spec["arm"], spec["seed"], spec["data"], TrainSettings.from_section(train), out, device
    )
    training.write_outputs(metrics, out, out / "metrics.json", out / "results.csv")
    metrics["dispatched"] = (metrics.get("provenance") or {}).get("dispatched")
    return metrics


def run_bare(spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """Stock Ultralytics with train_one's exact YOLO.train arguments and only a step timer."""
    import torch
    from overhead import workflow_args
    from ultralytics import YOLO
    from ultralytics.engine import trainer as trainer_module

    from attnbench import host
    from attnbench.measure.steptime import StepTimer
    from attnbench.train import ultralytics_run

    train = _train_settings(spec)
    device = host.select_device(train["device"])
    args = workflow_args(Path(spec["data"]), train, "eager", device)
    ultralytics_run.offline_ultralytics(out.parent / ".ultralytics")
    trainer_module.check_amp = ultralytics_run.skip_amp_check  # the same offline stand-in
    # The same iterations as the train job's: its profiler window (and the one after it)
    # in the second epoch are left out here too.
    warmup, window = int(train["timing"]["warmup_iters"]), int(train["timing"]["profile_iters"])
    skip = (1 if train["epochs"] > 1 else 0, warmup, warmup + window) if window else None
    timer = StepTimer(device, warmup, skip=skip)
    args = {**args, "project": str(out.resolve()), "name": "ultralytics"}
    model = YOLO(train["model"], task="detect")
    model.add_callback("on_train_start", timer.attach)
    model.add_callback("on_train_epoch_start", lambda trainer: timer.epoch_start())
    model.add_callback("on_train_batch_start", lambda trainer: timer.mark())
    model.add_callback("on_train_epoch_end", lambda trainer: timer.epoch_end())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train(**args)
    result: dict[str, Any] = {"status": "ok", **timer.summary(int(args["batch"]))}
    if device.type == "cuda":
        result["peak_alloc_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["peak_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
        result["device_name"] = host.device_name(device)
    result["dispatched"] = "stock Ultralytics AAttn"
    return result


def _child_main(argv: list[str]) -> int:
    spec_path, out = Path(argv[0]), Path(argv[1])
    spec = json.loads(spec_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    result = run_bare(spec, out) if spec["arm"] == "bare" else run_backend(spec, out)
    (out / "result.json").write_text(json.dumps(result, default=str))
    return 0


# --------------------------------------------------------------------------- #
# The schedule and the summary (parent process)


def plan(arms: dict[str, int], order_seed: int) -> list[tuple[str, int]]:
    """(arm, repeat) in repeat blocks, arms shuffled within each block by the workflow's
    seeded order (`attnbench.grid`, as the sweep's points)."""
    from attnbench import grid

    blocks = [
        [(arm, rep) for arm, n in arms.items() if rep < n] for rep in range(max(arms.values()))
    ]
    return grid.blocked_order(blocks, lambda job: (order_seed, *job), lambda job: job[0])


def cv_pct(values: list[float]) -> float | None:
    """Sample coefficient of variation in percent (None below two values)."""
    if len(values) < 2:
        return None
    return statistics.stdev(values) / statistics.fmean(values) * 100


def summarize(rows: list[dict[str, Any]], baseline: str = "eager") -> dict[str, Any]:
    from attnbench import stats

    ok = [r for r in rows if r["status"] == "ok"]
    arms = sorted({r["arm"] for r in ok}, key=lambda a: (a == "bare", a))
    summary: dict[str, Any] = {"arms": {}}
    for arm in arms:
        mine = [r for r in ok if r["arm"] == arm]
        entry = {"n": len(mine)}
        for key in ("step_ms_median", "gpu_ms_per_step"):
            values = [float(r[key]) for r in mine if r.get(key) not in (None, "")]
            entry[key] = statistics.fmean(values) if values else None
            entry[f"{key}_cv_pct"] = cv_pct(values)
            entry[f"{key}_values"] = values
        for key in BREAKDOWN[2:]:
            values = [float(r[key]) for r in mine if r.get(key) not in (None, "")]
            entry[key] = statistics.median(values) if values else None
        summary["arms"][arm] = entry
    if baseline in summary["arms"] and "bare" in summary["arms"]:
        job = summary["arms"][baseline]["step_ms_median_values"]
        bare = summary["arms"]["bare"]["step_ms_median_values"]
        ratio = stats.fieller_ratio(job, bare, alpha=0.05)
        summary["overhead"] = {
            "job_arm": baseline,
            "pct": (statistics.fmean(job) / statistics.fmean(bare) - 1) * 100,
            "ci_pct": [(x - 1) * 100 if x == x else None for x in ratio[1:]],
            "method": stats.RATIO_METHOD,
        }
    return summary


def _fmt(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(summary: dict[str, Any], info: dict[str, Any]) -> str:
    lines = [
        f"Steady state on {info['device_name']} ({info['when']}; torch {info['torch']}): "
        f"{info['command']}",
        "",
        "| arm | n | step ms (mean of medians) | CV % | GPU ms/step | CV % | attention ms/step "
        "| attention share of GPU | GPU busy | Amdahl max saving % | launches/step "
        "| data wait ms/step | peak alloc MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, e in summary["arms"].items():
        lines.append(
            f"| {arm} | {e['n']} | {_fmt(e['step_ms_median'])} | {_fmt(e['step_ms_median_cv_pct'])} "
            f"| {_fmt(e['gpu_ms_per_step'])} | {_fmt(e['gpu_ms_per_step_cv_pct'])} "
            f"| {_fmt(e['attention_ms_per_step'], 3)} | {_fmt(e['attention_share_of_gpu'], 3)} "
            f"| {_fmt(e['gpu_busy_fraction'], 3)} | {_fmt(e['max_step_saving_pct'])} "
            f"| {_fmt(e['launches_per_step'], 0)} | {_fmt(e['data_wait_ms_per_step'])} "
            f"| {_fmt(e['peak_alloc_mb'], 0)} |"
        )
    if "overhead" in summary:
        o = summary["overhead"]
        low, high = o["ci_pct"]
        lines += [
            "",
            f"Train job ({o['job_arm']}) against bare Ultralytics: step time {o['pct']:+.2f}% "
            f"(95% interval {_fmt(low)}% to {_fmt(high)}%, {o['method']}).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        return _child_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a validated data.yaml")
    p.add_argument("--device", default="auto")
    p.add_argument("--backends", nargs="+", default=["eager", "sdpa_cudnn", "flash_attn"])
    p.add_argument("--repeats", nargs="+", type=int, default=[5], help="one, or one per backend")
    p.add_argument("--bare-repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--warmup-iters", type=int, default=10)
    p.add_argument("--profile-iters", type=int, default=10)
    p.add_argument("--order-seed", type=int, default=0)
    p.add_argument("--deadline-s", type=float, default=None, help="start no run after this")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    repeats = args.repeats * len(args.backends) if len(args.repeats) == 1 else args.repeats
    if len(repeats) != len(args.backends):
        p.error(f"--repeats takes one value or one per backend ({len(args.backends)})")
    arms = dict(zip(args.backends, repeats, strict=True))
    if args.bare_repeats:
        arms["bare"] = args.bare_repeats
    train = {
        "epochs": args.epochs, "batch": args.batch, "imgsz": args.imgsz, "workers": args.workers,
        "device": args.device,
        "timing": {"warmup_iters": args.warmup_iters, "profile_iters": args.profile_iters},
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    begin = time.monotonic()
    rows: list[dict[str, Any]] = []
    for order, (arm, rep) in enumerate(plan(arms, args.order_seed), start=1):
        if args.deadline_s and time.monotonic() - begin > args.deadline_s:
            print(f"deadline reached: {arm} repeat {rep} and later runs not started", flush=True)
            break
        run_dir = args.out / "runs" / f"{order:02d}-{arm}-rep{rep}"
        run_dir.mkdir(parents=True, exist_ok=True)
        spec = {
            "arm": arm,
            "seed": args.seed,
            "data": str(Path(args.data).resolve()),
            "train": train,
        }
        (run_dir / "spec.json").write_text(json.dumps(spec))
        started = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        t0 = time.perf_counter()
        with (run_dir / "log.txt").open("w") as log:
            proc = subprocess.run(
                [sys.executable, __file__, "_child", str(run_dir / "spec.json"), str(run_dir)],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wall = time.perf_counter() - t0
        result = {"status": f"failed ({proc.returncode})"}
        if proc.returncode == 0:
            result = json.loads((run_dir / "result.json").read_text())
        row = {"order": order, "arm": arm, "repeat": rep, "started": started, "wall_s": wall}
        row.update({k: result.get(k) for k in RUN_COLUMNS if k not in row})
        rows.append(row)
        print(
            f"[{order}] {arm} rep {rep}: {row['status']} step {_fmt(row['step_ms_median'])} ms, "
            f"GPU {_fmt(row['gpu_ms_per_step'])} ms, wall {wall:.1f} s",
            flush=True,
        )
        with (args.out / "runs.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=RUN_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    import torch

    from attnbench import host

    device = host.select_device(args.device)
    info = {
        "device_name": host.device_name(device) or host.cpu_model(),
        "torch": torch.__version__,
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "command": "python benchmarks/steady_state.py " + " ".join(argv),
    }
    summary = summarize(rows)
    (args.out / "summary.json").write_text(json.dumps({**summary, "info": info}, indent=2))
    (args.out / "summary.md").write_text(markdown(summary, info))
    print(markdown(summary, info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
