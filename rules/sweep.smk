# Sweep: where attention matters. Short trainings over model scale x image size x batch
# per backend (attnbench.sweep.plan), each cell's backends paired in one process for its
# wall-time ratios, the largest batch each backend trains, the attention shapes, parity
# and kernel benchmark at every swept model, then tables and figures.
# Nothing here is planned unless sweep.enabled is true.


include: "sweep_common.smk"


rule sweep_shapes:
    output:
        "results/sweep/attention/{model}/imgsz{imgsz}/b{batch}/shapes.json",
    log:
        "results/logs/sweep/attention/{model}/imgsz{imgsz}/b{batch}.log",
    benchmark:
        "results/benchmarks/sweep/attention/{model}/imgsz{imgsz}/b{batch}.tsv"
    conda:
        "../envs/torch.yaml"
    params:
        shape=sweep_shape_param,
    script:
        "../scripts/sweep_shapes.py"


rule sweep_parity:
    input:
        shapes=SWEEP_SHAPES,
        flash_attn=backend_flash("sbackend"),
    output:
        "results/sweep/parity/{sbackend}.csv",
    log:
        "results/logs/sweep/parity/{sbackend}.log",
    benchmark:
        "results/benchmarks/sweep/parity/{sbackend}.tsv"
    conda:
        backend_env("sbackend")
    resources:
        gpu=GPU_JOBS,
    params:
        thresholds=cfg.canonical(
            {
                d: config["parity"]["thresholds"][d]
                for d in config["sweep"]["kernel_dtypes"]
            }
        ),
        device=TRAIN["device"],
    script:
        "../scripts/sweep_parity.py"


rule sweep_kernel_bench:
    input:
        shapes=SWEEP_SHAPES,
        flash_attn=backend_flash("sbackend"),
    output:
        "results/sweep/kernels/{sbackend}.csv",
    log:
        "results/logs/sweep/kernels/{sbackend}.log",
    benchmark:
        "results/benchmarks/sweep/kernels/{sbackend}.tsv"
    conda:
        backend_env("sbackend")
    resources:
        gpu=GPU_JOBS,
    params:
        # The training shapes only, at the training dtypes; no sequence-length sweep.
        **cfg.keyed(
            "kernels",
            {
                **config["kernels"],
                "dtypes": config["sweep"]["kernel_dtypes"],
                "seq_lens": [],
                "cpu_seq_lens": [],
            },
        ),
        device=TRAIN["device"],
    script:
        "../scripts/sweep_kernel_bench.py"


rule sweep_point:
    input:
        data_yaml=f"{DATA_DIR}/data.yaml",
        summary=f"{DATA_DIR}/summary.json",
        flash_attn=backend_flash(backends=SWEEP.backends),
    output:
        metrics=sweep_group_outputs(),
    log:
        "results/logs/sweep/{model}/imgsz{imgsz}/b{batch}/{compile}.log",
    benchmark:
        "results/benchmarks/sweep/{model}/imgsz{imgsz}/b{batch}/{compile}.tsv"
    priority: sweep_priority
    conda:
        # The sweep's jobs mix backends: one env that holds them all.
        backend_env(backends=SWEEP.backends)
    threads: TRAIN["workers"] + 1
    resources:
        gpu=GPU_JOBS,
    params:
        # What a point's step uses (StepSettings.KEYS): not train.epochs, model, batch...
        **cfg.keyed("train", train_settings.pick(TRAIN, train_settings.StepSettings.KEYS)),
        points=sweep_points_param,
        settings=cfg.canonical(SWEEP_SETTINGS),
        scratch="results/sweep/.scratch/{model}-imgsz{imgsz}-b{batch}-{compile}",
        device=TRAIN["device"],
    script:
        "../scripts/sweep_point.py"


