"""Rule paired_timing: every arm of one (model, imgsz, batch) point, interleaved in one process."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench.env.scriptutil import gpu_job, json_params

smk = snakemake
with gpu_job(smk) as job:
    from attnbench.io import atomic_path, write_json
    from attnbench.timing import paired as paired_timing
    from attnbench.train.settings import StepSettings
    from attnbench.train.ultralytics_run import offline_ultralytics

    offline_ultralytics(Path("results/.ultralytics").resolve())
    settings, train = json_params(smk, "settings", "train")
    step = StepSettings.from_mapping(train)
    out = Path(smk.output.summary).parent
    expected = Path(smk.params.target)
    if out != expected:
        raise RuntimeError(f"the rule's outputs {out} are not the configured point {expected}")
    job.log.info(
        "paired timing of %s at imgsz %d, batch %d: arms %s on %s (%s)",
        settings["model"], settings["imgsz"], settings["batch"], ", ".join(settings["arms"]),
        job.device, job.slot.reason,
    )  # fmt: skip
    summary, info = paired_timing.job_measure(
        job, settings, step, smk.input.data_yaml, smk.params.scratch, smk.output.blocks
    )
    with atomic_path(smk.output.summary) as tmp:
        summary.to_csv(tmp, index=False)
    write_json(smk.output.info, info)
