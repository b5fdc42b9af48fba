"""Rule sweep_aggregate: the sweep's tables (points, summary, paired wall-time ratios,
largest batches, kernels, parity)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench.env.scriptutil import rule_logging

smk = snakemake
with rule_logging(smk) as log:
    from attnbench.analysis import sweep_tables as st

    points = st.points_frame(smk.input.points)
    st.write(points, smk.output.points)
    skips = json.loads(smk.params.paired_skips)
    paired = st.paired_frame(smk.input.paired, points, smk.params.baseline, skips)
    st.write(paired, smk.output.paired)
    st.write(st.summary(points, smk.params.baseline, paired), smk.output.summary)
    st.write(st.max_batch_frame(smk.input.max_batch, smk.params.baseline), smk.output.max_batch)
    st.write(st.concat_csv(smk.input.kernels), smk.output.kernels)
    st.write(st.concat_csv(smk.input.parity), smk.output.parity)
    log.info(
        "%d points: %s",
        len(points),
        points["status"].value_counts().to_dict() if len(points) else {},
    )
