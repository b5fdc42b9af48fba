"""The largest batch that trains, per (model, imgsz, backend): probes of a fresh model.

A probe trains `steps` steps (forward, loss, backward, optimizer step, EMA update, AMP as
configured) of a fresh model on a batch tiled from real training images, so a batch is
never capped at the dataset's size; OOM is a result. `sweep.search_max_batch` chooses
the batches; `ATTNBENCH_FORCE_OOM` (`host.forced_oom`) applies here too.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

import torch

from attnbench import grid, host
from attnbench.backends import registry as backends
from attnbench.backends.patch import use_backend
from attnbench.sweep import plan as sweep
from attnbench.train import schedule, training
from attnbench.train.settings import LoopArgs

LOG = logging.getLogger(__name__)


SAMPLE_IMAGES = 16  # real training images a probe's batch is tiled from


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
    loop: LoopArgs, cast: str, steps: int, device: torch.device, probe_id: str,
) -> dict[str, Any]:  # fmt: skip
    """Train `steps` steps at `batch`: status ok or oom, and the peak memory."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import DEFAULT_CFG
    from ultralytics.utils.torch_utils import ModelEMA

    kernel = schedule.kernel_of(backend)
    amp = bool(loop.amp) and device.type == "cuda"

    def steps_at_batch() -> None:
        model = DetectionModel(model_yaml, nc=nc, verbose=False).to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)  # as Ultralytics trains on CUDA
        model.args = get_cfg(DEFAULT_CFG)  # the loss gains
        model.train()
        optimizer = _optimizer(loop.optimizer, model.parameters(), loop.lr0)
        ema = ModelEMA(model)
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        data = tile(sample, batch, device)
        if host.forced_oom(probe_id, batch):
            raise host.forced_error(f"{probe_id}/b{batch}")
        for _ in range(steps):
            with torch.autocast(device.type, enabled=amp):
                loss, _ = model(data)
            scaler.scale(loss.sum()).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            ema.update(model)
        host.synchronize(device)

    host.release(device)
    t0 = time.perf_counter()
    status, reason = "ok", None
    try:
        with use_backend(kernel, cast=cast):
            steps_at_batch()  # its tensors die with its frame, before the peak is read
    except Exception as exc:
        if not host.is_oom(exc):
            raise
        status, reason = "oom", host.first_line(exc)
    result = {"status": status, "reason": reason, "seconds": time.perf_counter() - t0}
    if device.type == "cuda":
        result["peak_alloc_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["peak_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
    host.release(device)
    LOG.info(
        "%s batch %d: %s (%.1f s) %s", probe_id, batch, status, result["seconds"], reason or ""
    )
    return result


def find_max_batch(
    model_yaml: str, imgsz: int, backend: str, data_yaml: str, loop: LoopArgs, cast: str,
    limits: Mapping[str, Any], device: torch.device,
    sample: tuple[dict[str, Any], int] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One search's JSON: the largest batch, the first that ran out of memory, every probe."""
    kernel = schedule.kernel_of(backend)
    dtype = backends.kernel_dtype(device, loop.amp, cast)
    probe_id = f"max_batch/{grid.stem(model_yaml)}/imgsz{imgsz}/{backend}"
    result = training.base_metrics(
        backend, 0, device, loop, cast, epochs=None, batch=None, imgsz=imgsz
    )
    result.update(
        {
            "model": model_yaml,
            "model_name": grid.stem(model_yaml),
            "scale": grid.scale_of(model_yaml),
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
            model_yaml, nc, images, b, backend, loop, cast, limits["steps"], device, probe_id
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
