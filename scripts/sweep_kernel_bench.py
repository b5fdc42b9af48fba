"""Rule sweep_kernel_bench: one backend's kernels at the training shapes of every swept model."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench.env.scriptutil import gpu_job, settings_param

smk = snakemake
with gpu_job(smk) as job:
    from attnbench.intermediates import SHAPES
    from attnbench.io import read_json, write_csv
    from attnbench.measure import kernelbench

    settings = settings_param(smk, "kernels")
    backend = smk.wildcards.sbackend
    rows, peak = [], None
    for path in smk.input.shapes:
        shapes = read_json(path, schema=SHAPES)
        train_only = {**shapes, "calls": [c for c in shapes["calls"] if c["phase"] == "train"]}
        if peak is None and job.device.type == "cuda":
            peak = kernelbench.matmul_peak_tflops(job.device, repeats=20)
        found = kernelbench.run(backend, train_only, settings, job.device, matmul_peak=peak)
        tags = {
            "model": Path(shapes["model"]).stem,
            "imgsz": shapes["imgsz"],
            "batch": shapes["batch"],
        }
        rows += [{**tags, **row} for row in found]
        job.log.info("%s: %d rows for %s", backend, len(found), tags)
    write_csv(smk.output[0], rows, ["model", "imgsz", "batch", *kernelbench.COLUMNS])
