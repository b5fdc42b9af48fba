"""Rule plots: the report's seaborn figures from the aggregate tables."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench import intermediates
from attnbench.analysis import tables
from attnbench.env.scriptutil import rule_logging
from attnbench.report import plots

smk = snakemake

with rule_logging(smk) as log:
    runs = tables.read_table(smk.input.runs, intermediates.table("runs"))
    trained = tables.has_finished(runs)  # then the epochs table must hold its epochs
    frames = {"runs": runs} | {
        name: tables.read_table(smk.input[name], intermediates.table(name, trained))
        for name in ("epochs", "kernels", "summary")
    }
    outputs = {
        name: smk.output.get(name)
        for name in (
            "curves",
            "epoch_time",
            "memory",
            "speed_memory",
            "kernels",
            "step_breakdown",
        )
        if smk.output.get(name) is not None
    }
    plots.make_all(
        frames["runs"],
        frames["epochs"],
        frames["kernels"],
        frames["summary"],
        outputs,
        baseline=smk.params.baseline,
    )
    log.info("wrote %s", ", ".join(outputs.values()))
