"""Rule aggregate: every run, kernel and parity file into results/tables/*.csv."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench import intermediates, io
from attnbench.analysis import tables
from attnbench.env.scriptutil import rule_logging, settings_param

smk = snakemake

with rule_logging(smk) as log:
    written = tables.aggregate(
        smk.input.metrics,
        smk.input.results,
        smk.input.parity,
        smk.input.kernels,
        settings_param(smk, "analysis"),
    )
    trained = tables.has_finished(written["runs"])
    declared = {name: table for name, table in written.items() if smk.output.get(name)}
    for name in sorted(written.keys() - declared.keys()):  # a table this rule does not declare
        log.info("%s: not an output of this rule, not written", name)
    schemas = {name: intermediates.table(name, trained) for name in declared}
    for name, table in declared.items():  # every table checked before any is written
        if problem := io.table_problem(table.columns, len(table), schemas[name] or io.Schema()):
            raise io.incomplete(smk.output[name], problem)
    for name, table in declared.items():
        io.write_frame(smk.output[name], table, schema=schemas[name])
        log.info("%s: %d rows -> %s", name, len(table), smk.output[name])
