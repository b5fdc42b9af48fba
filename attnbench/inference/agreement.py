"""Prediction agreement: every backend's predictions on the validation set against the
baseline's, with Ultralytics' validator (box mAP) on the same weights and a one-to-one
matching of predicted boxes (same class, IoU >= `match_iou`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnbench import grid, host
from attnbench.backends import registry as backends
from attnbench.backends.patch import use_backend
from attnbench.errors import UserError
from attnbench.inference.model import load_yolo, run_dtype

LOG = logging.getLogger(__name__)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (n, 4 xyxy) with every box in b (m, 4)."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_boxes(ref: Sequence[Mapping[str, np.ndarray]], other: Sequence[Mapping[str, np.ndarray]],
                match_iou: float) -> dict[str, Any]:  # fmt: skip
    """One-to-one matching of two models' boxes, image by image (same class, greedy by IoU).

    Each image is {"xyxy": (n, 4), "cls": (n,)}. `matched_share` = boxes matched at IoU >=
    `match_iou` over the larger of the two box counts (None when neither predicted a box).
    """
    if len(ref) != len(other):
        raise ValueError(f"{len(ref)} reference images but {len(other)} to compare")
    boxes_ref = boxes_other = matched = 0
    ious: list[float] = []
    for r, o in zip(ref, other, strict=True):
        rb, ob = (
            np.asarray(r["xyxy"], float).reshape(-1, 4),
            np.asarray(o["xyxy"], float).reshape(-1, 4),
        )
        rc, oc = np.asarray(r["cls"]).reshape(-1), np.asarray(o["cls"]).reshape(-1)
        boxes_ref += len(rb)
        boxes_other += len(ob)
        iou = box_iou(rb, ob)
        iou = np.where(rc[:, None] == oc[None, :], iou, 0.0)
        used_r, used_o = set(), set()
        for flat in np.argsort(-iou, axis=None, kind="stable"):
            i, j = divmod(int(flat), iou.shape[1])
            if iou[i, j] <= 0:
                break
            if i in used_r or j in used_o:
                continue
            used_r.add(i)
            used_o.add(j)
            ious.append(float(iou[i, j]))
            matched += iou[i, j] >= match_iou
    larger = max(boxes_ref, boxes_other)
    return {
        "images": len(ref),
        "boxes_ref": boxes_ref,
        "boxes": boxes_other,
        "matched": int(matched),
        "matched_share": matched / larger if larger else None,
        "pair_iou_median": float(np.median(ious)) if ious else None,
        "pair_iou_min": float(np.min(ious)) if ious else None,
    }


def val_images(data_yaml: str) -> list[str]:
    """The validation images data.yaml lists (an image-list file or a folder)."""
    from ultralytics.data.utils import check_det_dataset

    val = check_det_dataset(str(data_yaml))["val"]
    paths = val if isinstance(val, list) else [val]
    images: list[str] = []
    for p in map(Path, paths):
        if p.suffix == ".txt":
            images += [line.strip() for line in p.read_text().splitlines() if line.strip()]
        elif p.is_dir():
            images += sorted(
                str(f)
                for f in p.rglob("*")
                if f.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"}
            )
    if not images:
        raise UserError(f"{data_yaml} lists no validation images: the agreement check needs some")
    return images


def predictions(yolo, images: Sequence[str], settings: Mapping[str, Any], half: bool,
                device: torch.device) -> list[dict[str, np.ndarray]]:  # fmt: skip
    out = []
    for result in yolo.predict(source=list(images), imgsz=settings["imgsz"], conf=settings["conf"],
                               half=half, device=_ul_device(device), verbose=False, stream=True,
                               save=False, batch=settings["batch"]):  # fmt: skip
        boxes = result.boxes
        out.append({"xyxy": boxes.xyxy.float().cpu().numpy(), "cls": boxes.cls.cpu().numpy(),
                    "conf": boxes.conf.float().cpu().numpy()})  # fmt: skip
    return out


def _ul_device(device: torch.device) -> str | int:
    return "cpu" if device.type == "cpu" else device.index or 0


def agreement(model_yaml: str, weights: Mapping[str, Any], backend_names: Sequence[str],
              baseline: str, data_yaml: str, settings: Mapping[str, Any], dtype_name: str,
              device: torch.device, workdir: Path) -> dict[str, Any]:  # fmt: skip
    """Each backend's mAP and boxes on the validation set against the baseline's (same weights)."""
    from ultralytics.data.utils import check_det_dataset

    agree = settings["agreement"]
    dtype, dtype_note = run_dtype(dtype_name, device)
    half = dtype == torch.float16
    images = val_images(data_yaml)
    nc = int(check_det_dataset(str(data_yaml))["nc"])
    order = [baseline, *[b for b in backend_names if b != baseline]]
    rows: dict[str, dict[str, Any]] = {}
    preds: dict[str, list] = {}
    weights_info: dict[str, Any] = {}
    for backend in order:
        row: dict[str, Any] = {"backend": backend, "status": "ok", "reason": None}
        reason = backends.check(backend, device, dtype)
        if reason:
            rows[backend] = {**row, "status": "unavailable", "reason": reason}
            continue
        t0 = time.perf_counter()
        try:
            with use_backend(backend) as active:
                yolo, weights_info = load_yolo(weights, nc=nc)
                metrics = yolo.val(data=str(data_yaml), imgsz=agree["imgsz"], batch=agree["batch"],
                                   half=half, device=_ul_device(device), plots=False, verbose=False,
                                   project=str(workdir), name=backend, exist_ok=True,
                                   save_json=False)  # fmt: skip
                yolo, _ = load_yolo(weights, nc=nc)
                preds[backend] = predictions(yolo, images, agree, half, device)
                row.update(map50_95=float(metrics.box.map), map50=float(metrics.box.map50),
                           attention_calls=sum(active.calls.values()),
                           dtypes_seen=active.dtypes_seen())  # fmt: skip
        except Exception as exc:
            row.update(status="oom", reason=host.oom_reason(exc))
        finally:
            host.release(device)
        row["seconds"] = time.perf_counter() - t0
        rows[backend] = row
        LOG.info("agreement %s: %s mAP50-95 %s", backend, row["status"], row.get("map50_95"))
    ref = rows[baseline]
    for backend, row in rows.items():
        if row["status"] != "ok" or ref["status"] != "ok":
            row["passed"] = None
            continue
        row.update(match_boxes(preds[baseline], preds[backend], agree["match_iou"]))
        row["map50_95_diff"] = row["map50_95"] - ref["map50_95"]
        row["map50_diff"] = row["map50"] - ref["map50"]
        share = row["matched_share"]
        row["passed"] = bool(
            abs(row["map50_95_diff"]) <= agree["map_tolerance"]
            and (share is None or share >= agree["min_matched_share"])
        )
        if share is None:
            row["note"] = (
                f"no box at conf >= {agree['conf']} from either backend: boxes not compared"
            )
    return {
        "model": model_yaml,
        "model_name": grid.stem(model_yaml),
        "baseline": baseline,
        "dtype_requested": dtype_name,
        "dtype": host.dtype_name(dtype),
        "dtype_note": dtype_note,
        "device": str(device),
        "device_name": host.device_name(device),
        "images": len(images),
        "data_yaml": str(data_yaml),
        **weights_info,
        **{
            k: agree[k]
            for k in ("imgsz", "batch", "conf", "match_iou", "map_tolerance", "min_matched_share")
        },  # fmt: skip
        "backends": [rows[b] for b in order],
        "finished": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
    }
