"""Run the real workflow through Snakemake's CLI in a scratch directory, and read its plans.

Shared by tests/test_workflow.py and the scripts in benchmarks/ (which put tests/ on
sys.path), so both drive Snakemake the same way.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
DEFAULT_CONFIG = REPO / "config.yaml"
DEMO_CONFIG = REPO / "tests" / "configs" / "demo-small.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


class SnakemakeFailed(RuntimeError):
    """Snakemake exited non-zero; the message holds the command and its output's tail."""


def prepare_workdir(workdir: Path) -> Path:
    """A working directory the Snakefile can run in: its `configfile:` is relative to it."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEFAULT_CONFIG, workdir / "config.yaml")
    return workdir


def carried_subset(workdir: Path) -> None:
    """A stand-in for the GPU-host reference configs' carried subset,
    `.gpu/data/crop-or-weed` (docs/reference/gpu/*/config.yaml): loading such a config
    checks only that the folder is there, and the carried data is not in a clone."""
    root = workdir / ".gpu" / "data" / "crop-or-weed"
    (root / "data.yaml").parent.mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text("names: [crop, weed]\nnc: 2\n")
    for split in ("train", "valid"):
        for sub in ("images", "labels"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)


def clean_env() -> dict[str, str]:
    """This process's environment without a Roboflow key, so `source: auto` means the demo."""
    return {k: v for k, v in os.environ.items() if k != "ROBOFLOW_API_KEY"}


def snakemake_cmd(workdir: Path, *args: str, configfile: Path | None = DEMO_CONFIG) -> list[str]:
    """The command line; targets in `args` come before --configfile (which takes many values)."""
    cmd = [*SNAKEMAKE, *args, "--snakefile", str(SNAKEFILE), "--directory", str(workdir)]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    return cmd


def snakemake(
    workdir: Path,
    *args: str,
    configfile: Path | None = DEMO_CONFIG,
    timeout_s: float = 600,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run Snakemake in `workdir`; raise SnakemakeFailed with the output's tail on failure.
    `env`: variables added to the clean environment (e.g. a Roboflow key for a dry run)."""
    cmd = snakemake_cmd(workdir, *args, configfile=configfile)
    result = subprocess.run(
        cmd,
        cwd=workdir,
        env={**clean_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if check and result.returncode != 0:
        raise SnakemakeFailed(
            f"{' '.join(cmd)} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n"
            f"--- stderr\n{result.stderr[-8000:]}"
        )
    return result


def plan_and_run(
    workdir: Path, target: str, configfile: Path, force_oom: str
) -> tuple[Path, str, str]:
    """`target` planned (dry run), then run on 2 cores with ATTNBENCH_FORCE_OOM=`force_oom`:
    (working directory, dry-run output, run output)."""
    workdir = prepare_workdir(workdir)
    env = os.environ.get("ATTNBENCH_FORCE_OOM")
    os.environ["ATTNBENCH_FORCE_OOM"] = force_oom
    try:
        plan = output_of(snakemake(workdir, target, "-n", "--cores", "2", configfile=configfile))
        result = output_of(
            snakemake(workdir, target, "--cores", "2", configfile=configfile, timeout_s=600)
        )
    finally:
        if env is None:
            os.environ.pop("ATTNBENCH_FORCE_OOM", None)
        else:
            os.environ["ATTNBENCH_FORCE_OOM"] = env
    return workdir, plan, result


def output_of(result: subprocess.CompletedProcess) -> str:
    """Snakemake logs to stderr; stdout is kept too, in case that changes."""
    return result.stdout + result.stderr


def job_stats(text: str) -> dict[str, int]:
    """The first "Job stats" table of a run or dry run, as {rule: count} without the total."""
    match = re.search(r"^Job stats:\njob +count\n[- ]+\n((?:\S+ +\d+\n)+)", text, re.M)
    if match is None:
        if "Nothing to be done" in text:
            return {}
        raise ValueError(f"no Job stats table in Snakemake's output:\n{text[-3000:]}")
    stats = {}
    for line in match.group(1).splitlines():
        rule, count = line.split()
        stats[rule] = int(count)
    if stats.pop("total", None) != sum(stats.values()):
        raise ValueError(f"Job stats total does not add up: {match.group(0)}")
    return stats


def planned_jobs(text: str) -> list[tuple[str, dict[str, str]]]:
    """Each (rule, wildcards) that a dry run lists, in order."""
    jobs = []
    for block in re.split(r"^\[[^\]\n]+\]\n", text, flags=re.M)[1:]:
        rule = re.match(r"(?:local)?rule (\w+):", block)
        if rule is None:
            continue
        wildcards = re.search(r"^ +wildcards: (.+)$", block, re.M)
        pairs = wildcards.group(1).split(", ") if wildcards else []
        jobs.append((rule.group(1), dict(p.split("=", 1) for p in pairs)))
    return jobs


# The clauses of a reason in which Snakemake names every file (by design; a gathering rule
# such as aggregate lists dozens), as opposed to what the workflow puts there (its params).
FILE_LIST_CLAUSES = (
    "Missing output files: ",
    "Incomplete output files: ",
    "Updated input files: ",
    "Input files updated by another job: ",
)


def reason_lines(text: str) -> list[str]:
    """Every job's `reason:` line of a dry run, without the label."""
    return [
        line.strip().removeprefix("reason: ")
        for line in text.splitlines()
        if line.strip().startswith("reason: ")
    ]


def without_file_lists(reason: str) -> str:
    """A reason with each of Snakemake's file lists cut to a count of its files."""
    clauses = []
    for clause in reason.split("; "):
        prefix = next((p for p in FILE_LIST_CLAUSES if clause.startswith(p)), None)
        clauses.append(f"{prefix}{clause.count(', ') + 1} file(s)" if prefix else clause)
    return "; ".join(clauses)


def config_variant(
    path: Path, change: Callable[[dict[str, Any]], None], base: Path = DEMO_CONFIG
) -> Path:
    """Write `base` with `change` applied to `path`; return `path`."""
    config = copy.deepcopy(yaml.safe_load(base.read_text()))
    change(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
