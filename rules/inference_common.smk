# The inference benchmark's plan and helper functions (attnbench.inference.plan); its rules
# are in inference.smk.

import sys

from attnbench import grid
from attnbench.inference import plan as infer_plan
from attnbench.errors import ConfigError

try:
    INFER = infer_plan.plan(config)
except ConfigError as _error:
    sys.exit(f"Config error: {_error}")
INFER_POSITION = {j.id: i for i, j in enumerate(INFER.planned_order())}
INFER_MODELS = [grid.stem(m) for m in INFER.models]
INFER_SETTINGS = {
    k: config["inference"][k]
    for k in ("dtype", "warmup", "iterations", "profile_iters")
}


wildcard_constraints:
    imodel=grid.wildcard_pattern(INFER_MODELS),
    iimgsz=r"\d+",
    ibatch=r"\d+",
    icompile=grid.wildcard_pattern(grid.COMPILE_MODES),
    ibackend=grid.wildcard_pattern(INFER.backends),


def inference_targets():
    """The inference tables and figures when it is enabled (rules all and inference), else none."""
    if not INFER.enabled:
        return []
    return [
        *[f"results/tables/{t}.csv" for t in infer_plan.TABLES],
        *[f"results/plots/{p}.png" for p in infer_plan.PLOTS],
    ]


def infer_job(wildcards):
    return INFER.job(
        wildcards.imodel,
        int(wildcards.iimgsz),
        int(wildcards.ibatch),
        wildcards.icompile,
        wildcards.ibackend,
    )


def infer_weights(model):
    return infer_plan.weights_choice(model, config["inference"], TRAIN["model"])


def infer_spec_param(wildcards):
    """One canonical JSON value: the job, its planned place and where its weights come from."""
    job = infer_job(wildcards)
    return cfg.canonical(
        INFER.spec(job, INFER_POSITION[job.id], infer_weights(job.model))
    )


def infer_priority(wildcards):
    return INFER.priority(infer_job(wildcards))


def infer_trained(wildcards):
    """The train job whose best.pt a job loads, with weights.source: train (else none)."""
    weights = infer_weights(INFER.model_of(wildcards.imodel))
    return weights["train_metrics"] if weights["source"] == "train" else []


def infer_model_param(wildcards):
    return INFER.model_of(wildcards.imodel)


def infer_agreement_weights(wildcards):
    return cfg.canonical(infer_weights(INFER.model_of(wildcards.imodel)))






def infer_results():
    return [j.path for j in INFER.jobs()]


def infer_agreements():
    return [infer_plan.agreement_path(m) for m in INFER.agreement_models()]
