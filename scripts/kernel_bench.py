"""Rule kernel_bench: results/kernels/<backend>.csv, the attention kernel micro-benchmark."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench.env.scriptutil import gpu_job, settings_param

smk = snakemake
with gpu_job(smk) as job:
    from attnbench import intermediates
    from attnbench.io import read_json
    from attnbench.measure import kernelbench

    settings = settings_param(smk, "kernels")
    backend = smk.wildcards.backend
    job.log.info("kernel benchmark of %s on %s (%s)", backend, job.device, job.slot.reason)
    shapes = read_json(smk.input.shapes, schema=intermediates.SHAPES)
    rows = kernelbench.run(backend, shapes, settings, job.device)
    kernelbench.write_csv(smk.output[0], rows, schema=intermediates.KERNELS)
    job.log.info("%s: %d rows, status %s", backend, len(rows), sorted({r["status"] for r in rows}))
