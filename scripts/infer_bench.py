"""Rule infer_bench: one (model, imgsz, batch, compile, backend) inference job, in its own process."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench.env.scriptutil import gpu_job

smk = snakemake
with gpu_job(smk) as job:
    from attnbench.env.envinfo import environment
    from attnbench.inference import run as inference_run
    from attnbench.io import write_json
    from attnbench.train.ultralytics_run import offline_ultralytics

    offline_ultralytics(Path("results/.ultralytics").resolve())
    spec = json.loads(smk.params.spec)
    if str(Path(spec["path"])) != str(Path(smk.output[0])):
        raise RuntimeError(
            f"the job {spec['path']} does not match the rule's output {smk.output[0]}"
        )
    job.log.info("%s on %s (%s)", spec["id"], job.device, job.slot.reason)
    result = inference_run.bench(
        spec, json.loads(smk.params.settings), job.device, environment(job.device)
    )
    result["gpu_slot"] = ",".join(job.slot.devices) or None
    write_json(smk.output[0], result)
