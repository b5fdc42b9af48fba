"""Rule plots: the report's seaborn figures from the aggregate tables."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from attnbench import plots, stats  # noqa: E402
from attnbench.scriptutil import rule_logging  # noqa: E402

smk = snakemake  # noqa: F821

with rule_logging(smk) as log:
    tables = {
        name: stats.read_table(smk.input[name]) for name in ("runs", "epochs", "kernels", "summary")
    }
    outputs = {
        name: smk.output[name]
        for name in ("curves", "epoch_time", "memory", "speed_memory", "kernels")
    }
    plots.make_all(
        tables["runs"],
        tables["epochs"],
        tables["kernels"],
        tables["summary"],
        outputs,
        baseline=smk.params.baseline,
    )
    log.info("wrote %s", ", ".join(outputs.values()))
