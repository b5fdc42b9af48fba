"""Rule kernel_bench: results/kernels/<backend>.csv, the attention kernel micro-benchmark."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 (set by Snakemake)

from attnbench import gpuslots  # noqa: E402
from attnbench.scriptutil import rule_logging  # noqa: E402

smk = snakemake  # noqa: F821
with rule_logging(smk) as log, gpuslots.acquire(smk.resources.get("gpu", 0)) as slot:
    from attnbench import envinfo, flashbuild, kernelbench
    from attnbench.io import read_json

    if smk.input.get("flash_attn"):
        flashbuild.activate(smk.input.flash_attn)  # before any availability check
    settings = json.loads(smk.params.kernels)["kernels"]
    device = envinfo.select_device(smk.params.device)
    backend = smk.wildcards.backend
    log.info("kernel benchmark of %s on %s (%s)", backend, device, slot.reason)
    rows = kernelbench.run(backend, read_json(smk.input.shapes), settings, device)
    kernelbench.write_csv(smk.output[0], rows)
    log.info("%s: %d rows, status %s", backend, len(rows), sorted({r["status"] for r in rows}))
