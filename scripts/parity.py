"""Rule parity: results/parity/<backend>.csv, errors against a float64 reference."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench.env.scriptutil import gpu_job

smk = snakemake
with gpu_job(smk) as job:
    from attnbench import intermediates
    from attnbench.backends import parity
    from attnbench.io import read_json, write_csv

    thresholds = json.loads(smk.params.parity)["parity"]["thresholds"]
    backend = smk.wildcards.backend
    job.log.info(
        "parity of %s on %s (%s), thresholds %s", backend, job.device, job.slot.reason, thresholds
    )
    calls = read_json(smk.input.shapes, schema=intermediates.SHAPES)["calls"]
    rows = parity.run(backend, calls, thresholds, job.device)
    write_csv(smk.output[0], rows, parity.COLUMNS, schema=intermediates.PARITY)
    job.log.info("%s: status %s", backend, sorted({r["status"] for r in rows}))
