"""The set-up every Ultralytics training here shares, a study run (`training`) and a sweep
point (`sweep_run`): the model with its recorder attached, the offline AMP check, and the
train() arguments both pass.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from attnbench.recorder import RunRecorder


def setup(
    weights: str,
    recorder: RunRecorder,
    data_yaml: str | os.PathLike,
    train: dict[str, Any],
    device: torch.device,
    workdir: str | os.PathLike,
    **args: Any,
) -> tuple[Any, dict[str, Any]]:
    """A YOLO model with `recorder` attached, and its train() arguments: the shared ones
    (config `train`, device, no pretrained weights, no plots) updated with `args`."""
    from ultralytics import YOLO
    from ultralytics.engine import trainer as trainer_module

    from attnbench.training import _skip_amp_check  # there, where the benchmarks take it

    trainer_module.check_amp = _skip_amp_check  # no download of a reference model
    model = YOLO(weights, task="detect")
    recorder.attach(model)
    shared = {
        "data": str(data_yaml),
        "optimizer": train["optimizer"],
        "lr0": train["lr0"],
        "amp": train["amp"],
        "workers": train["workers"],
        "cache": train["cache"],
        "device": "cpu" if device.type == "cpu" else device.index or 0,
        "pretrained": False,
        "project": str(workdir),
        "name": "ultralytics",
        "exist_ok": True,
        "plots": False,  # plotting fetches a font from the hub
    }
    return model, {**shared, **args}
