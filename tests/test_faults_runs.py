"""Faults in and around training, against one completed reference run of the workflow.

The reference run (tests/faults_helpers.py) is a local dataset with three injected
problems under `dataset.on_problems: drop`, eager and the CUDA-only sdpa_cudnn, two
seeds, 3 epochs at 64 px. Its two eager train jobs ran at once (`--cores 2`, workers 0);
the rest of the DAG then ran to report.html. Tests that change anything work on a copy.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import html
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
from faults_helpers import (
    LOSS_COLUMNS,
    REFERENCE_SEEDS,
    ReferenceRun,
    clean_env,
    leftovers,
    lines_with,
    read_json,
    reference_run,
    results_table,
    run_all,
    snakemake,
    start_snakemake,
    workdir,
)
from fixtures_runs import FakeSnakemake, NamedList, run_script

from attnbench import config as cfg
from attnbench.backends import registry as backends
from attnbench.train import training
from attnbench.train.settings import TrainSettings, pick

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CUDNN_REASON = "sdpa_cudnn needs a CUDA GPU; this host runs on the CPU"


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> ReferenceRun:
    return reference_run(tmp_path_factory.mktemp("faults-reference"))


def _copy(run: ReferenceRun, dest: Path) -> Path:
    """A copy of the reference working dir, Snakemake's metadata and mtimes included
    (weights left out: nothing here reads them)."""
    shutil.copytree(run.work, dest, symlinks=True, ignore=shutil.ignore_patterns("*.pt"))
    return dest


def read_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def _report_text(path: Path) -> str:
    """report.html as text: tags dropped, entities decoded, whitespace collapsed."""
    text = re.sub(r"<img[^>]*>", "", path.read_text())
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())


def _failed_rows(path: Path) -> list[str]:
    """The text of each `tr.failed` row of the report (runs, availability, parity)."""
    rows = re.findall(r'<tr class="failed">(.*?)</tr>', path.read_text(), flags=re.S)
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", r)).split()) for r in rows]


# --------------------------------------------------------------------------- #
# Dataset problems under the drop policy


def test_drop_policy_completes_and_the_report_shows_the_drops(ref: ReferenceRun) -> None:
    summary = read_json(ref.data_dir / "summary.json")
    assert summary["policy"] == "drop" and summary["dropped"] == 3
    assert {p["kind"]: p["file"] for p in summary["problems"]} == {
        "unreadable_image": ref.dropped["unreadable_image"],
        "class_out_of_range": ref.dropped["class_out_of_range"],
        "coords_out_of_range": ref.dropped["coords_out_of_range"],
    }
    assert summary["splits"]["train"]["images"] == 12 - 3
    kept = (ref.data_dir / "train.txt").read_text()
    for file in ref.dropped.values():
        assert Path(file).stem not in kept  # the image of each bad file is left out
    report = _report_text(ref.results / "report.html")
    assert "policy for problems drop files dropped 3" in report
    assert "Problems found (3 shown)" in report
    for file in ref.dropped.values():
        assert file in report
    runs = [read_json(ref.run_dir("eager", s) / "metrics.json") for s in REFERENCE_SEEDS]
    assert [m["train_images"] for m in runs] == [9, 9]  # training saw only the kept images


# --------------------------------------------------------------------------- #
# Backends that cannot run here


def test_cuda_only_backend_is_skipped_and_reported(ref: ReferenceRun) -> None:
    """Policy skip: metrics.json says unavailable with the reason; the report shows it."""
    for seed in REFERENCE_SEEDS:
        run = ref.run_dir("sdpa_cudnn", seed)
        metrics = read_json(run / "metrics.json")
        assert (metrics["status"], metrics["reason"]) == ("unavailable", CUDNN_REASON)
        assert (run / "results.csv").read_text() == ""
        assert not (run / "ultralytics").exists()  # nothing was trained under its name
    report = ref.results / "report.html"
    text = _report_text(report)
    assert f"sdpa_cudnn: unavailable for seed(s) 0, 1 ({CUDNN_REASON})." in text
    failed = _failed_rows(report)
    assert sum(row.startswith("sdpa_cudnn") and CUDNN_REASON in row for row in failed) >= 2
    assert not [row for row in failed if row.startswith("eager")]


@pytest.fixture(scope="module")
def fail_policy(ref: ReferenceRun, tmp_path_factory: pytest.TempPathFactory):
    """The reference copied, `train.on_unavailable: fail`, and the sdpa_cudnn job run."""
    work = _copy(ref, tmp_path_factory.mktemp("fail-policy") / "work")
    overrides = read_yaml(work / "faults.yaml")
    overrides["train"]["on_unavailable"] = "fail"
    workdir(work, overrides)
    target = "results/train/sdpa_cudnn/seed0/metrics.json"
    return work, snakemake(work, "--cores", "1", target, timeout=300)


def test_cuda_only_backend_fails_the_job_when_asked(fail_policy) -> None:
    """Policy fail: the job ends with one line naming the backend, the reason and the
    setting; no metrics.json or results.csv is left for a rerun to trust."""
    work, result = fail_policy
    out = result.stdout
    assert result.returncode != 0, out[-3000:]
    assert "Error in rule train" in out
    expected = f"Error: {CUDNN_REASON} (train.on_unavailable = fail)"
    assert lines_with(out, "Error: ") == [expected], out[-3000:]
    assert "Traceback" not in out
    run = work / "results" / "train" / "sdpa_cudnn" / "seed0"
    assert not (run / "metrics.json").exists() and not (run / "results.csv").exists()
    log = (work / "results" / "logs" / "train" / "sdpa_cudnn" / "seed0.log").read_text()
    assert f"ERROR attnbench: {CUDNN_REASON} (train.on_unavailable = fail)" in log


def test_unavailable_backend_under_fail_policy_ends_the_job_with_one_line(tmp_path: Path) -> None:
    """Regression: under train.on_unavailable: fail, the train job ended in a traceback
    (BackendUnavailableError was not a UserError) instead of one line naming the reason."""
    train = cfg.validate({"train": {"device": "cpu", "on_unavailable": "fail"}})["train"]
    run = tmp_path / "results" / "train" / "sdpa_cudnn" / "seed0"
    job = FakeSnakemake(
        input=NamedList(data_yaml=str(tmp_path / "never-read.yaml")),
        output=NamedList(metrics=str(run / "metrics.json"), results=str(run / "results.csv")),
        params=NamedList(
            train=cfg.canonical(pick(train, TrainSettings.KEYS)), device=train["device"]
        ),
        log=NamedList([str(tmp_path / "train.log")]),
        wildcards=NamedList(backend="sdpa_cudnn", seed="0"),
        resources=NamedList(gpu=0),
        scriptdir=str(REPO / "scripts"),
    )
    with pytest.raises(SystemExit) as exit_info:
        run_script(REPO / "scripts" / "train.py", job)
    assert str(exit_info.value) == f"Error: {CUDNN_REASON} (train.on_unavailable = fail)"
    assert "Traceback" not in (tmp_path / "train.log").read_text()
    assert not run.exists()


@pytest.fixture(scope="module")
def flash_attn_missing(ref: ReferenceRun, tmp_path_factory: pytest.TempPathFactory):
    """flash_attn as on a GPU host without the package: its registry entry is allowed on
    the CPU here, so that the package check (not the device check) is what refuses."""
    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash_attn is installed here; this case needs it missing")
    entry = backends.REGISTRY["flash_attn"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(backends.REGISTRY, "flash_attn", dataclasses.replace(entry, devices=("cpu",)))
        yield tmp_path_factory.mktemp("flash-attn-missing")


def _train_job(ref: ReferenceRun, backend: str, seed: int, root: Path, **train) -> FakeSnakemake:
    """The train rule's script inputs for one run under `root`, as rules/train.smk wires them."""
    config = cfg.validate(read_yaml(ref.work / "faults.yaml"))
    settings = cfg.effective_train(config, cfg.DatasetChoice("local", ref.data_dir.name, "test"))
    settings.update(train)
    run = root / "results" / "train" / backend / f"seed{seed}"
    return FakeSnakemake(
        input=NamedList(
            data_yaml=str(ref.data_dir / "data.yaml"),
            summary=str(ref.data_dir / "summary.json"),
            flash_attn=str(ref.results / "env" / "flash_attn.json"),
        ),
        output=NamedList(metrics=str(run / "metrics.json"), results=str(run / "results.csv")),
        params=NamedList(
            train=cfg.canonical(pick(settings, TrainSettings.KEYS)), device=settings["device"]
        ),
        log=NamedList([str(root / "results" / "logs" / "train" / backend / f"seed{seed}.log")]),
        wildcards=NamedList(backend=backend, seed=str(seed)),
        resources=NamedList(gpu=0),
        scriptdir=str(REPO / "scripts"),
        config=config,  # the script reads the run order's design from it
    )


