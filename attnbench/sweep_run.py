"""Running the sweep: short trainings (points) and largest-batch probes, on one device.

A point is Ultralytics' own training loop under `RunRecorder` (fail-fast provenance,
step timer, profiled window, peaks), stopped once it has `steps` timed iterations:
`PointRecorder` raises `StopPoint` from a callback, before the next forward, and the
point's code catches it. The train loader is endless (one epoch that never ends, full
batches only), so no epoch end, validation, checkpoint or loader restart ever runs;
`val=False` and `save=False` guard that too.

Points of one job share their data loaders (`LoaderCache`): the workers start once.
Between points the model, optimizer and EMA are dropped, the allocator cache is
emptied and the peak statistics reset (and torch.compile's caches, when compiling).

A probe trains `steps` steps (forward, loss, backward, optimizer step, EMA update,
AMP as configured) of a fresh model on a batch tiled from real training images,
so a batch is never capped at the dataset's size; OOM is a result.

`ATTNBENCH_FORCE_OOM` (tests only) makes chosen points or probes raise an
out-of-memory error: comma-separated globs of point ids
(`yolo12s/imgsz64/b2/off/eager/rep1`, `max_batch/yolo12n/imgsz64/eager`) or `batch>N`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gc
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from attnbench import backends, host, provenance, schedule, sweep, training
from attnbench.patch import use_backend
from attnbench.recorder import RunRecorder
from attnbench.scriptutil import UserError

LOG = logging.getLogger(__name__)
FORCE_OOM_ENV = "ATTNBENCH_FORCE_OOM"
ENDLESS_BATCHES = 10**6  # the train loader's "epoch": longer than any point
SAMPLE_IMAGES = 16  # real training images a probe's batch is tiled from


class StopPoint(Exception):  # noqa: N818 - a signal, not an error
    """A point has its timed iterations: leave Ultralytics' loop before the next step."""


