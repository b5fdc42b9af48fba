"""Paired, interleaved timing of Ultralytics' training step, every arm in ONE process.

Separate processes cannot resolve wall time: the step time of the same arm differs
between fresh processes by far more than the kernels differ (issue 22). Here every arm
trains side by side in one process, in blocks of k steps, alternated in the balanced
order of `attnbench.timing.plan`, and `attnbench.timing.paired_stats` pairs the blocks of each
round. What one process gives every arm alike:

- one DetectionTrainer per arm (Ultralytics' own `_setup_train`: the model from the yaml,
  AMP GradScaler, `build_optimizer` with train.optimizer and lr0, the accumulation of
  nominal batch 64, `max(round(64 / batch), 1)` iterations per optimizer step, the EMA),
  all sharing one data loader;
- the same initial weights: the first arm's model and EMA (built under Ultralytics'
  seed `weights_seed`, as a train job's seed) are copied into every other arm's, and the
  copy is checked;
- the same batches: `batches` batches drawn once from that train loader (mosaic and all
  augmentation), fed to every arm in the same order, cycled;
- arms: each backend runs through the harness exactly as a train job does (its patch,
  entered for the block, and a RunRecorder's callbacks with its step timer and harness
  clock); `bare` runs the same step with stock AAttn.forward and no attnbench callback.
  eager against bare is therefore the harness's per-step cost on the stock arithmetic.

The step is the body of `BaseTrainer._do_train`'s batch loop (Ultralytics 8.4.x), driven
one iteration at a time because `_do_train` cannot be: the batch callbacks, autocast,
`preprocess_batch` (host-to-device copy, /255), `model(batch)` (v8DetectionLoss), the
running mean of the loss items, `scaler.scale(loss).backward()`, `optimizer_step()`
(unscale, clip, scaler step and update, zero_grad, EMA update) every `accumulate`
iterations, and the progress bar's description string, formatted as the loop formats it
(it reads the loss values back, a synchronisation per step). What differs is listed in
`DIFFERENCES` and written into timing.json.

Each block is timed on the host with perf_counter between two synchronisations of the
device (torch.cuda.synchronize at the block's edges on a GPU; no synchronisation needed
on a CPU): the clock column says which. The allocator's peak is reset before and read
after each block (GPU only).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from attnbench import host
from attnbench.backends import registry as backends
from attnbench.backends.patch import use_backend
from attnbench.timing import plan as timing_plan
from attnbench.timing.plan import BARE
from attnbench.train import trackers, ultralytics_run
from attnbench.train.recorder import RunRecorder
from attnbench.train.settings import StepSettings, TimingWindow

LOG = logging.getLogger(__name__)
NOMINAL_BATCH = 64  # Ultralytics' nbs
DIFFERENCES = (
    "one process for all arms, their steps interleaved in blocks; a train job is one arm "
    "in a process of its own",
    "batches are drawn from Ultralytics' train loader once, before timing, and cycled: data "
    "loading (and its wait) is outside the timed step",
    "the step is the body of BaseTrainer._do_train's batch loop re-run one iteration at a "
    "time: no epoch ends, validation, checkpoints or LR scheduler steps (per epoch anyway)",
    "warmup_epochs = 0: the steady accumulation and learning rate from the first step (a "
    "train job ramps both over its first warm-up epochs)",
    "no tqdm progress bar: its description string is formatted each step as the loop does, "
    "not drawn",
    "the harness arms' RunRecorder runs its batch callbacks, step timer and harness clock; "
    "its provenance check runs once per arm before timing; no profiler window and no "
    "NVML or RSS sampler threads (they would run during the other arms' blocks too)",
    "no out-of-memory batch halving: an out-of-memory error ends the arm (status oom)",
)


@dataclass
class Arm:
    """One arm's trainer and what its blocks did."""

    name: str
    kernel: str | None  # None: bare (stock AAttn.forward)
    status: str = "ok"
    reason: str | None = None
    trainer: Any = None
    recorder: RunRecorder | None = None
    provenance: dict[str, Any] | None = None
    step: int = 0  # iterations run (warm-up blocks included): Ultralytics' ni
    last_opt_step: int = -1
    optimizer_steps: int = 0
    calls: Counter = field(default_factory=Counter)
    construction_calls: int = 0
    dispatch_s: float = 0.0
    dtypes: set[str] = field(default_factory=set)
    peak_alloc_mb: float | None = None
    forced_oom: str | None = None  # tests: the id ATTNBENCH_FORCE_OOM named (host.forced_oom)

    def patch(self, cast: str) -> contextlib.AbstractContextManager:
        return use_backend(self.kernel, cast=cast) if self.kernel else contextlib.nullcontext()