FLASH_REASON = "flash_attn needs the 'flash_attn' package, which is not installed"


def test_flash_attn_missing_is_skipped_with_the_reason(ref, flash_attn_missing) -> None:
    job = _train_job(ref, "flash_attn", 0, flash_attn_missing, on_unavailable="skip")
    run_script(REPO / "scripts" / "train.py", job)
    metrics = read_json(Path(job.output.metrics))
    assert metrics["status"] == "unavailable"
    assert metrics["reason"].startswith(FLASH_REASON) and "build_flash_attn" in metrics["reason"]
    assert Path(job.output.results).read_text() == ""


def test_flash_attn_missing_fails_the_job_when_asked(ref, flash_attn_missing, tmp_path) -> None:
    job = _train_job(ref, "flash_attn", 0, tmp_path, on_unavailable="fail")
    with pytest.raises(SystemExit) as exit_info:
        run_script(REPO / "scripts" / "train.py", job)
    message = str(exit_info.value)
    assert message.startswith(f"Error: {FLASH_REASON}") and "\n" not in message
    assert message.endswith("(train.on_unavailable = fail)")
    assert not Path(job.output.metrics).exists() and not Path(job.output.results).exists()
    assert "Traceback" not in Path(job.log[0]).read_text()


# --------------------------------------------------------------------------- #
# Two train jobs at once


