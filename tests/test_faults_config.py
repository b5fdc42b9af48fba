"""Bad configuration through the real CLI: `snakemake -n --configfile bad.yaml`.

Each case must stop at parse time, before any job: a non-zero exit, exactly one line
that names the key, no traceback, and no results/ folder. The CLIs run concurrently
(they are mostly Snakemake's start-up), once per module.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from faults_helpers import clean_env, lines_with, run_all, workdir
from workflow_helpers import planned_jobs

from attnbench import config
from attnbench.errors import ConfigError

# case -> (overrides in bad.yaml, the key the message must name, a phrase of the fix)
CASES = {
    "unknown backend": ({"backends": ["eager", "nope"]}, "backends.1", "allowed: eager, sdpa"),
    "empty backends": ({"backends": []}, "backends", "list at least 1 item"),
    "seed not an integer": ({"seeds": [0, "a"]}, "seeds.1", "expected integer"),
    "seed a float": ({"seeds": [0, 1.0]}, "seeds.1", "expected integer"),
    "duplicated seeds": ({"seeds": [1, 1]}, "seeds", "remove the duplicate"),
    "epochs zero": ({"train": {"epochs": 0}}, "train.epochs", "minimum 1"),
    "batch negative": ({"train": {"batch": -2}}, "train.batch", "minimum 1"),
    "imgsz not a multiple of 32": ({"train": {"imgsz": 100}}, "train.imgsz", "multiple of 32"),
    "unknown dataset source": ({"dataset": {"source": "ftp"}}, "dataset.source", "allowed: auto"),
    "local path missing": (
        {"dataset": {"source": "local", "local": "/nonexistent/weeds.zip"}},
        "dataset.local",
        "point it at a folder or .zip",
    ),
    "local path empty": ({"dataset": {"source": "local"}}, "dataset.local", "set dataset.local"),
}
ROBOFLOW_NAME = "roboflow-augmented-startups-weeds-nxe1w-v3"  # config.yaml's dataset
MALFORMED = "train:\n  epochs: 3\n   batch: [8\n"  # a bad indent and an unclosed list (line 3)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, Path]]:
    """Every case's (exit code, output, working dir), all CLIs started at once."""
    base = tmp_path_factory.mktemp("config-faults")
    jobs = {}
    for name, (overrides, _, _) in CASES.items():
        work = workdir(base / name.replace(" ", "-"), overrides)
        jobs[name] = (work, ("-n",), clean_env())
    # The same bad value without -n: a real run must not start a single job either.
    real = workdir(base / "real-run", CASES["epochs zero"][0])
    jobs["real run"] = (real, ("--cores", "1"), clean_env())
    control = workdir(base / "control", {"train": {"epochs": 1}, "dataset": {"source": "demo"}})
    jobs["control"] = (control, ("-n",), clean_env())
    # A browser download's name ("weeds (1)") must still make a valid {dataset} wildcard.
    spaced = base / "downloads" / "my weeds (1)"
    spaced.mkdir(parents=True)
    named = workdir(base / "spaced-name", {"dataset": {"source": "local", "local": str(spaced)}})
    jobs["spaced name"] = (named, ("-n",), clean_env())
    malformed = workdir(base / "malformed")
    (malformed / "faults.yaml").write_text(MALFORMED)
    jobs["malformed"] = (malformed, ("-n",), clean_env())
    # The Roboflow key is checked when the DAG is planned: a real run starts no job...
    roboflow = {"dataset": {"source": "roboflow"}}
    for name, args in (("roboflow without key", ("--cores", "1")), ("roboflow -n", ("-n",))):
        jobs[name] = (workdir(base / name.replace(" ", "-"), roboflow), args, clean_env())
    # ... unless the dataset is already there (a report or re-analysis needs no key);
    fetched = workdir(base / "roboflow-fetched", roboflow)
    (fetched / "results" / "data" / ROBOFLOW_NAME / "source").mkdir(parents=True)
    jobs["roboflow fetched"] = (fetched, ("-n",), clean_env())
    # and auto without a key still falls back to the demo.
    auto = workdir(base / "auto-without-key", {"dataset": {"source": "auto"}})
    jobs["auto without key"] = (auto, ("-n",), clean_env())
    done = run_all(jobs, timeout=240)
    return {name: (rc, out, jobs[name][0]) for name, (rc, out) in done.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_value_is_rejected_naming_the_key(outcomes, case: str) -> None:
    """Non-zero exit, one `Config error:` line naming the key and the fix, nothing written."""
    rc, out, work = outcomes[case]
    _, key, fix = CASES[case]
    assert rc != 0, out
    errors = lines_with(out, "Config error:")
    assert len(errors) == 1, out
    assert f"config value {key} " in errors[0] and fix in errors[0], errors[0]
    assert "Traceback" not in out and "Building DAG" not in out
    assert not (work / "results").exists()


def test_real_run_with_a_bad_value_starts_no_job(outcomes) -> None:
    rc, out, work = outcomes["real run"]
    assert rc != 0
    assert len(lines_with(out, "Config error: config value train.epochs = 0")) == 1, out
    assert "Execute" not in out and "localrule" not in out
    assert not (work / "results").exists()
    logged = "".join(p.read_text() for p in (work / ".snakemake").glob("log/*.log"))
    assert "jobid" not in logged and not (work / ".snakemake" / "metadata").exists()


def test_malformed_yaml_is_rejected_by_snakemake(outcomes) -> None:
    """Snakemake parses --configfile itself, before the Snakefile: its message is generic."""
    rc, out, work = outcomes["malformed"]
    assert rc != 0
    assert "WorkflowError" in out
    assert "Config file is not valid JSON or YAML" in out
    assert "Traceback" not in out and "Building DAG" not in out
    assert not (work / "results").exists()


@pytest.mark.xfail(
    strict=True,
    reason="Snakemake 9.27.1 names neither the file nor the line of a malformed --configfile "
    "(snakemake/common/configfile.py); docs/RELIABILITY.md gives the one-line check that does",
)
def test_snakemake_names_the_malformed_file_and_line(outcomes) -> None:
    _, out, work = outcomes["malformed"]
    assert "faults.yaml" in out and "line 3" in out


def test_our_loader_names_the_malformed_file_and_line(tmp_path: Path) -> None:
    """The check RELIABILITY.md points at: attnbench.config.load_file names file and line."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(MALFORMED)
    with pytest.raises(ConfigError) as info:
        config.load_file(bad)
    message = str(info.value)
    assert str(bad) in message and "line 3" in message and "\n" not in message


@pytest.mark.parametrize("case", ["roboflow without key", "roboflow -n"])
def test_roboflow_without_key_stops_before_any_job(outcomes, case: str) -> None:
    """Regression: the missing key was reported by fetch_dataset, after other jobs ran
    (7 jobs in a fresh copy). Now one line when Snakemake plans the DAG, and no job."""
    rc, out, work = outcomes[case]
    assert rc != 0, out[-3000:]
    errors = lines_with(out, "Error: ")
    assert len(errors) == 1, out[-3000:]
    assert errors[0].startswith("Error: ROBOFLOW_API_KEY is not set: set ROBOFLOW_API_KEY")
    assert "dataset.source: demo or local (dataset.source = roboflow)" in errors[0]
    assert "Traceback" not in out and "Building DAG" not in out and "localrule" not in out
    assert not (work / "results").exists()


def test_roboflow_without_key_plans_once_the_dataset_is_fetched(outcomes) -> None:
    rc, out, _ = outcomes["roboflow fetched"]
    assert rc == 0, out[-3000:]
    assert "ROBOFLOW_API_KEY" not in out
    assert f"results/data/{ROBOFLOW_NAME}/summary.json" in out  # validated next, not fetched
    assert "fetch_dataset" not in {rule for rule, _ in planned_jobs(out)}


def test_auto_without_key_still_falls_back_to_the_demo(outcomes) -> None:
    rc, out, _ = outcomes["auto without key"]
    assert rc == 0, out[-3000:]
    assert "ROBOFLOW_API_KEY" not in out
    assert {"dataset": "demo"} in [w for rule, w in planned_jobs(out) if rule == "fetch_dataset"]


def test_roboflow_key_is_checked_only_where_it_is_needed() -> None:
    settings = config.validate({"dataset": {"source": "roboflow"}})
    choice = config.resolve_dataset(settings, environ={})
    assert config.roboflow_key_problem(choice, environ={}).startswith("ROBOFLOW_API_KEY is not set")
    assert config.roboflow_key_problem(choice, environ={"ROBOFLOW_API_KEY": " "}) is not None
    assert config.roboflow_key_problem(choice, environ={"ROBOFLOW_API_KEY": "k"}) is None
    assert config.roboflow_key_problem(choice, fetched=True, environ={}) is None
    auto = config.validate({"dataset": {"source": "auto"}})
    blank = {"ROBOFLOW_API_KEY": "  "}  # a blank key is no key: the demo, not a failed download
    assert config.resolve_dataset(auto, environ=blank).source == "demo"
    assert config.roboflow_key_problem(config.resolve_dataset(auto, environ=blank)) is None


def test_control_a_good_value_passes_the_same_way(outcomes) -> None:
    """The harness itself is sound: a valid override through the same CLI plans the DAG."""
    rc, out, work = outcomes["control"]
    assert rc == 0, out
    assert not lines_with(out, "Config error") and "Building DAG" in out
    assert not (work / "results").exists()  # -n writes nothing


@pytest.mark.parametrize(
    ("patch", "key"),
    [({"seeds": [0, 1.0]}, "seeds.1"), ({"train": {"epochs": 2.0}}, "train.epochs")],
)
def test_a_float_is_not_an_integer(patch, key) -> None:
    """Regression: JSON Schema took 1.0 as an integer, so `seeds: [0, 1.0]` passed and
    Snakemake then failed on a `seed1.0` folder with a MissingInputException."""
    with pytest.raises(ConfigError, match=rf"^config value {key} = .*\(expected integer\)"):
        config.validate(patch)


def test_local_dataset_name_with_spaces_plans(outcomes) -> None:
    """Regression: `local: "my weeds (1)"` made the name `local-my weeds (1)`, which the
    {dataset} wildcard cannot match: a MissingInputException that named no setting."""
    rc, out, _ = outcomes["spaced name"]
    assert rc == 0, out[-3000:]
    assert "results/data/local-my-weeds-1/data.yaml" in out
    assert "MissingInputException" not in out


@pytest.mark.parametrize(
    ("local", "name"),
    [
        ("/d/weeds (1).zip", "local-weeds-1"),
        ("/d/Weeds.v3i.yolov11.zip", "local-Weeds.v3i.yolov11"),
        ("/d/(((", "local-dataset"),
    ],
)
def test_local_dataset_names_fit_the_wildcard(local: str, name: str) -> None:
    settings = config.validate({})
    settings["dataset"].update(source="local", local=local)
    assert config.resolve_dataset(settings, environ={}).name == name


def test_local_fingerprint_follows_every_file(tmp_path: Path) -> None:
    """fetch_dataset's params carry it: an edit, a new file or a new zip re-imports."""
    root = tmp_path / "weeds"
    (root / "train" / "labels").mkdir(parents=True)
    label = root / "train" / "labels" / "a.txt"
    label.write_text("0 0.5 0.5 0.1 0.1\n")
    first = config.local_fingerprint(root)
    assert config.local_fingerprint(root) == first  # stable while nothing changes
    saved = label.with_suffix(".tmp")
    saved.write_text("1 0.5 0.5 0.1 0.15\n")
    saved.replace(label)  # an editor's save: same name, new file
    second = config.local_fingerprint(root)
    assert second != first
    (root / "train" / "labels" / "b.txt").write_text("")
    assert config.local_fingerprint(root) != second
    archive = tmp_path / "weeds.zip"
    archive.write_bytes(b"PK")
    zipped = config.local_fingerprint(archive)
    archive.write_bytes(b"PK\x03\x04")
    assert config.local_fingerprint(archive) != zipped


# --------------------------------------------------------------------------- #
# `--config` overrides through the real CLI. Snakemake 9 parses `key=value` itself:
# top-level numbers and true/false arrive typed, but list items and nested values
# arrive as strings (`seeds=[0,1]` -> ["0", "1"]); validate() coerces them.

#: case -> (--config values, exit code 0?, what the output must show)
OVERRIDES = {
    "list of seeds": (["seeds=[0,1,2,3,4]"], True, "seeds"),
    "list of backends": (["backends=[eager,sdpa]", "seeds=[7]"], True, "backends"),
    "nested integer and boolean": (["train={epochs: 3, amp: false, workers: 0}"], True, ""),
    "nested number": (["analysis={tost_margin: 0.02, alpha: 0.1}"], True, ""),
    "deeply nested": (["dataset={source: demo, demo: {train: {imgsz: 64}}}"], True, ""),
    "nested list": (["kernels={dtypes: [float32], seq_lens: [64]}"], True, ""),
    "nested integer too small": (
        ["train={epochs: 0}"],
        False,
        "Config error: config value train.epochs = 0 is invalid: 0 is less than the minimum of 1",
    ),
    "nested boolean misspelt": (
        ["train={amp: maybe}"],
        False,
        'Config error: config value train.amp = "maybe" is invalid',
    ),
    "nested number out of range": (
        ["analysis={alpha: 2}"],
        False,
        "Config error: config value analysis.alpha = 2 is invalid",
    ),
    "seed not a number": (
        ["seeds=[0,x]"],
        False,
        'Config error: config value seeds.1 = "x" is invalid',
    ),
}


def _without_conda() -> dict[str, str]:
    """clean_env() with every PATH folder that holds a `conda` or `mamba` left out."""
    env = clean_env()
    folders = env.get("PATH", "").split(os.pathsep)
    keep = [f for f in folders if not any((Path(f) / n).exists() for n in ("conda", "mamba"))]
    env["PATH"] = os.pathsep.join(keep)
    return env


@pytest.fixture(scope="module")
def override_outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    base = tmp_path_factory.mktemp("config-overrides")
    jobs = {}
    for name, (values, _, _) in OVERRIDES.items():
        work = workdir(base / name.replace(" ", "-"), {"dataset": {"source": "demo"}})
        jobs[name] = (work, ("-n", "--config", *values), clean_env())
    # A dotted key is not Snakemake 9 syntax: it fails in Snakemake's own parser.
    dotted = workdir(base / "dotted", {})
    jobs["dotted key"] = (dotted, ("-n", "--config", "train.epochs=3"), clean_env())
    for flag in (("--use-conda",), ("--sdm", "conda")):
        work = workdir(base / ("no-conda" + "-".join(flag)), {})
        jobs[" ".join(flag)] = (work, ("-n", *flag), _without_conda())
    return run_all(jobs, timeout=240)


@pytest.mark.parametrize("case", list(OVERRIDES))
def test_config_override_through_the_cli(override_outcomes, case: str) -> None:
    rc, out = override_outcomes[case]
    _, ok, expected = OVERRIDES[case]
    assert "Traceback" not in out, out[-3000:]
    if ok:
        assert rc == 0, out[-3000:]
        assert not lines_with(out, "Config error") and "Building DAG" in out
    else:
        assert rc != 0
        errors = lines_with(out, "Config error:")
        assert len(errors) == 1 and expected in errors[0], out[-3000:]
        assert "Building DAG" not in out


def test_list_overrides_reach_the_plan(override_outcomes) -> None:
    """seeds=[0,1,2,3,4] plans five seeds per arm; backends=[eager,sdpa] plans those two
    and the baseline's A/A replica (analysis.replica, on by default)."""
    _, out = override_outcomes["list of seeds"]
    trains = [w for rule, w in planned_jobs(out) if rule == "train"]
    assert sorted({w["seed"] for w in trains}) == ["0", "1", "2", "3", "4"]
    _, out = override_outcomes["list of backends"]
    trains = [w for rule, w in planned_jobs(out) if rule == "train"]
    assert sorted((w["backend"], w["seed"]) for w in trains) == [
        ("eager", "7"), ("eager_replica", "7"), ("sdpa", "7"),
    ]  # fmt: skip


def test_dotted_config_key_is_rejected_by_snakemake(override_outcomes) -> None:
    """Snakemake 9 has no `--config a.b=1`; the README shows `train='{epochs: 3}'` instead."""
    rc, out = override_outcomes["dotted key"]
    assert rc != 0
    assert "Config entry must start with a valid identifier" in out


@pytest.mark.parametrize("flag", ["--use-conda", "--sdm conda"])
def test_use_conda_without_conda_stops_in_one_line(override_outcomes, flag: str) -> None:
    rc, out = override_outcomes[flag]
    assert rc != 0
    errors = lines_with(out, "Error: --use-conda (--sdm conda) needs the `conda` command")
    assert len(errors) == 1, out[-3000:]
    assert "pip install -e . && snakemake --cores all" in errors[0]
    assert "Error running conda info" not in out and "Traceback" not in out