def clock_name(device: torch.device) -> str:
    if device.type == "cuda":
        return "perf_counter, torch.cuda.synchronize at the block edges"
    return "perf_counter"


def _device_name(device: torch.device) -> str | None:
    return host.device_name(device) if device.type == "cuda" else host.cpu_model()


def _overrides(settings: dict[str, Any], step: StepSettings, data_yaml, workdir, device,
               arm: str) -> dict[str, Any]:  # fmt: skip
    return ultralytics_run.train_args(
        data_yaml, step.loop, device, workdir,
        model=settings["model"], task="detect", mode="train", name=arm, epochs=1,
        batch=settings["batch"], imgsz=settings["imgsz"], seed=settings["weights_seed"],
        deterministic=settings.get("deterministic", True), warmup_epochs=0, close_mosaic=0, val=False, save=False,
        verbose=False,
    )  # fmt: skip


def _build(arms: list[Arm], settings, step: StepSettings, data_yaml, workdir, device,
           loaders) -> None:  # fmt: skip
    """One trainer per arm, through Ultralytics' own set-up, all on the first one's weights."""
    trainer_class = loaders.trainer_class()
    timing = TimingWindow(warmup_iters=0, profile_iters=0)
    with trackers.integrations_off():
        for arm in arms:
            trainer = trainer_class(
                overrides=_overrides(settings, step, data_yaml, workdir, device, arm.name)
            )
            if arm.kernel:
                arm.recorder = RunRecorder(arm.kernel, device, step.provenance_steps, timing)
                arm.recorder.attach(trainer)
            trainer._setup_train()
            arm.trainer = trainer
    first = arms[0].trainer
    weights, ema = first.model.state_dict(), first.ema.ema.state_dict()
    for arm in arms[1:]:
        arm.trainer.model.load_state_dict(weights)
        arm.trainer.ema.ema.load_state_dict(ema)
    for arm in arms[1:]:
        mine = arm.trainer.model.state_dict()
        if any(not torch.equal(mine[k], v) for k, v in weights.items()):
            raise RuntimeError(f"{arm.name} does not start from the same weights as {arms[0].name}")


def _preload(trainer, n: int) -> list[dict[str, Any]]:
    """`n` batches of the train loader, kept on the host (pinned where the loader pins).

    An epoch of a small dataset holds fewer than `n` batches: the loader then runs more
    epochs (fresh mosaics of the same images), as a train job's would.
    """
    batches: list[dict[str, Any]] = []
    while len(batches) < n:
        before = len(batches)
        for batch in trainer.train_loader:
            batches.append(batch)
            if len(batches) == n:
                break
        if len(batches) == before:
            raise RuntimeError(
                "the train loader yields no batch: check the dataset's train split "
                "(results/data/*/summary.json)"
            )
    return batches


def _prove(arm: Arm, cast: str) -> None:
    """The recorder's provenance check (real training steps, profiled), once per arm."""
    with arm.patch(cast) as active:
        arm.provenance = arm.recorder.prove(arm.trainer)
    arm.construction_calls += active.construction_calls
    if not arm.provenance["matched"]:
        arm.status = "mismatch"
        arm.reason = "; ".join(arm.provenance["mismatch"]) or "provenance did not match"
        LOG.error("%s: provenance mismatch: %s", arm.name, arm.reason)


def _start(arm: Arm) -> None:
    """What the loop does before its first batch: epoch-start callbacks, train mode."""
    trainer = arm.trainer
    trainer.epoch = 0
    trainer.tloss = None
    if arm.recorder:
        arm.recorder.train_images = len(trainer.train_loader.dataset)
        arm.recorder.batch = trainer.batch_size
        arm.recorder.timer.attach(trainer)  # the train job's optimizer-step wrapper
    trainer.run_callbacks("on_train_epoch_start")
    trainer._model_train()
    trainer.optimizer.zero_grad()


