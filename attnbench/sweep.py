"""The sweep over model scale, batch and image size: its grid, order and paths (its cost
is modelled in `sweep_cost`).

A point is one short training (fresh model, warm-up plus `steps` timed iterations,
no epoch end, no validation) at one (model, imgsz, batch, compile, backend, repeat).
Points of one (model, imgsz, batch, compile) cell form a group, and one job runs a
group in one process that shares the data loader, its points in a seeded random
order, interleaved across backends within each repeat (docs/reference/gpu/sweep/README.md says what
isolation that gives and why it is not one process per point). The points give GPU time,
attention time and peak memory; the wall-time ratios come from a paired job per compile-off
cell (rule sweep_paired: `attnbench.paired_timing` over the sweep's backends, settings
`sweep.paired`), because step times of separate runs do not resolve wall time.
`search_max_batch` is the largest-batch search (doubling, then bisection).

Torch-free: the Snakefile imports it at parse time.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from attnbench.config import ConfigError

ROOT = "results/sweep"
MAX_BATCH_ROOT = f"{ROOT}/max_batch"
PAIRED_ROOT = f"{ROOT}/paired"
PAIRED_OFF = "sweep.paired.enabled is false: wall time was not paired-timed"
PAIRED_COMPILED = (
    "compile {mode}: the paired timing times eager-mode modules only (it runs no "
    "torch.compile), so this cell has no paired wall-time ratio"
)
# Config value -> path segment; Ultralytics' own `compile` argument takes the value.
COMPILE_NAMES: dict[Any, str] = {
    False: "off",
    "default": "default",
    "reduce-overhead": "reduce-overhead",
    "max-autotune": "max-autotune",
}
COMPILE_ARGS: dict[str, bool | str] = {name: value for value, name in COMPILE_NAMES.items()}
# Snakemake priorities: the train jobs' band starts at schedule.PRIORITY_BASE (1e6);
# sweep jobs sit below it, so a combined run trains first, then sweeps.
PRIORITY_BASE = 500_000
BLOCK = 10_000
SCALE = re.compile(r"^yolo\w*?(\d+)([nsmlx])$")
SCALES = "nsmlx"


def stem(model: str) -> str:
    """The model's name in paths and tables: yolo12n.yaml -> yolo12n."""
    return PurePosixPath(model).name.rsplit(".", 1)[0]


def scale_of(model: str) -> str:
    """The scale letter (n, s, m, l, x) of a YOLO model name, else its stem."""
    match = SCALE.match(stem(model))
    return match.group(2) if match else stem(model)


def scale_rank(model: str) -> int:
    """Order of scales for axes: n < s < m < l < x, unknown names last."""
    scale = scale_of(model)
    return SCALES.index(scale) if scale in SCALES else len(SCALES)


