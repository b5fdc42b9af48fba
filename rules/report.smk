# Report: one self-contained HTML page that answers the question first.


rule report:
    input:
        tables=multiext(
            "results/tables/",
            "runs.csv",
            "summary.csv",
            "comparisons.csv",
            "drift.csv",
            "replica.csv",
            "epochs.csv",
            "kernels.csv",
            "parity.csv",
        ),
        plots=multiext(
            "results/plots/",
            "curves.png",
            "epoch_time.png",
            "memory.png",
            "speed_memory.png",
            "kernels.png",
            "step_breakdown.png",
        ),
        # The sweep's section, only with sweep.enabled (empty lists otherwise).
        sweep_tables=sweep_plan.report_inputs(SWEEP.enabled)["tables"],
        sweep_plots=sweep_plan.report_inputs(SWEEP.enabled)["plots"],
        # The inference section, only with inference.enabled.
        inference_tables=infer_plan.report_inputs(INFER.enabled)["tables"],
        inference_plots=infer_plan.report_inputs(INFER.enabled)["plots"],
        # The paired timing's summary (the speed statement), only with paired_timing.enabled.
        timing=timing_report_input(),
        backends="results/env/backends.json",
        dataset=f"{DATA_DIR}/summary.json",
        template=f"{workflow.basedir}/report/report.html.j2",
        # The sections it includes: a change to one re-renders the report.
        section_templates=expand(
            "{base}/report/{name}.html.j2",
            base=workflow.basedir,
            name=["sweep", "inference", "timing"],
        ),
    output:
        report("results/report.html", caption="../report/report.rst", category="Report"),
    log:
        "results/logs/report/report.log",
    benchmark:
        "results/benchmarks/report/report.tsv"
    conda:
        "../envs/workflow.yaml"
    params:
        # The whole effective train section: the page prints it (the demo's overrides applied).
        **cfg.keyed("train", TRAIN),
        title=config["report"]["title"],
        # The page shows the whole resolved config, so any change re-renders it; the script
        # reads it from snakemake.config, and only its digest is a param (the config itself
        # would be printed twice, thousands of characters, in every dry run's reason line).
        config=cfg.digest(config),
        dataset_reason=DATASET.reason,
    script:
        "../scripts/render_report.py"
