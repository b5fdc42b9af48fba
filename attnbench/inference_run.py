"""Running the inference benchmark: one (model, imgsz, batch, compile, backend) per process.

The model is YOLO12's detection model in eval mode, Conv+BN fused as Ultralytics' own
predictor runs it, its weights and inputs in the configured dtype (a CPU runs fp32 and
says so). Inputs are random images of the size (seeded): the forward's cost does not
depend on the pixels, and no pre-processing, NMS or data loading is timed, which is
what the published latencies measure too. In order:

1. provenance: one forward of the uncompiled model under torch.profiler, checked against
   the forward half of the backend's signature (as `RunRecorder.prove` does for its
   validation batch); torch.compile and CUDA graphs would hide the kernels from it;
2. `warmup` calls of the model as timed (compiled when asked: compiling happens here);
3. `iterations` timed calls: CUDA events around each call on a GPU (no synchronisation
   between calls), `perf_counter` on a CPU, and the loop's wall time;
4. `profile_iters` calls under torch.profiler, apart from the timed ones: device time
   per call and attention's share of it (`steptime.device_time_us`,
   `provenance.attention_time_us`).

Peak memory (torch allocated and reserved, NVML device-level) covers steps 2 to 4 after
the model is on the device. OOM is a result (status `oom`), never a crash;
`ATTNBENCH_FORCE_OOM` (tests) forces one for ids like `inference/yolo12n/imgsz64/b1/off/sdpa`.

`agreement` runs every backend's predictions on the validation set against the
baseline's: Ultralytics' validator (box mAP) on the same weights, and a one-to-one
matching of predicted boxes (same class, IoU >= `match_iou`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnbench import backends, host, inference, provenance, steptime
from attnbench.patch import use_backend
from attnbench.scriptutil import UserError
from attnbench.sweep_run import FORCE_OOM_ENV, forced_oom

LOG = logging.getLogger(__name__)


def run_dtype(requested: str, device: torch.device) -> tuple[torch.dtype, str | None]:
    """The dtype a job runs in, and a note when it is not the one asked for."""
    if device.type == "cpu" and requested != "fp32":
        return torch.float32, f"{requested} requested; a CPU runs fp32"
    return host.torch_dtype(requested), None


def release(device: torch.device, compiled: bool = False) -> None:
    gc.collect()
    if compiled:
        with contextlib.suppress(Exception):
            torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
            "weights_sha256": _sha256(Path(best)),
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


def _compiled(model: torch.nn.Module, compile_: str) -> torch.nn.Module:
    mode = inference.COMPILE_MODES[compile_]
    return model if mode is None else torch.compile(model, mode=mode)


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not len(values):
        return dict.fromkeys(("latency_ms_median", "latency_ms_p10", "latency_ms_p90",
                              "latency_ms_mean", "latency_ms_min"))  # fmt: skip
    arr = np.asarray(values, dtype=float)
    p10, p50, p90 = np.percentile(arr, [10, 50, 90])
    return {
        "latency_ms_median": float(p50),
        "latency_ms_p10": float(p10),
        "latency_ms_p90": float(p90),
        "latency_ms_mean": float(arr.mean()),
        "latency_ms_min": float(arr.min()),
    }


def time_calls(call, iterations: int, device: torch.device) -> tuple[list[float], float]:
    """Per-call times in ms (CUDA events on a GPU, perf_counter on a CPU) and the loop's wall s."""
    on_cuda = device.type == "cuda"
    if on_cuda:
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in range(iterations)
        ]
    host.synchronize(device)
    times: list[float] = []
    t0 = time.perf_counter()
    for i in range(iterations):
        if on_cuda:
            events[i][0].record()
            call()
            events[i][1].record()
        else:
            start = time.perf_counter()
            call()
            times.append((time.perf_counter() - start) * 1e3)
    host.synchronize(device)
    wall = time.perf_counter() - t0
    if on_cuda:
        times = [start.elapsed_time(end) for start, end in events]
    return times, wall


