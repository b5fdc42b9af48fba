"""Realistic fake run directories, laid out as docs/DESIGN.md says the workflow writes them.

Tests of the analysis and report stages use these instead of training YOLOv12: the
files have the real names, columns and JSON keys, with plausible, deterministic values.
"""

from __future__ import annotations

import csv
import json
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from attnbench import config as cfg
from attnbench.train import schedule

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
# (forward op, forward kernel, backward kernel, what provenance.dispatched says) per backend,
# shaped like attnbench.backends.provenance's record (names abridged from real profiler output).
KERNELS = {
    "eager": ("aten::bmm", "ampere_fp16_s16816gemm_fp16_128x64", "ampere_fp16_s1688gemm_fp16", "eager (matmul + softmax)"),
    "sdpa": ("aten::_scaled_dot_product_cudnn_attention", "cudnn_generated_fort_native_sdpa_sm90_knob_7_64x128x64", "cudnn_generated_fort_native_sdpa_sm90_bprop", "cudnn"),
    "sdpa_math": ("aten::_scaled_dot_product_attention_math", "ampere_fp16_s16816gemm_fp16_128x64", "ampere_fp16_s1688gemm_fp16", "math"),
    "sdpa_efficient": ("aten::_scaled_dot_product_efficient_attention", "fmha_cutlassF_f16_aligned_64x64_rf_sm80", "fmha_cutlassB_f16_aligned_64x64_k32_sm80", "efficient"),
    "sdpa_flash": ("aten::_scaled_dot_product_flash_attention", "void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<32>>", "void pytorch_flash::flash_bwd_dq_dk_dv_loop_kernel<32>", "flash"),
    "sdpa_cudnn": ("aten::_scaled_dot_product_cudnn_attention", "cudnn_generated_fort_native_sdpa_sm90_knob_7_64x128x64", "cudnn_generated_fort_native_sdpa_sm90_bprop", "cudnn"),
    "flash_attn": ("flash_attn::_flash_attn_forward", "void flash::flash_fwd_kernel<Flash_fwd_kernel_traits<32>>", "void flash::flash_bwd_dq_dk_dv_loop_kernel<32>", "flash-attn"),
}  # fmt: skip
GPU_NAME = "NVIDIA H100 80GB HBM3"
# Per-step GPU time relative to eager and attention ms per step (FACTS.md section 7, n/b8).
GPU_TIME = {"eager": 1.0, "sdpa_math": 1.02, "sdpa_efficient": 0.9}
ATTENTION_MS = {"eager": 1.9, "sdpa_math": 2.1, "sdpa_efficient": 0.4}
STEP_MS, GPU_MS = {"cuda": 86.0, "cpu": 420.0}, {"cuda": 13.6, "cpu": 300.0}
START = datetime(2025, 11, 26, 10, 0, tzinfo=UTC)


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


def _write_unavailable(
    path: Path, columns: list[str], backend: str, reason: str, device: str
) -> Path:
    """The one row an unavailable backend writes: status and reason, the rest blank."""
    row = dict.fromkeys(columns)
    row.update(backend=backend, status="unavailable", reason=reason, device=device)
    _write_csv(path, columns, [row])
    return path


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def _epochs(
    rng: np.random.Generator,
    epochs: int,
    epoch_s: float,
    final_map: float,
    clock: np.random.Generator | None = None,
) -> list[dict]:
    """Per-epoch rows: `rng` draws the learning (same for the same kernel and seed),
    `clock` the wall-clock times (different in every job)."""
    clock = clock or rng
    rows = []
    elapsed = 0.0
    for e in range(1, epochs + 1):
        progress = e / epochs
        elapsed += epoch_s * (1.4 if e == 1 else 1.0) * clock.normal(1.0, 0.01)
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
    started: datetime = START,
    drift: float = 0.0,
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
        "amp": True,
        "optimizer": "AdamW",
        "lr0": 0.001,
        "batch": 8,
        "imgsz": 640 if gpu else 160,
        "train_images": train_images,
        "dataset": dataset,
        "started": started.isoformat(timespec="milliseconds"),
        "finished": (started + timedelta(minutes=40)).isoformat(timespec="milliseconds"),
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
                *STEP_KEYS,
            ]
        )
        return {
            **base,
            **empty,
            "epoch_times_s": [],
            "train_epoch_times_s": [],
        }
    times = [rows[0]["time"]] + [
        b["time"] - a["time"] for a, b in zip(rows[:-1], rows[1:], strict=True)
    ]
    loop = float(rows[-1]["time"])
    kernel = schedule.kernel_of(backend)
    # Peak allocated memory is deterministic on a GPU: the same in every seed and job.
    mem = MEMORY.get(kernel, 1.0) * 2400.0
    last = rows[-1]
    return {
        **base,
        **_step_keys(kernel, device, rng, drift),
        "dtypes_seen": ["float16" if gpu else "float32"],
        "attention_calls": 8 * epochs * 10,
        "epochs_done": epochs,
        "batch_used": 8,
        "data_wait_fraction": 0.05,
        "gpu_util_mean": 87.0 if gpu else None,
        "epoch_loop_s": round(loop, 3),
        "epoch_times_s": [round(t, 3) for t in times],
        "train_epoch_times_s": [round(0.9 * t, 3) for t in times],
        "epoch_time_s": round(float(np.median(times[1:] if len(times) > 1 else times)), 3),
        "images_per_s": round(train_images * epochs / loop, 3),
        "peak_alloc_mb": round(mem, 1) if gpu else None,
        "peak_reserved_mb": round(mem * 1.25, 1) if gpu else None,
        "peak_device_used_mb": round(mem * 1.25 + 520 + rng.normal(0, 4), 1) if gpu else None,
        "host_peak_rss_mb": round(3100 + rng.normal(0, 20), 1),
        "precision": last["metrics/precision(B)"],
        "recall": last["metrics/recall(B)"],
        "mAP50": last["metrics/mAP50(B)"],
        "mAP50_95": last["metrics/mAP50-95(B)"],
        "provenance": _provenance(backend, gpu),
    }