def _interval(metrics: dict) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(metrics["started"]), datetime.fromisoformat(metrics["finished"])


def test_two_train_jobs_ran_at_once(ref: ReferenceRun) -> None:
    """The reference's eager jobs overlapped in time: --cores 2 with one thread each."""
    assert "Execute 2 jobs..." in ref.trains.stdout
    (start0, end0), (start1, end1) = (
        _interval(read_json(ref.run_dir("eager", s) / "metrics.json")) for s in REFERENCE_SEEDS
    )
    assert max(start0, start1) < min(end0, end1), "the two train jobs did not overlap"
    threads = [read_json(ref.run_dir("eager", s) / "metrics.json")["torch_threads"] for s in (0, 1)]
    assert threads == [1, 1]  # threads: workers + 1 = 1, so both fit on two cores


# --------------------------------------------------------------------------- #
# Out of memory


OOM_MESSAGE = "CUDA out of memory. Tried to allocate 2.00 GiB"


@pytest.fixture(scope="module")
def oom_run(ref: ReferenceRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """eager seed 5 whose attention raises torch.OutOfMemoryError on its 3rd call of epoch 2
    (the registry entry is swapped for the run); outputs written as the train rule does."""
    calls = {"epoch": 0, "n": 0}
    entry = backends.REGISTRY["eager"]

    def attention(q, k, v):
        if calls["epoch"] == 2 and torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 3:
                raise torch.OutOfMemoryError(OOM_MESSAGE)
        return entry.fn(q, k, v)

    stock_epoch_start = training.RunRecorder.on_train_epoch_start

    def on_train_epoch_start(self, trainer) -> None:
        calls["epoch"] += 1
        stock_epoch_start(self, trainer)

    root = tmp_path_factory.mktemp("oom")
    job = _train_job(ref, "eager", 5, root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(backends.REGISTRY, "eager", dataclasses.replace(entry, fn=attention))
        mp.setattr(training.RunRecorder, "on_train_epoch_start", on_train_epoch_start)
        run_script(REPO / "scripts" / "train.py", job)
    assert calls["n"] == 3, "the forced OOM never fired"
    return Path(job.output.metrics).parent


def test_oom_is_recorded_as_status_oom(oom_run: Path) -> None:
    metrics = read_json(oom_run / "metrics.json")
    assert metrics["status"] == "oom"
    assert metrics["reason"] == f"out of memory: {OOM_MESSAGE}"
    assert metrics["epochs_done"] == 1 and metrics["batch_used"] == 4  # no silent batch halving
    columns, rows = results_table(oom_run / "results.csv")
    assert "train/box_loss" in columns and [r["epoch"] for r in rows] == ["1"]


def test_aggregate_and_report_render_with_failed_runs(
    ref: ReferenceRun, oom_run: Path, flash_attn_missing: Path, tmp_path: Path
) -> None:
    """The reference's runs plus the OOM run and the missing-flash_attn run go through the
    real aggregate, plots and report scripts; both show as failed, neither enters a mean."""
    runs = [ref.run_dir(b, s) for b in ("eager", "sdpa_cudnn") for s in REFERENCE_SEEDS]
    flash = flash_attn_missing / "results" / "train" / "flash_attn" / "seed0"
    if not (flash / "metrics.json").exists():  # the skip test did not run first
        run_script(
            REPO / "scripts" / "train.py",
            _train_job(ref, "flash_attn", 0, flash_attn_missing, on_unavailable="skip"),
        )
    runs += [oom_run, flash]
    out = tmp_path / "results"
    tables = {n: out / "tables" / f"{n}.csv" for n in ("runs", "summary", "comparisons")}
    tables |= {n: out / "tables" / f"{n}.csv" for n in ("epochs", "kernels", "parity")}
    plots = {n: out / "plots" / f"{n}.png" for n in ("curves", "epoch_time", "memory")}
    plots |= {n: out / "plots" / f"{n}.png" for n in ("speed_memory", "kernels")}
    scripts = REPO / "scripts"
    config = cfg.validate(read_yaml(ref.work / "faults.yaml"))
    config["backends"] = ["eager", "sdpa_cudnn", "flash_attn"]
    analysis = cfg.canonical({"analysis": config["analysis"]})
    common = {"scriptdir": str(scripts)}
    run_script(
        scripts / "aggregate.py",
        FakeSnakemake(
            input=NamedList(
                metrics=[str(r / "metrics.json") for r in runs],
                results=[str(r / "results.csv") for r in runs],
                parity=sorted(str(p) for p in (ref.results / "parity").glob("*.csv")),
                kernels=sorted(str(p) for p in (ref.results / "kernels").glob("*.csv")),
                backends=str(ref.results / "env" / "backends.json"),
            ),
            output=NamedList(**{n: str(p) for n, p in tables.items()}),
            params=NamedList(analysis=analysis),
            log=NamedList([str(out / "logs" / "aggregate.log")]),
            **common,
        ),
    )
    run_script(
        scripts / "plots.py",
        FakeSnakemake(
            input=NamedList(
                **{n: str(tables[n]) for n in ("runs", "epochs", "kernels", "summary")}
            ),
            output=NamedList(**{n: str(p) for n, p in plots.items()}),
            params=NamedList(baseline="eager"),
            log=NamedList([str(out / "logs" / "plots.log")]),
            **common,
        ),
    )
    report = out / "report.html"
    run_script(
        scripts / "render_report.py",
        FakeSnakemake(
            input=NamedList(
                tables=[str(p) for p in tables.values()],
                plots=[str(p) for p in plots.values()],
                backends=str(ref.results / "env" / "backends.json"),
                dataset=str(ref.data_dir / "summary.json"),
                template=str(REPO / "report" / "report.html.j2"),
            ),
            output=NamedList([str(report)]),
            params=NamedList(
                **cfg.keyed("train", config["train"]),
                title="faults",
                config=cfg.digest(config),
                dataset_reason="dataset.source = local",
            ),
            log=NamedList([str(out / "logs" / "report.log")]),
            config=config,
            **common,
        ),
    )
    import pandas as pd

    table = pd.read_csv(tables["runs"])
    status = {
        (b, s): st for b, s, st in table[["backend", "seed", "status"]].itertuples(index=False)
    }
    assert status[("eager", 5)] == "oom" and status[("flash_attn", 0)] == "unavailable"
    assert status[("eager", 0)] == status[("eager", 1)] == "ok"
    summary = pd.read_csv(tables["summary"])
    eager = summary[(summary["backend"] == "eager") & (summary["metric"] == "mAP50_95")].iloc[0]
    assert (eager["runs"], eager["runs_ok"], eager["n"]) == (3, 2, 2)  # the OOM run is out
    assert all(p.stat().st_size > 0 for p in plots.values())
    failed = _failed_rows(report)
    assert [r for r in failed if r.startswith("eager 5 oom") and OOM_MESSAGE in r]
    assert [r for r in failed if r.startswith("flash_attn") and FLASH_REASON in r]
    text = _report_text(report)
    assert f"eager: oom for seed(s) 5 (out of memory: {OOM_MESSAGE})." in text


# --------------------------------------------------------------------------- #
# results/ full, read-only, or not a folder


def _mount(args: list[str]) -> str | None:
    """Run mount(8); None on success, else why not (then the case is skipped)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return "needs root and mount(8)"
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    return None if done.returncode == 0 else f"mount failed: {done.stderr.strip()}"


@pytest.fixture(scope="module")
def unwritable(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The demo's data stage with results/ on a 48 KiB tmpfs, on a read-only bind mount,
    and as a regular file; all three CLIs at once. Mounts are undone afterwards."""
    base = tmp_path_factory.mktemp("unwritable")
    demo = {"dataset": {"source": "demo"}}
    works = {name: workdir(base / name, demo) for name in ("full", "read-only", "file")}
    (works["file"] / "results").write_text("not a folder\n")
    skipped, mounted = {}, []
    (works["full"] / "results").mkdir()
    skipped["full"] = _mount(
        ["-t", "tmpfs", "-o", "size=48k", "tmpfs", str(works["full"] / "results")]
    )
    readonly = works["read-only"] / "results"
    readonly.mkdir()
    (base / "ro-source").mkdir()
    skipped["read-only"] = _mount(["--bind", str(base / "ro-source"), str(readonly)]) or _mount(
        ["-o", "remount,bind,ro", str(readonly)]
    )
    mounted = [works[n] / "results" for n in ("full", "read-only") if not skipped[n]]
    target = ("--cores", "1", "results/data/demo/summary.json")
    jobs = {n: (w, target, clean_env()) for n, w in works.items() if not skipped.get(n)}
    try:
        done = run_all(jobs, timeout=240)
        yield {n: (*done[n], works[n]) if n in done else skipped[n] for n in works}
    finally:
        for path in mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


def _case(unwritable: dict, name: str) -> tuple[int, str, Path]:
    outcome = unwritable[name]
    if isinstance(outcome, str):
        pytest.skip(outcome)
    return outcome


def test_disk_full_fails_the_job_and_leaves_no_dataset(unwritable) -> None:
    rc, out, work = _case(unwritable, "full")
    assert rc != 0
    assert "Error in rule fetch_dataset" in out
    assert "OSError: [Errno 28] No space left on device" in out
    data = work / "results" / "data" / "demo"
    assert not (data / "source").exists() and not (data / "summary.json").exists()
    assert leftovers(work / "results") == []  # the staging folder went with the failure


def test_read_only_results_is_refused_before_the_job_runs(unwritable) -> None:
    rc, out, work = _case(unwritable, "read-only")
    assert rc != 0
    assert "Failed to create output directory results/data/demo." in out
    assert "Read-only file system" in out
    assert "fetching dataset" not in out  # the job's script never started
    assert list((work / "results").iterdir()) == []


def test_results_that_is_a_file_is_refused(unwritable) -> None:
    rc, out, work = _case(unwritable, "file")
    assert rc != 0
    assert "NotADirectoryError: [Errno 20] Not a directory: 'results'" in out
    assert "Execute" not in out  # refused while building the DAG
    assert (work / "results").read_text() == "not a folder\n"


# --------------------------------------------------------------------------- #
# A train job killed mid-epoch, then the rerun


def _descendants_running(proc: subprocess.Popen, suffix: str) -> list[psutil.Process]:
    with contextlib.suppress(psutil.NoSuchProcess):
        return [
            p
            for p in psutil.Process(proc.pid).children(recursive=True)
            if any(arg.endswith(suffix) for arg in p.cmdline())
        ]
    return []


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        if proc.poll() is not None:
            raise AssertionError(f"snakemake exited ({proc.returncode}) before {text!r}")
        time.sleep(0.02)
    raise AssertionError(f"no {text!r} in {path} after {timeout} s")


def _incomplete_markers(work: Path) -> list[str]:
    """Outputs Snakemake has marked incomplete (.snakemake/incomplete/<base64 of the path>)."""
    folder = work / ".snakemake" / "incomplete"
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    return sorted(base64.b64decode(name).decode() for name in names)


def _kill_and_rerun(ref: ReferenceRun, base: Path) -> dict:
    """In a copy of the reference, eager seed 0 is run again and:
    A. its train process SIGKILLed right after epoch 1 (in epoch 2 of 3): Snakemake lives on;
    B. then run again and the whole session (Snakemake too) SIGKILLed as the job starts,
       as a power cut would, then `snakemake --unlock`;
    then rerun with --rerun-incomplete, which also trains seed 1 afresh, one job at a time
    (--cores 1), for the comparison with the reference's two-at-once jobs."""
    work = _copy(ref, base / "work")
    run = work / "results" / "train" / "eager" / "seed0"
    log = work / "results" / "logs" / "train" / "eager" / "seed0.log"
    log.unlink()
    target = "results/train/eager/seed0/metrics.json"
    outputs = [target, "results/train/eager/seed0/results.csv"]
    proc = start_snakemake(work, "--cores", "1", "--forcerun", target, target)
    try:
        _wait_for(log, "epoch 1/3 of eager", proc)
        victims = _descendants_running(proc, ".train.py")
        for victim in victims:
            victim.send_signal(signal.SIGKILL)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    state = {
        "work": work,
        "outputs": outputs,
        "victims": len(victims),
        "rc": proc.returncode,
        "out": (work / "snakemake.out").read_text(),
        "partial_rows": len(results_table(run / "ultralytics" / "results.csv")[1]),
        "checkpoint": (run / "ultralytics" / "weights" / "last.pt").is_file(),
        "outputs_left": [p.name for p in run.iterdir() if p.is_file()],
        "incomplete": _incomplete_markers(work),
        "summary": snakemake(work, "--summary", target).stdout,
    }
    # B: the whole session dies once the job has started.
    proc = start_snakemake(work, "--cores", "1", target, log=work / "session.out")
    deadline = time.monotonic() + 120
    while not _descendants_running(proc, ".train.py") and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    state["session_incomplete"] = _incomplete_markers(work)
    state["session_outputs_left"] = [p.name for p in run.iterdir() if p.is_file()]
    # Its lock stays too: the next run refuses until `snakemake --unlock`.
    state["locks"] = sorted(p.name for p in (work / ".snakemake" / "locks").glob("*.lock"))
    state["locked_run"] = snakemake(work, "--cores", "1", target) if state["locks"] else None
    state["unlock"] = snakemake(work, "--unlock")
    (run / "ultralytics" / "left-by-the-killed-run").write_text("stale\n")
    seed1 = "results/train/eager/seed1/metrics.json"
    rerun = snakemake(
        work, "--cores", "1", "--rerun-incomplete", "--forcerun", seed1, target, seed1, timeout=300
    )
    state.update(
        rerun=rerun,
        marker=(run / "ultralytics" / "left-by-the-killed-run").exists(),
        rerun_incomplete=_incomplete_markers(work),
    )
    return state


class _Background(threading.Thread):
    """`fn(*args)` on a thread; `result()` waits for it and re-raises what it raised."""

    def __init__(self, fn, *args) -> None:
        super().__init__(daemon=True)
        self._call = (fn, args)
        self._value: Any = None
        self._error: BaseException | None = None

    def run(self) -> None:
        fn, args = self._call
        try:
            self._value = fn(*args)
        except BaseException as exc:  # handed to the test that asks for the result
            self._error = exc

    def result(self, timeout: float = 600) -> Any:
        self.join(timeout)
        if self.is_alive():
            raise AssertionError(f"the kill scenario did not end within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._value


@pytest.fixture(scope="module", autouse=True)
def killed(ref: ReferenceRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Background]:
    """The kill scenario, started on a thread once the reference exists: it is mostly
    waiting on one-core jobs, so the module's other tests use the second core meanwhile.
    Its own tests come last."""
    task = _Background(_kill_and_rerun, ref, tmp_path_factory.mktemp("killed"))
    task.start()
    yield task
    task.join(timeout=600)


def test_kill_mid_epoch_fails_the_job_and_leaves_nothing_trusted(killed) -> None:
    """A: Snakemake sees the job die, reports it, and deletes its outputs (none were
    written: metrics.json and results.csv come last); --summary plans it again."""
    killed = killed.result()
    assert killed["victims"] == 1
    assert killed["rc"] != 0
    assert "died with <Signals.SIGKILL: 9>" in killed["out"]
    assert "Error in rule train" in killed["out"]
    # Killed in epoch 2 of 3: Ultralytics had saved epoch 1 (a checkpoint a resume could use).
    assert killed["partial_rows"] == 1 and killed["checkpoint"]
    assert killed["outputs_left"] == []
    assert killed["incomplete"] == []  # a failure Snakemake saw is cleaned up, not "incomplete"
    summary = [line.split("\t") for line in killed["summary"].splitlines() if "\t" in line]
    status = {row[0]: row[-2:] for row in summary}
    for output in killed["outputs"]:
        assert status[output] == ["missing", "update pending"]


def test_killed_session_leaves_the_job_marked_incomplete(killed) -> None:
    """B: when Snakemake dies with its job, the outputs stay marked incomplete until a rerun."""
    killed = killed.result()
    assert killed["session_incomplete"] == sorted(killed["outputs"])
    assert killed["session_outputs_left"] == []
    if killed["locked_run"] is not None:  # the lock of the dead session blocks a plain rerun
        assert killed["locked_run"].returncode != 0
        assert "LockException" in killed["locked_run"].stdout
        assert "It can be removed with the --unlock argument." in killed["locked_run"].stdout
    assert killed["unlock"].returncode == 0, killed["unlock"].stdout[-2000:]
    assert killed["rerun_incomplete"] == []  # the rerun cleared the marks


def test_rerun_restarts_cleanly_and_matches_an_uninterrupted_run(killed, ref) -> None:
    """The rerun deletes the killed run's ultralytics/ and trains from scratch (no resume):
    same metrics.json keys, results.csv columns and losses as the reference run."""
    killed = killed.result()
    rerun = killed["rerun"]
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert not killed["marker"], "the killed run's ultralytics/ folder was reused"
    run = killed["work"] / "results" / "train" / "eager" / "seed0"
    metrics = read_json(run / "metrics.json")
    reference = read_json(ref.run_dir("eager", 0) / "metrics.json")
    assert metrics["status"] == "ok" and metrics["epochs_done"] == 3
    assert len(metrics["epoch_times_s"]) == 3  # all three epochs ran in this process
    assert sorted(metrics) == sorted(reference)
    columns, rows = results_table(run / "results.csv")
    ref_columns, ref_rows = results_table(ref.run_dir("eager", 0) / "results.csv")
    assert columns == ref_columns and [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert [[r[c] for c in LOSS_COLUMNS] for r in rows] == [
        [r[c] for c in LOSS_COLUMNS] for r in ref_rows
    ]


def test_two_at_once_gives_the_same_losses_as_one_at_a_time(killed, ref) -> None:
    """Seed 1 trained alone (--cores 1) repeats the reference's two-at-once run exactly."""
    killed = killed.result()
    rerun = killed["rerun"]
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert "Execute 2 jobs..." not in rerun.stdout
    alone = killed["work"] / "results" / "train" / "eager" / "seed1"
    together = ref.run_dir("eager", 1)
    first, second = (
        _interval(read_json(alone.parent / f"seed{s}" / "metrics.json")) for s in (0, 1)
    )
    assert first[1] <= second[0] or second[1] <= first[0], "--cores 1 ran them at once"
    (columns, rows), (ref_columns, ref_rows) = (
        results_table(p / "results.csv") for p in (alone, together)
    )
    assert columns == ref_columns and len(rows) == len(ref_rows) == 3
    for row, ref_row in zip(rows, ref_rows, strict=True):
        assert [row[c] for c in LOSS_COLUMNS] == [ref_row[c] for c in LOSS_COLUMNS]
        assert all(float(row[c]) > 0 for c in ("train/box_loss", "train/cls_loss"))
