# Environment: build the Flash Attention wheel (for hosts without conda or
# internet) and probe which backends can run here, with reasons.


rule build_flash_attn:
    output:
        status="results/env/flash_attn.json",
    log:
        "results/logs/env/build_flash_attn.log",
    benchmark:
        "results/benchmarks/env/build_flash_attn.tsv"
    conda:
        "../envs/torch.yaml"
    threads: workflow.cores
    params:
        build=params_json("flash_attn"),
    script:
        "../scripts/build_flash_attn.py"


rule probe_backends:
    input:
        flash_attn="results/env/flash_attn.json",
    output:
        report(
            "results/env/backends.json",
            caption="../report/backends.rst",
            category="Environment",
        ),
    log:
        "results/logs/env/probe_backends.log",
    benchmark:
        "results/benchmarks/env/probe_backends.tsv"
    conda:
        # A superset of torch.yaml: the probe must see flash-attn where its jobs do.
        "../envs/flash-attn.yaml"
    resources:
        gpu=GPU_JOBS,
    params:
        backends=cfg.canonical(BACKENDS),
        train=cfg.canonical({k: TRAIN[k] for k in ("amp", "cast", "imgsz", "batch")}),
        device=TRAIN["device"],
    script:
        "../scripts/probe_backends.py"
