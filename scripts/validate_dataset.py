"""Snakemake adapter: validate the fetched dataset; write summary.json, data.yaml and image lists."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench.data import source_kind
from attnbench.data.validate import summarize
from attnbench.env.scriptutil import rule_logging

with rule_logging(snakemake):
    smk = snakemake
    out_dir = Path(smk.output.summary).parent
    if Path(smk.output.data_yaml).resolve() != (out_dir / "data.yaml").resolve():
        raise RuntimeError("validate_dataset expects summary.json and data.yaml in one folder")
    name = smk.wildcards.dataset
    summarize(
        smk.input.source,
        out_dir,
        policy=smk.params.on_problems,
        name=name,
        source=getattr(smk.params, "source", None) or source_kind(name),
        reason=smk.params.reason,
        # Present only when set (rules/data.smk): absent means false.
        allow_background_only=bool(getattr(smk.params, "allow_background_only", False)),
    )
