"""The sweep over model scale, batch and image size: its grid, order and paths (its cost
is modelled in `sweep_cost`).

A point is one short training (fresh model, warm-up plus `steps` timed iterations,
no epoch end, no validation) at one (model, imgsz, batch, compile, backend, repeat).
Points of one (model, imgsz, batch, compile) cell form a group, and one job runs a
group in one process that shares the data loader, its points in a seeded random
order, interleaved across backends within each repeat (docs/reference/gpu/sweep/README.md says what
isolation that gives and why it is not one process per point). The points give GPU time,
attention time and peak memory; the wall-time ratios come from a paired job per compile-off
cell (rule sweep_paired: `attnbench.timing.paired` over the sweep's backends, settings
`sweep.paired`), because step times of separate runs do not resolve wall time.
`search_max_batch` is the largest-batch search (doubling, then bisection).

Torch-free: the Snakefile imports it at parse time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from attnbench import grid
from attnbench.errors import ConfigError
from attnbench.grid import stem

ROOT = "results/sweep"
MAX_BATCH_ROOT = f"{ROOT}/max_batch"
PAIRED_ROOT = f"{ROOT}/paired"
PAIRED_OFF = "sweep.paired.enabled is false: wall time was not paired-timed"
PAIRED_COMPILED = (
    "compile {mode}: the paired timing times eager-mode modules only (it runs no "
    "torch.compile), so this cell has no paired wall-time ratio"
)
# Snakemake priorities: the train jobs' band starts at schedule.PRIORITY_BASE (1e6);
# sweep jobs sit below it, so a combined run trains first, then sweeps.
PRIORITY_BASE = 500_000


@dataclass(frozen=True)
class Group(grid.Cell):
    """One (model, imgsz, batch, compile) cell: the points that share a data loader."""

    @property
    def id(self) -> str:
        return self.cell


@dataclass(frozen=True)
class Point(grid.Cell):
    backend: str = ""
    rep: int = 0

    @property
    def group(self) -> Group:
        return Group(self.model, self.imgsz, self.batch, self.compile)

    @property
    def id(self) -> str:
        return f"{self.cell}/{self.backend}/rep{self.rep}"

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
            **self.cell_spec(),
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
        blocks = [
            [Point(group.model, group.imgsz, group.batch, group.compile, b, rep)
             for b in self.backends]
            for rep in range(self.repeats)
        ]  # fmt: skip
        return grid.blocked_order(
            blocks, lambda p: (self.order_seed, group.id, p.backend, p.rep), lambda p: p.backend
        )

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

    def search_order(self, model: str, imgsz: int) -> list[tuple[str, int, str]]:
        """A (model, imgsz) job's searches, one per backend, in a seeded random order."""
        found = [s for s in self.searches() if s[:2] == (model, imgsz)]
        return grid.seeded_order(found, lambda s: (self.order_seed, "max_batch", *s))

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
        if compile_ != grid.COMPILE_OFF:
            return PAIRED_COMPILED.format(mode=compile_)
        return None

    def paired_groups(self) -> list[Group]:
        """The cells that are paired-timed: compile off, when sweep.paired.enabled and the
        sweep has two or more backends (one cell per (model, imgsz, batch))."""
        return [g for g in self.groups() if self.paired_skip(g.compile) is None]

    def paired_point(self, group: Group) -> dict[str, Any]:
        """The (model, imgsz, batch) and arms of a cell's paired timing (the rule's params)."""
        return {
            **group.cell_spec(),
            "arms": list(self.backends),
            "baseline": self.baseline,
            "point_id": f"sweep_paired/{stem(group.model)}/imgsz{group.imgsz}/b{group.batch}",
        }

    def paired_block_settings(self, alpha: float) -> dict[str, Any]:
        """sweep.paired's block settings, plus what attnbench.timing.paired.run needs of the
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
        return grid.priority(PRIORITY_BASE, self.order_seed, "group", group_id)

    def planned_order(self) -> list[Point]:
        """Every point in the order one GPU runs them (jobs by priority, points within)."""
        groups = grid.seeded_order(self.groups(), lambda g: (self.order_seed, "group", g.id))
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
        compiles=tuple(grid.COMPILE_NAMES[c] for c in sweep["compile"]),
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
