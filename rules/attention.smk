# Attention: the model's real attention shapes, each backend's numerical parity
# against a float64 reference, and the kernel micro-benchmark at those shapes.


rule attention_shapes:
    output:
        "results/attention/shapes.json",
    params:
        model=TRAIN["model"],
        imgsz=TRAIN["imgsz"],
        batch=TRAIN["batch"],
        # Snakemake compares params as a set of values, names ignored: without this
        # one key, swapping imgsz and batch (64/32 -> 32/64) would not rerun the rule.
        shape=cfg.canonical({k: TRAIN[k] for k in ("model", "imgsz", "batch")}),
    log:
        "results/logs/attention/shapes.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/attention_shapes.py"


rule parity:
    input:
        shapes="results/attention/shapes.json",
        flash_attn=flash_attn_env,
    output:
        "results/parity/{backend}.csv",
    params:
        parity=params_json("parity"),
        train=cfg.canonical({k: TRAIN[k] for k in ("cast", "device")}),
    log:
        "results/logs/parity/{backend}.log",
    benchmark:
        "results/benchmarks/parity/{backend}.tsv"
    resources:
        gpu=GPU_JOBS,
    conda:
        backend_conda_env
    script:
        "../scripts/parity.py"


rule kernel_bench:
    input:
        shapes="results/attention/shapes.json",
        flash_attn=flash_attn_env,
    output:
        "results/kernels/{backend}.csv",
    params:
        kernels=params_json("kernels"),
        device=TRAIN["device"],
    log:
        "results/logs/kernels/{backend}.log",
    benchmark:
        "results/benchmarks/kernels/{backend}.tsv"
    resources:
        gpu=GPU_JOBS,
    conda:
        backend_conda_env
    script:
        "../scripts/kernel_bench.py"