STEP_KEYS = (
    "step_ms_median", "step_ms_p10", "step_ms_p90", "steps_timed", "steady_images_per_s",
    "host_step_ms_median", "gpu_ms_per_step", "attention_ms_per_step", "launches_per_step",
    "data_wait_ms_per_step", "gpu_busy_fraction", "attention_share_of_gpu",
    "max_step_saving_pct", "profiled_steps", "window_provenance_matched", "window_dispatched",
    "timing_warmup_iters",
)  # fmt: skip


def _step_keys(kernel: str, device: str, rng: np.random.Generator, drift: float) -> dict:
    """The steady-state keys of attnbench.measure.steptime: host-bound steps, a small GPU share.

    `drift` is a relative change of step time per position in the run order (0: none).
    """
    gpu_ms = GPU_MS[device] * GPU_TIME.get(kernel, 0.88) * rng.normal(1.0, 0.004)
    attention = ATTENTION_MS.get(kernel, 0.29) * (1 if device == "cuda" else 20)
    step = STEP_MS[device] * (1 + drift) * (1 + 0.01 * (gpu_ms / GPU_MS[device] - 1))
    step *= rng.normal(1.0, 0.004)
    return {
        "step_ms_median": round(step, 4),
        "step_ms_p10": round(0.97 * step, 4),
        "step_ms_p90": round(1.06 * step, 4),
        "steps_timed": 40,
        "steady_images_per_s": round(8 * 1e3 / step, 4),
        "host_step_ms_median": round(0.995 * step, 4),
        "gpu_ms_per_step": round(gpu_ms, 4),
        "attention_ms_per_step": round(attention, 4),
        "launches_per_step": 2743.0 if kernel in ("eager", "sdpa_math") else 2631.0,
        "data_wait_ms_per_step": 0.4,
        "gpu_busy_fraction": gpu_ms / step,
        "attention_share_of_gpu": attention / gpu_ms,
        "max_step_saving_pct": 100 * min(attention, step) / step,
        "profiled_steps": 10,
        "window_provenance_matched": True,
        "window_dispatched": KERNELS.get(kernel, KERNELS["eager"])[3],
        "timing_warmup_iters": 3,
    }


