"""Rule probe_backends: results/env/backends.json, which backends run here and why not."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 (set by Snakemake)

from attnbench import gpuslots  # noqa: E402
from attnbench.scriptutil import rule_logging  # noqa: E402

smk = snakemake  # noqa: F821
with rule_logging(smk) as log, gpuslots.acquire(smk.resources.get("gpu", 0)) as slot:
    from attnbench import backends, envinfo, flashbuild
    from attnbench.io import write_json

    flash = flashbuild.activate(smk.input.flash_attn)  # before any availability check
    names = json.loads(smk.params.backends)
    train = json.loads(smk.params.train)
    device = envinfo.select_device(train["device"])
    dtype = backends.kernel_dtype(device, train["amp"], train["cast"])
    log.info("probing %s on %s at %s (%s)", ", ".join(names), device, dtype, slot.reason)
    doc = {
        "environment": envinfo.environment(device),
        "backends": envinfo.probe_backends(names, device, dtype),
        "flash_attn_build": flash,
    }
    write_json(smk.output[0], doc)
    for name, info in doc["backends"].items():
        log.info("%-15s %s", name, "available" if info["available"] else info["reason"])
