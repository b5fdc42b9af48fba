"""Rule parity: results/parity/<backend>.csv, errors against a float64 reference."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 (set by Snakemake)

from attnbench import gpuslots  # noqa: E402
from attnbench.scriptutil import rule_logging  # noqa: E402

smk = snakemake  # noqa: F821
with rule_logging(smk) as log, gpuslots.acquire(smk.resources.get("gpu", 0)) as slot:
    from attnbench import envinfo, flashbuild, parity
    from attnbench.io import read_json, write_csv

    if smk.input.get("flash_attn"):
        flashbuild.activate(smk.input.flash_attn)  # before any availability check
    thresholds = json.loads(smk.params.parity)["parity"]["thresholds"]
    device = envinfo.select_device(json.loads(smk.params.train)["device"])
    backend = smk.wildcards.backend
    log.info("parity of %s on %s (%s), thresholds %s", backend, device, slot.reason, thresholds)
    rows = parity.run(backend, read_json(smk.input.shapes)["calls"], thresholds, device)
    write_csv(smk.output[0], rows, parity.COLUMNS)
    log.info("%s: status %s", backend, sorted({r["status"] for r in rows}))
