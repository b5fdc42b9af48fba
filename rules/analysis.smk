# Analysis: gather every run into tables with statistics, then draw the figures.


rule aggregate:
    input:
        metrics=train_runs("metrics.json"),
        results=train_runs("results.csv"),
        parity=per_backend("results/parity/{backend}.csv"),
        kernels=per_backend("results/kernels/{backend}.csv"),
        backends="results/env/backends.json",
    output:
        runs=report("results/tables/runs.csv", caption="../report/runs.rst", category="Tables"),
        summary=report(
            "results/tables/summary.csv", caption="../report/summary.rst", category="Tables"
        ),
        comparisons=report(
            "results/tables/comparisons.csv",
            caption="../report/comparisons.rst",
            category="Tables",
        ),
        epochs="results/tables/epochs.csv",
        kernels=report(
            "results/tables/kernels.csv", caption="../report/kernels.rst", category="Tables"
        ),
        parity=report(
            "results/tables/parity.csv", caption="../report/parity.rst", category="Tables"
        ),
    params:
        analysis=params_json("analysis"),
    log:
        "results/logs/analysis/aggregate.log",
    benchmark:
        "results/benchmarks/analysis/aggregate.tsv"
    conda:
        "../envs/workflow.yaml"
    script:
        "../scripts/aggregate.py"


rule plots:
    input:
        runs="results/tables/runs.csv",
        epochs="results/tables/epochs.csv",
        kernels="results/tables/kernels.csv",
        summary="results/tables/summary.csv",
    output:
        curves=report(
            "results/plots/curves.png", caption="../report/curves.rst", category="Plots"
        ),
        epoch_time=report(
            "results/plots/epoch_time.png", caption="../report/epoch_time.rst", category="Plots"
        ),
        memory=report("results/plots/memory.png", caption="../report/memory.rst", category="Plots"),
        speed_memory=report(
            "results/plots/speed_memory.png",
            caption="../report/speed_memory.rst",
            category="Plots",
        ),
        kernels=report(
            "results/plots/kernels.png", caption="../report/kernel_plot.rst", category="Plots"
        ),
    params:
        baseline=config["analysis"]["baseline"],
    log:
        "results/logs/analysis/plots.log",
    benchmark:
        "results/benchmarks/analysis/plots.tsv"
    conda:
        "../envs/workflow.yaml"
    script:
        "../scripts/plots.py"
