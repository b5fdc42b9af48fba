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
        sweep_tables=sweep_report.section_inputs(SWEEP.enabled)["tables"],
        sweep_plots=sweep_report.section_inputs(SWEEP.enabled)["plots"],
        backends="results/env/backends.json",
        dataset=f"{DATA_DIR}/summary.json",
        template=f"{workflow.basedir}/report/report.html.j2",
    output:
        report("results/report.html", caption="../report/report.rst", category="Report"),
    log:
        "results/logs/report/report.log",
    benchmark:
        "results/benchmarks/report/report.tsv"
    conda:
        "../envs/workflow.yaml"
    params:
        title=config["report"]["title"],
        config=cfg.canonical(config),
        dataset_reason=DATASET.reason,
        train=cfg.canonical(TRAIN),
    script:
        "../scripts/render_report.py"