def _key(*parts: Any) -> int:
    """A stable pseudo-random number in [0, BLOCK) for one item."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") % BLOCK


@dataclass(frozen=True)
class Group:
    """One (model, imgsz, batch, compile) cell: the points that share a data loader."""

    model: str
    imgsz: int
    batch: int
    compile: str

    @property
    def id(self) -> str:
        return f"{stem(self.model)}/imgsz{self.imgsz}/b{self.batch}/{self.compile}"


@dataclass(frozen=True)
class Point:
    model: str  # the yaml, e.g. yolo12n.yaml
    imgsz: int
    batch: int
    compile: str  # a COMPILE_NAMES value
    backend: str
    rep: int

    @property
    def group(self) -> Group:
        return Group(self.model, self.imgsz, self.batch, self.compile)

    @property
    def id(self) -> str:
        return f"{self.group.id}/{self.backend}/rep{self.rep}"

    @property
    def path(self) -> str:
        return f"{ROOT}/{self.id}/metrics.json"

    @property
    def seed(self) -> int:
        """Paired seeds: repeat r trains every backend from the same initial weights."""
        return self.rep

    def spec(self, run_order: int) -> dict[str, Any]:
        """What a job needs to run the point (rule params), with its place in the job."""
        return {
            "id": self.id,
            "model": self.model,
            "model_name": stem(self.model),
            "scale": scale_of(self.model),
            "imgsz": self.imgsz,
            "batch": self.batch,
            "compile": self.compile,
            "backend": self.backend,
            "rep": self.rep,
            "seed": self.seed,
            "run_order": run_order,
            "path": self.path,
        }


@dataclass(frozen=True)
class Plan:
    """The sweep as configured: which points, groups and max-batch searches exist."""

    enabled: bool
    models: tuple[str, ...]
    cells: tuple[tuple[int, int], ...]  # (imgsz, batch)
    compiles: tuple[str, ...]
    backends: tuple[str, ...]
    repeats: int
    order_seed: int
    baseline: str
    find_max_batch: bool
    max_batch_models: tuple[str, ...]
    settings: Mapping[str, Any] = field(default_factory=dict, compare=False)

    # -- the grid --------------------------------------------------------------
    def groups(self) -> list[Group]:
        if not self.enabled:
            return []
        return [
            Group(m, imgsz, batch, c)
            for m in self.models
            for imgsz, batch in self.cells
            for c in self.compiles
        ]

    def points(self) -> list[Point]:
        return [p for g in self.groups() for p in self.group_points(g)]

    def group_points(self, group: Group) -> list[Point]:
        """A group's points in run order: repeat blocks, backends shuffled within each."""
        points = []
        for rep in range(self.repeats):
            block = sorted(
                self.backends,
                key=lambda b: (_key(self.order_seed, group.id, b, rep), b),
            )
            points += [
                Point(group.model, group.imgsz, group.batch, group.compile, b, rep) for b in block
            ]
        return points

    def group_of(self, model_name: str, imgsz: int, batch: int, compile_: str) -> Group:
        for g in self.groups():
            if (stem(g.model), g.imgsz, g.batch, g.compile) == (model_name, imgsz, batch, compile_):
                return g
        raise KeyError(f"no sweep group {model_name}/imgsz{imgsz}/b{batch}/{compile_}")

    def point(
        self, model_name: str, imgsz: int, batch: int, compile_: str, backend: str, rep: int
    ) -> Point:
        group = self.group_of(model_name, imgsz, batch, compile_)
        return Point(group.model, imgsz, batch, compile_, backend, rep)

    def specs(self, points: Sequence[Point]) -> list[dict[str, Any]]:
        """Specs in run order; `run_order` counts within the job."""
        return [p.spec(i) for i, p in enumerate(points)]

    # -- the max-batch search ---------------------------------------------------
    def imgsizes(self) -> list[int]:
        return sorted({imgsz for imgsz, _ in self.cells})

    def searches(self) -> list[tuple[str, int, str]]:
        """(model, imgsz, backend) of every max-batch search."""
        if not (self.enabled and self.find_max_batch):
            return []
        return [
            (m, imgsz, b)
            for m in self.max_batch_models
            for imgsz in self.imgsizes()
            for b in self.backends
        ]

    def model_of(self, model_name: str) -> str:
        for m in self.models:
            if stem(m) == model_name:
                return m
        raise KeyError(f"no sweep model {model_name}")

    # -- the paired wall-time ratios ----------------------------------------------
    @property
    def paired(self) -> Mapping[str, Any]:
        """sweep.paired: the block settings of the paired timing (schema defaults)."""
        return self.settings.get("paired") or {"enabled": False}

    def paired_skip(self, compile_: str) -> str | None:
        """Why a cell of this compile mode has no paired timing, or None when it has one."""
        if not self.paired["enabled"]:
            return PAIRED_OFF
        if len(self.backends) < 2:
            return f"one backend ({self.backends[0]}): nothing to pair"
        if compile_ != COMPILE_NAMES[False]:
            return PAIRED_COMPILED.format(mode=compile_)
        return None

    def paired_groups(self) -> list[Group]:
        """The cells that are paired-timed: compile off, when sweep.paired.enabled and the
        sweep has two or more backends (one cell per (model, imgsz, batch))."""
        return [g for g in self.groups() if self.paired_skip(g.compile) is None]

    def paired_point(self, group: Group) -> dict[str, Any]:
        """The (model, imgsz, batch) and arms of a cell's paired timing (the rule's params)."""
        return {
            "model": group.model,
            "model_name": stem(group.model),
            "scale": scale_of(group.model),
            "imgsz": group.imgsz,
            "batch": group.batch,
            "compile": group.compile,
            "arms": list(self.backends),
            "baseline": self.baseline,
            "point_id": f"sweep_paired/{stem(group.model)}/imgsz{group.imgsz}/b{group.batch}",
        }

    def paired_block_settings(self, alpha: float) -> dict[str, Any]:
        """sweep.paired's block settings, plus what attnbench.paired_timing.run needs of the
        sweep: its deterministic flag and the interval's alpha (analysis.alpha)."""
        keys = ("steps_per_block", "rounds", "warmup_rounds", "batches", "seed", "weights_seed",
                "time_limit_s", "target_halfwidth_pct")  # fmt: skip
        return {
            **{k: self.paired[k] for k in keys},
            "deterministic": bool(self.settings["deterministic"]),
            "alpha": float(alpha),
        }

    # -- order ------------------------------------------------------------------
    def group_priority(self, group_id: str) -> int:
        """Snakemake priority of a group job: groups in a seeded random order."""
        return PRIORITY_BASE - _key(self.order_seed, "group", group_id)

    def planned_order(self) -> list[Point]:
        """Every point in the order one GPU runs them (jobs by priority, points within)."""
        groups = sorted(self.groups(), key=lambda g: -self.group_priority(g.id))
        return [p for g in groups for p in self.group_points(g)]


def paired_dir(model: str, imgsz: int, batch: int) -> str:
    """results/sweep/paired/<model>/imgsz<I>/b<B>: a cell's paired timing (compile off)."""
    return f"{PAIRED_ROOT}/{stem(model)}/imgsz{imgsz}/b{batch}"


