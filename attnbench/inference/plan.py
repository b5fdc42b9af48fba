"""The inference benchmark's grid, order, paths and cost (torch-free: parsed by Snakemake).

A job is one (model, imgsz, batch, compile, backend): a fresh process loads the model,
runs warm-up calls, times `iterations` eval forwards, profiles a few more, and writes
`results/inference/<model>/imgsz<imgsz>/b<batch>/<compile>/<backend>.json` (the compile
mode is a path segment because `compile` is a grid axis). One process per job keeps a
peak-memory reading and an out-of-memory error to that job. Jobs run in a seeded random
order. The prediction-agreement check is one job per model: every backend's predictions
on the validation set against the baseline's, at `agreement.imgsz`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from attnbench import grid
from attnbench.errors import ConfigError
from attnbench.grid import scale_of, stem

ROOT = "results/inference"
AGREEMENT_ROOT = f"{ROOT}/agreement"
# Below the sweep's band (500,000) and the train jobs' (1e6): a combined run infers last.
# Compile modes are grid.COMPILE_NAMES (path segment) and grid.COMPILE_MODES (torch.compile).
PRIORITY_BASE = 250_000
TABLES = ("inference", "inference_max_imgsz", "inference_agreement")
PLOTS = ("inference_latency", "inference_memory")
# Published figures the report compares with (YOLO12n, imgsz 640, batch 1), as issue 16
# states them: both on an NVIDIA T4 with TensorRT FP16, not PyTorch on this GPU.
PUBLISHED = (
    {"source": "YOLOv12 paper / official repository", "model": "yolo12n", "imgsz": 640,
     "batch": 1, "latency_ms": 1.60, "hardware": "NVIDIA T4", "runtime": "TensorRT FP16"},
    {"source": "Ultralytics' reproduction", "model": "yolo12n", "imgsz": 640, "batch": 1,
     "latency_ms": 2.3, "hardware": "NVIDIA T4", "runtime": "TensorRT FP16"},
)  # fmt: skip


@dataclass(frozen=True)
class Job(grid.Cell):
    backend: str = ""

    @property
    def id(self) -> str:
        return f"{self.cell}/{self.backend}"

    @property
    def path(self) -> str:
        return f"{ROOT}/{self.id}.json"

    @property
    def force_id(self) -> str:
        """Its name for ATTNBENCH_FORCE_OOM globs (tests)."""
        return f"inference/{self.id}"


@dataclass(frozen=True)
class Plan:
    enabled: bool
    models: tuple[str, ...]
    imgsizes: tuple[int, ...]
    batches: tuple[int, ...]
    compiles: tuple[str, ...]
    backends: tuple[str, ...]
    baseline: str
    order_seed: int
    # Where compile modes other than off run: {"models": [...], "imgsizes": [...],
    # "batches": [...]}; an empty list admits every value of its axis.
    compile_where: Mapping[str, tuple] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def jobs(self) -> list[Job]:
        if not self.enabled:
            return []
        return [
            Job(m, i, b, c, k)
            for m in self.models
            for i in self.imgsizes
            for b in self.batches
            for c in self.compiles
            if c == grid.COMPILE_OFF or self.compiles_at(m, i, b)
            for k in self.backends
        ]

    def compiles_at(self, model: str, imgsz: int, batch: int) -> bool:
        """Whether the compiled modes run at this (model, imgsz, batch) point."""
        w = self.compile_where
        return all(
            not w.get(axis) or value in w[axis]
            for axis, value in (("models", model), ("imgsizes", imgsz), ("batches", batch))
        )

    def job(self, model_name: str, imgsz: int, batch: int, compile_: str, backend: str) -> Job:
        return Job(self.model_of(model_name), imgsz, batch, compile_, backend)

    def model_of(self, model_name: str) -> str:
        for m in self.models:
            if stem(m) == model_name:
                return m
        raise KeyError(f"no inference model {model_name}")

    def priority(self, job: Job) -> int:
        """Snakemake priority: jobs in a seeded random order (a GPU runs them one by one)."""
        return grid.priority(PRIORITY_BASE, self.order_seed, job.id)

    def planned_order(self) -> list[Job]:
        return grid.seeded_order(self.jobs(), lambda j: (self.order_seed, j.id), lambda j: j.id)

    def agreement_models(self) -> list[str]:
        enabled = self.enabled and self.settings.get("agreement", {}).get("enabled", False)
        return list(self.models) if enabled else []

    def spec(self, job: Job, position: int | None, weights: Mapping[str, Any]) -> dict[str, Any]:
        """What the job's script needs (rule params)."""
        return {
            "id": job.id,
            "force_id": job.force_id,
            **job.cell_spec(),
            "backend": job.backend,
            "baseline": self.baseline,
            "planned_position": position,
            "path": job.path,
            "weights": dict(weights),
        }


def agreement_path(model: str) -> str:
    return f"{AGREEMENT_ROOT}/{stem(model)}.json"


def weights_choice(model: str, settings: Mapping[str, Any], train_model: str) -> dict[str, Any]:
    """Where a model's weights come from: the study's best.pt (if it trains this model) or the yaml."""
    w = settings["weights"]
    if w["source"] == "yaml" or stem(model) != stem(train_model):
        return {"source": "yaml", "yaml": model, "seed": w["seed"], "best_pt": None}
    run = f"results/train/{w['arm']}/seed{w['seed']}"
    return {
        "source": w["source"],  # auto (if present at run time) or train (an input)
        "yaml": model,
        "seed": w["seed"],
        "best_pt": f"{run}/ultralytics/weights/best.pt",
        "train_metrics": f"{run}/metrics.json",
    }


