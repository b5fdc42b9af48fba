"""The model an inference job runs: YOLO12's weights (the study's best.pt, else the yaml with
seeded random weights), fused and in eval mode in the job's dtype, compiled when asked."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from attnbench import grid, host
from attnbench.data.digest import file_sha256
from attnbench.errors import UserError


def run_dtype(requested: str, device: torch.device) -> tuple[torch.dtype, str | None]:
    """The dtype a job runs in, and a note when it is not the one asked for."""
    if device.type == "cpu" and requested != "fp32":
        return torch.float32, f"{requested} requested; a CPU runs fp32"
    return host.torch_dtype(requested), None


def load_yolo(weights: Mapping[str, Any], nc: int | None = None) -> tuple[Any, dict[str, Any]]:
    """The Ultralytics model and a record of its weights: the study's best.pt, else the yaml.

    A yaml model gets random weights seeded by `weights.seed` (every backend the same);
    `nc` sets its class count (the validation set's, for the agreement check).
    """
    from ultralytics import YOLO

    best = weights.get("best_pt")
    if best and Path(best).is_file():
        return YOLO(best, task="detect"), {
            "weights": "trained",
            "weights_file": best,
            "weights_sha256": file_sha256(best),
        }
    if weights["source"] == "train":
        raise UserError(
            f"inference.weights.source = train but {best} does not exist: run the train job "
            "of that arm and seed first, or use weights.source: auto"
        )
    torch.manual_seed(weights["seed"])
    yolo = YOLO(weights["yaml"], task="detect")
    if nc is not None and yolo.model.yaml.get("nc") != nc:
        from ultralytics.nn.tasks import DetectionModel

        torch.manual_seed(weights["seed"])
        yolo.model = DetectionModel(weights["yaml"], nc=nc, verbose=False)
        yolo.model.names = {i: str(i) for i in range(nc)}
    why = "absent" if best else "not the model the study trains"
    return yolo, {
        "weights": f"yaml (random, seed {weights['seed']}; trained weights {why})",
        "weights_file": None,
        "weights_sha256": None,
    }


def prepare(yolo, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The detection model as Ultralytics' predictor runs it: fused, eval, no grad, dtype."""
    model = yolo.model
    model.fuse(verbose=False)
    model = model.to(device=device, dtype=dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def compile_model(model: torch.nn.Module, compile_: str) -> torch.nn.Module:
    mode = grid.COMPILE_MODES[compile_]
    return model if mode is None else torch.compile(model, mode=mode)
