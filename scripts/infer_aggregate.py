"""Rule infer_aggregate: the inference tables (jobs, largest image size, agreement)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench.env.scriptutil import rule_logging

smk = snakemake
with rule_logging(smk) as log:
    from attnbench.analysis import inference_tables as it

    jobs = it.jobs_frame(smk.input.results, smk.params.baseline)
    it.write(jobs, smk.output.jobs)
    it.write(it.max_imgsz(jobs), smk.output.max_imgsz)
    it.write(it.agreement_frame(smk.input.agreement), smk.output.agreement)
    log.info("%d jobs: %s", len(jobs), jobs["status"].value_counts().to_dict() if len(jobs) else {})
