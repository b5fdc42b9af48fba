"""Rule train: one Ultralytics run for one (backend, seed), in its own process."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench import gpuslots
from attnbench.scriptutil import rule_logging

with rule_logging(snakemake) as log, gpuslots.acquire(snakemake.resources.get("gpu", 0)) as slot:
    from attnbench import envinfo, flashbuild, training

    if snakemake.input.get("flash_attn"):
        flashbuild.activate(snakemake.input.flash_attn)
    train = json.loads(snakemake.params.train)
    backend, seed = snakemake.wildcards.backend, int(snakemake.wildcards.seed)
    metrics_path = Path(snakemake.output.metrics)
    workdir = metrics_path.parent
    device = envinfo.select_device(train["device"])
    log.info("training %s seed %d on %s (%s)", backend, seed, device, slot.reason)
    metrics = training.train_one(backend, seed, snakemake.input.data_yaml, train, workdir, device)
    metrics["gpu_slot"] = ",".join(slot.devices) or None
    training.write_outputs(metrics, workdir, metrics_path, Path(snakemake.output.results))
    log.info("%s seed %d: status %s", backend, seed, metrics["status"])