def forced_oom(item_id: str, batch: int, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ATTNBENCH_FORCE_OOM asks this point or probe to run out of memory."""
    spec = (os.environ if environ is None else environ).get(FORCE_OOM_ENV, "")
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        above = re.fullmatch(r"batch>(\d+)", item)
        if (above and batch > int(above.group(1))) or (
            not above and fnmatch.fnmatch(item_id, item)
        ):
            return True
    return False


def _forced_error(item_id: str) -> torch.OutOfMemoryError:
    return torch.OutOfMemoryError(f"CUDA out of memory (forced by {FORCE_OOM_ENV} for {item_id})")


def release(device: torch.device, compiled: bool = False) -> None:
    """Free what earlier points left: Python garbage, cached blocks, peak statistics."""
    gc.collect()
    if compiled:
        torch._dynamo.reset()  # fresh models would otherwise recompile up to the limit, then run eager
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- #
# Points


class PointRecorder(RunRecorder):
    """RunRecorder that ends the loop after warm-up, the profiled window and `steps` timed steps."""

    def __init__(self, backend: str, device: torch.device, provenance_steps: int,
                 timing: dict[str, int], steps: int, point_id: str, batch: int) -> None:  # fmt: skip
        super().__init__(backend, device, provenance_steps, timing)
        self.steps = steps
        self.point_id = point_id
        self.force_oom = forced_oom(point_id, batch)
        self.iterations = 0
        self.started_loop: float | None = None

    def on_train_start(self, trainer) -> None:
        if trainer.train_loader.batch_size != trainer.batch_size:
            raise UserError(
                f"the dataset has {len(trainer.train_loader.dataset)} training images, fewer than "
                f"sweep batch {trainer.batch_size}: use a larger dataset or smaller sweep.batches"
            )
        super().on_train_start(trainer)
        self.window_epoch = 0  # a point lives in its first (endless) epoch
        self.started_loop = time.perf_counter()

    def timed(self) -> int:
        """Timed intervals so far, those of the running epoch included.

        Uses `StepTimer.pending()` where it exists (the count epoch_end would add);
        otherwise counts the running epoch's closed intervals as epoch_end does: not
        excluded, and not an optimizer step where the timer keeps those apart.
        """
        pending = getattr(self.timer, "pending", None)
        if callable(pending):
            return len(self.timer.step_ms) + pending()
        marks = self.timer._marks  # [event, host time, excluded, optimizer stepped] per start
        closed = (marks[i] for i in range(max(self.timer.warmup, 0), len(marks) - 1))
        count = sum(1 for m in closed if not m[2] and not (len(m) > 3 and m[3]))
        return len(self.timer.step_ms) + count

    def on_train_batch_start(self, trainer) -> None:
        super().on_train_batch_start(trainer)
        self.iterations += 1
        if self.force_oom and self.iterations > self.timer.warmup:
            raise _forced_error(self.point_id)
        window = self.window
        settled = window.done or window.steps == 0 or self._epoch_index > self.window_epoch
        if settled and not window.active and self.timed() >= self.steps:
            self.timer.epoch_end()  # this iteration's mark closed the last interval
            self.read_peaks()
            raise StopPoint


class LoaderCache:
    """The data loaders of one job, shared by its points; closed once at the end."""

    def __init__(self) -> None:
        self.loaders: dict[tuple, Any] = {}

    def trainer_class(self) -> type:
        """A DetectionTrainer whose loaders come from this cache (the train one endless)."""
        from ultralytics.data.build import InfiniteDataLoader, build_dataloader
        from ultralytics.models.yolo.detect import DetectionTrainer

        class EndlessLoader(InfiniteDataLoader):
            def __len__(self) -> int:
                return ENDLESS_BATCHES

        cache = self.loaders

        class SweepTrainer(DetectionTrainer):
            def get_dataloader(self, dataset_path, batch_size=16, rank=0, mode="train"):
                key = (str(dataset_path), batch_size, mode, self.args.imgsz, self.args.workers,
                       str(self.args.cache))  # fmt: skip
                if key not in cache:
                    if mode == "train":
                        dataset = self.build_dataset(dataset_path, mode, batch_size)
                        loader = build_dataloader(
                            dataset, batch=batch_size, workers=self.args.workers, shuffle=True,
                            rank=rank, drop_last=True, device=self.device,
                        )  # fmt: skip
                        loader.__class__ = EndlessLoader  # same object, one endless epoch
                    else:
                        loader = super().get_dataloader(dataset_path, batch_size, rank, mode)
                    cache[key] = loader
                return cache[key]

        return SweepTrainer

    def close(self) -> None:
        for loader in self.loaders.values():
            with contextlib.suppress(Exception):
                loader.close()
        self.loaders.clear()


def point_args(spec: Mapping[str, Any], settings: Mapping[str, Any], train: Mapping[str, Any],
               data_yaml: str, workdir: Path, device: torch.device) -> dict[str, Any]:  # fmt: skip
    """Ultralytics train() arguments of a point: no warm-up epochs, validation or checkpoints."""
    return {
        "data": str(data_yaml),
        "epochs": 1,  # of ENDLESS_BATCHES iterations; the point stops long before its end
        "batch": spec["batch"],
        "imgsz": spec["imgsz"],
        "optimizer": train["optimizer"],
        "lr0": train["lr0"],
        "amp": train["amp"],
        "workers": train["workers"],
        "cache": train["cache"],
        "device": "cpu" if device.type == "cpu" else device.index or 0,
        "seed": spec["seed"],
        "deterministic": settings["deterministic"],
        "compile": sweep.COMPILE_ARGS[spec["compile"]],
        "pretrained": False,
        "warmup_epochs": 0,  # steady optimizer cadence (nominal batch 64) from the first step
        "close_mosaic": 0,
        "val": False,
        "save": False,
        "plots": False,
        "project": str(workdir),
        "name": "ultralytics",
        "exist_ok": True,
        "verbose": False,
    }


def run_point(
    spec: Mapping[str, Any],
    settings: Mapping[str, Any],
    train: Mapping[str, Any],
    data_yaml: str,
    workdir: Path,
    device: torch.device,
    loaders: LoaderCache,
) -> dict[str, Any]:
    """Train one point and return its metrics.json; OOM, mismatch and unavailable are results."""
    from ultralytics import YOLO
    from ultralytics.engine import trainer as trainer_module

    backend = spec["backend"]
    kernel = schedule.kernel_of(backend)
    info = {**train, "epochs": None, "batch": spec["batch"], "imgsz": spec["imgsz"]}
    metrics = training.base_metrics(backend, spec["seed"], info, device)
    metrics.update(
        {k: spec[k] for k in ("id", "model", "model_name", "scale", "compile", "rep", "run_order")}
    )
    metrics.update(
        {
            "point_id": metrics.pop("id"),
            "planned_position": spec.get("planned_position"),
            "first_in_process": spec["run_order"] == 0,
            "deterministic": settings["deterministic"],
            "steps_requested": settings["steps"],
            "warmup_iters": settings["warmup_iters"],
            "profile_iters": settings["profile_iters"],
            "forced_oom": forced_oom(spec["id"], spec["batch"]),
        }
    )
    dtype = backends.kernel_dtype(device, train["amp"], train["cast"])
    metrics["dtype"] = host.dtype_name(dtype)
    reason = backends.check(kernel, device, dtype)
    if reason:
        LOG.warning("%s: unavailable: %s", spec["id"], reason)
        return {**metrics, "status": "unavailable", "reason": reason}

    release(device, compiled=spec["compile"] != "off")
    trainer_module.check_amp = training._skip_amp_check  # no download of a reference model
    timing = {"warmup_iters": settings["warmup_iters"], "profile_iters": settings["profile_iters"]}
    recorder = PointRecorder(kernel, device, train["provenance_steps"], timing, settings["steps"],
                             spec["id"], spec["batch"])  # fmt: skip
    t0 = time.perf_counter()
    status, reason = "ok", None
    with use_backend(kernel, cast=train["cast"]) as active:
        try:
            model = YOLO(spec["model"], task="detect")
            recorder.attach(model)
            args = point_args(spec, settings, train, data_yaml, workdir, device)
            model.train(trainer=loaders.trainer_class(), **args)
            status, reason = "error", "the training loop ended before the timed steps"
        except StopPoint:
            pass
        except provenance.ProvenanceMismatchError as exc:
            status, reason = "mismatch", _first_line(exc)
            LOG.error("%s: provenance mismatch: %s", spec["id"], reason)
        except Exception as exc:
            if not host.is_oom(exc):
                raise
            status, reason = "oom", f"out of memory: {_first_line(exc)}"
            LOG.warning("%s: %s", spec["id"], reason)
        finally:
            recorder.stop_samplers()
            model = None  # noqa: F841 - drop the trainer, its model, optimizer and EMA now
    recorder.read_peaks()
    nvml = recorder.nvml.summary() if recorder.nvml else {}
    timing_keys = recorder.timing()
    if status != "ok":  # an interrupted loop's partial timings are not a measurement
        timing_keys = {
            k: (0 if k in ("steps_timed", "profiled_steps") else None) for k in timing_keys
        }
    metrics.update(
        {
            "status": status,
            "reason": reason,
            **timing_keys,
            "peak_alloc_mb": recorder.peak_alloc_mb,
            "peak_reserved_mb": recorder.peak_reserved_mb,
            "peak_device_used_mb": nvml.get("peak_device_used_mb"),
            "gpu_util_mean": nvml.get("gpu_util_mean"),
            "gpu_util_median": nvml.get("gpu_util_median"),
            "host_peak_rss_mb": recorder.rss.peak_bytes / 2**20,
            "provenance": recorder.provenance,
            "dtypes_seen": active.dtypes_seen(),
            "attention_calls": sum(active.calls.values()),
            "train_images": recorder.train_images,
            "batch_used": recorder.batch,
            "iterations_run": recorder.iterations,
            "setup_s": (recorder.started_loop - t0) if recorder.started_loop else None,
            "point_s": time.perf_counter() - t0,
            "finished": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        }
    )
    LOG.info(
        "%s: %s, step %s ms (%s timed), GPU %s ms/step, peak %s MiB",
        spec["id"], status, _fmt(metrics.get("step_ms_median")), metrics.get("steps_timed"),
        _fmt(metrics.get("gpu_ms_per_step")), _fmt(metrics["peak_alloc_mb"]),
    )  # fmt: skip
    return metrics


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def run_points(
    specs: list[Mapping[str, Any]],
    settings: Mapping[str, Any],
    train: Mapping[str, Any],
    data_yaml: str,
    workdir: Path,
    device: torch.device,
    write: Callable[[Mapping[str, Any], dict[str, Any]], None],
) -> list[dict[str, Any]]:
    """Run a job's points in their order, sharing data loaders; `write` each result at once."""
    workdir = Path(workdir).resolve()
    loaders = LoaderCache()
    results = []
    try:
        for spec in specs:
            LOG.info(
                "point %d/%d: %s (seed %d)",
                spec["run_order"] + 1,
                len(specs),
                spec["id"],
                spec["seed"],
            )
            point_dir = workdir / spec["id"].replace("/", "_")
            result = run_point(spec, settings, train, data_yaml, point_dir, device, loaders)
            shutil.rmtree(point_dir, ignore_errors=True)  # Ultralytics' args.yaml, empty weights/
            write(spec, result)
            results.append(result)
    finally:
        loaders.close()
        release(device)
    return results


# --------------------------------------------------------------------------- #
# The largest batch that trains


def training_sample(
    data_yaml: str, imgsz: int, images: int = SAMPLE_IMAGES
) -> tuple[dict[str, Any], int]:
    """A collated batch of augmented training images and labels (CPU), and the class count."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils import DEFAULT_CFG

    data = check_det_dataset(str(data_yaml))
    cfg = get_cfg(DEFAULT_CFG, {"imgsz": imgsz, "task": "detect", "mode": "train"})
    dataset = build_yolo_dataset(cfg, data["train"], images, data, mode="train")
    items = [dataset[i % len(dataset)] for i in range(min(images, len(dataset)))]
    return dataset.collate_fn(items), int(data["nc"])


def tile(sample: Mapping[str, Any], batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A batch of `batch` images repeated from `sample`, each with its own labels, on `device`."""
    n = sample["img"].shape[0]
    source = torch.arange(batch) % n
    index = sample["batch_idx"].long()
    rows, owner = [], []
    for k, j in enumerate(source.tolist()):
        found = torch.nonzero(index == j).flatten()
        rows.append(found)
        owner.append(torch.full((found.numel(),), k, dtype=torch.long))
    rows_t, owner_t = torch.cat(rows), torch.cat(owner)
    return {
        "img": sample["img"][source].to(device).float() / 255,
        "cls": sample["cls"][rows_t].to(device),
        "bboxes": sample["bboxes"][rows_t].to(device),
        "batch_idx": owner_t.to(device, dtype=sample["batch_idx"].dtype),
    }


def _optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """The optimizer's state is part of the peak: SGD keeps one buffer, Adam-like two."""
    if name == "SGD":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True)
    if name == "RMSProp":
        return torch.optim.RMSprop(params, lr=lr, momentum=0.9)
    return torch.optim.AdamW(params, lr=lr)


