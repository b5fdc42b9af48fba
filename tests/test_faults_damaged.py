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
from faults_helpers import clean_env, lines_with, reference_run, run_all, snakemake, workdir

from attnbench import intermediates, io
from attnbench.analysis import tables
from attnbench.errors import UserError

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
# The declared schemas (attnbench.intermediates): empty or incomplete, never silent.

ACCURACY = ("precision", "recall", "mAP50", "mAP50_95")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "is empty (damaged)"),
        ("backend,status,dtype,passed\n", "is damaged: it has no rows under its header"),
        ("backend,status\neager,ok\n", "is damaged: column 'dtype', 'passed' is missing"),
    ],
)
def test_empty_parity_csv_is_one_line(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "sdpa.csv"
    path.write_text(content)
    with pytest.raises(UserError) as info:
        tables.concat_csvs([path], intermediates.PARITY)
    message = _one_line(info)
    assert message.startswith(f"{path} {problem}"), message
    assert f"`snakemake --cores 1 --forcerun {path}`" in message


def test_metrics_of_an_ok_run_without_accuracy(tmp_path: Path) -> None:
    path = tmp_path / "results" / "train" / "eager" / "seed0" / "metrics.json"
    path.parent.mkdir(parents=True)
    run = {"backend": "eager", "seed": 0, "status": "ok", **dict.fromkeys(ACCURACY, 0.5)}
    io.write_json(path, {k: v for k, v in run.items() if k not in ("mAP50", "mAP50_95")})
    with pytest.raises(UserError) as info:
        tables.load_runs([path])
    assert _one_line(info).startswith(
        f"{path} is damaged: key 'mAP50', 'mAP50_95' is missing (needed when status is 'ok'): "
        f"rebuild it and what depends on it with `snakemake --cores 1 --forcerun {path}`"
    )
    io.write_json(path, {"backend": "eager", "seed": 0, "status": "unavailable"})
    assert tables.load_runs([path])["status"].tolist() == ["unavailable"]  # never trained


def _run_files(tmp_path: Path, status: str, results: str) -> tuple[Path, Path]:
    run = tmp_path / "results" / "train" / "eager" / "seed0"
    run.mkdir(parents=True, exist_ok=True)
    accuracy = dict.fromkeys(ACCURACY, 0.5) if status == "ok" else {}
    io.write_json(
        run / "metrics.json", {"backend": "eager", "seed": 0, "status": status, **accuracy}
    )
    (run / "results.csv").write_text(results)
    return run / "metrics.json", run / "results.csv"


HEADER = ",".join(intermediates.EPOCH_COLUMNS)


@pytest.mark.parametrize(
    ("results", "problem"),
    [
        ("", "is empty (damaged: its metrics.json says status ok)"),
        (HEADER + "\n", "is damaged: it has no rows under its header (its metrics.json says"),
        (
            "epoch,train/box_loss,val/box_loss,train/cls_loss,val/cls_loss\n1,1,1,1,1\n",
            "is damaged: column 'metrics/precision(B)', 'metrics/recall(B)', "
            "'metrics/mAP50(B)', 'metrics/mAP50-95(B)' is missing",
        ),
    ],
)
def test_results_csv_of_an_ok_run_must_hold_its_epochs(
    tmp_path: Path, results: str, problem: str
) -> None:
    metrics, csv_path = _run_files(tmp_path, "ok", results)
    runs = tables.load_runs([metrics])
    with pytest.raises(UserError) as info:
        tables.load_epochs([csv_path], runs)
    assert _one_line(info).startswith(f"{csv_path} {problem}")
    csv_path.unlink()
    with pytest.raises(UserError, match="results.csv is missing: rebuild it"):
        tables.load_epochs([csv_path], runs)


def test_results_csv_of_a_run_that_never_trained_may_be_empty(tmp_path: Path) -> None:
    metrics, csv_path = _run_files(tmp_path, "unavailable", "")
    assert tables.load_epochs([csv_path], tables.load_runs([metrics])).empty


def _table(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / "results" / "tables" / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def test_empty_run_table_and_epochs_without_metrics(tmp_path: Path) -> None:
    for content in ("", "backend,seed,status\n"):
        runs = _table(tmp_path, "runs", content)
        with pytest.raises(UserError) as info:
            tables.read_table(runs, intermediates.table("runs"))
        assert _one_line(info).startswith(f"{runs} is ")
        assert f"--forcerun {runs}`" in str(info.value)
    epochs = _table(tmp_path, "epochs", "backend,seed,status,epoch,train/box_loss\ne,0,ok,1,1\n")
    with pytest.raises(UserError) as info:
        tables.read_table(epochs, intermediates.table("epochs"))
    assert "column 'metrics/precision(B)'" in _one_line(info)
    header_only = _table(tmp_path, "epochs", "backend,seed,status,epoch\n")
    assert tables.read_table(header_only, intermediates.table("epochs")).empty  # none trained
    with pytest.raises(UserError, match="no rows under its header .runs.csv has a run with"):
        tables.read_table(header_only, intermediates.table("epochs", trained=True))


def test_a_writer_never_writes_what_its_readers_would_refuse(tmp_path: Path) -> None:
    path = tmp_path / "sdpa.csv"
    with pytest.raises(UserError) as info:
        io.write_csv(
            path, [], ["backend", "status", "dtype", "passed"], schema=intermediates.PARITY
        )
    assert _one_line(info).startswith(f"{path} was not written: it has no rows")
    metrics = tmp_path / "metrics.json"
    with pytest.raises(UserError, match="key 'precision', 'recall'"):
        io.write_json(
            metrics, {"backend": "e", "seed": 0, "status": "ok"}, schema=intermediates.METRICS
        )
    assert not path.exists() and not metrics.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file either


def test_train_writes_neither_file_for_an_ok_run_without_epochs(tmp_path: Path) -> None:
    from attnbench.train import training

    run = {"backend": "eager", "seed": 0, "status": "ok", **dict.fromkeys(ACCURACY, 0.5)}
    metrics, results = tmp_path / "metrics.json", tmp_path / "results.csv"
    with pytest.raises(UserError) as info:
        training.write_outputs(run, tmp_path, metrics, results)
    assert _one_line(info).startswith(f"{results} was not written: Ultralytics wrote no ")
    (tmp_path / "ultralytics").mkdir()
    (tmp_path / "ultralytics" / "results.csv").write_text("epoch,train/box_loss\n1,1.5\n")
    with pytest.raises(UserError, match="column 'metrics/precision.B.'"):
        training.write_outputs(run, tmp_path, metrics, results)
    assert not metrics.exists() and not results.exists()
    unavailable = {"backend": "eager", "seed": 0, "status": "unavailable"}
    (tmp_path / "ultralytics" / "results.csv").unlink()
    training.write_outputs(unavailable, tmp_path, metrics, results)
    assert results.read_text() == "" and json.loads(metrics.read_text())["status"] == "unavailable"


def test_declarations_match_what_the_writers_write() -> None:
    """Each declared column is one its writer writes, and the plots draw declared columns."""
    from attnbench.backends import parity
    from attnbench.measure import kernelbench
    from attnbench.report import plots, sections

    assert set(intermediates.PARITY.columns) <= set(parity.COLUMNS)
    assert set(intermediates.KERNELS.columns) <= set(kernelbench.COLUMNS)
    written = {
        "summary": tables.SUMMARY_COLUMNS,
        "comparisons": tables.COMPARISON_COLUMNS,
        "drift": tables.DRIFT_COLUMNS,
        "replica": tables.REPLICA_COLUMNS,
    }
    for name, columns in written.items():
        assert set(intermediates.TABLES[name].columns) <= set(columns), name
    assert {c for c, _ in plots.CURVES} <= set(intermediates.EPOCH_COLUMNS)
    assert {"mAP50", "mAP50_95"} <= set(intermediates.ACCURACY_COLUMNS) & set(tables.METRIC_BY_KEY)
    assert {"backend", "seed", "status"} <= set(sections.RUN_COLUMNS)


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


# --------------------------------------------------------------------------- #
# Through the real CLI: files that are whole but empty or without what readers need,
# each in a copy of the shared reference run (tests/faults_helpers.py: eager trained).
# Each once passed silently and changed the results (issue 25).

RUN0 = "results/train/eager/seed0"
CURVES = "results/plots/curves.png"
METRIC_COLUMNS = list(intermediates.ACCURACY_COLUMNS.values())

#: case -> (file to change, how, the target whose job reads it, phrase of the problem)
INCOMPLETE = {
    "empty results.csv of an ok run": (
        f"{RUN0}/results.csv",
        "empty",
        RUNS,
        "is empty (damaged: its metrics.json says status ok)",
    ),
    "results.csv without metric columns": (
        f"{RUN0}/results.csv",
        "drop-metric-columns",
        RUNS,
        "column 'metrics/precision(B)', 'metrics/recall(B)', 'metrics/mAP50(B)', "
        "'metrics/mAP50-95(B)' is missing",
    ),
    "ok metrics.json without accuracy": (
        f"{RUN0}/metrics.json",
        "drop-accuracy",
        RUNS,
        "key 'mAP50', 'mAP50_95' is missing (needed when status is 'ok')",
    ),
    "empty parity csv": ("results/parity/eager.csv", "empty", RUNS, "is empty (damaged)"),
    "empty runs.csv": (RUNS, "empty", CURVES, "is empty (damaged)"),
    "epochs.csv without metric columns": (
        "results/tables/epochs.csv",
        "drop-metric-columns",
        CURVES,
        "column 'metrics/precision(B)'",
    ),
}


def _make_incomplete(path: Path, how: str) -> None:
    if how == "empty":
        path.write_text("")
    elif how == "drop-accuracy":
        data = json.loads(path.read_text())
        del data["mAP50"], data["mAP50_95"]
        path.write_text(json.dumps(data))
    else:  # Ultralytics pads its column names: match them stripped
        frame = pd.read_csv(path)
        frame.drop(columns=[c for c in frame if str(c).strip() in METRIC_COLUMNS]).to_csv(
            path, index=False
        )


@pytest.fixture(scope="module")
def incomplete(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, Path]]:
    ref = reference_run(tmp_path_factory.mktemp("incomplete-reference"))
    base = tmp_path_factory.mktemp("incomplete")
    jobs = {}
    for name, (target, how, reader, _) in INCOMPLETE.items():
        work = base / name.replace(" ", "-")
        shutil.copytree(ref.work, work, symlinks=True, ignore=shutil.ignore_patterns("*.pt"))
        _make_incomplete(work / target, how)
        (work / reader).unlink(missing_ok=True)  # the reading job must run
        jobs[name] = (work, ("--cores", "1", reader), clean_env())
    done = run_all(jobs, timeout=300)
    return {name: (rc, out, jobs[name][0]) for name, (rc, out) in done.items()}


@pytest.mark.parametrize("case", list(INCOMPLETE))
def test_incomplete_input_fails_the_reader_in_one_line(incomplete, case: str) -> None:
    """Non-zero exit and one `Error:` line naming the file, what is wrong and the
    `--forcerun` command, where the run once went on and reported less."""
    rc, out, work = incomplete[case]
    target, _, reader, problem = INCOMPLETE[case]
    assert rc != 0, out[-4000:]
    errors = lines_with(out, f"Error: {target} ")
    assert len(errors) == 1, out[-4000:]
    assert problem in errors[0], errors[0]
    assert f"`snakemake --cores 1 --forcerun {target}`" in errors[0]
    assert "Traceback" not in out, out[-4000:]
    assert not (work / reader).exists()  # nothing the next run could trust


def test_the_named_command_rebuilds_an_empty_run_table(incomplete) -> None:
    rc, out, work = incomplete["empty runs.csv"]
    command = lines_with(out, f"Error: {RUNS} ")[0].split("`")[1].split()
    repaired = snakemake(work, *command[1:], "--set-threads", "build_flash_attn=1")
    assert repaired.returncode == 0, repaired.stdout[-4000:]
    intact = incomplete["epochs.csv without metric columns"][2] / RUNS  # the reference's
    cols = ["backend", "seed", "status"]
    pd.testing.assert_frame_equal(pd.read_csv(work / RUNS)[cols], pd.read_csv(intact)[cols])
    assert (work / CURVES).exists() and (work / "results" / "report.html").exists()
