"""Rule sweep_point: the points of one (model, imgsz, batch, compile) cell, in one process."""

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench.env.scriptutil import gpu_job, json_params, settings_param

smk = snakemake
with gpu_job(smk) as job:
    from attnbench.io import write_json
    from attnbench.sweep import run as sweep_run
    from attnbench.train.settings import StepSettings
    from attnbench.train.ultralytics_run import offline_ultralytics

    offline_ultralytics(Path("results/.ultralytics").resolve())
    specs, settings = json_params(smk, "points", "settings")
    step = StepSettings.from_mapping(settings_param(smk, "train"))
    expected = {str(Path(p)) for p in smk.output.metrics}
    planned = {spec["path"] for spec in specs}
    if planned != expected:
        raise RuntimeError(
            f"the points do not match the rule's outputs: {sorted(planned ^ expected)}"
        )
    slot = ",".join(job.slot.devices) or None

    def write(spec, metrics):
        write_json(spec["path"], {**metrics, "gpu_slot": slot})

    scratch = Path(smk.params.scratch)
    job.log.info("%d points on %s (%s)", len(specs), job.device, job.slot.reason)
    results = sweep_run.run_points(
        specs, settings, step, smk.input.data_yaml, scratch, job.device, write
    )
    shutil.rmtree(scratch, ignore_errors=True)
    job.log.info("statuses: %s", sorted(r["status"] for r in results))
