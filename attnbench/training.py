"""One Ultralytics training run under one attention backend, measured honestly.

Ultralytics' own trainer runs the loop; this module only adds callbacks:
- provenance: before the first epoch, a few real training steps (a real batch,
  forward + backward through the trainer's model) are profiled, then the model
  and every RNG are restored, so the run itself is unchanged;
- time: the epoch loop (first epoch start to last validation end, apart from
  setup and the final best.pt validation), per epoch, synchronised on CUDA;
- memory: torch's peak allocated/reserved, NVML's device-level peak, host RSS;
- no silent changes: Ultralytics' first-epoch OOM batch halving is disabled, and
  an out-of-memory error becomes status `oom` with what was known.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import random
import shutil
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnbench import backends, host, provenance
from attnbench.backends import BackendUnavailableError
from attnbench.io import write_json
from attnbench.patch import use_backend
from attnbench.profiling import HostRSS, StepClock, nvml_for

LOG = logging.getLogger(__name__)

RESULT_COLUMNS = {
    "precision": "metrics/precision(B)",
    "recall": "metrics/recall(B)",
    "mAP50": "metrics/mAP50(B)",
    "mAP50_95": "metrics/mAP50-95(B)",
}


def offline_ultralytics(config_dir: Path) -> None:
    """Make Ultralytics' network use explicit: no DNS probes, settings kept local."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))


def _skip_amp_check(model) -> bool:
    """Stand-in for Ultralytics' check_amp, which downloads a model to compare outputs.

    Keeps its device rule (AMP only on CUDA) and skips the download, loudly.
    """
    on_cuda = next(model.parameters()).device.type == "cuda"
    if on_cuda:
        LOG.info(
            "AMP self-check skipped: it downloads yolo26n.pt, which offline hosts cannot; "
            "AMP stays as configured (train.amp)"
        )
    return on_cuda


@contextlib.contextmanager
def _preserved_state(model: torch.nn.Module):
    """Restore model weights/buffers and every RNG after profiling steps."""
    state = copy.deepcopy(model.state_dict())
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        model.load_state_dict(state)
        model.zero_grad(set_to_none=True)
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


class RunRecorder:
    """Ultralytics callbacks that time, measure and prove one training run."""

    def __init__(self, backend: str, device: torch.device, steps: int) -> None:
        self.backend = backends.get(backend)
        self.device = device
        self.steps = steps
        self.provenance: dict[str, Any] | None = None
        self.epoch_times: list[float] = []
        self.train_epoch_times: list[float] = []
        self.loop_start: float | None = None
        self.loop_end: float | None = None
        self._epoch_start = 0.0
        self._in_epoch = False
        self.clock = StepClock()
        self.rss = HostRSS()
        self.nvml = None
        self.peak_alloc_mb: float | None = None
        self.peak_reserved_mb: float | None = None
        self.final_metrics: dict[str, float] = {}
        self.train_images = 0
        self.batch = None

    # -- callbacks ------------------------------------------------------------
    def on_train_start(self, trainer) -> None:
        self.train_images = len(trainer.train_loader.dataset)
        self.batch = trainer.batch_size
        self.provenance = self._profile(trainer)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.nvml = nvml_for(self.device)
        if self.nvml:
            self.nvml.start()
        self.rss.start()
        host.synchronize(self.device)
        self.loop_start = time.perf_counter()

    def on_train_epoch_start(self, trainer) -> None:
        trainer._oom_retries = 3  # no silent batch halving: an OOM is a result
        self.clock.epoch_start()
        host.synchronize(self.device)
        self._epoch_start = time.perf_counter()
        self._in_epoch = True

    def on_train_batch_start(self, trainer) -> None:
        self.clock.batch_start()

    def on_train_batch_end(self, trainer) -> None:
        self.clock.batch_end()

    def on_train_epoch_end(self, trainer) -> None:
        host.synchronize(self.device)
        self.train_epoch_times.append(time.perf_counter() - self._epoch_start)

    def on_fit_epoch_end(self, trainer) -> None:
        if not self._in_epoch:  # the final best.pt validation also fires this event
            self.final_metrics = dict(trainer.metrics or {})
            return
        self._in_epoch = False
        host.synchronize(self.device)
        now = time.perf_counter()
        self.epoch_times.append(now - self._epoch_start)
        self.loop_end = now
        self.final_metrics = dict(trainer.metrics or {})
        self.read_peaks()
        LOG.info(
            "epoch %d/%d of %s: %.2f s (train %.2f s)",
            len(self.epoch_times), trainer.epochs, self.backend.name,
            self.epoch_times[-1], self.train_epoch_times[-1],
        )  # fmt: skip

    def on_train_end(self, trainer) -> None:
        self.final_metrics = dict(trainer.metrics or self.final_metrics)
        self.stop_samplers()

    def attach(self, model) -> None:
        for name in (
            "on_train_start", "on_train_epoch_start", "on_train_batch_start",
            "on_train_batch_end", "on_train_epoch_end", "on_fit_epoch_end", "on_train_end",
        ):  # fmt: skip
            model.add_callback(name, getattr(self, name))

    # -- helpers --------------------------------------------------------------
    def stop_samplers(self) -> None:
        self.rss.stop()
        if self.nvml:
            self.nvml.stop()

    def read_peaks(self) -> None:
        if self.device.type == "cuda":
            self.peak_alloc_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
            self.peak_reserved_mb = torch.cuda.max_memory_reserved(self.device) / 2**20

    def _profile(self, trainer) -> dict[str, Any]:
        """Profile real training steps on a real batch; leave the run as it was."""
        model = trainer.model
        dataset = trainer.train_loader.dataset
        with _preserved_state(model):
            items = [dataset[i % len(dataset)] for i in range(trainer.batch_size)]
            batch = trainer.preprocess_batch(dataset.collate_fn(items))

            def step() -> None:
                with torch.autocast(self.device.type, enabled=bool(trainer.amp)):
                    loss, _ = model(batch)
                loss.sum().backward()

            record = provenance.profile_steps(step, self.steps, self.device)
        result = provenance.verify(
            record, self.backend.signature(self.device.type), self.device.type
        )
        LOG.info(
            "provenance of %s: dispatched to %s; matched=%s %s",
            self.backend.name, result["dispatched"], result["matched"], result["mismatch"] or "",
        )  # fmt: skip
        return result


