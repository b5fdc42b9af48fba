"""Rule infer_agreement: every backend's predictions on the validation set against the baseline's."""

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench.env.scriptutil import gpu_job

smk = snakemake
with gpu_job(smk) as job:
    from attnbench.inference import agreement as inference_agreement
    from attnbench.io import write_json
    from attnbench.train.ultralytics_run import offline_ultralytics

    offline_ultralytics(Path("results/.ultralytics").resolve())
    scratch = Path(smk.params.scratch).resolve()
    result = inference_agreement.agreement(
        smk.params.model,
        json.loads(smk.params.weights),
        json.loads(smk.params.backends),
        smk.params.baseline,
        smk.input.data_yaml,
        {"agreement": json.loads(smk.params.agreement)},
        smk.params.dtype,
        job.device,
        scratch,
    )
    shutil.rmtree(scratch, ignore_errors=True)
    result["gpu_slot"] = ",".join(job.slot.devices) or None
    write_json(smk.output[0], result)
    job.log.info("agreement: %s", {r["backend"]: r.get("passed") for r in result["backends"]})
