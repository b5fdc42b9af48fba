# Training: one Ultralytics run per (arm, seed), each in its own process, with timing,
# GPU memory, accuracy and proof of the kernels that ran. An arm is a backend or the
# baseline's A/A replica; jobs run in the seeded random order of attnbench.train.schedule.


rule train:
    input:
        data_yaml=f"{DATA_DIR}/data.yaml",
        summary=f"{DATA_DIR}/summary.json",
        flash_attn=backend_flash("backend"),
    output:
        metrics="results/train/{backend}/seed{seed}/metrics.json",
        results="results/train/{backend}/seed{seed}/results.csv",
    log:
        "results/logs/train/{backend}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{backend}/seed{seed}.tsv"
    priority: train_priority
    conda:
        backend_env("backend")
    threads: TRAIN["workers"] + 1
    resources:
        gpu=TRAIN_GPU,
        gpu_slots=TRAIN_GPU_SLOTS,
        jobs_per_gpu=JOBS_PER_GPU,
    params:
        # One param per setting the run uses (cfg.keyed; TrainSettings.KEYS, the device
        # apart): a dry run names only the settings that changed.
        **cfg.keyed("train", train_settings.pick(TRAIN, train_settings.TrainSettings.KEYS)),
        device=TRAIN["device"],
    script:
        "../scripts/train.py"
