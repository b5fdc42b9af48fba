# Shared helpers: config validation (before any job), the resolved dataset and
# training settings, and the target lists. No rule lives here.

import sys
from pathlib import Path

from attnbench import backend_records
from attnbench.train import schedule
from attnbench.train import settings as train_settings
from attnbench import config as cfg
from attnbench.errors import ConfigError

if _no_conda := cfg.missing_conda(workflow.deployment_settings.deployment_method):
    sys.exit(f"Error: {_no_conda}")  # not Snakemake's later "Error running conda info"

try:
    _validated = cfg.validate(config)
except ConfigError as _error:
    sys.exit(f"Config error: {_error}")
config.clear()
config.update(_validated)

DATASET = cfg.resolve_dataset(config)
# Before any job: a Roboflow download without a key would fail only once fetch_dataset ran.
if _no_key := cfg.roboflow_key_problem(
    DATASET, fetched=Path(f"results/data/{DATASET.name}/source").is_dir()
):
    sys.exit(f"Error: {_no_key}")
TRAIN = cfg.effective_train(config, DATASET)
# Scheduling, not measurement: out of every rule's params (changing it reruns nothing);
# each run records what it got (jobs_per_gpu, shared_gpu in metrics.json).
JOBS_PER_GPU = TRAIN.pop("jobs_per_gpu")
BACKENDS = config["backends"]
# Training arms: the backends plus, with analysis.replica, the baseline's A/A replica.
ARMS = schedule.arms(
    BACKENDS, config["analysis"]["baseline"], config["analysis"]["replica"]
)
SEEDS = config["seeds"]
DATA_DIR = f"results/data/{DATASET.name}"
# Snakemake's gpu resource is a counter only; attnbench.env.gpuslots picks the device.
GPU_JOBS = 1 if cfg.cuda_hint() else 0
# A train job takes a whole GPU (gpu=1), or with train.jobs_per_gpu > 1 one of that many
# slots of a GPU (gpu_slots=1): resources are integers (Snakemake rounds a fraction such as
# gpu=0.25 to 0), so `--resources gpu=G gpu_slots=G*jobs_per_gpu` bounds both kinds.
TRAIN_GPU = GPU_JOBS if JOBS_PER_GPU == 1 else 0
TRAIN_GPU_SLOTS = GPU_JOBS if JOBS_PER_GPU > 1 else 0


wildcard_constraints:
    backend="|".join(ARMS),
    seed=r"\d+",
    dataset=r"[A-Za-z0-9._-]+",


def params_json(*sections, **extra):
    """One canonical JSON string of the config values a rule uses."""
    value = {name: config[name] for name in sections}
    value.update(extra)
    return cfg.canonical(value)


def analysis_params():
    """The analysis settings and the design, without the run order's seed: the order a
    run went through is recorded by its train job, so a new order seed changes nothing.
    One param each (cfg.keyed), so a dry run's reason line shows only what changed.
    """
    analysis = {k: v for k, v in config["analysis"].items() if k != "order_seed"}
    return cfg.keyed(
        "analysis", {"analysis": analysis, "backends": BACKENDS, "seeds": SEEDS}
    )


def dataset_spec():
    """Everything that decides the dataset's content, for fetch_dataset's params."""
    data = config["dataset"]
    spec = {"source": DATASET.source, "name": DATASET.name}
    if DATASET.source == "roboflow":
        spec["roboflow"] = data["roboflow"]
    elif DATASET.source == "local":
        spec["local"] = data["local"]
        spec["fingerprint"] = cfg.local_fingerprint(
            data["local"]
        )  # re-import once edited
    else:
        spec["demo"] = {k: v for k, v in data["demo"].items() if k != "train"}
    return cfg.canonical(spec)


def validation_flags():
    """validate_dataset's opt-in settings, passed only when set: a new param at its
    default would rerun every validated dataset and every run trained on it."""
    data = config["dataset"]
    return {k: True for k in ("allow_background_only",) if data[k]}



def backend_env(wildcard=None, backends=()):
    """A rule's `conda:` env file: that of the backend its `wildcard` names (a replica
    arm: its kernel's), or that of one job that runs every backend of `backends`."""
    if wildcard is None:
        return backend_records.conda_env_file(*backends)
    return lambda wc: backend_records.conda_env_file(schedule.kernel_of(getattr(wc, wildcard)))


def backend_flash(wildcard=None, backends=()):
    """A rule's flash-attn input: the build status when the backend its `wildcard` names,
    or one of `backends`, runs on the built wheel; else no input."""
    if wildcard is None:
        return backend_records.flash_attn_input(*backends)
    return lambda wc: backend_records.flash_attn_input(schedule.kernel_of(getattr(wc, wildcard)))


def train_runs(filename):
    return expand(
        "results/train/{backend}/seed{seed}/{filename}",
        backend=ARMS,
        seed=SEEDS,
        filename=filename,
    )


def per_backend(pattern):
    return expand(pattern, backend=BACKENDS)



def train_priority(wildcards):
    """Randomised, interleaved order of train jobs (seed blocks; arms shuffled within)."""
    return schedule.priority(
        config["analysis"]["order_seed"], wildcards.backend, int(wildcards.seed), SEEDS
    )
