# Which attention kernel should YOLOv12 train with, and what does it cost?
# A table of contents: each stage lives in rules/<stage>.smk.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/environment.smk"
include: "rules/attention.smk"
include: "rules/train.smk"
include: "rules/sweep.smk"
include: "rules/inference.smk"
include: "rules/timing.smk"
include: "rules/analysis.smk"
include: "rules/report.smk"


# Light steps stay on the submitting host under a cluster executor.
localrules:
    fetch_dataset,
    validate_dataset,
    attention_shapes,
    aggregate,
    plots,
    report,
    sweep_shapes,
    sweep_aggregate,
    sweep_plots,
    sweep,
    infer_aggregate,
    infer_plots,
    inference,
    timing,
    all,


rule all:
    default_target: True
    input:
        "results/report.html",
        # The sweep's tables and figures, only with sweep.enabled (rules/sweep.smk).
        sweep_targets(),
        # Inference tables and figures, only with inference.enabled (rules/inference.smk).
        inference_targets(),
        # Paired in-process timing, only with paired_timing.enabled (rules/timing.smk).
        timing_targets(),


# The sweep alone: snakemake sweep --configfile docs/reference/gpu/sweep/config.yaml
rule sweep:
    input:
        sweep_targets(),


# Inference alone: snakemake inference --configfile docs/reference/gpu/inference/config.yaml
rule inference:
    input:
        inference_targets(),


# Paired timing alone: snakemake timing --configfile docs/reference/gpu/timing/config.yaml
rule timing:
    input:
        timing_targets(),