# The cell's wall-time ratios: its backends interleaved in blocks in ONE process (compile
# off cells only; attnbench.timing.paired). Its own job, so that changing only
# sweep.paired reruns this and the tables, never the points.
rule sweep_paired:
    input:
        data_yaml=f"{DATA_DIR}/data.yaml",
        summary=f"{DATA_DIR}/summary.json",
        flash_attn=backend_flash(backends=SWEEP.backends),
    output:
        blocks=f"{sweep_plan.PAIRED_ROOT}/{{model}}/imgsz{{imgsz}}/b{{batch}}/blocks.csv",
        summary=f"{sweep_plan.PAIRED_ROOT}/{{model}}/imgsz{{imgsz}}/b{{batch}}/summary.csv",
        info=f"{sweep_plan.PAIRED_ROOT}/{{model}}/imgsz{{imgsz}}/b{{batch}}/timing.json",
    log:
        "results/logs/sweep/paired/{model}/imgsz{imgsz}/b{batch}.log",
    benchmark:
        "results/benchmarks/sweep/paired/{model}/imgsz{imgsz}/b{batch}.tsv"
    priority: sweep_paired_priority
    conda:
        backend_env(backends=SWEEP.backends)
    threads: TRAIN["workers"] + 1
    resources:
        gpu=GPU_JOBS,
    params:
        **cfg.keyed("paired", SWEEP_PAIRED),
        **cfg.keyed("train", SWEEP_PAIRED_TRAIN),
        point=sweep_paired_point_param,
        target=sweep_paired_target,
        scratch="results/sweep/.scratch/paired-{model}-imgsz{imgsz}-b{batch}",
        device=TRAIN["device"],
    script:
        "../scripts/sweep_paired.py"


rule sweep_max_batch:
    input:
        data_yaml=f"{DATA_DIR}/data.yaml",
        summary=f"{DATA_DIR}/summary.json",
        flash_attn=backend_flash(backends=SWEEP.backends),
    output:
        sweep_max_batch_outputs(),
    log:
        "results/logs/sweep/max_batch/{model}/imgsz{imgsz}.log",
    benchmark:
        "results/benchmarks/sweep/max_batch/{model}/imgsz{imgsz}.tsv"
    conda:
        backend_env(backends=SWEEP.backends)
    resources:
        gpu=GPU_JOBS,
    params:
        **cfg.keyed("train", train_settings.pick(TRAIN, train_settings.ProbeSettings.KEYS)),
        searches=sweep_searches_param,
        limits=cfg.canonical(config["sweep"]["max_batch"]),
        device=TRAIN["device"],
    script:
        "../scripts/sweep_max_batch.py"


rule sweep_aggregate:
    input:
        points=sweep_points(),
        max_batch=sweep_max_batches(),
        kernels=sweep_backend_files("results/sweep/kernels/{sbackend}.csv"),
        parity=sweep_backend_files("results/sweep/parity/{sbackend}.csv"),
        paired=sweep_paired_files(),
    output:
        points=report(
            "results/tables/sweep.csv",
            caption="../report/sweep_points.rst",
            category="Sweep",
        ),
        summary=report(
            "results/tables/sweep_summary.csv",
            caption="../report/sweep_summary.rst",
            category="Sweep",
        ),
        max_batch=report(
            "results/tables/sweep_max_batch.csv",
            caption="../report/sweep_max_batch.rst",
            category="Sweep",
        ),
        kernels="results/tables/sweep_kernels.csv",
        parity="results/tables/sweep_parity.csv",
        paired=report(
            "results/tables/sweep_paired.csv",
            caption="../report/sweep_paired.rst",
            category="Sweep",
        ),
    log:
        "results/logs/sweep/aggregate.log",
    benchmark:
        "results/benchmarks/sweep/aggregate.tsv"
    conda:
        "../envs/workflow.yaml"
    params:
        baseline=SWEEP.baseline,
        # Why a compile mode's cells have no paired timing (null: they have one).
        paired_skips=cfg.canonical({c: SWEEP.paired_skip(c) for c in SWEEP.compiles}),
    script:
        "../scripts/sweep_aggregate.py"


rule sweep_plots:
    input:
        summary="results/tables/sweep_summary.csv",
        max_batch="results/tables/sweep_max_batch.csv",
    output:
        speedup=report(
            "results/plots/sweep_speedup.png",
            caption="../report/sweep_speedup.rst",
            category="Sweep",
        ),
        gpu_busy=report(
            "results/plots/sweep_gpu_busy.png",
            caption="../report/sweep_gpu_busy.rst",
            category="Sweep",
        ),
        max_batch=report(
            "results/plots/sweep_max_batch.png",
            caption="../report/sweep_max_batch_plot.rst",
            category="Sweep",
        ),
        fastest=report(
            "results/plots/sweep_fastest.png",
            caption="../report/sweep_fastest.rst",
            category="Sweep",
        ),
    log:
        "results/logs/sweep/plots.log",
    benchmark:
        "results/benchmarks/sweep/plots.tsv"
    conda:
        "../envs/workflow.yaml"
    params:
        baseline=SWEEP.baseline,
        backends=cfg.canonical(list(SWEEP.backends)),
    script:
        "../scripts/sweep_plots.py"
