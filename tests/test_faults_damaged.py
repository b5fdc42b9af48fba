"""Damaged intermediate files: a truncated or incomplete JSON/CSV written by one rule.

A disk that fills up, or a hand edit, can leave a metrics.json, shapes.json or table
cut short. The job that reads it must end in one line that names the file and the
command that rebuilds it (`snakemake --cores 1 --forcerun <file>`), never a JSON or
pandas traceback; and that command must really repair the run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from faults_helpers import clean_env, lines_with, run_all, snakemake, workdir

from attnbench import io
from attnbench.scriptutil import UserError

# --------------------------------------------------------------------------- #
# attnbench.io readers


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_truncated_json_names_the_file_and_the_rebuild_command(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"backend": "eager", "seed": 0, "status": "ok"})[:25])
    with pytest.raises(UserError) as info:
        io.read_json(path)
    message = _one_line(info)
    assert message.startswith(f"{path} is damaged: not valid JSON (")
    assert f"`snakemake --cores 1 --forcerun {path}`" in message


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "is empty"),
        ("  \n", "is empty"),
        ('{"backend": "eager"}', "key 'seed', 'status' is missing"),
        ("[1, 2]", "expected a JSON object, got list"),
    ],
)
def test_empty_or_incomplete_json_is_one_line(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(content)
    with pytest.raises(UserError) as info:
        io.read_json(path, keys=("backend", "seed", "status"))
    assert problem in _one_line(info)


def test_missing_json_and_a_custom_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        io.read_json(tmp_path / "gone.json", fix="delete results/env/wheels/ and rerun")
    assert (
        _one_line(info)
        == f"{tmp_path / 'gone.json'} is missing: delete results/env/wheels/ and rerun"
    )


def test_a_good_json_reads_as_before(tmp_path: Path) -> None:
    path = tmp_path / "ok.json"
    io.write_json(path, {"backend": "eager", "seed": 0, "status": "ok"})
    assert io.read_json(path, keys=("status",))["backend"] == "eager"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("a,b,c\n1,2,3\n4,5", "ends mid-line"),
        ("a,b,c\n1,2,3\n4,5\n", "line 3 has 2 field(s), the header 3"),
        ("a,b,c\n1,2,3,4\n", "line 2 has 4 field(s), the header 3"),
        ('a,b\n"1,2\n', "line 2 has 1 field(s)"),  # an unclosed quote
    ],
)
def test_truncated_csv_is_one_line(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "runs.csv"
    path.write_text(content)
    with pytest.raises(UserError) as info:
        io.read_csv(path)
    message = _one_line(info)
    assert message.startswith(f"{path} is damaged: ") and problem in message
    assert "--forcerun" in message


def test_csv_missing_a_column_or_a_file(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    path.write_text("backend,seed\neager,0\n")
    with pytest.raises(UserError, match="column 'status' is missing"):
        io.read_csv(path, columns=("backend", "status"))
    with pytest.raises(UserError, match="is missing: rebuild it"):
        io.read_csv(tmp_path / "absent.csv")
    assert io.read_csv(tmp_path / "absent.csv", missing_ok=True).empty


def test_good_and_empty_csv_read_as_pandas_does(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    frame = pd.DataFrame({"backend": ["eager", "sdpa"], "seed": [0, 1], "note": ["a,b", ""]})
    frame.to_csv(path, index=False)
    pd.testing.assert_frame_equal(io.read_csv(path), pd.read_csv(path))
    path.write_text("")
    assert io.read_csv(path).empty
    results = tmp_path / "results.csv"  # Ultralytics pads its column names
    results.write_text("epoch,  metrics/mAP50(B)\n1,0.5\n")
    assert len(io.read_csv(results, columns=("metrics/mAP50(B)",))) == 1


# --------------------------------------------------------------------------- #
# Through the real CLI: one small run, then one damaged copy of it per case.

#: One CUDA-only backend (recorded unavailable on a CPU in seconds), one seed: the
#: cheapest run that still has metrics.json, shapes.json and tables.
SMALL = {
    "backends": ["sdpa_cudnn"],
    "seeds": [0],
    "analysis": {"baseline": "sdpa_cudnn"},
    "dataset": {
        "source": "demo",
        "demo": {
            "train_images": 8,
            "val_images": 4,
            "image_size": 64,
            "train": {"epochs": 1, "batch": 4, "imgsz": 64},
        },
    },
    "train": {"workers": 0, "device": "cpu"},
    "kernels": {"cpu_seq_lens": [64], "cpu_repeats": 1, "warmup": 1},
}
METRICS = "results/train/sdpa_cudnn/seed0/metrics.json"
SHAPES = "results/attention/shapes.json"
RUNS = "results/tables/runs.csv"

#: case -> (file to damage, how, the target whose job reads it)
CASES = {
    "metrics.json cut short": (METRICS, "truncate", RUNS),
    "metrics.json without status": (METRICS, "drop-status", RUNS),
    "shapes.json cut short": (SHAPES, "truncate", "results/parity/sdpa_cudnn.csv"),
    "runs.csv cut short": (RUNS, "truncate", "results/plots/curves.png"),
}

pytestmark = pytest.mark.slow


def _damage(path: Path, how: str) -> None:
    if how == "truncate":
        path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size * 2 // 3)])
    else:
        data = json.loads(path.read_text())
        del data["status"]
        path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, Path]]:
    base = tmp_path_factory.mktemp("damaged")
    good = workdir(base / "good", SMALL)
    # Targets after an option: --configfile (first) takes every value up to the next one.
    built = snakemake(good, "--set-threads", "build_flash_attn=1", "--cores", "2", RUNS)
    assert built.returncode == 0, built.stdout[-4000:]
    jobs = {}
    for name, (target, how, reader) in CASES.items():
        work = base / name.replace(" ", "-")
        shutil.copytree(good, work, symlinks=True)
        _damage(work / target, how)
        (work / reader).unlink(missing_ok=True)  # the reading job must run
        jobs[name] = (work, ("--cores", "1", reader), clean_env())
    done = run_all(jobs, timeout=300)
    return {name: (rc, out, jobs[name][0]) for name, (rc, out) in done.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_damaged_input_fails_the_reader_in_one_line(damaged, case: str) -> None:
    rc, out, _ = damaged[case]
    target = CASES[case][0]
    assert rc != 0
    errors = lines_with(out, f"Error: {target} is ")
    assert errors, out[-4000:]
    assert f"`snakemake --cores 1 --forcerun {target}`" in errors[0]
    assert "Traceback" not in out and "JSONDecodeError" not in out, out[-4000:]
    if case == "metrics.json without status":
        assert "key 'status' is missing" in errors[0]


def test_the_named_command_rebuilds_the_file(damaged) -> None:
    """Running exactly the command the message gives (with this test's --configfile and
    --directory) reruns the train job and what reads it, and the run is whole again."""
    rc, out, work = damaged["metrics.json cut short"]
    message = lines_with(out, f"Error: {METRICS} is ")[0]
    command = message.split("`")[1].split()
    assert command[:1] == ["snakemake"]
    repaired = snakemake(work, *command[1:])
    assert repaired.returncode == 0, repaired.stdout[-4000:]
    assert "Forced execution" in repaired.stdout
    assert json.loads((work / METRICS).read_text())["status"] == "unavailable"
    assert (work / RUNS).exists() and (work / "results" / "report.html").exists()
    again = snakemake(work, "-n")
    assert isinstance(again, subprocess.CompletedProcess) and "Nothing to be done" in again.stdout
