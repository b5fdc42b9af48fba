"""Rule probe_backends: results/env/backends.json, which backends run here and why not."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench.env.scriptutil import gpu_job

smk = snakemake
with gpu_job(smk) as job:
    from attnbench.backends import registry as backends
    from attnbench.env import envinfo
    from attnbench.intermediates import BACKENDS
    from attnbench.io import write_json

    names = json.loads(smk.params.backends)
    train = json.loads(smk.params.train)
    dtype = backends.kernel_dtype(job.device, train["amp"], train["cast"])
    job.log.info(
        "probing %s on %s at %s (%s)", ", ".join(names), job.device, dtype, job.slot.reason
    )
    doc = {
        "environment": envinfo.environment(job.device),
        "backends": envinfo.probe_backends(names, job.device, dtype),
        "flash_attn_build": job.flash,
    }
    write_json(smk.output[0], doc, schema=BACKENDS)
    for name, info in doc["backends"].items():
        job.log.info("%-15s %s", name, "available" if info["available"] else info["reason"])
