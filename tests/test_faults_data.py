"""Dataset faults through the real rules: fetch_dataset (Roboflow) and validate_dataset (local).

tests/test_datasets_roboflow.py covers each Roboflow failure inside the library; here the
same failures go through Snakemake, as a user meets them: the real `snakemake` CLI, the
SDK pointed at tests/roboflow_server.py by API_URL, the key in ROBOFLOW_API_KEY. Each job
must fail with one `Error:` line, the key must appear in no output or log, and the rule's
output folder must not exist afterwards. All CLIs of the module run at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from faults_helpers import (
    clean_env,
    corrupt_image,
    edit_label,
    empty_split,
    leftovers,
    make_dataset,
    run_all,
    snakemake,
    workdir,
)
from roboflow_server import FakeRoboflow, zip_files, zip_folder

pytestmark = pytest.mark.slow

KEY = "faultkey42"
RF = {"workspace": "acme", "project": "weeds", "version": 3, "format": "yolov11"}

# case -> (FakeRoboflow knobs, config overrides of dataset.roboflow, key or None,
#          phrases the one-line error must hold)
ROBOFLOW = {
    # "no key" stops when the DAG is planned, before this rule: tests/test_faults_config.py
    "bad key": ({}, {}, "wrongkey9", ["rejected the API key", "Settings -> API Keys"]),
    "missing project": ({}, {"project": "nope"}, KEY, ["project 'nope' was not found"]),
    "missing version": (
        {},
        {"version": 9},
        KEY,
        ["version 9 of acme/weeds was not found", "versions available: 3"],
    ),
    "server down": ({"down": True}, {}, KEY, ["cannot reach the Roboflow server at http://"]),
    "server hangs": (
        {"hang": "project"},
        {"timeout_s": 1},
        KEY,
        ["did not answer within 1 s while opening project", "timeout_s"],
    ),
    "truncated zip": (
        {"truncate": True},
        {},
        KEY,
        ["truncated download", "run the workflow again"],
    ),
    "zip without data.yaml": (
        {"zip_bytes": zip_files({"train/images/a.jpg": b"x", "README.txt": b"hi"})},
        {},
        KEY,
        ["has no data.yaml", "yolov11"],
    ),
}

# case -> (fault injector returning the damaged file, phrase of the problem)
DATASET = {
    "corrupt image": (lambda root: corrupt_image(root, "train", 1), "unreadable image"),
    "class id out of range": (
        lambda root: edit_label(root, 2, cls=5),
        "line 1: class id 5 out of range 0..1",
    ),
    "coordinates outside [0, 1]": (
        lambda root: edit_label(root, 3, cx=-0.25),
        "line 1: coordinate -0.25 outside [0, 1]",
    ),
    "empty split": (lambda root: empty_split(root, "valid"), "the val split has no images"),
}


def _without_labels(root: Path) -> str:
    shutil.rmtree(root / "valid" / "labels")
    return str(root)


def _nc_three(root: Path) -> str:
    (root / "data.yaml").write_text("nc: 3\nnames: [crop, weed]\n")
    return str(root)


def _zip_with_escape(root: Path) -> str:
    archive = root.parent / f"{root.name}.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            zf.write(path, path.relative_to(root).as_posix())
        zf.writestr("../outside.txt", b"x")
    return str(archive)


# case -> (makes dataset.local from a good dataset, extra dataset settings, the rule that
#          reads it, phrases of the one-line error; None: the run passes)
STAGES = {
    "split without labels": (
        _without_labels,
        {},
        "validate_dataset",
        ["the val split has 3 image(s) and no label file in ", "valid/labels: ",
         "dataset.allow_background_only: true"],
    ),
    "split without labels, allowed": (
        _without_labels, {"allow_background_only": True}, "validate_dataset", None
    ),
    "nc disagrees with names": (
        _nc_three,
        {},
        "fetch_dataset",
        ["data.yaml: nc is 3 but names lists 2 class(es) (crop, weed)", "nc: 2, or 3 names"],
    ),
    "zip entry outside the dataset": (
        _zip_with_escape,
        {},
        "fetch_dataset",
        ["has the entry '../outside.txt' (a '..' part)", "nothing was unpacked"],
    ),
}  # fmt: skip


def _slug(name: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in name).split())


def _roboflow_name(overrides: dict[str, Any]) -> str:
    rf = {**RF, **overrides}
    return f"roboflow-{rf['workspace']}-{rf['project']}-v{rf['version']}"


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Run every case's CLI at once; name -> {rc, out, work, target, ...}."""
    base = tmp_path_factory.mktemp("data-faults")
    good_zip = zip_folder(make_dataset(base / "export", 3, 2, 64))
    jobs: dict[str, tuple[Path, tuple[str, ...], dict[str, str]]] = {}
    info: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        for name, (knobs, overrides, key, _) in ROBOFLOW.items():
            knobs = dict(knobs)
            down = knobs.pop("down", False)
            server = stack.enter_context(
                FakeRoboflow(**{"zip_bytes": good_zip, "key": KEY, **knobs})
            )
            if down:
                server.close_port()
            rf = {**RF, "timeout_s": 10, **overrides}
            work = workdir(base / _slug(name), {"dataset": {"source": "roboflow", "roboflow": rf}})
            target = f"results/data/{_roboflow_name(overrides)}/source"
            env = clean_env(API_URL=server.url, **({"ROBOFLOW_API_KEY": key} if key else {}))
            jobs[name] = (work, ("--cores", "1", target), env)
            info[name] = {"work": work, "target": target, "key": key}
        for name, (inject, _) in DATASET.items():
            root = make_dataset(base / "local" / _slug(name), 8, 3, 64)
            damaged = inject(root)
            work = workdir(
                base / f"validate-{root.name}",
                {"dataset": {"source": "local", "local": str(root), "on_problems": "fail"}},
            )
            data_dir = f"results/data/local-{root.name}"
            jobs[name] = (work, ("--cores", "1", f"{data_dir}/summary.json"), clean_env())
            info[name] = {"work": work, "data_dir": work / data_dir, "damaged": damaged}
        for name, (make, settings, _, _) in STAGES.items():
            root = make_dataset(base / "stages" / _slug(name), 8, 3, 64)
            local = make(root)
            dataset = {"source": "local", "local": local, **settings}
            work = workdir(base / f"stage-{_slug(name)}", {"dataset": dataset})
            data_dir = f"results/data/local-{Path(local).name.removesuffix('.zip')}"
            jobs[name] = (work, ("--cores", "1", f"{data_dir}/summary.json"), clean_env())
            info[name] = {"work": work, "data_dir": work / data_dir, "local": Path(local)}
        for name, (rc, out) in run_all(jobs, timeout=300).items():
            info[name].update(rc=rc, out=out)
    for name in DATASET:
        data_dir = info[name]["data_dir"]
        info[name]["files_after_failure"] = sorted(p.name for p in data_dir.iterdir())
        info[name]["leftovers"] = leftovers(data_dir)
    # The user fixes the reported file, as an editor saves (new file renamed over the old
    # one, so the hard-linked copy under results/ keeps the bad row), and runs again.
    fixed = info["class id out of range"]
    label = Path(jobs["class id out of range"][0]) / "faults.yaml"
    local = Path(yaml.safe_load(label.read_text())["dataset"]["local"]) / fixed["damaged"]
    rows = local.read_text().splitlines()
    rows[0] = " ".join(["0", *rows[0].split()[1:]])
    (local.parent / "saved.tmp").write_text("\n".join(rows) + "\n")
    os.replace(local.parent / "saved.tmp", local)
    work, args, env = jobs["class id out of range"]
    fixed["after_fix"] = snakemake(work, *args, env=env)
    return info