def _provenance(backend: str, gpu: bool) -> dict:
    op, fwd, bwd, dispatched = KERNELS.get(schedule.kernel_of(backend), KERNELS["eager"])
    return {
        "regions": 8,
        "fwd_ops": {op: 8, "aten::softmax" if backend in ("eager", "sdpa_math") else op: 8},
        "fwd_kernels": {fwd: 8} if gpu else {},
        "bwd_ops": {"BmmBackward0" if backend in ("eager", "sdpa_math") else f"{op}_backward": 8},
        "bwd_kernels": {bwd: 8} if gpu else {},
        "dispatched": dispatched,
        "signature": {
            "fwd_ops": [op],
            "bwd_ops": [],
            "fwd_kernels": [fwd.split("<")[0]] if gpu else [],
            "bwd_kernels": [],
            "forbidden": [],
        },
        "matched": True,
        "mismatch": [],
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
    replica: bool = False,
    order_seed: int = 0,
    drift: float = 0.0,
    learns: bool = True,
) -> FakeStudy:
    """Write a fake `results/` tree under `root` and return its paths.

    `unavailable` maps a backend to its reason (every seed is skipped);
    `failed` maps (backend, seed) to a status such as "oom". `replica` adds the first
    backend's A/A control (`<baseline>_replica`: same kernel, so the same learning and
    memory for a seed, its own timings). Runs start in `schedule.planned_order(order_seed)`;
    `drift` makes step time change by that fraction per position in it. `learns` False
    gives mAP 0 in every epoch, as the demo's one-epoch runs have.
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
    kernels = [b for b in backends if not schedule.is_replica(b)]
    arms = schedule.arms(kernels, kernels[0], replica) if kernels else list(backends)
    position = {job: i for i, job in enumerate(schedule.planned_order(order_seed, arms, seeds))}

    for backend in arms:
        for seed in seeds:
            run = root / "results" / "train" / backend / f"seed{seed}"
            # Learning depends on kernel and seed only; wall-clock noise on the job.
            learn = np.random.default_rng(
                [rng_seed, seed, zlib.crc32(schedule.kernel_of(backend).encode())]
            )
            clock = np.random.default_rng([rng_seed, seed, zlib.crc32(backend.encode()), 1])
            status, reason = "ok", None
            if schedule.kernel_of(backend) in unavailable:
                status, reason = "unavailable", unavailable[schedule.kernel_of(backend)]
            elif (backend, seed) in failed:
                status = failed[(backend, seed)]
                reason = "CUDA out of memory. Tried to allocate 2.00 GiB"
            rows: list[dict] = []
            speed = SPEED.get(schedule.kernel_of(backend), 1.0)
            if status == "ok":
                final = 0.75 + learn.normal(0, 0.004)
                rows = _epochs(learn, epochs, epoch_base * speed, final, clock)
                if not learns:
                    for row in rows:
                        row["metrics/mAP50(B)"] = row["metrics/mAP50-95(B)"] = 0.0
            order = position[(backend, seed)]
            metrics = _metrics(
                backend,
                seed,
                status,
                reason,
                rows,
                device=device,
                epochs=epochs,
                train_images=train_images,
                rng=clock,
                dataset=dataset,
                started=START + timedelta(minutes=45 * order, milliseconds=order),
                drift=drift * order,
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

    for backend in kernels:
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
                    "expected": _provenance(b, gpu)["signature"],
                }
                for b in kernels
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
        return _write_unavailable(path, PARITY_COLUMNS, backend, unavailable, device)
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
        return _write_unavailable(path, KERNEL_COLUMNS, backend, unavailable, device)
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


# --------------------------------------------------------------------------- #
# Running a rule's script without Snakemake


class NamedList(list):
    """Like Snakemake's Namedlist: items by position, by name and as attributes."""

    def __init__(self, items: list | None = None, **named: object) -> None:
        super().__init__(items or [])
        self._names: dict[str, object] = {}
        for name, value in named.items():
            self._names[name] = value
            if isinstance(value, list):
                self.extend(value)
            else:
                self.append(value)

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            return self._names[key]
        return super().__getitem__(key)

    def __getattr__(self, name: str) -> object:
        try:
            return self._names[name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name: str, default: object = None) -> object:
        return self._names.get(name, default)

    def items(self):
        return self._names.items()


@dataclass
class FakeSnakemake:
    """The parts of the `snakemake` object that attnbench's scripts use."""

    input: NamedList
    output: NamedList
    params: NamedList
    log: NamedList
    scriptdir: str
    wildcards: NamedList = field(default_factory=NamedList)
    resources: NamedList = field(default_factory=NamedList)
    threads: int = 1
    config: dict = field(default_factory=dict)


def run_script(script: str | Path, smk: FakeSnakemake) -> None:
    """Execute a workflow script the way Snakemake's `script:` does, with `snakemake` set."""
    import runpy

    runpy.run_path(str(script), init_globals={"snakemake": smk}, run_name="__main__")


TABLE_NAMES = (
    "runs", "summary", "comparisons", "drift", "replica", "epochs", "kernels", "parity",
)  # fmt: skip
PLOT_NAMES = ("curves", "epoch_time", "memory", "speed_memory", "kernels", "step_breakdown")