def window(call, steps: int, device: torch.device) -> dict[str, Any]:
    """Device time per call and attention's share of it, from `steps` profiled calls."""
    if steps <= 0:
        return {"profiled_calls": 0}
    with host.profiler(device) as prof:
        for _ in range(steps):
            call()
        host.synchronize(device)
    events = list(prof.events())
    total_us = (
        steptime.device_time_us(events) if device.type == "cuda" else steptime.op_time_us(events)
    )
    _, _, regions = provenance.attention_events(events)
    attention_us = provenance.attention_time_us(events, device.type) if regions else None
    result = {
        "profiled_calls": steps,
        "gpu_ms_per_call": total_us / 1e3 / steps,
        "attention_ms_per_call": None if attention_us is None else attention_us / 1e3 / steps,
        "attention_share_of_gpu": (attention_us / total_us) if attention_us and total_us else None,
        "launches_per_call": steptime.launches(events, device.type) / steps,
        "window_attention_regions": regions,
    }
    if not regions:
        result["window_note"] = (
            "no attention region in the profiled calls (torch.compile traced it away): "
            "attention time is not attributable"
        )
    return result


def bench(spec: Mapping[str, Any], settings: Mapping[str, Any], device: torch.device,
          environment: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
    """One job's JSON: latency, throughput, memory, attention share, provenance, status."""
    backend, batch, imgsz = spec["backend"], spec["batch"], spec["imgsz"]
    dtype, dtype_note = run_dtype(settings["dtype"], device)
    result: dict[str, Any] = {
        **{
            k: spec[k]
            for k in (
                "id",
                "model",
                "model_name",
                "scale",
                "imgsz",
                "batch",
                "compile",
                "backend",
                "planned_position",
            )
        },  # fmt: skip
        "status": None,
        "reason": None,
        "dtype_requested": settings["dtype"],
        "dtype": host.dtype_name(dtype),
        "dtype_note": dtype_note,
        "device": str(device),
        "device_name": environment.get("gpu_name") or environment.get("cpu_model"),
        **{
            k: environment.get(k)
            for k in ("torch", "cuda", "cudnn", "flash_attn", "ultralytics", "python", "driver")
        },  # fmt: skip
        "torch_threads": torch.get_num_threads(),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "warmup": settings["warmup"],
        "iterations_requested": settings["iterations"],
        "input": f"random images (seeded), {batch}x3x{imgsz}x{imgsz}",
        "timer": "cuda events per call" if device.type == "cuda" else "perf_counter per call",
        "forced_oom": forced_oom(spec["force_id"], batch),
        "started": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
    }
    reason = backends.check(backend, device, dtype)
    if reason:
        LOG.warning("%s: unavailable: %s", spec["id"], reason)
        return {**result, "status": "unavailable", "reason": reason}

    compiled = spec["compile"] != "off"
    release(device, compiled=compiled)
    status, reason = "ok", None
    measured: dict[str, Any] = {}
    nvml = None
    t0 = time.perf_counter()
    with use_backend(backend) as active:
        model = fn = x = None
        try:
            yolo, weights = load_yolo(spec["weights"])
            measured.update(weights)
            model = prepare(yolo, device, dtype)
            del yolo
            measured["nc"] = int(getattr(model, "nc", 0) or model.model[-1].nc)
            measured["parameters"] = sum(p.numel() for p in model.parameters())
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                measured["model_alloc_mb"] = torch.cuda.memory_allocated(device) / 2**20
                torch.cuda.reset_peak_memory_stats(device)
            generator = torch.Generator().manual_seed(0)
            x = torch.rand(batch, 3, imgsz, imgsz, generator=generator).to(device, dtype)
            if result["forced_oom"]:
                raise torch.OutOfMemoryError(
                    f"CUDA out of memory (forced by {FORCE_OOM_ENV} for {spec['force_id']})"
                )
            nvml = _nvml(device)
            with torch.inference_mode():
                measured["provenance"] = prove(model, x, backend, device)
                fn = _compiled(model, spec["compile"])
                mark = (
                    torch.compiler.cudagraph_mark_step_begin
                    if spec["compile"] == "reduce-overhead" and device.type == "cuda"
                    else None
                )

                def call() -> None:
                    if mark is not None:
                        mark()
                    fn(x)

                w0 = time.perf_counter()
                for _ in range(settings["warmup"]):
                    call()
                host.synchronize(device)
                measured["warmup_s"] = time.perf_counter() - w0
                times, wall = time_calls(call, settings["iterations"], device)
                measured["latency_times_ms"] = [round(t, 4) for t in times]
                measured["iterations"] = len(times)
                measured["timed_wall_s"] = wall
                measured.update(window(call, settings["profile_iters"], device))
            if not measured["provenance"]["matched"]:
                status = "mismatch"
                reason = "; ".join(measured["provenance"]["mismatch"])[:300]
        except Exception as exc:
            status, reason = "oom", host.oom_reason(exc)
            LOG.warning("%s: %s", spec["id"], reason)
        finally:
            if nvml is not None:
                nvml.stop()
            model = fn = x = None  # noqa: F841 - free before the peaks are read
        attention_calls = sum(active.calls.values())
        dtypes_seen = active.dtypes_seen()
    if device.type == "cuda":
        measured["peak_alloc_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        measured["peak_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
    if nvml is not None:
        measured["peak_device_used_mb"] = nvml.summary().get("peak_device_used_mb")
    release(device, compiled=compiled)
    stats = percentiles(measured.get("latency_times_ms", []) if status == "ok" else [])
    median = stats["latency_ms_median"]
    wall = measured.get("timed_wall_s")
    result.update(measured)
    result.update(stats)
    result.update(
        {
            "status": status,
            "reason": reason,
            "images_per_s": batch * 1e3 / median if median else None,
            "wall_images_per_s": batch * measured["iterations"] / wall
            if status == "ok" and wall
            else None,
            "attention_calls": attention_calls,
            "dtypes_seen": dtypes_seen,
            "job_s": time.perf_counter() - t0,
            "finished": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        }
    )
    for key in ("peak_alloc_mb", "peak_reserved_mb", "peak_device_used_mb", "model_alloc_mb"):
        result.setdefault(key, None)
    LOG.info("%s: %s, median %s ms, p90 %s ms, %s img/s, peak %s MiB", spec["id"], status,
             _fmt(median), _fmt(stats["latency_ms_p90"]), _fmt(result["images_per_s"]),
             _fmt(result["peak_alloc_mb"]))  # fmt: skip
    return result


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _nvml(device: torch.device):
    from attnbench import profiling

    sampler = profiling.nvml_for(device)
    return sampler.start() if sampler is not None else None


def prove(model: torch.nn.Module, x: torch.Tensor, backend: str, device: torch.device) -> dict:
    """The kernels one eval forward ran, against the forward half of the backend's signature."""
    signature = backends.get(backend).signature(device.type)
    forward_only = dataclasses.replace(signature, bwd_ops=(), bwd_kernels=())
    model(x)  # first call: lazy initialisation (cuDNN, allocator) stays out of the profile
    record = provenance.profile_steps(lambda: model(x), 1, device)
    result = provenance.verify(record, forward_only, device.type)
    LOG.info("provenance of %s: dispatched to %s; matched=%s %s", backend, result["dispatched"],
             result["matched"], result["mismatch"] or "")  # fmt: skip
    return result


# --------------------------------------------------------------------------- #
# Prediction agreement


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
            release(device)
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
        "model_name": inference.stem(model_yaml),
        "baseline": baseline,
        "dtype_requested": dtype_name,
        "dtype": host.dtype_name(dtype),
        "dtype_note": dtype_note,
        "device": str(device),
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