def _describe(trainer, batch: dict[str, Any]) -> str:
    """The progress bar's description, as _do_train formats it (reads the loss values)."""
    return ("%11s" * 2 + "%11.4g" * (2 + len(trainer.tloss))) % (
        f"{trainer.epoch + 1}/{trainer.epochs}",
        f"{trainer._get_memory():.3g}G",
        *trainer.tloss.values(),
        batch.get("cls", batch["img"]).shape[0],
        batch["img"].shape[-1],
    )


def step(arm: Arm, batch: dict[str, Any]) -> None:
    """One training iteration: the body of BaseTrainer._do_train's batch loop (8.4.x)."""
    from ultralytics.utils.torch_utils import autocast

    trainer, i = arm.trainer, arm.step
    trainer.run_callbacks("on_train_batch_start")
    with autocast(trainer.amp, device=trainer.device.type):
        batch = trainer.preprocess_batch(dict(batch))  # a copy: the cached batch stays on host
        loss, trainer.loss_items = trainer.model(batch)
        trainer.loss = loss.sum()
        if not trainer.loss_names:
            trainer.loss_names = tuple(trainer.loss_items)
        trainer.tloss = (
            trainer.loss_items
            if trainer.tloss is None
            else {k: (trainer.tloss[k] * i + v) / (i + 1) for k, v in trainer.loss_items.items()}
        )
    trainer.scaler.scale(trainer.loss).backward()
    if i - arm.last_opt_step >= trainer.accumulate:
        trainer.optimizer_step()
        arm.last_opt_step = i
        arm.optimizer_steps += 1
    _describe(trainer, batch)
    trainer.run_callbacks("on_train_batch_end")
    arm.step += 1


def run_block(arm: Arm, batches: list, k: int, device: torch.device, cast: str) -> dict[str, Any]:
    """k steps of `arm` inside its patch, timed between two device synchronisations."""
    with arm.patch(cast) as active:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        first, opt = arm.step, arm.optimizer_steps
        host.synchronize(device)
        start = time.perf_counter()
        for _ in range(k):
            if arm.forced_oom:
                raise host.forced_error(arm.forced_oom)
            step(arm, batches[arm.step % len(batches)])
        host.synchronize(device)
        elapsed = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    if active is not None:
        arm.calls.update(active.calls)
        arm.construction_calls += active.construction_calls
        arm.dispatch_s += active.dispatch_s
        arm.dtypes.update(active.dtypes_seen())
    if peak is not None:
        arm.peak_alloc_mb = max(arm.peak_alloc_mb or 0.0, peak)
    return {
        "steps": k,
        "total_ms": elapsed * 1e3,
        "ms_per_step": elapsed * 1e3 / k,
        "optimizer_steps": arm.optimizer_steps - opt,
        "first_step": first,
        "peak_alloc_mb": peak,
    }


def _mark_forced(arms: list[Arm], settings: dict[str, Any]) -> None:
    """Arms that ATTNBENCH_FORCE_OOM names as `<point_id>/<arm>` (tests only; a settings
    `point_id` is what the sweep passes) run out of memory in their first block."""
    point_id = settings.get("point_id")
    for arm in arms if point_id else []:
        item = f"{point_id}/{arm.name}"
        if host.forced_oom(item, settings["batch"]):
            arm.forced_oom = item


