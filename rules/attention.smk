# Attention: the model's real attention shapes, each backend's numerical parity
# against a float64 reference, and the kernel micro-benchmark at those shapes.


rule attention_shapes:
    output:
        "results/attention/shapes.json",
    log:
        "results/logs/attention/shapes.log",
    benchmark:
        "results/benchmarks/attention/shapes.tsv"
    conda:
        "../envs/torch.yaml"
    params:
        # One canonical JSON value: Snakemake compares params as a set of values with
        # names ignored, so separate imgsz/batch params would miss a swap (64/32 -> 32/64).
        shape=cfg.canonical({k: TRAIN[k] for k in ("model", "imgsz", "batch")}),
    script:
        "../scripts/attention_shapes.py"


rule parity:
    input:
        shapes="results/attention/shapes.json",
        flash_attn=backend_flash("backend"),
    output:
        "results/parity/{backend}.csv",
    log:
        "results/logs/parity/{backend}.log",
    benchmark:
        "results/benchmarks/parity/{backend}.tsv"
    conda:
        backend_env("backend")
    resources:
        gpu=GPU_JOBS,
    params:
        parity=params_json("parity"),
        device=TRAIN["device"],
    script:
        "../scripts/parity.py"


rule kernel_bench:
    input:
        shapes="results/attention/shapes.json",
        flash_attn=backend_flash("backend"),
    output:
        "results/kernels/{backend}.csv",
    log:
        "results/logs/kernels/{backend}.log",
    benchmark:
        "results/benchmarks/kernels/{backend}.tsv"
    conda:
        backend_env("backend")
    resources:
        gpu=GPU_JOBS,
    params:
        # The whole section: attnbench.measure.kernelbench reads every key of it.
        **cfg.keyed("kernels", config["kernels"]),
        device=TRAIN["device"],
    script:
        "../scripts/kernel_bench.py"