def _error_line(out: str) -> str:
    """The job's one-line message (scriptutil.rule_logging ends a UserError with it)."""
    errors = [line for line in out.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, out[-3000:]
    return errors[0]


@pytest.mark.parametrize("case", list(ROBOFLOW))
def test_roboflow_failure_through_fetch_dataset(outcomes, case: str) -> None:
    """One-line error, no traceback, the key in no output or log, no source folder left."""
    run = outcomes[case]
    work: Path = run["work"]
    assert run["rc"] != 0, run["out"][-3000:]
    assert "Error in rule fetch_dataset" in run["out"]
    line = _error_line(run["out"])
    for phrase in ROBOFLOW[case][3]:
        assert phrase in line, line
    assert "Traceback" not in run["out"]
    target = work / run["target"]
    assert not target.exists()
    assert leftovers(work / "results") == []
    fetch_log = target.parent.relative_to(work / "results" / "data")
    log = work / "results" / "logs" / "data" / fetch_log / "fetch.log"
    assert line.removeprefix("Error: ") in log.read_text()
    if run["key"]:
        texts = [run["out"], log.read_text()]
        texts += [p.read_text() for p in (work / ".snakemake" / "log").glob("*.log")]
        assert not [t for t in texts if run["key"] in t], "the API key leaked"


@pytest.mark.parametrize("case", list(DATASET))
def test_dataset_problem_fails_validate_dataset(outcomes, case: str) -> None:
    """Policy fail: the job fails naming the file and problem; summary.json and data.yaml
    are absent (problems.json lists everything), so no rerun can train on it."""
    run = outcomes[case]
    assert run["rc"] != 0, run["out"][-3000:]
    assert "Error in rule validate_dataset" in run["out"]
    line = _error_line(run["out"])
    assert "1 problem(s) in dataset" in line and "dataset.on_problems: drop" in line, line
    assert f"{run['damaged']}: " in line and DATASET[case][1] in line, line
    assert "Traceback" not in run["out"]
    # source/ is the complete import; only problems.json beside it: no summary.json,
    # data.yaml or image lists that a rerun (or training) could take as validated.
    assert run["files_after_failure"] == ["problems.json", "source"]
    assert run["leftovers"] == []


def test_fixing_a_local_dataset_is_seen_by_the_rerun(outcomes) -> None:
    """Regression: fetch_dataset did not rerun after the user fixed the local dataset, so
    the rerun validated the stale copy and repeated the error for a fixed file. The
    dataset's fingerprint (names, sizes, mtimes) in the rule's params now triggers it."""
    run = outcomes["class id out of range"]
    after = run["after_fix"]
    assert after.returncode == 0, after.stdout[-3000:]
    assert "localrule fetch_dataset" in after.stdout and "Params have changed" in after.stdout
    summary = json.loads((run["data_dir"] / "summary.json").read_text())
    assert summary["problems"] == [] and summary["splits"]["train"]["images"] == 8
    assert not (run["data_dir"] / "problems.json").exists()


@pytest.mark.parametrize("case", [c for c, v in STAGES.items() if v[3] is not None])
def test_dataset_stage_refuses_in_one_line(outcomes, case: str) -> None:
    """Each once passed: labels lost, nc rewritten to fit the names, a zip's `..` entry
    kept inside the dataset. Now the job that meets it fails naming the file or value,
    and leaves no dataset a rerun could trust."""
    run = outcomes[case]
    _, _, rule, phrases = STAGES[case]
    assert run["rc"] != 0, run["out"][-3000:]
    assert f"Error in rule {rule}" in run["out"]
    line = _error_line(run["out"])
    for phrase in phrases:
        assert phrase in line, line
    if rule == "fetch_dataset":
        assert str(run["local"]) in line, line  # the user's folder or zip, not a staging copy
    assert "Traceback" not in run["out"]
    assert not (run["data_dir"] / "summary.json").exists()
    assert leftovers(run["work"] / "results") == []


def test_background_only_split_passes_when_the_config_says_so(outcomes) -> None:
    run = outcomes["split without labels, allowed"]
    assert run["rc"] == 0, run["out"][-3000:]
    summary = json.loads((run["data_dir"] / "summary.json").read_text())
    assert summary["background_only"] == ["val"]
    assert summary["splits"]["val"]["backgrounds"] == summary["splits"]["val"]["images"] == 3
