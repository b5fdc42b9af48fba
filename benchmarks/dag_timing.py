"""How long Snakemake takes here: planning the default DAG, a no-op rerun, and the demo end to end.

Runs the real CLI with the DEFAULT config.yaml in a scratch directory (without
ROBOFLOW_API_KEY, so `dataset.source: auto` falls back to the demo and CUDA-only
backends are recorded as unavailable on a CPU host), then prints a table, the time
per rule from the run's own records, and (with --write) fills docs/BENCHMARKS.md.

    python benchmarks/dag_timing.py --cores 2 --write
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from workflow_helpers import job_stats, output_of, prepare_workdir, snakemake  # noqa: E402

DOC = REPO / "docs" / "BENCHMARKS.md"
TARGETS = {"dry_run": 2.0, "noop": 2.0, "demo": 600.0}


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    model = None
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    import snakemake as sm
    import torch

    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": model or platform.processor() or "unknown",
        "python": platform.python_version(),
        "snakemake": sm.__version__,
        "torch": torch.__version__,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }


def busy_cpu_seconds() -> float:
    """CPU seconds this machine has been busy (all processes), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    ticks = sum(fields[:8]) - fields[3] - fields[4]  # everything but idle and iowait
    return ticks / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Timing:
    """One command: wall s, CPU s of its process tree, CPU s that other processes took meanwhile."""

    wall: float
    cpu: float
    others: float


def timed(workdir: Path, *args: str, timeout_s: float = 600) -> tuple[Timing, str]:
    """Time one Snakemake command (default config); return the timing and its output."""
    busy, own = busy_cpu_seconds(), children_cpu_seconds()
    start = time.perf_counter()
    result = snakemake(workdir, *args, configfile=None, timeout_s=timeout_s)
    wall = time.perf_counter() - start
    cpu = children_cpu_seconds() - own
    return Timing(wall, cpu, max(0.0, busy_cpu_seconds() - busy - cpu)), output_of(result)


def repeat(workdir: Path, n: int, *args: str) -> list[Timing]:
    return [timed(workdir, *args)[0] for _ in range(n)]


def wait_quiet(limit_s: float, threshold: float = 0.5) -> float:
    """Wait (up to limit_s) until the 1-min load average is below threshold; return it."""
    deadline = time.monotonic() + limit_s
    while os.getloadavg()[0] >= threshold and time.monotonic() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


def job_seconds(output: str) -> list[tuple[str, str, float]]:
    """(rule, job id, wall s) of each job, from the run's start and finish stamps (1 s resolution)."""
    stamp = r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]\n"
    starts, ends, rules = {}, {}, {}
    for when, body in re.findall(stamp + r"((?:(?!^\[).*\n?)*)", output, re.M):
        moment = datetime.strptime(re.sub(" +", " ", when), "%a %b %d %H:%M:%S %Y")
        started = re.match(r"(?:local)?rule (\w+):[\s\S]*?^\s+jobid: (\d+)", body, re.M)
        if started:
            rules[started.group(2)] = started.group(1)
            starts[started.group(2)] = moment
        finished = re.match(r"Finished jobid: (\d+) \(Rule: (\w+)\)", body)
        if finished:
            ends[finished.group(1)] = moment
    return [(rules[j], j, (ends[j] - starts[j]).total_seconds()) for j in starts if j in ends]


