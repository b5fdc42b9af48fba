"""The set-up every Ultralytics run here shares, a study run (`training`) and a sweep
point (`sweep_run`): offline settings, the model with its recorder attached, the offline
AMP check, the train() arguments both pass, and the data loaders that the points of one
job share (`LoaderCache`; paired timing's arms share them too).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import torch

from attnbench.train.recorder import RunRecorder
from attnbench.train.settings import LoopArgs

LOG = logging.getLogger(__name__)


def offline_ultralytics(config_dir: Path) -> None:
    """Make Ultralytics' network use explicit: no DNS probes, settings kept local."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))


def skip_amp_check(model) -> bool:
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


def train_args(
    data_yaml: str | os.PathLike,
    loop: LoopArgs,
    device: torch.device,
    workdir: str | os.PathLike,
    **args: Any,
) -> dict[str, Any]:
    """The train() arguments every run shares (the loop's, the device, no pretrained
    weights, no plots), updated with `args`."""
    shared = {
        "data": str(data_yaml),
        **loop.args(),
        "device": "cpu" if device.type == "cpu" else device.index or 0,
        "pretrained": False,
        "project": str(workdir),
        "name": "ultralytics",
        "exist_ok": True,
        "plots": False,  # plotting fetches a font from the hub
    }
    return {**shared, **args}


def offline_amp_check() -> None:
    """Put `skip_amp_check` in place of Ultralytics' check_amp (no download)."""
    from ultralytics.engine import trainer as trainer_module

    trainer_module.check_amp = skip_amp_check


def setup(
    weights: str,
    recorder: RunRecorder,
    data_yaml: str | os.PathLike,
    loop: LoopArgs,
    device: torch.device,
    workdir: str | os.PathLike,
    **args: Any,
) -> tuple[Any, dict[str, Any]]:
    """A YOLO model with `recorder` attached, and its train() arguments: the shared ones
    (`train_args`) updated with `args`."""
    from ultralytics import YOLO

    offline_amp_check()  # no download of a reference model
    model = YOLO(weights, task="detect")
    recorder.attach(model)
    return model, train_args(data_yaml, loop, device, workdir, **args)


ENDLESS_BATCHES = 10**6  # the train loader's "epoch": longer than any point


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