def _fail(arm: Arm, exc: BaseException, device: torch.device) -> None:
    """An out-of-memory error ends the arm (a result); anything else propagates."""
    if not host.is_oom(exc):
        raise exc
    arm.status, arm.reason = "oom", host.oom_reason(exc)
    LOG.warning("%s: %s", arm.name, arm.reason)
    arm.trainer.optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run(
    settings: dict[str, Any],
    step: StepSettings,
    data_yaml: str,
    workdir: str | Path,
    device: torch.device,
) -> dict[str, Any]:
    """Time the point of `settings` (attnbench.timing.plan.settings): blocks and arm records."""
    from ultralytics.utils.torch_utils import unset_deterministic

    from attnbench.env.envinfo import environment

    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    workdir = Path(workdir).resolve()
    ultralytics_run.offline_ultralytics(workdir.parent / ".ultralytics")
    ultralytics_run.offline_amp_check()
    cast = step.cast
    dtype = backends.kernel_dtype(device, step.loop.amp, cast)
    arms = [Arm(a, None if a == BARE else a) for a in settings["arms"]]
    for arm in arms:
        reason = backends.check(arm.kernel, device, dtype) if arm.kernel else None
        if reason:
            arm.status, arm.reason = "unavailable", reason
            LOG.warning("%s: unavailable: %s", arm.name, reason)
    live = [a for a in arms if a.status == "ok"]
    _mark_forced(live, settings)
    env = environment(device)
    loaders = ultralytics_run.LoaderCache()
    blocks: list[dict[str, Any]] = []
    info: dict[str, Any] = {}
    try:
        if len(live) >= 2:
            _build(live, settings, step, data_yaml, workdir, device, loaders)
            batches = _preload(live[0].trainer, settings["batches"])
            t_prove = time.perf_counter()
            for arm in live:
                if arm.recorder:
                    _prove(arm, cast)
            info["provenance_s"] = time.perf_counter() - t_prove
            loaders.close()  # the batches are drawn: no worker runs while timing
            live = [a for a in live if a.status == "ok"]
        if len(live) >= 2:
            for arm in live:
                _start(arm)
            info["setup_s"] = time.perf_counter() - t0
            blocks, info["timing"] = _run_schedule(live, batches, settings, device, cast)
    finally:
        loaders.close()
        unset_deterministic()  # what BaseTrainer.train() does on its way out
    accumulate = live[0].trainer.accumulate if live and live[0].trainer is not None else None
    name = _device_name(device)
    for row in blocks:
        row.update(clock=clock_name(device), device_name=name)
    result = {
        "started": started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_s": time.perf_counter() - t0,
        "device": str(device),
        "device_name": name,
        "clock": clock_name(device),
        "dtype": host.dtype_name(dtype),
        "amp": bool(live[0].trainer.amp) if live and live[0].trainer is not None else None,
        "settings": settings,
        "accumulate": accumulate,
        "nominal_batch": NOMINAL_BATCH,
        "whole_optimizer_steps_per_block": bool(
            accumulate and settings["steps_per_block"] % accumulate == 0
        ),
        "same_initial_weights": True,
        "batches_preloaded": settings["batches"],
        "differences": list(DIFFERENCES),
        "arms": {a.name: _arm_record(a) for a in arms},
        "environment": env,
        **info,
    }
    for arm in arms:  # drop the models, optimizers and EMAs now
        arm.trainer = None
    host.release(device)
    return {"blocks": blocks, "info": result}