def rule_jobs(study: FakeStudy, repo: Path, out: Path, *, baseline: str = "eager") -> dict:
    """FakeSnakemake objects for aggregate, plots and report, wired like rules/*.smk."""
    tables = out / "tables"
    plots = out / "plots"
    plot_names = PLOT_NAMES
    scriptdir = str(repo / "scripts")
    config = {
        "analysis": {"baseline": baseline, "alpha": 0.05, "tost_margin": 0.01},
        "backends": [p.stem for p in study.kernels],
        "seeds": sorted({int(p.parent.name.removeprefix("seed")) for p in study.metrics}),
        "dataset": {"source": "auto"},
        "report": {"title": "Which attention kernel should YOLOv12 train with?"},
    }
    aggregate = FakeSnakemake(
        input=NamedList(
            metrics=[str(p) for p in study.metrics],
            results=[str(p) for p in study.results],
            parity=[str(p) for p in study.parity],
            kernels=[str(p) for p in study.kernels],
            backends=str(study.backends_json),
        ),
        output=NamedList(**{n: str(tables / f"{n}.csv") for n in TABLE_NAMES}),
        params=NamedList(
            **cfg.keyed("analysis", {k: config[k] for k in ("analysis", "backends", "seeds")})
        ),
        log=NamedList([str(out / "logs" / "aggregate.log")]),
        scriptdir=scriptdir,
    )
    plot_job = FakeSnakemake(
        input=NamedList(
            **{n: str(tables / f"{n}.csv") for n in ("runs", "epochs", "kernels", "summary")}
        ),
        output=NamedList(**{n: str(plots / f"{n}.png") for n in plot_names}),
        params=NamedList(baseline=baseline),
        log=NamedList([str(out / "logs" / "plots.log")]),
        scriptdir=scriptdir,
    )
    summary = json.loads(Path(study.dataset_summary).read_text())
    report = FakeSnakemake(
        input=NamedList(
            tables=[str(tables / f"{n}.csv") for n in TABLE_NAMES],
            plots=[str(plots / f"{n}.png") for n in plot_names],
            backends=str(study.backends_json),
            dataset=str(study.dataset_summary),
            template=str(repo / "report" / "report.html.j2"),
        ),
        output=NamedList([str(out / "report.html")]),
        params=NamedList(
            **cfg.keyed("train", {"epochs": 5, "batch": 8, "imgsz": 640, "amp": True}),
            title=config["report"]["title"],
            config=cfg.digest(config),  # the script reads the config itself, as in the rule
            dataset_reason=summary["reason"],
        ),
        log=NamedList([str(out / "logs" / "report.log")]),
        scriptdir=scriptdir,
        config=config,
    )
    return {"aggregate": aggregate, "plots": plot_job, "report": report}


_RENDERED: dict[str, Path] = {}

# The studies the report, plot and browser tests share (rendered once per session).
STUDIES: dict[str, dict] = {
    # Three seeds on a GPU; one backend unavailable, one run out of memory; the demo dataset.
    # The baseline's A/A replica runs beside it.
    "gpu": {
        "unavailable": {"flash_attn": "flash_attn is not installed <try conda>"},
        "failed": {("sdpa", 2): "oom"},
        "replica": True,
    },
    # A CPU host: no GPU memory, one seed, no kernel sweep.
    "cpu-one-seed": {"device": "cpu", "seeds": (0,), "kernel_sweep": False},
    # The CPU demo as the default command runs it: the demo dataset, a CUDA-only backend
    # unavailable, the A/A replica, two seeds, nothing learned (mAP 0 everywhere).
    "cpu-demo": {
        "device": "cpu",
        "backends": ("eager", "sdpa", "sdpa_cudnn"),
        "seeds": (0, 1),
        "epochs": 1,
        "unavailable": {"sdpa_cudnn": "sdpa_cudnn needs a CUDA GPU; this host runs on the CPU"},
        "replica": True,
        "learns": False,
    },
}


def rendered_study(base: Path, name: str) -> Path:
    """STUDIES[name] -> aggregate -> plots -> report through the real scripts, once per session.

    Returns the results folder (tables/, plots/, report.html, logs/).
    """
    if name in _RENDERED:
        return _RENDERED[name]
    repo = Path(__file__).resolve().parent.parent
    root = Path(base) / f"study-{name}"
    study = make_study(root, **STUDIES[name])
    out = root / "results"
    jobs = rule_jobs(study, repo, out)
    for job, script in (
        ("aggregate", "aggregate.py"),
        ("plots", "plots.py"),
        ("report", "render_report.py"),
    ):
        run_script(repo / "scripts" / script, jobs[job])
    _RENDERED[name] = out
    return out