def benchmark_tsvs(workdir: Path) -> dict[str, list[float]]:
    """Seconds per job from the rules' `benchmark:` files, grouped by rule (folder name)."""
    root = workdir / "results" / "benchmarks"
    by_rule: dict[str, list[float]] = defaultdict(list)
    names = {"data": "fetch_dataset", "env": "build_flash_attn", "kernels": "kernel_bench"}
    for tsv in sorted(root.rglob("*.tsv")):
        parts = tsv.relative_to(root).parts
        rule = names.get(parts[0], parts[0])
        if parts[0] == "analysis":
            rule = tsv.stem
        with tsv.open(newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                by_rule[rule].append(float(row["s"]))
    return by_rule


def per_rule_table(output: str, tsvs: dict[str, list[float]]) -> list[dict[str, object]]:
    """One row per rule: jobs, summed and longest job seconds (benchmark TSV where the rule has one)."""
    walls: dict[str, list[float]] = defaultdict(list)
    for rule, _, seconds in job_seconds(output):
        walls[rule].append(seconds)
    rows = []
    for rule in sorted(walls, key=lambda r: -sum(tsvs.get(r) or walls[r])):
        seconds = tsvs.get(rule) or walls[rule]
        rows.append(
            {
                "rule": rule,
                "jobs": len(walls[rule]),
                "sum_s": sum(seconds),
                "max_s": max(seconds),
                "source": "benchmark TSV" if rule in tsvs else "log stamps (1 s)",
            }
        )
    return rows


def epoch_loops(workdir: Path) -> tuple[int, float]:
    """Trained runs and the seconds their Ultralytics epoch loops took (metrics.json)."""
    loops = []
    for path in (workdir / "results" / "train").glob("*/seed*/metrics.json"):
        metrics = json.loads(path.read_text())
        if metrics.get("status") == "ok" and metrics.get("epoch_loop_s"):
            loops.append(metrics["epoch_loop_s"])
    return len(loops), sum(loops)


def _row(label: str, runs: list[Timing], nproc: int, target: str, key: str | None) -> str:
    walls = [t.wall for t in runs]
    median = statistics.median(walls)
    verdict = ("met" if median <= TARGETS[key] else "**missed**") if key else ""
    others = sum(t.others for t in runs) / sum(t.wall * nproc for t in runs) * 100
    spread = f"{min(walls):.2f}-{max(walls):.2f} s" if len(runs) > 1 else ""
    return (
        f"| {label} | {median:.2f} s | {spread} | {len(runs)} | "
        f"{statistics.median(t.cpu for t in runs):.2f} s | {others:.0f} % | {target} | {verdict} |"
    )


def markdown(info: dict, results: dict, rules: list[dict], stats: dict[str, int], cmd: str) -> str:
    nproc, cores = int(info["nproc"]), results["cores"]
    demo = results["demo"]
    lines = [
        f"Measured {info['date']} on {info['nproc']} cores ({info['cpu']}), Python {info['python']}, "
        f"Snakemake {info['snakemake']}, torch {info['torch']}, CPU only, with `{cmd}`.",
        "",
        "| measurement | wall, median | range | n | CPU s of its processes | CPU taken by "
        "other work meanwhile | target | |",
        "|---|---|---|---|---|---|---|---|",
        _row(
            f"`snakemake -n`, default DAG ({sum(results['dag_jobs'].values())} jobs)",
            results["dry_run"],
            nproc,
            "≤ 2 s",
            "dry_run",
        ),
        _row(
            f"no-op rerun after the demo (`snakemake --cores {cores}`)",
            results["noop"],
            nproc,
            "≤ 2 s",
            "noop",
        ),
        _row(
            f"demo end to end, default config (`snakemake --cores {cores}`): "
            f"{demo.wall / 60:.1f} min",
            [demo],
            nproc,
            "≤ 10 min",
            "demo",
        ),
        _row("for scale: `snakemake --version`", results["version"], nproc, "", None),
        "",
        '"CPU taken by other work" is the machine\'s busy CPU time (/proc/stat) not spent by '
        f"the measured command, as a share of {nproc} cores x its wall time: other sessions "
        "share this machine, and where that share is large the wall times are inflated. "
        "Python plus Snakemake's own start-up (`--version`) is most of every `-n` and no-op.",
        "",
        "Jobs of the demo run: " + ", ".join(f"{r} {n}" for r, n in stats.items()) + ".",
        "",
        "Where the demo's time goes (job seconds; jobs overlap on "
        f"{cores} cores, so the sum exceeds the wall time):",
        "",
        "| rule | jobs | sum of job s | longest job s | from |",
        "|---|---|---|---|---|",
        *(
            f"| {r['rule']} | {r['jobs']} | {r['sum_s']:.1f} | {r['max_s']:.1f} | {r['source']} |"
            for r in rules
        ),
        "",
        f"Of the train jobs' time, {results['loops'][0]} runs spent {results['loops'][1]:.1f} s "
        "in Ultralytics' epoch loops (metrics.json `epoch_loop_s`); the rest of each job is "
        "process start, imports, model build, provenance profiling and the final validation.",
    ]
    return "\n".join(lines)


def write_section(doc: Path, name: str, body: str) -> None:
    """Replace the text between `<!-- name:begin -->` and `<!-- name:end -->` in `doc`."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = doc.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{doc} has no {begin} ... {end} section to fill")
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    doc.write_text(f"{head}{begin}\n{body}\n{end}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--write", action="store_true", help=f"fill the numbers in {DOC}")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="S",
        help="before each phase, wait up to S seconds for the 1-min load average to drop below 0.5",
    )
    args = parser.parse_args(argv)

    workdir = prepare_workdir(args.workdir or Path(tempfile.mkdtemp(prefix="attnbench-dag-")))
    cores = ("--cores", str(args.cores))
    info = machine()
    print(f"machine: {info['nproc']} cores, {info['cpu']}; scratch {workdir}", flush=True)
    try:
        results: dict = {"cores": args.cores}
        wait_quiet(args.wait_quiet)
        results["version"] = [
            _timed_cmd([sys.executable, "-m", "snakemake", "--version"])
            for _ in range(args.repeats)
        ]
        results["dag_jobs"] = job_stats(timed(workdir, "-n", *cores)[1])  # also warms caches
        results["dry_run"] = repeat(workdir, args.repeats, "-n", *cores)
        print(f"snakemake -n: median {statistics.median(t.wall for t in results['dry_run']):.2f} s")
        wait_quiet(args.wait_quiet)
        results["demo"], output = timed(workdir, *cores, timeout_s=3600)
        print(f"demo end to end: {results['demo'].wall:.1f} s", flush=True)
        wait_quiet(args.wait_quiet)
        results["noop"] = repeat(workdir, args.repeats, *cores)
        noop_text = timed(workdir, "-n", *cores)[1]
        if "Nothing to be done" not in noop_text:
            raise SystemExit(f"the rerun after the demo is not a no-op:\n{noop_text[-3000:]}")
        rules = per_rule_table(output, benchmark_tsvs(workdir))
        stats = job_stats(output)
        results["loops"] = epoch_loops(workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    cmd = " ".join(["python benchmarks/dag_timing.py", *(sys.argv[1:] if argv is None else argv)])
    body = markdown(info, results, rules, stats, cmd)
    print(body)
    if args.write:
        write_section(DOC, "dag_timing", body)
        print(f"wrote {DOC.relative_to(REPO)}")
    return 0


def _timed_cmd(cmd: list[str]) -> Timing:
    busy, own = busy_cpu_seconds(), children_cpu_seconds()
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - start
    cpu = children_cpu_seconds() - own
    return Timing(wall, cpu, max(0.0, busy_cpu_seconds() - busy - cpu))


if __name__ == "__main__":
    sys.exit(main())