def _run_schedule(
    arms: list[Arm], batches: list, settings: dict[str, Any], device: torch.device, cast: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The warm-up rounds, then whole cycles of measured rounds until done or out of time."""
    names = [a.name for a in arms]
    by_name = {a.name: a for a in arms}
    plan = timing_plan.plan(names, settings["rounds"], settings["warmup_rounds"], settings["seed"])
    cycle = timing_plan.cycle_length(len(names))
    limit = settings["time_limit_s"]
    k = int(settings["steps_per_block"])
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    measured_start: float | None = None
    planned = timing_plan.whole_cycles(settings["rounds"], len(names))
    rounds_done, stopped = planned, None
    for block in plan:
        arm = by_name[block.arm]
        if not block.warmup and block.round % cycle == 0 and block.position == 0:
            now = time.perf_counter()
            measured_start = measured_start or now
            if limit and block.round:
                per_round = (now - measured_start) / block.round
                if now - start + per_round * cycle > limit:
                    rounds_done = block.round
                    stopped = f"time_limit_s {limit:g} s: a further cycle would end past it"
                    break
        if arm.status != "ok":
            continue
        try:
            timed = run_block(arm, batches, k, device, cast)
        except Exception as exc:
            _fail(arm, exc, device)
            continue
        rows.append(
            {"arm": arm.name, "block": block.index, "round": block.round,
             "position": block.position, "warmup": block.warmup, **timed}
        )  # fmt: skip
        LOG.debug("block %d %s: %.2f ms/step", block.index, arm.name, timed["ms_per_step"])
    timing = {
        "rounds_planned": planned,
        "rounds_done": rounds_done,
        "stopped_early": stopped,
        "blocks_s": sum(r["total_ms"] for r in rows) / 1e3,
        "schedule_s": time.perf_counter() - start,
    }
    LOG.info("%d measured rounds of %d arms in %.1f s", rounds_done, len(names),
             timing["schedule_s"])  # fmt: skip
    return rows, timing


def _arm_record(arm: Arm) -> dict[str, Any]:
    prov = arm.provenance or {}
    record = {
        "status": arm.status,
        "reason": arm.reason,
        "kernel": arm.kernel,
        "harness": arm.kernel is not None,
        "dispatched": prov.get("dispatched") if arm.kernel else "stock Ultralytics AAttn",
        "provenance_matched": prov.get("matched"),
        "steps_run": arm.step,
        "optimizer_steps": arm.optimizer_steps,
        "attention_calls": sum(arm.calls.values()),
        "construction_cpu_calls": arm.construction_calls,
        "dtypes_seen": sorted(arm.dtypes),
        "peak_alloc_mb": arm.peak_alloc_mb,
        "forced_oom": arm.forced_oom is not None,
    }
    if arm.recorder is not None and arm.step:
        # The harness clock of this arm's steps (callbacks and dispatch, measured directly).
        keys = arm.recorder.overhead_keys(None)
        record["harness_overhead_ms_per_step"] = keys["harness_overhead_ms_per_step"]
        record["harness_callbacks_ms_per_step"] = keys["harness_callbacks_ms_per_step"]
        record["harness_dispatch_ms_per_step"] = keys["harness_dispatch_ms_per_step"]
    return record


def statistics(result: dict[str, Any], settings: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """The statistics of a `run`'s result: (blocks frame, summary frame, timing.json's record).

    The summary (`attnbench.timing.paired_stats.summarize`) keeps an arm that did not time
    (unavailable, mismatch, oom) as a row with its status and reason, not an error.
    """
    import pandas as pd

    from attnbench.timing import paired_stats

    info = result["info"]
    blocks = pd.DataFrame(result["blocks"], columns=paired_stats.BLOCK_COLUMNS)
    status = {name: (arm["status"], arm["reason"]) for name, arm in info["arms"].items()}
    summary = paired_stats.summarize(
        blocks, settings["arms"], settings["baseline"], settings["alpha"],
        settings["target_halfwidth_pct"], status,
    )  # fmt: skip
    if summary["device_name"].isna().all():
        summary["device_name"] = info["device_name"]
        summary["clock"] = info["clock"]
    return blocks, summary, info


def job_measure(
    job: Any,
    settings: dict[str, Any],
    step: StepSettings,
    data_yaml: str,
    scratch: str | Path,
    blocks_path: str | Path,
) -> tuple[Any, dict[str, Any]]:
    """A rule's paired timing (rules paired_timing and sweep_paired): `run` and its
    `statistics` in the GPU
    slot of `job` (attnbench.env.scriptutil.gpu_job), its scratch removed, blocks.csv
    written, each ratio logged. Returns (summary frame, timing.json's record)."""
    import shutil

    from attnbench.io import atomic_path

    result = run(settings, step, data_yaml, scratch, job.device)
    blocks, summary, info = statistics(result, settings)
    shutil.rmtree(scratch, ignore_errors=True)
    info["gpu_slot"] = ",".join(job.slot.devices) or None
    with atomic_path(blocks_path) as tmp:
        blocks.to_csv(tmp, index=False)
    for row in summary.itertuples():
        job.log.info(
            "%s / %s: %.4f [%.4f, %.4f] (%s blocks, %s)",
            row.arm,
            row.baseline,
            row.ratio,
            row.ratio_ci_low,
            row.ratio_ci_high,
            row.blocks,
            row.status,
        )
    return summary, info
