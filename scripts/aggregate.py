"""Rule aggregate: every run, kernel and parity file into results/tables/*.csv."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench import tables
from attnbench.io import atomic_path
from attnbench.scriptutil import rule_logging, settings_param

smk = snakemake

with rule_logging(smk) as log:
    written = tables.aggregate(
        smk.input.metrics,
        smk.input.results,
        smk.input.parity,
        smk.input.kernels,
        settings_param(smk, "analysis"),
    )
    for name, table in written.items():
        if smk.output.get(name) is None:  # a table this rule does not declare
            log.info("%s: not an output of this rule, not written", name)
            continue
        with atomic_path(smk.output[name]) as tmp:
            table.to_csv(tmp, index=False)
        log.info("%s: %d rows -> %s", name, len(table), smk.output[name])
