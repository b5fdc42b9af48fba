"""Snakemake adapter: fetch the dataset (roboflow, local or demo) into results/data/<name>/source."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import json

from attnbench.data import fetch
from attnbench.env.scriptutil import rule_logging

with rule_logging(snakemake) as log:
    smk = snakemake
    spec = json.loads(smk.params.spec)
    out_dir = Path(smk.output[0])
    log.info("fetching dataset %s (source: %s)", spec.get("name"), spec.get("source"))
    fetch(spec, out_dir, timeout_s=float(smk.params.timeout_s))
    log.info("dataset ready in %s", out_dir)
