# Data: fetch the dataset (Roboflow SDK, local folder/zip, or the generated demo),
# then validate it and write what training reads.


rule fetch_dataset:
    output:
        directory("results/data/{dataset}/source"),
    log:
        "results/logs/data/{dataset}/fetch.log",
    benchmark:
        "results/benchmarks/data/{dataset}/fetch.tsv"
    conda:
        "../envs/workflow.yaml"
    params:
        spec=dataset_spec(),
        # Only a Roboflow download uses it: on the demo or a local dataset a changed
        # timeout must not refetch the data and rerun every job downstream.
        timeout_s=(
            config["dataset"]["roboflow"]["timeout_s"]
            if DATASET.source == "roboflow"
            else 0
        ),
    script:
        "../scripts/fetch_dataset.py"


rule validate_dataset:
    input:
        source="results/data/{dataset}/source",
    output:
        summary=report(
            "results/data/{dataset}/summary.json",
            caption="../report/dataset.rst",
            category="Dataset",
        ),
        data_yaml="results/data/{dataset}/data.yaml",
    log:
        "results/logs/data/{dataset}/validate.log",
    benchmark:
        "results/benchmarks/data/{dataset}/validate.tsv"
    conda:
        "../envs/workflow.yaml"
    params:
        # Only when true (validation_flags): its default must not rerun validated data.
        **validation_flags(),
        on_problems=config["dataset"]["on_problems"],
        source=DATASET.source,
        reason=DATASET.reason,
    script:
        "../scripts/validate_dataset.py"
