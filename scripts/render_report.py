"""Rule report: render report/report.html.j2 into one self-contained results/report.html."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench import config as cfg
from attnbench.env.scriptutil import rule_logging, settings_param
from attnbench.errors import UserError
from attnbench.report import page as report

smk = snakemake


def extra(name: str) -> list[str]:
    """Optional inputs of the sweep's, inference's and paired timing's sections (absent when off)."""
    return list(smk.input.get(name) or [])


def resolved_config() -> dict:
    """The whole resolved config the page shows: the workflow's own (the rule's param is
    only its digest, to keep dry runs readable), checked against that digest."""
    config = dict(smk.config)
    if cfg.digest(config) != smk.params.config:
        raise UserError(
            f"the config this job sees (digest {cfg.digest(config)}) is not the one it was "
            f"planned with ({smk.params.config}): run it with the same --configfile/--config"
        )
    return config


with rule_logging(smk) as log:
    report.write_report(
        smk.output[0],
        smk.input.template,
        [*smk.input.tables, *extra("sweep_tables"), *extra("inference_tables")],
        [*smk.input.plots, *extra("sweep_plots"), *extra("inference_plots")],
        smk.input.backends,
        smk.input.dataset,
        title=smk.params.title,
        config=resolved_config(),
        dataset_reason=smk.params.dataset_reason,
        train=settings_param(smk, "train"),
        paired_timing=extra("timing"),
    )
    log.info("wrote %s", smk.output[0])
