"""Rule train: one Ultralytics run for one (backend, seed), in its own process."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench.env.scriptutil import gpu_job, settings_param

smk = snakemake
with gpu_job(smk) as job:
    from attnbench.train import schedule, training
    from attnbench.train.settings import TrainSettings

    settings = TrainSettings.from_mapping(settings_param(smk, "train"))
    backend, seed = smk.wildcards.backend, int(smk.wildcards.seed)
    metrics_path = Path(smk.output.metrics)
    workdir = metrics_path.parent
    job.log.info("training %s seed %d on %s (%s)", backend, seed, job.device, job.slot.reason)
    metrics = training.train_one(backend, seed, smk.input.data_yaml, settings, workdir, job.device)
    metrics["gpu_slot"] = ",".join(job.slot.devices) or None
    # Other train jobs shared this GPU by design (train.jobs_per_gpu): times are not its own.
    metrics["jobs_per_gpu"] = job.slot.jobs_per_gpu
    metrics["shared_gpu"] = job.slot.shared
    # The place this job had in the schedule it ran under (config read here on purpose:
    # the order is a priority, not a param, so changing it reruns nothing).
    metrics["planned_order"] = schedule.position(smk.config, backend, seed)
    training.write_outputs(metrics, workdir, metrics_path, Path(smk.output.results))
    job.log.info("%s seed %d: status %s", backend, seed, metrics["status"])
