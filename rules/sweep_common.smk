# The sweep's plan and helper functions (attnbench.sweep.plan); its rules are in sweep.smk.

import sys

from attnbench.sweep import plan as sweep_plan
from attnbench import grid, section_files
from attnbench.timing import plan as timing_plan
from attnbench.errors import ConfigError

try:
    SWEEP = sweep_plan.plan(config)
except ConfigError as _error:
    sys.exit(f"Config error: {_error}")
SWEEP_POSITION = {p.id: i for i, p in enumerate(SWEEP.planned_order())}
SWEEP_MODELS = [grid.stem(m) for m in SWEEP.models]
SWEEP_SHAPES = [
    f"results/sweep/attention/{grid.stem(g.model)}/imgsz{g.imgsz}/b{g.batch}/shapes.json"
    for g in SWEEP.groups()
    if g.compile == SWEEP.compiles[0]
]
SWEEP_TABLES = [
    f"results/tables/{t}.csv"
    for t in (
        "sweep",
        "sweep_summary",
        "sweep_max_batch",
        "sweep_kernels",
        "sweep_parity",
        "sweep_paired",
    )
]
SWEEP_PLOTS = [
    f"results/plots/{key}.png" for key, _, _ in section_files.section_figures("sweep")
]
SWEEP_SETTINGS = {
    k: config["sweep"][k]
    for k in ("steps", "warmup_iters", "profile_iters", "deterministic")
}
# The paired timing's block settings (sweep.paired) and the train settings its step uses.
SWEEP_PAIRED = SWEEP.paired_block_settings(config["analysis"]["alpha"])
SWEEP_PAIRED_TRAIN = timing_plan.step_train(TRAIN)


wildcard_constraints:
    model=grid.wildcard_pattern(SWEEP_MODELS),
    imgsz=r"\d+",
    batch=r"\d+",
    compile=grid.wildcard_pattern(grid.COMPILE_ARGS),
    sbackend=grid.wildcard_pattern(SWEEP.backends),


def sweep_targets():
    """The sweep's tables and figures when it is enabled (rule all and rule sweep), else none."""
    return [*SWEEP_TABLES, *SWEEP_PLOTS] if SWEEP.enabled else []


def sweep_group(wildcards):
    return SWEEP.group_of(
        wildcards.model, int(wildcards.imgsz), int(wildcards.batch), wildcards.compile
    )


def sweep_points_param(wildcards):
    """The group's points in run order, each with its planned place in the whole sweep."""
    points = SWEEP.group_points(sweep_group(wildcards))
    specs = SWEEP.specs(points)
    for spec in specs:
        spec["planned_position"] = SWEEP_POSITION[spec["id"]]
    return cfg.canonical(specs)


def sweep_priority(wildcards):
    return SWEEP.group_priority(sweep_group(wildcards).id)


def sweep_searches_param(wildcards):
    """The (model, imgsz)'s searches, one per backend, in a seeded random order."""
    found = SWEEP.search_order(SWEEP.model_of(wildcards.model), int(wildcards.imgsz))
    return cfg.canonical(
        [
            {
                "model": m,
                "imgsz": i,
                "backend": b,
                "run_order": n,
                "path": sweep_plan.max_batch_path(m, i, b),
            }
            for n, (m, i, b) in enumerate(found)
        ]
    )


def sweep_paired_group(wildcards):
    """The compile-off cell of a paired job's (model, imgsz, batch)."""
    return SWEEP.group_of(
        wildcards.model,
        int(wildcards.imgsz),
        int(wildcards.batch),
        grid.COMPILE_OFF,
    )


def sweep_paired_point_param(wildcards):
    """The cell, arms and baseline of its paired timing, one canonical JSON value."""
    return cfg.canonical(SWEEP.paired_point(sweep_paired_group(wildcards)))


def sweep_paired_priority(wildcards):
    """Its cell's priority: it runs beside the cell's points job in the sweep's order."""
    return SWEEP.group_priority(sweep_paired_group(wildcards).id)


def sweep_paired_target(wildcards):
    g = sweep_paired_group(wildcards)
    return sweep_plan.paired_dir(g.model, g.imgsz, g.batch)


def sweep_paired_files():
    """Every paired-timed cell's summary (the aggregate's input)."""
    return [
        f"{sweep_plan.paired_dir(g.model, g.imgsz, g.batch)}/summary.csv"
        for g in SWEEP.paired_groups()
    ]


def sweep_shape_param(wildcards):
    """One canonical JSON value (params compare as a set: a swapped imgsz/batch must count)."""
    model = SWEEP.model_of(wildcards.model)
    return cfg.canonical(
        {"model": model, "imgsz": int(wildcards.imgsz), "batch": int(wildcards.batch)}
    )






def sweep_group_outputs():
    """A group job's outputs: every backend x repeat of its cell."""
    return expand(
        "results/sweep/{{model}}/imgsz{{imgsz}}/b{{batch}}/{{compile}}/{backend}/rep{rep}/metrics.json",
        backend=SWEEP.backends,
        rep=range(SWEEP.repeats),
    )


def sweep_max_batch_outputs():
    """A (model, imgsz) search job's outputs: one JSON per backend."""
    return expand(
        "results/sweep/max_batch/{{model}}/imgsz{{imgsz}}/{backend}.json",
        backend=SWEEP.backends,
    )


def sweep_points():
    return [p.path for p in SWEEP.points()]


def sweep_max_batches():
    return [sweep_plan.max_batch_path(m, i, b) for m, i, b in SWEEP.searches()]


def sweep_backend_files(pattern):
    return expand(pattern, sbackend=SWEEP.backends) if SWEEP.enabled else []
