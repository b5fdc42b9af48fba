"""Rule sweep_max_batch: the largest batch each backend trains, for one (model, imgsz)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench.env.scriptutil import gpu_job, json_params, settings_param

smk = snakemake
with gpu_job(smk) as job:
    from attnbench.io import write_json
    from attnbench.sweep import max_batch
    from attnbench.train.settings import ProbeSettings
    from attnbench.train.ultralytics_run import offline_ultralytics

    offline_ultralytics(Path("results/.ultralytics").resolve())
    searches, limits = json_params(smk, "searches", "limits")
    train = ProbeSettings.from_mapping(settings_param(smk, "train"))
    samples = max_batch.sample_cache()
    for search in searches:
        job.log.info(
            "largest batch of %s at imgsz %d with %s",
            search["model"],
            search["imgsz"],
            search["backend"],
        )
        result = max_batch.find_max_batch(
            search["model"], search["imgsz"], search["backend"], smk.input.data_yaml, train.loop,
            train.cast, limits, job.device, sample=samples(smk.input.data_yaml, search["imgsz"]),
        )  # fmt: skip
        result.update(run_order=search["run_order"], gpu_slot=",".join(job.slot.devices) or None)
        write_json(search["path"], result)
