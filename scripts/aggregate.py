"""Rule aggregate: every run, kernel and parity file into results/tables/*.csv."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from attnbench import stats  # noqa: E402
from attnbench.io import atomic_path  # noqa: E402
from attnbench.scriptutil import rule_logging  # noqa: E402

smk = snakemake  # noqa: F821

with rule_logging(smk) as log:
    tables = stats.aggregate(
        smk.input.metrics,
        smk.input.results,
        smk.input.parity,
        smk.input.kernels,
        smk.params.analysis,
    )
    for name, table in tables.items():
        with atomic_path(smk.output[name]) as tmp:
            table.to_csv(tmp, index=False)
        log.info("%s: %d rows -> %s", name, len(table), smk.output[name])
