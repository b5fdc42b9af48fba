"""Rule infer_plots: latency and peak memory against image size, a line per backend."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench.env.scriptutil import rule_logging

smk = snakemake
with rule_logging(smk) as log:
    from attnbench import io
    from attnbench.report import inference_plots

    jobs = io.read_csv(smk.input.jobs)
    backends = json.loads(smk.params.backends)
    inference_plots.latency(jobs, backends, smk.output.latency)
    inference_plots.memory(jobs, backends, smk.output.memory)
    log.info("wrote %s, %s", smk.output.latency, smk.output.memory)
