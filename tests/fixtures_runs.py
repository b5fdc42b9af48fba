"""Realistic fake run directories, laid out as docs/DESIGN.md says the workflow writes them.

Tests of the analysis and report stages use these instead of training YOLOv12: the
files have the real names, columns and JSON keys, with plausible, deterministic values.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_BACKENDS = ("eager", "sdpa", "sdpa_flash", "flash_attn")

# Ultralytics' results.csv header (8.4.x).
RESULTS_COLUMNS = (
    "epoch",
    "time",
    "train/box_loss",
    "train/cls_loss",
    "train/dfl_loss",
    "metrics/precision(B)",
    "metrics/recall(B)",
    "metrics/mAP50(B)",
    "metrics/mAP50-95(B)",
    "val/box_loss",
    "val/cls_loss",
    "val/dfl_loss",
    "lr/pg0",
    "lr/pg1",
    "lr/pg2",
)
PARITY_COLUMNS = [
    "backend",
    "status",
    "reason",
    "device",
    "dtype",
    "B",
    "heads",
    "N",
    "head_dim",
    "rel_err_out",
    "rel_err_dq",
    "rel_err_dk",
    "rel_err_dv",
    "threshold",
    "passed",
]
KERNEL_COLUMNS = [
    "backend",
    "status",
    "reason",
    "device",
    "gpu",
    "dtype",
    "kind",
    "phase",
    "B",
    "heads",
    "N",
    "head_dim",
    "fwd_ms",
    "fwdbwd_ms",
    "fwd_flops",
    "fwdbwd_flops",
    "fwd_tflops",
    "fwdbwd_tflops",
    "pct_of_matmul_peak",
    "matmul_peak_tflops",
    "peak_mem_mb",
    "repeats",
]

# Relative epoch time and peak memory per backend (eager = 1): plausible, not measured.
SPEED = {
    "eager": 1.0,
    "sdpa": 0.96,
    "sdpa_math": 1.03,
    "sdpa_efficient": 0.97,
    "sdpa_flash": 0.95,
    "sdpa_cudnn": 0.945,
    "flash_attn": 0.95,
}
MEMORY = {
    "eager": 1.0,
    "sdpa": 0.86,
    "sdpa_math": 1.05,
    "sdpa_efficient": 0.87,
    "sdpa_flash": 0.85,
    "sdpa_cudnn": 0.85,
    "flash_attn": 0.85,
}
KERNEL_SIGNATURE = {
    "eager": "bmm",
    "sdpa": "cudnn",
    "sdpa_math": "bmm",
    "sdpa_efficient": "fmha_cutlass",
    "sdpa_flash": "flash_fwd_kernel",
    "sdpa_cudnn": "cudnn",
    "flash_attn": "flash_fwd_kernel",
}
GPU_NAME = "NVIDIA H100 80GB HBM3"


@dataclass
class FakeStudy:
    """Paths of everything written, grouped like the `aggregate` rule's inputs."""

    root: Path
    metrics: list[Path] = field(default_factory=list)
    results: list[Path] = field(default_factory=list)
    parity: list[Path] = field(default_factory=list)
    kernels: list[Path] = field(default_factory=list)
    backends_json: Path | None = None
    dataset_summary: Path | None = None


