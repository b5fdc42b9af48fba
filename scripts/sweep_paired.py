"""Rule sweep_paired: a sweep cell's backends, interleaved in blocks in one process.

The sweep's wall-time ratios come from here (attnbench.timing.paired, the design of rule
paired_timing without its `bare` arm); the cell's per-backend points (rule sweep_point)
give its GPU time, attention time and peak memory.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench.env.scriptutil import gpu_job, json_params, settings_param

smk = snakemake
with gpu_job(smk) as job:
    from attnbench.analysis import sweep_tables
    from attnbench.io import write_json
    from attnbench.timing import paired as paired_timing
    from attnbench.train.settings import StepSettings
    from attnbench.train.ultralytics_run import offline_ultralytics

    offline_ultralytics(Path("results/.ultralytics").resolve())
    (point,) = json_params(smk, "point")
    blocks_settings = settings_param(smk, "paired")
    step = StepSettings.from_mapping(settings_param(smk, "train"))
    out = Path(smk.output.summary).parent
    if out != Path(smk.params.target):
        raise RuntimeError(f"the rule's outputs {out} are not the planned cell {smk.params.target}")
    settings = {**point, **blocks_settings}
    job.log.info(
        "paired timing of %s at imgsz %d, batch %d: %s against %s on %s (%s)",
        settings["model"], settings["imgsz"], settings["batch"], ", ".join(settings["arms"]),
        settings["baseline"], job.device, job.slot.reason,
    )  # fmt: skip
    summary, info = paired_timing.job_measure(
        job, settings, step, smk.input.data_yaml, smk.params.scratch, smk.output.blocks
    )
    sweep_tables.write(sweep_tables.paired_cell(summary, point), smk.output.summary)
    write_json(smk.output.info, info)
