"""Rule report: render report/report.html.j2 into one self-contained results/report.html."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench import report
from attnbench.scriptutil import rule_logging

smk = snakemake


def extra(name: str) -> list[str]:
    """Optional inputs of the sweep's, inference's and paired timing's sections (absent when off)."""
    return list(smk.input.get(name) or [])


with rule_logging(smk) as log:
    report.write_report(
        smk.output[0],
        smk.input.template,
        [*smk.input.tables, *extra("sweep_tables"), *extra("inference_tables")],
        [*smk.input.plots, *extra("sweep_plots"), *extra("inference_plots")],
        smk.input.backends,
        smk.input.dataset,
        title=smk.params.title,
        config=smk.params.config,
        dataset_reason=smk.params.dataset_reason,
        train=smk.params.train,
        paired_timing=extra("timing"),
    )
    log.info("wrote %s", smk.output[0])
