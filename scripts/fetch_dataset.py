"""Snakemake adapter: fetch the dataset (roboflow, local or demo) into results/data/<name>/source."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 (set by Snakemake)

import json  # noqa: E402

from attnbench.datasets import fetch  # noqa: E402
from attnbench.scriptutil import rule_logging  # noqa: E402

with rule_logging(snakemake) as log:  # noqa: F821
    smk = snakemake  # noqa: F821
    spec = json.loads(smk.params.spec)
    out_dir = Path(smk.output[0])
    log.info("fetching dataset %s (source: %s)", spec.get("name"), spec.get("source"))
    fetch(spec, out_dir, timeout_s=float(smk.params.timeout_s))
    log.info("dataset ready in %s", out_dir)