def max_batch_path(model: str, imgsz: int, backend: str) -> str:
    return f"{MAX_BATCH_ROOT}/{stem(model)}/imgsz{imgsz}/{backend}.json"


def plan(config: Mapping[str, Any]) -> Plan:
    """The sweep of a validated config; a ConfigError names an inconsistent key."""
    sweep = config["sweep"]
    models = tuple(sweep["models"])
    excluded = {(e["imgsz"], e["batch"]) for e in sweep["exclude"]}
    cells = tuple(
        (imgsz, batch)
        for imgsz in sweep["imgsizes"]
        for batch in sweep["batches"]
        if (imgsz, batch) not in excluded
    )
    backends = tuple(sweep["backends"])
    max_models = tuple(sweep["max_batch"]["models"] or models)
    result = Plan(
        enabled=bool(sweep["enabled"]),
        models=models,
        cells=cells,
        compiles=tuple(COMPILE_NAMES[c] for c in sweep["compile"]),
        backends=backends,
        repeats=sweep["repeats"],
        order_seed=sweep["order_seed"],
        baseline=sweep["baseline"],
        find_max_batch=bool(sweep["find_max_batch"]),
        max_batch_models=max_models,
        settings=sweep,
    )
    if not result.enabled:
        return result
    stems = [stem(m) for m in models]
    if len(set(stems)) != len(stems):
        raise ConfigError(
            f"config value sweep.models = {list(models)} names one model twice: list each once"
        )
    if not cells:
        raise ConfigError(
            "config value sweep.exclude leaves out every (imgsz, batch) cell: exclude fewer"
        )
    if result.baseline not in backends:
        raise ConfigError(
            f"config value sweep.baseline = {result.baseline!r} is not in sweep.backends "
            f"({', '.join(backends)}): add it or pick one of them"
        )
    unknown = [m for m in max_models if m not in models]
    if unknown:
        raise ConfigError(
            f"config value sweep.max_batch.models = {unknown} is not in sweep.models: "
            "search only models the sweep trains"
        )
    limits = sweep["max_batch"]
    if limits["start"] > limits["limit"]:
        raise ConfigError(
            f"config value sweep.max_batch.start = {limits['start']} is above "
            f"sweep.max_batch.limit = {limits['limit']}: lower start or raise limit"
        )
    return result


def wildcard_pattern(values: Iterable[Any]) -> str:
    """A regex that matches exactly these values (for wildcard_constraints)."""
    return "|".join(re.escape(str(v)) for v in sorted(set(map(str, values)))) or "(?!)"


# --------------------------------------------------------------------------- #
# The largest batch that trains: doubling, then bisection


def search_max_batch(
    probe: Callable[[int], Mapping[str, Any]],
    start: int,
    limit: int,
    tolerance: float,
) -> dict[str, Any]:
    """Find the largest batch for which `probe(batch)["status"] == "ok"`.

    Doubles from `start` until a probe runs out of memory (status "oom") or `limit`
    is reached, then bisects between the largest batch that fitted and the smallest
    that did not, until they are within `tolerance` of the former (at least 1 apart).
    Every probe is recorded; any status other than ok/oom ends the search.
    """
    probes: list[dict[str, Any]] = []
    lo, hi = 0, None  # largest that fits, smallest that does not

    def run(batch: int) -> str:
        result = dict(probe(batch))
        result["batch"] = batch
        probes.append(result)
        return result["status"]

    batch = start
    while True:
        status = run(batch)
        if status == "ok":
            lo = batch
            if batch >= limit:
                break
            batch = min(batch * 2, limit)
        elif status == "oom":
            hi = batch
            break
        else:
            return _search_result(lo, hi, probes, "error", start, limit)
    while hi is not None and hi - lo > max(1, math.floor(tolerance * lo)):
        mid = (lo + hi) // 2
        status = run(mid)
        if status == "ok":
            lo = mid
        elif status == "oom":
            hi = mid
        else:
            return _search_result(lo, hi, probes, "error", start, limit)
    limited_by = "memory" if hi is not None else "limit"
    return _search_result(lo, hi, probes, limited_by, start, limit)


def _search_result(lo, hi, probes, limited_by, start, limit) -> dict[str, Any]:
    return {
        "max_batch": lo or None,
        "first_oom": hi,
        "limited_by": limited_by,  # memory | limit (sweep.max_batch.limit) | error
        "start": start,
        "limit": limit,
        "probes": probes,
    }


REPORT_TABLES = ("sweep", "sweep_summary", "sweep_paired", "sweep_max_batch")


def report_inputs(enabled: bool) -> dict[str, list[str]]:
    """The report rule's extra inputs when the sweep runs (its tables and figures), else none."""
    from attnbench import section_files

    return section_files.inputs(enabled, REPORT_TABLES, section_files.section_figures("sweep"))
