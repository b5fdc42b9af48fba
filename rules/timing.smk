# Paired timing: every arm of one (model, imgsz, batch) point trains in ONE process, in
# interleaved blocks of steps (attnbench.timing.paired), so that wall time is resolved
# to the paired interval, which separate processes cannot do. Nothing here is planned
# unless paired_timing.enabled is true.


include: "timing_common.smk"


rule paired_timing:
    input:
        data_yaml=f"{DATA_DIR}/data.yaml",
        summary=f"{DATA_DIR}/summary.json",
        flash_attn=backend_flash(backends=TIMING["backends"]),
    output:
        blocks="results/timing/{tmodel}/imgsz{timgsz}/b{tbatch}/blocks.csv",
        summary="results/timing/{tmodel}/imgsz{timgsz}/b{tbatch}/summary.csv",
        info="results/timing/{tmodel}/imgsz{timgsz}/b{tbatch}/timing.json",
    log:
        "results/logs/timing/{tmodel}/imgsz{timgsz}/b{tbatch}.log",
    benchmark:
        "results/benchmarks/timing/{tmodel}/imgsz{timgsz}/b{tbatch}.tsv"
    conda:
        backend_env(backends=TIMING["backends"])
    threads: TRAIN["workers"] + 1
    resources:
        gpu=GPU_JOBS,
    params:
        settings=cfg.canonical(TIMING),
        train=cfg.canonical(TIMING_TRAIN),
        target=TIMING_DIR,
        scratch="results/timing/.scratch/{tmodel}-imgsz{timgsz}-b{tbatch}",
        device=TRAIN["device"],
    script:
        "../scripts/paired_timing.py"
