"""Rule sweep_parity: one backend against float64 at the training shapes of every swept model."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench.env.scriptutil import gpu_job

smk = snakemake
with gpu_job(smk) as job:
    from attnbench.backends import parity
    from attnbench.intermediates import SHAPES
    from attnbench.io import read_json, write_csv

    thresholds = json.loads(smk.params.thresholds)
    backend = smk.wildcards.sbackend
    rows = []
    for path in smk.input.shapes:
        shapes = read_json(path, schema=SHAPES)
        calls = [c for c in shapes["calls"] if c["phase"] == "train"]
        tags = {
            "model": Path(shapes["model"]).stem,
            "imgsz": shapes["imgsz"],
            "batch": shapes["batch"],
        }
        rows += [{**tags, **row} for row in parity.run(backend, calls, thresholds, job.device)]
    write_csv(smk.output[0], rows, ["model", "imgsz", "batch", *parity.COLUMNS])
    job.log.info("%s: %d rows, status %s", backend, len(rows), sorted({r["status"] for r in rows}))
