"""Rule sweep_plots: the sweep's figures from its summary and largest-batch tables."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench.env.scriptutil import rule_logging

smk = snakemake
with rule_logging(smk) as log:
    from attnbench import io
    from attnbench.report import sweep_plots

    summary = io.read_csv(smk.input.summary)
    max_batch = io.read_csv(smk.input.max_batch)
    paths = {k: smk.output[k] for k in ("speedup", "gpu_busy", "max_batch", "fastest")}
    sweep_plots.draw_all(
        summary, max_batch, smk.params.baseline, json.loads(smk.params.backends), paths
    )
    log.info("wrote %s", ", ".join(paths.values()))