def probe(
    model_yaml: str, nc: int, sample: Mapping[str, Any], batch: int, backend: str,
    train: Mapping[str, Any], steps: int, device: torch.device, probe_id: str,
) -> dict[str, Any]:  # fmt: skip
    """Train `steps` steps at `batch`: status ok or oom, and the peak memory."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import DEFAULT_CFG
    from ultralytics.utils.torch_utils import ModelEMA

    kernel = schedule.kernel_of(backend)
    amp = bool(train["amp"]) and device.type == "cuda"

    def steps_at_batch() -> None:
        model = DetectionModel(model_yaml, nc=nc, verbose=False).to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)  # as Ultralytics trains on CUDA
        model.args = get_cfg(DEFAULT_CFG)  # the loss gains
        model.train()
        optimizer = _optimizer(train["optimizer"], model.parameters(), train["lr0"])
        ema = ModelEMA(model)
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        data = tile(sample, batch, device)
        if forced_oom(probe_id, batch):
            raise _forced_error(f"{probe_id}/b{batch}")
        for _ in range(steps):
            with torch.autocast(device.type, enabled=amp):
                loss, _ = model(data)
            scaler.scale(loss.sum()).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            ema.update(model)
        host.synchronize(device)

    release(device)
    t0 = time.perf_counter()
    status, reason = "ok", None
    try:
        with use_backend(kernel, cast=train["cast"]):
            steps_at_batch()  # its tensors die with its frame, before the peak is read
    except Exception as exc:
        if not host.is_oom(exc):
            raise
        status, reason = "oom", _first_line(exc)
    result = {"status": status, "reason": reason, "seconds": time.perf_counter() - t0}
    if device.type == "cuda":
        result["peak_alloc_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["peak_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
    release(device)
    LOG.info(
        "%s batch %d: %s (%.1f s) %s", probe_id, batch, status, result["seconds"], reason or ""
    )
    return result


def find_max_batch(
    model_yaml: str, imgsz: int, backend: str, data_yaml: str, train: Mapping[str, Any],
    limits: Mapping[str, Any], device: torch.device,
    sample: tuple[dict[str, Any], int] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One search's JSON: the largest batch, the first that ran out of memory, every probe."""
    kernel = schedule.kernel_of(backend)
    dtype = backends.kernel_dtype(device, train["amp"], train["cast"])
    probe_id = f"max_batch/{sweep.stem(model_yaml)}/imgsz{imgsz}/{backend}"
    info = {**train, "epochs": None, "batch": None, "imgsz": imgsz}
    result = training.base_metrics(backend, 0, info, device)
    result.update(
        {
            "model": model_yaml,
            "model_name": sweep.stem(model_yaml),
            "scale": sweep.scale_of(model_yaml),
            "dtype": host.dtype_name(dtype),
            "steps_per_probe": limits["steps"],
            "tolerance": limits["tolerance"],
            "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
            "device_total_mb": torch.cuda.get_device_properties(device).total_memory / 2**20
            if device.type == "cuda"
            else None,
        }
    )
    reason = backends.check(kernel, device, dtype)
    if reason:
        return {**result, "status": "unavailable", "reason": reason, "max_batch": None,
                "first_oom": None, "limited_by": None, "probes": []}  # fmt: skip
    images, nc = sample or training_sample(data_yaml, imgsz)
    search = sweep.search_max_batch(
        lambda b: probe(
            model_yaml, nc, images, b, backend, train, limits["steps"], device, probe_id
        ),
        limits["start"],
        limits["limit"],
        limits["tolerance"],
    )
    status = "ok" if search["max_batch"] else "oom"
    reason = (
        None if search["max_batch"] else f"batch {search['first_oom']} already runs out of memory"
    )
    result.update({"status": status, "reason": reason, **search})
    result["finished"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    LOG.info("%s: largest batch %s (first OOM %s, %d probes, limited by %s)", probe_id,
             search["max_batch"], search["first_oom"], len(search["probes"]), search["limited_by"])  # fmt: skip
    return result


def sample_cache() -> Callable[[str, int], tuple[dict[str, Any], int]]:
    """One training sample per imgsz for all searches of a job."""
    cache: dict[tuple[str, int], tuple[dict[str, Any], int]] = {}

    def get(data_yaml: str, imgsz: int) -> tuple[dict[str, Any], int]:
        if (data_yaml, imgsz) not in cache:
            cache[(data_yaml, imgsz)] = training_sample(data_yaml, imgsz)
        return cache[(data_yaml, imgsz)]

    return get
