"""Rule build_flash_attn: results/env/flash_attn.json, plus the cached wheel and its site folder."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench.env.scriptutil import rule_logging

smk = snakemake
with rule_logging(smk) as log:
    from attnbench.env import flashbuild

    settings = json.loads(smk.params.build)["flash_attn"]
    log.info("flash-attn settings %s, %d cores", settings, smk.threads)
    flashbuild.run(settings, smk.output.status, cores=smk.threads, log=log)
