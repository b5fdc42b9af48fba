# Inference: latency, throughput and memory of YOLO12's eval forward per backend, where
# production use happens (attnbench.inference.plan), and each backend's predictions on the
# validation set against the baseline's. Nothing here is planned unless
# inference.enabled is true.


include: "inference_common.smk"


rule infer_bench:
    input:
        flash_attn=backend_flash("ibackend"),
        trained=infer_trained,
    output:
        "results/inference/{imodel}/imgsz{iimgsz}/b{ibatch}/{icompile}/{ibackend}.json",
    log:
        "results/logs/inference/{imodel}/imgsz{iimgsz}/b{ibatch}/{icompile}/{ibackend}.log",
    benchmark:
        "results/benchmarks/inference/{imodel}/imgsz{iimgsz}/b{ibatch}/{icompile}/{ibackend}.tsv"
    priority: infer_priority
    conda:
        backend_env("ibackend")
    resources:
        gpu=GPU_JOBS,
    params:
        spec=infer_spec_param,
        settings=cfg.canonical(INFER_SETTINGS),
        device=TRAIN["device"],
    script:
        "../scripts/infer_bench.py"


rule infer_agreement:
    input:
        data_yaml=f"{DATA_DIR}/data.yaml",
        summary=f"{DATA_DIR}/summary.json",
        flash_attn=backend_flash(backends=INFER.backends),
        trained=infer_trained,
    output:
        "results/inference/agreement/{imodel}.json",
    log:
        "results/logs/inference/agreement/{imodel}.log",
    benchmark:
        "results/benchmarks/inference/agreement/{imodel}.tsv"
    conda:
        backend_env(backends=INFER.backends)
    resources:
        gpu=GPU_JOBS,
    params:
        model=infer_model_param,
        weights=infer_agreement_weights,
        backends=cfg.canonical(list(INFER.backends)),
        baseline=INFER.baseline,
        dtype=config["inference"]["dtype"],
        agreement=cfg.canonical(config["inference"]["agreement"]),
        scratch="results/inference/.scratch/agreement-{imodel}",
        device=TRAIN["device"],
    script:
        "../scripts/infer_agreement.py"


rule infer_aggregate:
    input:
        results=infer_results(),
        agreement=infer_agreements(),
    output:
        jobs=report(
            "results/tables/inference.csv",
            caption="../report/inference_jobs.rst",
            category="Inference",
        ),
        max_imgsz=report(
            "results/tables/inference_max_imgsz.csv",
            caption="../report/inference_max_imgsz.rst",
            category="Inference",
        ),
        agreement=report(
            "results/tables/inference_agreement.csv",
            caption="../report/inference_agreement.rst",
            category="Inference",
        ),
    log:
        "results/logs/inference/aggregate.log",
    benchmark:
        "results/benchmarks/inference/aggregate.tsv"
    conda:
        "../envs/workflow.yaml"
    params:
        baseline=INFER.baseline,
    script:
        "../scripts/infer_aggregate.py"


rule infer_plots:
    input:
        jobs="results/tables/inference.csv",
    output:
        latency=report(
            "results/plots/inference_latency.png",
            caption="../report/inference_latency.rst",
            category="Inference",
        ),
        memory=report(
            "results/plots/inference_memory.png",
            caption="../report/inference_memory.rst",
            category="Inference",
        ),
    log:
        "results/logs/inference/plots.log",
    benchmark:
        "results/benchmarks/inference/plots.tsv"
    conda:
        "../envs/workflow.yaml"
    params:
        backends=cfg.canonical(list(INFER.backends)),
    script:
        "../scripts/infer_plots.py"