def _write_csv(path: Path, columns: list[str] | tuple[str, ...], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def _epochs(rng: np.random.Generator, epochs: int, epoch_s: float, final_map: float) -> list[dict]:
    rows = []
    elapsed = 0.0
    for e in range(1, epochs + 1):
        progress = e / epochs
        elapsed += epoch_s * (1.4 if e == 1 else 1.0) * rng.normal(1.0, 0.01)
        m5095 = final_map * (1 - np.exp(-3 * progress)) / (1 - np.exp(-3)) + rng.normal(0, 0.003)
        rows.append(
            {
                "epoch": e,
                "time": round(elapsed, 3),
                "train/box_loss": round(1.6 - 0.6 * progress + rng.normal(0, 0.01), 5),
                "train/cls_loss": round(2.8 - 1.9 * progress + rng.normal(0, 0.02), 5),
                "train/dfl_loss": round(1.5 - 0.3 * progress + rng.normal(0, 0.01), 5),
                "metrics/precision(B)": round(min(0.99, 0.5 + 0.45 * progress), 5),
                "metrics/recall(B)": round(min(0.99, 0.45 + 0.5 * progress), 5),
                "metrics/mAP50(B)": round(min(0.99, m5095 * 1.28), 5),
                "metrics/mAP50-95(B)": round(m5095, 5),
                "val/box_loss": round(1.5 - 0.5 * progress + rng.normal(0, 0.01), 5),
                "val/cls_loss": round(2.5 - 1.7 * progress + rng.normal(0, 0.02), 5),
                "val/dfl_loss": round(1.4 - 0.25 * progress + rng.normal(0, 0.01), 5),
                "lr/pg0": round(0.001 * (1 - progress) + 1e-5, 7),
                "lr/pg1": round(0.001 * (1 - progress) + 1e-5, 7),
                "lr/pg2": round(0.001 * (1 - progress) + 1e-5, 7),
            }
        )
    return rows


def _metrics(
    backend: str,
    seed: int,
    status: str,
    reason: str | None,
    rows: list[dict],
    *,
    device: str,
    epochs: int,
    train_images: int,
    rng: np.random.Generator,
    dataset: str,
) -> dict:
    gpu = device == "cuda"
    base = {
        "backend": backend,
        "seed": seed,
        "status": status,
        "reason": reason,
        "dtype": "float16" if gpu else "float32",
        "cast": "none",
        "device": "cuda:0" if gpu else "cpu",
        "device_name": GPU_NAME if gpu else "cpu",
        "torch": "2.11.0+cu130" if gpu else "2.11.0+cpu",
        "cuda": "13.0" if gpu else None,
        "cudnn": 91900 if gpu else None,
        "flash_attn": "2.8.3" if backend == "flash_attn" else None,
        "ultralytics": "8.4.190",
        "python": "3.12.8",
        "epochs": epochs,
        "batch": 8,
        "imgsz": 640 if gpu else 160,
        "train_images": train_images,
        "dataset": dataset,
        "started": "2025-11-26T10:00:00+00:00",
        "finished": "2025-11-26T10:40:00+00:00",
    }
    if status != "ok":
        empty = dict.fromkeys(
            [
                "epoch_loop_s",
                "epoch_time_s",
                "images_per_s",
                "peak_alloc_mb",
                "peak_reserved_mb",
                "peak_device_used_mb",
                "host_peak_rss_mb",
                "precision",
                "recall",
                "mAP50",
                "mAP50_95",
            ]
        )
        return {
            **base,
            **empty,
            "epoch_times_s": [],
            "train_epoch_times_s": [],
            "provenance": {},
        }
    times = [rows[0]["time"]] + [
        b["time"] - a["time"] for a, b in zip(rows[:-1], rows[1:], strict=True)
    ]
    loop = float(rows[-1]["time"])
    mem = MEMORY.get(backend, 1.0) * 2400.0 * rng.normal(1.0, 0.003)
    last = rows[-1]
    sig = KERNEL_SIGNATURE.get(backend, "bmm")
    return {
        **base,
        "epoch_loop_s": round(loop, 3),
        "epoch_times_s": [round(t, 3) for t in times],
        "train_epoch_times_s": [round(0.9 * t, 3) for t in times],
        "epoch_time_s": round(float(np.median(times[1:] if len(times) > 1 else times)), 3),
        "images_per_s": round(train_images * epochs / loop, 3),
        "peak_alloc_mb": round(mem, 1) if gpu else None,
        "peak_reserved_mb": round(mem * 1.25, 1) if gpu else None,
        "peak_device_used_mb": round(mem * 1.25 + 520, 1) if gpu else None,
        "host_peak_rss_mb": round(3100 + rng.normal(0, 20), 1),
        "precision": last["metrics/precision(B)"],
        "recall": last["metrics/recall(B)"],
        "mAP50": last["metrics/mAP50(B)"],
        "mAP50_95": last["metrics/mAP50-95(B)"],
        "provenance": {
            "ops": ["aten::bmm", "aten::_softmax"]
            if sig == "bmm"
            else ["aten::scaled_dot_product_attention"],
            "kernels": [f"{sig}_fwd_sm90", f"{sig}_bwd_sm90"] if gpu else [f"{sig}_cpu"],
            "fwd": [f"{sig}_fwd_sm90"],
            "bwd": [f"{sig}_bwd_sm90"],
            "signature": {"kernels": [sig]},
            "matched": True,
            "mismatch": None,
        },
    }


def make_study(
    root: str | Path,
    backends: tuple[str, ...] | list[str] = DEFAULT_BACKENDS,
    seeds: tuple[int, ...] | list[int] = (0, 1, 2),
    *,
    epochs: int = 5,
    device: str = "cuda",
    unavailable: dict[str, str] | None = None,
    failed: dict[tuple[str, int], str] | None = None,
    kernel_sweep: bool = True,
    dataset_source: str = "demo",
    rng_seed: int = 0,
) -> FakeStudy:
    """Write a fake `results/` tree under `root` and return its paths.

    `unavailable` maps a backend to its reason (every seed is skipped);
    `failed` maps (backend, seed) to a status such as "oom".
    """
    root = Path(root)
    rng = np.random.default_rng(rng_seed)
    unavailable = unavailable or {}
    failed = failed or {}
    study = FakeStudy(root=root)
    dataset = "demo" if dataset_source == "demo" else "roboflow-augmented-startups-weeds-nxe1w-v3"
    train_images = 48 if dataset_source == "demo" else 1200
    gpu = device == "cuda"
    epoch_base = train_images / (60.0 if gpu else 4.0)  # seconds per epoch

    for backend in backends:
        for seed in seeds:
            run = root / "results" / "train" / backend / f"seed{seed}"
            status, reason = "ok", None
            if backend in unavailable:
                status, reason = "unavailable", unavailable[backend]
            elif (backend, seed) in failed:
                status = failed[(backend, seed)]
                reason = "CUDA out of memory. Tried to allocate 2.00 GiB"
            rows: list[dict] = []
            if status == "ok":
                final = 0.75 + rng.normal(0, 0.004)
                rows = _epochs(rng, epochs, epoch_base * SPEED.get(backend, 1.0), final)
            metrics = _metrics(
                backend,
                seed,
                status,
                reason,
                rows,
                device=device,
                epochs=epochs,
                train_images=train_images,
                rng=rng,
                dataset=dataset,
            )
            _write_json(run / "metrics.json", metrics)
            results = run / "results.csv"
            if rows:
                _write_csv(results, RESULTS_COLUMNS, rows)
            else:
                results.parent.mkdir(parents=True, exist_ok=True)
                results.write_text("")
            study.metrics.append(run / "metrics.json")
            study.results.append(results)

    for backend in backends:
        study.parity.append(_parity(root, backend, unavailable.get(backend), gpu))
        study.kernels.append(
            _kernels(root, backend, unavailable.get(backend), gpu, kernel_sweep, rng)
        )

    study.backends_json = root / "results" / "env" / "backends.json"
    _write_json(
        study.backends_json,
        {
            "environment": {
                "gpu": GPU_NAME if gpu else None,
                "driver": "580.65.06" if gpu else None,
                "torch": "2.11.0+cu130" if gpu else "2.11.0+cpu",
                "cuda": "13.0" if gpu else None,
                "python": "3.12.8",
                "ultralytics": "8.4.190",
                "git_commit": "0123456789abcdef0123456789abcdef01234567",
                "host": "gpu-node-1",
            },
            "backends": {
                b: {
                    "available": b not in unavailable,
                    "reason": unavailable.get(b),
                    "dtype": "float16" if gpu else "float32",
                    "device": "cuda:0" if gpu else "cpu",
                    "expected": {"kernels": [KERNEL_SIGNATURE.get(b, "bmm")]},
                }
                for b in backends
            },
        },
    )
    study.dataset_summary = root / "results" / "data" / dataset / "summary.json"
    reason = (
        "dataset.source = auto and ROBOFLOW_API_KEY is not set: "
        "fell back to the embedded synthetic demo"
        if dataset_source == "demo"
        else "dataset.source = auto and ROBOFLOW_API_KEY is set"
    )
    _write_json(
        study.dataset_summary,
        {
            "name": dataset,
            "source": dataset_source,
            "reason": reason,
            "classes": ["crop", "weed"],
            "splits": {
                "train": {
                    "images": train_images,
                    "boxes": train_images * 3,
                    "boxes_per_class": {"crop": train_images, "weed": train_images * 2},
                    "image_sizes": {"256x256": train_images},
                },
                "valid": {
                    "images": 16,
                    "boxes": 47,
                    "boxes_per_class": {"crop": 16, "weed": 31},
                    "image_sizes": {"256x256": 16},
                },
            },
            "problems": [],
            "policy": "fail",
            "dropped": 0,
        },
    )
    return study


def _parity(root: Path, backend: str, unavailable: str | None, gpu: bool) -> Path:
    path = root / "results" / "parity" / f"{backend}.csv"
    device = "cuda:0" if gpu else "cpu"
    if unavailable:
        row = dict.fromkeys(PARITY_COLUMNS)
        row.update(backend=backend, status="unavailable", reason=unavailable, device=device)
        _write_csv(path, PARITY_COLUMNS, [row])
        return path
    rows = []
    for dtype, err, thr in (("float16", 4e-4, 5e-3), ("bfloat16", 3e-3, 3e-2)):
        for B, heads in ((32, 2), (8, 4)):
            rows.append(
                {
                    "backend": backend,
                    "status": "ok",
                    "reason": None,
                    "device": device,
                    "dtype": dtype,
                    "B": B,
                    "heads": heads,
                    "N": 400,
                    "head_dim": 32,
                    "rel_err_out": err,
                    "rel_err_dq": err * 1.5,
                    "rel_err_dk": err * 1.4,
                    "rel_err_dv": err * 1.1,
                    "threshold": thr,
                    "passed": True,
                }
            )
    _write_csv(path, PARITY_COLUMNS, rows)
    return path


def _kernels(
    root: Path,
    backend: str,
    unavailable: str | None,
    gpu: bool,
    sweep: bool,
    rng: np.random.Generator,
) -> Path:
    path = root / "results" / "kernels" / f"{backend}.csv"
    device = "cuda:0" if gpu else "cpu"
    if unavailable:
        row = dict.fromkeys(KERNEL_COLUMNS)
        row.update(backend=backend, status="unavailable", reason=unavailable, device=device)
        _write_csv(path, KERNEL_COLUMNS, [row])
        return path
    speed = SPEED.get(backend, 1.0) ** 8  # kernels differ far more than whole training
    shapes = [("model", "train", 32, 2, 400), ("model", "train", 8, 4, 400)]
    shapes += [("model", "val", 64, 2, 400), ("model", "val", 16, 4, 400)]
    if sweep:
        shapes += [("sweep", "sweep", 8, 4, n) for n in (400, 1600, 6400)]
    rows = []
    for dtype in ("float16", "bfloat16"):
        for kind, phase, B, heads, N in shapes:
            d = 32
            fwd_flops = 4 * B * heads * N * N * d
            fwd_ms = speed * (0.02 + fwd_flops / 2.0e11) * rng.normal(1.0, 0.01)
            fwdbwd_ms = 3.2 * fwd_ms
            rows.append(
                {
                    "backend": backend,
                    "status": "ok",
                    "reason": None,
                    "device": device,
                    "gpu": GPU_NAME if gpu else None,
                    "dtype": dtype,
                    "kind": kind,
                    "phase": phase,
                    "B": B,
                    "heads": heads,
                    "N": N,
                    "head_dim": d,
                    "fwd_ms": round(fwd_ms, 5),
                    "fwdbwd_ms": round(fwdbwd_ms, 5),
                    "fwd_flops": fwd_flops,
                    "fwdbwd_flops": int(3.5 * fwd_flops),
                    "fwd_tflops": round(fwd_flops / fwd_ms / 1e9, 3),
                    "fwdbwd_tflops": round(3.5 * fwd_flops / fwdbwd_ms / 1e9, 3),
                    "pct_of_matmul_peak": round(100 * fwd_flops / fwd_ms / 1e9 / 790, 3),
                    "matmul_peak_tflops": 790.0 if gpu else None,
                    "peak_mem_mb": round(300 + B * heads * N * N * 2 / 1e6, 1),
                    "repeats": 50,
                }
            )
    _write_csv(path, KERNEL_COLUMNS, rows)
    return path