def _results_metrics(results_csv: Path) -> dict[str, float]:
    """The last epoch row of Ultralytics' results.csv (used when final val is missing)."""
    import pandas as pd

    if not results_csv.exists() or results_csv.stat().st_size == 0:
        return {}
    frame = pd.read_csv(results_csv)
    frame.columns = [c.strip() for c in frame.columns]
    if frame.empty:
        return {}
    return {col: float(frame[col].iloc[-1]) for col in RESULT_COLUMNS.values() if col in frame}


def base_metrics(
    backend: str, seed: int, train: dict[str, Any], device: torch.device
) -> dict[str, Any]:
    from attnbench.envinfo import environment

    env = environment(device)
    return {
        "backend": backend,
        "seed": seed,
        "status": None,
        "reason": None,
        "cast": train["cast"],
        "epochs": train["epochs"],
        "batch": train["batch"],
        "imgsz": train["imgsz"],
        "amp": train["amp"],
        "optimizer": train["optimizer"],
        "lr0": train["lr0"],
        "workers": train["workers"],
        "cache": train["cache"],
        "device": str(device),
        "device_name": env.get("gpu_name") or env.get("cpu_model"),
        "torch": env.get("torch"),
        "cuda": env.get("cuda"),
        "cudnn": env.get("cudnn"),
        "flash_attn": env.get("flash_attn"),
        "ultralytics": env.get("ultralytics"),
        "python": env.get("python"),
        "torch_threads": torch.get_num_threads(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def train_one(
    backend: str,
    seed: int,
    data_yaml: str | os.PathLike,
    train: dict[str, Any],
    workdir: str | os.PathLike,
    device: torch.device,
) -> dict[str, Any]:
    """Train once and return metrics.json's content; raises for non-OOM failures."""
    workdir = Path(workdir).resolve()  # Ultralytics puts a relative project under its own runs_dir
    runs = workdir / "ultralytics"
    shutil.rmtree(runs, ignore_errors=True)  # a killed run restarts cleanly (no resume)
    offline_ultralytics(workdir.parent.parent / ".ultralytics")

    metrics = base_metrics(backend, seed, train, device)
    dtype = backends.kernel_dtype(device, train["amp"], train["cast"])
    metrics["dtype"] = str(dtype).removeprefix("torch.")
    reason = backends.check(backend, device, dtype)
    if reason:
        if train["on_unavailable"] == "fail":
            raise BackendUnavailableError(f"{reason} (train.on_unavailable = fail)")
        LOG.warning("skipping %s: %s", backend, reason)
        return {**metrics, "status": "unavailable", "reason": reason}

    from ultralytics import YOLO
    from ultralytics.engine import trainer as trainer_module

    trainer_module.check_amp = _skip_amp_check
    recorder = RunRecorder(backend, device, train["provenance_steps"])
    model = YOLO(train["model"], task="detect")
    recorder.attach(model)
    args = {
        "data": str(data_yaml),
        "epochs": train["epochs"],
        "batch": train["batch"],
        "imgsz": train["imgsz"],
        "optimizer": train["optimizer"],
        "lr0": train["lr0"],
        "amp": train["amp"],
        "workers": train["workers"],
        "cache": train["cache"],
        "device": "cpu" if device.type == "cpu" else device.index or 0,
        "seed": seed,
        "deterministic": True,
        "pretrained": False,
        "project": str(workdir),
        "name": "ultralytics",
        "exist_ok": True,
        "plots": False,  # plotting fetches a font from the hub
        "verbose": True,
    }
    status, reason = "ok", None
    with use_backend(backend, cast=train["cast"]) as active:
        try:
            model.train(**args)
        except Exception as exc:
            if not host.is_oom(exc):
                raise
            status, reason = "oom", f"out of memory: {str(exc).splitlines()[0]}"
            LOG.error("%s seed %d ran out of memory: %s", backend, seed, reason)
        finally:
            recorder.stop_samplers()
    recorder.read_peaks()

    prov = recorder.provenance
    if prov is not None and not prov["matched"] and status == "ok":
        raise provenance.ProvenanceMismatchError(
            f"{backend}: the profiled kernels do not match the backend: {'; '.join(prov['mismatch'])}"
        )
    final = recorder.final_metrics or _results_metrics(runs / "results.csv")
    epoch_times = recorder.epoch_times
    train_times = recorder.train_epoch_times
    images = recorder.train_images * len(train_times)
    loop = (
        (recorder.loop_end - recorder.loop_start)
        if recorder.loop_end and recorder.loop_start
        else None
    )
    nvml = recorder.nvml.summary() if recorder.nvml else {}
    metrics.update(
        {
            "status": status,
            "reason": reason,
            "dtypes_seen": active.dtypes_seen(),
            "attention_calls": sum(active.calls.values()),
            "construction_cpu_calls": active.construction_calls,
            "train_images": recorder.train_images,
            "batch_used": recorder.batch,
            "epochs_done": len(epoch_times),
            "epoch_loop_s": loop,
            "epoch_times_s": epoch_times,
            "train_epoch_times_s": train_times,
            "epoch_time_s": statistics.median(epoch_times[1:] or epoch_times)
            if epoch_times
            else None,
            "images_per_s": images / sum(train_times) if train_times else None,
            "data_wait_fraction": recorder.clock.fraction(),
            "peak_alloc_mb": recorder.peak_alloc_mb,
            "peak_reserved_mb": recorder.peak_reserved_mb,
            "peak_device_used_mb": nvml.get("peak_device_used_mb"),
            "gpu_util_mean": nvml.get("gpu_util_mean"),
            "gpu_util_median": nvml.get("gpu_util_median"),
            "host_peak_rss_mb": recorder.rss.peak_bytes / 2**20,
            "provenance": prov,
            "amp_check": "skipped (it downloads yolo26n.pt)"
            if device.type == "cuda"
            else "n/a (CPU)",
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )
    for key, column in RESULT_COLUMNS.items():
        metrics[key] = float(final[column]) if column in final else None
    if recorder.batch is not None and recorder.batch != train["batch"]:
        raise RuntimeError(
            f"Ultralytics changed the batch size to {recorder.batch} (asked {train['batch']})"
        )
    return metrics


def write_outputs(
    metrics: dict[str, Any], workdir: Path, metrics_path: Path, results_path: Path
) -> None:
    """Copy Ultralytics' results.csv beside metrics.json; write both atomically."""
    from attnbench.io import atomic_path

    source = Path(workdir) / "ultralytics" / "results.csv"
    with atomic_path(results_path) as tmp:
        if source.exists():
            shutil.copyfile(source, tmp)
        else:
            tmp.write_text("")
    write_json(metrics_path, metrics)