def plan(config: Mapping[str, Any]) -> Plan:
    """The inference grid of a validated config; a ConfigError names an inconsistent key."""
    s = config["inference"]
    result = Plan(
        enabled=bool(s["enabled"]),
        models=tuple(s["models"]),
        imgsizes=tuple(s["imgsizes"]),
        batches=tuple(s["batches"]),
        compiles=tuple(grid.COMPILE_NAMES[c] for c in s["compile"]),
        backends=tuple(s["backends"]),
        baseline=s["baseline"],
        order_seed=s["order_seed"],
        compile_where={k: tuple(v) for k, v in s["compile_where"].items()},
        settings=s,
    )
    if not result.enabled:
        return result
    for axis, allowed in (("models", result.models), ("imgsizes", result.imgsizes),
                          ("batches", result.batches)):  # fmt: skip
        stray = [v for v in result.compile_where[axis] if v not in allowed]
        if stray:
            raise ConfigError(
                f"config value inference.compile_where.{axis} = {stray} is not in "
                f"inference.{axis} ({list(allowed)}): list only values of that axis"
            )
    stems = [stem(m) for m in result.models]
    if len(set(stems)) != len(stems):
        raise ConfigError(
            f"config value inference.models = {list(result.models)} names one model twice: "
            "list each once"
        )
    if result.baseline not in result.backends:
        raise ConfigError(
            f"config value inference.baseline = {result.baseline!r} is not in inference.backends "
            f"({', '.join(result.backends)}): add it or pick one of them"
        )
    if s["weights"]["source"] == "train" and s["weights"]["arm"] not in _arms(config):
        raise ConfigError(
            f"config value inference.weights.arm = {s['weights']['arm']!r} is not a trained arm "
            f"({', '.join(_arms(config))}): pick one of them or use weights.source: auto"
        )
    return result


def _arms(config: Mapping[str, Any]) -> list[str]:
    from attnbench.train import schedule

    analysis = config["analysis"]
    return schedule.arms(config["backends"], analysis["baseline"], analysis["replica"])


# --------------------------------------------------------------------------- #
# What the grid costs on one GPU: a model from H200 figures (FACTS §7);
# docs/reference/gpu/inference/README.md estimates from the H100 smoke run instead

JOB_START_S = 15.0  # Python, torch, CUDA context, Ultralytics, backend check, model load
# Eager fp16 forward time of one image at imgsz 640 on an H200, per GFLOP: FACTS §7 gives
# YOLO12l training at 76.9 ms for 16 images (~3x the forward); fp16 inference ~1/3 of that.
FWD_MS_PER_IMAGE_GFLOP = 76.9 / (16 * 88.9) / 3
GFLOPS_640 = {"n": 6.5, "s": 21.4, "m": 67.5, "l": 88.9, "x": 199.0}
HOST_MS = {"off": 12.0, "default": 6.0, "reduce-overhead": 1.0}  # host floor of one forward
COMPILE_S = {"off": 0.0, "default": 60.0, "reduce-overhead": 90.0}  # compile + graph capture
PROFILE_SLOWDOWN = 2.0
AGREEMENT_JOB_S = 60.0  # per backend: validation set twice (val + predict), plus start


def call_ms(model: str, imgsz: int, batch: int, compile_: str) -> float:
    """Modelled time of one forward: the host floor or the GPU time, whichever is longer.

    Eager attention's N^2 term makes large images slower than the FLOP count says; the
    model ignores that (it is what the run measures) and stays an estimate.
    """
    flops = GFLOPS_640.get(scale_of(model), GFLOPS_640["x"]) * (imgsz / 640) ** 2
    return max(HOST_MS[compile_], FWD_MS_PER_IMAGE_GFLOP * batch * flops)


def estimate(plan_: Plan) -> dict[str, float]:
    """Estimated seconds of GPU time: job starts, compiles, warm-up + timed + profiled calls."""
    s = plan_.settings
    calls_s = 0.0
    compile_s = 0.0
    for job in plan_.jobs():
        ms = call_ms(job.model, job.imgsz, job.batch, job.compile)
        calls = s["warmup"] + s["iterations"] + 1 + s["profile_iters"] * PROFILE_SLOWDOWN
        calls_s += calls * ms / 1e3
        compile_s += COMPILE_S[job.compile]
    jobs = len(plan_.jobs())
    agreement_s = (
        len(plan_.agreement_models()) * len(plan_.backends) * AGREEMENT_JOB_S
        if plan_.enabled
        else 0.0
    )
    parts = {
        "job_start_s": jobs * JOB_START_S,
        "compile_s": compile_s,
        "calls_s": calls_s,
        "agreement_s": agreement_s,
    }
    parts["total_s"] = sum(parts.values())
    parts["jobs"] = float(jobs)
    return parts


def report_inputs(enabled: bool) -> dict[str, list[str]]:
    """The report rule's extra inputs when inference runs (its tables and figures), else none."""
    from attnbench import section_files

    return section_files.inputs(enabled, TABLES, section_files.section_figures("inference"))
