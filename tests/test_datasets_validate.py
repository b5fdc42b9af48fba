"""Validation: every problem kind found by file, policies fail and drop, the files training reads,
and the two Snakemake scripts of the data stage."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from PIL import Image

from attnbench.data import demo, source_kind, validate
from attnbench.errors import UserError

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ("summary.json", "data.yaml", "train.txt", "val.txt", "test.txt")


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny valid dataset: 4 train and 2 val images of 64 px with exact labels."""
    return demo.generate(tmp_path_factory.mktemp("clean") / "source", 4, 2, 64, seed=11)


@pytest.fixture
def ds(clean: Path, tmp_path: Path) -> Path:
    """A private copy of the clean dataset for a test to break."""
    return Path(shutil.copytree(clean, tmp_path / "source"))


def _label(ds: Path, split: str, index: int) -> Path:
    return ds / split / "labels" / f"{'train' if split == 'train' else 'val'}_{index:04d}.txt"


def _image(ds: Path, split: str, index: int) -> Path:
    return ds / split / "images" / f"{'train' if split == 'train' else 'val'}_{index:04d}.jpg"


def _summarize(ds: Path, out: Path, policy: str = "fail") -> dict[str, Any]:
    return validate.summarize(ds, out, policy, name="t", source="demo", reason="a test")


def _fail(ds: Path, out: Path) -> tuple[str, dict[str, Any]]:
    """Run policy fail; return the error message and problems.json, checking nothing else is left."""
    with pytest.raises(UserError) as exc:
        _summarize(ds, out)
    message = str(exc.value)
    assert "\n" not in message
    for name in OUTPUTS:
        assert not (out / name).exists(), f"{name} written despite the failure"
    return message, json.loads((out / validate.PROBLEMS_FILE).read_text())


def test_clean_dataset_summary_and_files(ds: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = _summarize(ds, out)
    assert json.loads((out / "summary.json").read_text()) == summary
    assert set(summary) >= {
        "name",
        "source",
        "reason",
        "classes",
        "splits",
        "problems",
        "policy",
        "dropped",
    }
    assert (summary["name"], summary["source"], summary["reason"]) == ("t", "demo", "a test")
    assert (
        summary["classes"] == ["crop", "weed"]
        and summary["problems"] == []
        and summary["dropped"] == 0
    )
    assert set(summary["splits"]) == {"train", "val"}
    for split, count in (("train", 4), ("val", 2)):
        info = summary["splits"][split]
        folder = "train" if split == "train" else "valid"
        rows = [
            r for f in (ds / folder / "labels").glob("*.txt") for r in f.read_text().splitlines()
        ]
        assert info["images"] == count and info["image_sizes"] == {"64x64": count}
        assert info["boxes"] == len(rows) == sum(info["boxes_per_class"].values())
        assert set(info["boxes_per_class"]) == {"crop", "weed"}
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data == {
        "path": str(out.resolve()),
        "train": "train.txt",
        "val": "val.txt",
        "nc": 2,
        "names": {0: "crop", 1: "weed"},
    }
    listed = (out / "train.txt").read_text().splitlines()
    assert listed == [str(p) for p in sorted((ds / "train" / "images").glob("*.jpg"))]
    assert not (out / validate.PROBLEMS_FILE).exists()


def test_background_images_are_not_problems(ds: Path, tmp_path: Path) -> None:
    _label(ds, "train", 0).unlink()
    _label(ds, "train", 1).write_text("")
    summary = _summarize(ds, tmp_path / "out")
    assert summary["problems"] == []
    assert (
        summary["splits"]["train"]["images"] == 4 and summary["splits"]["train"]["backgrounds"] == 2
    )


def test_split_without_any_label_file_is_an_error(ds: Path, tmp_path: Path) -> None:
    """Regression: a split whose labels were lost trained as all background, silently."""
    shutil.rmtree(ds / "valid" / "labels")
    out = tmp_path / "out"
    with pytest.raises(UserError) as exc:
        _summarize(ds, out)
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith(
        f"the val split has 2 image(s) and no label file in {ds.resolve() / 'valid' / 'labels'}: "
    )
    assert "or set dataset.allow_background_only: true" in message
    assert not [name for name in OUTPUTS if (out / name).exists()]


def test_background_only_split_when_the_config_says_so(
    clean: Path, ds: Path, tmp_path: Path
) -> None:
    for label in (ds / "train" / "labels").iterdir():
        label.unlink()  # the folder stays, empty
    summary = validate.summarize(
        ds, tmp_path / "out", "fail", name="t", source="demo", allow_background_only=True
    )
    assert summary["background_only"] == ["train"] and summary["problems"] == []
    assert summary["splits"]["train"]["backgrounds"] == 4 == summary["splits"]["train"]["images"]
    assert _summarize(clean, tmp_path / "o2")["background_only"] == []  # labelled: none


def test_polygon_rows_are_accepted_and_counted(ds: Path, tmp_path: Path) -> None:
    _label(ds, "train", 0).write_text(
        "1 0.1 0.1 0.3 0.1 0.3 0.4 0.1 0.4\n0 0.5 0.5 0.6 0.5 0.6 0.7\n"
    )
    summary = _summarize(ds, tmp_path / "out")
    assert summary["problems"] == []
    train = summary["splits"]["train"]
    assert train["boxes"] == sum(train["boxes_per_class"].values())
    assert (ds / "train" / "images" / "train_0000.jpg").as_posix() in (
        tmp_path / "out" / "train.txt"
    ).read_text()


BAD_LABELS = {
    "class_out_of_range": (
        "0 0.5 0.5 0.1 0.1\n2 0.5 0.5 0.1 0.1\n",
        "line 2: class id 2 out of range 0..1",
    ),
    "negative class": ("-1 0.5 0.5 0.1 0.1\n", "class id -1 out of range"),
    "coords_out_of_range": ("0 1.2 0.5 0.1 0.1\n", "coordinate 1.2 outside [0, 1]"),
    "negative coordinate": ("1 0.1 0.1 0.3 0.1 0.3 -0.4 0.1 0.4\n", "coordinate -0.4 outside"),
    "too few values": ("0 0.5 0.5 0.1\n", "line 1: 4 values"),
    "six values": ("0 0.5 0.5 0.1 0.1 0.9\n", "6 values"),
    "even polygon": ("0 0.1 0.1 0.2 0.2 0.3 0.3 0.4\n", "8 values"),
    "words": ("crop 0.5 0.5 0.1 0.1\n", "not all values are numbers"),
    "fractional class": ("0.5 0.5 0.5 0.1 0.1\n", "class id 0.5 is not an integer"),
    "nan": ("0 nan 0.5 0.1 0.1\n", "finite"),
    "mixed shapes": (
        "0 0.5 0.5 0.1 0.1\n1 0.1 0.1 0.3 0.1 0.3 0.4\n",
        "mixes box rows and polygon rows",
    ),
}
KIND = {
    "class_out_of_range": "class_out_of_range",
    "negative class": "class_out_of_range",
    "coords_out_of_range": "coords_out_of_range",
    "negative coordinate": "coords_out_of_range",
}


@pytest.mark.parametrize("case", list(BAD_LABELS))
def test_each_label_problem_is_found_by_file(case: str, ds: Path, tmp_path: Path) -> None:
    text, expected = BAD_LABELS[case]
    _label(ds, "valid", 1).write_text(text)
    message, report = _fail(ds, tmp_path / "out")
    assert (
        "1 problem(s)" in message and "valid/labels/val_0001.txt" in message and expected in message
    )
    assert "dataset.on_problems: drop" in message
    [problem] = report["problems"]
    assert problem["file"] == "valid/labels/val_0001.txt" and problem["split"] == "val"
    assert problem["kind"] == KIND.get(case, "malformed_row")
    assert expected in problem["problem"]


def _write_truncated_jpeg(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda p: p.write_bytes(b"this is not an image"), "unreadable image"),
        (_write_truncated_jpeg, "unreadable image"),
        (lambda p: Image.new("RGB", (6, 40)).save(p, "JPEG"), "size 6x40 is under 10 px"),
    ],
    ids=["garbage", "truncated", "tiny"],
)
def test_unreadable_images(damage: Any, expected: str, ds: Path, tmp_path: Path) -> None:
    damage(_image(ds, "train", 2))
    message, report = _fail(ds, tmp_path / "out")
    assert "train/images/train_0002.jpg" in message and expected in message
    assert [p["kind"] for p in report["problems"]] == ["unreadable_image"]


def test_empty_split_fails_even_when_dropping(ds: Path, tmp_path: Path) -> None:
    for image in (ds / "valid" / "images").iterdir():
        image.unlink()
    message, report = _fail(ds, tmp_path / "out")
    assert "valid/images: the val split has no images" in message
    assert report["problems"][0]["kind"] == "empty_split"
    with pytest.raises(UserError, match="no usable images left in the val split"):
        _summarize(ds, tmp_path / "out", "drop")
    assert not (tmp_path / "out" / "summary.json").exists()


def test_empty_test_split_is_left_out_when_dropping(ds: Path, tmp_path: Path) -> None:
    (ds / "test" / "images").mkdir(parents=True)
    with pytest.raises(UserError, match="the test split has no images"):
        _summarize(ds, tmp_path / "out")
    summary = _summarize(ds, tmp_path / "out", "drop")
    assert summary["splits"]["test"]["images"] == 0 and summary["dropped"] == 0
    assert "test" not in yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())
    assert not (tmp_path / "out" / "test.txt").exists()


def test_drop_leaves_bad_images_out_and_records_them(ds: Path, tmp_path: Path) -> None:
    _image(ds, "train", 0).write_bytes(b"junk")
    _label(ds, "train", 1).write_text("5 0.5 0.5 0.1 0.1\n0 2 2 2 2\n")  # two problems, one image
    out = tmp_path / "out"
    summary = _summarize(ds, out, "drop")
    assert summary["policy"] == "drop" and summary["dropped"] == 2
    assert {(p["file"], p["kind"]) for p in summary["problems"]} == {
        ("train/images/train_0000.jpg", "unreadable_image"),
        ("train/labels/train_0001.txt", "class_out_of_range"),
        ("train/labels/train_0001.txt", "coords_out_of_range"),
    }
    listed = [Path(line).name for line in (out / "train.txt").read_text().splitlines()]
    assert listed == ["train_0002.jpg", "train_0003.jpg"]
    assert summary["splits"]["train"]["images"] == 2
    assert not (out / validate.PROBLEMS_FILE).exists()


def test_failure_message_names_the_count_and_first_files(ds: Path, tmp_path: Path) -> None:
    for index in range(4):
        _label(ds, "train", index).write_text("9 0.5 0.5 0.1 0.1\n")
    message, report = _fail(ds, tmp_path / "out")
    assert message.startswith("4 problem(s) in dataset")
    assert "train/labels/train_0000.txt" in message and "and 1 more" in message
    assert str(tmp_path / "out" / validate.PROBLEMS_FILE) in message
    assert report["count"] == 4 and len(report["problems"]) == 4


def test_failure_removes_stale_outputs_and_a_fix_clears_the_report(
    ds: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    _summarize(ds, out)
    assert (out / "summary.json").exists()
    good = _label(ds, "train", 0).read_text()
    _label(ds, "train", 0).write_text("0 0.5\n")
    _fail(ds, out)  # checks summary.json, data.yaml and the lists are gone
    _label(ds, "train", 0).write_text(good)
    _summarize(ds, out)
    assert (out / "summary.json").exists() and not (out / validate.PROBLEMS_FILE).exists()


def test_unknown_policy_and_missing_layout(ds: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="dataset.on_problems = 'ignore' is unknown"):
        _summarize(ds, tmp_path / "out", "ignore")
    shutil.rmtree(ds / "valid")
    with pytest.raises(UserError, match="no valid/images"):
        _summarize(ds, tmp_path / "out")


def test_ultralytics_reads_what_validation_wrote(ds: Path, tmp_path: Path) -> None:
    """The contract with training: Ultralytics finds the same images and boxes."""
    from ultralytics.data import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    _image(ds, "train", 0).write_bytes(b"junk")
    out = tmp_path / "out"
    summary = _summarize(ds, out, "drop")
    data = check_det_dataset(str(out / "data.yaml"))
    assert data["names"] == {0: "crop", 1: "weed"}
    for split in ("train", "val"):
        dataset = YOLODataset(
            img_path=data[split], data=data, task="detect", augment=False, imgsz=64
        )
        assert len(dataset.labels) == summary["splits"][split]["images"]
        assert sum(len(lb["cls"]) for lb in dataset.labels) == summary["splits"][split]["boxes"]


def test_source_kind_from_the_folder_name() -> None:
    assert source_kind("roboflow-augmented-startups-weeds-nxe1w-v3") == "roboflow"
    assert source_kind("local-crop-or-weed") == "local"
    assert source_kind("demo") == "demo"


# --------------------------------------------------------------------------- the scripts


def _run_script(name: str, **fields: Any) -> None:
    smk = SimpleNamespace(scriptdir=str(REPO / "scripts"), **fields)
    runpy.run_path(
        str(REPO / "scripts" / name), init_globals={"snakemake": smk}, run_name="__main__"
    )


def _named(**items: Any) -> SimpleNamespace:
    return SimpleNamespace(**items)


def test_scripts_fetch_and_validate_the_demo(tmp_path: Path) -> None:
    data = tmp_path / "results" / "data" / "demo"
    spec = {
        "source": "demo",
        "name": "demo",
        "demo": {"image_size": 64, "seed": 0, "train_images": 3, "val_images": 2},
    }
    _run_script(
        "fetch_dataset.py",
        output=[str(data / "source")],
        params=_named(spec=json.dumps(spec), timeout_s=60),
        log=[str(tmp_path / "fetch.log")],
    )
    assert (data / "source" / "data.yaml").is_file()
    _run_script(
        "validate_dataset.py",
        input=_named(source=str(data / "source")),
        output=_named(summary=str(data / "summary.json"), data_yaml=str(data / "data.yaml")),
        params=_named(on_problems="fail", reason="dataset.source = demo"),
        wildcards=_named(dataset="demo"),
        log=[str(tmp_path / "validate.log")],
    )
    summary = json.loads((data / "summary.json").read_text())
    assert (summary["name"], summary["source"], summary["reason"]) == (
        "demo",
        "demo",
        "dataset.source = demo",
    )
    assert summary["splits"]["train"]["images"] == 3
    assert "dataset ready" in (tmp_path / "fetch.log").read_text()


def test_fetch_script_ends_with_the_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROBOFLOW_API_KEY", raising=False)
    spec = {
        "source": "roboflow",
        "name": "x",
        "roboflow": {"workspace": "w", "project": "p", "version": 1, "format": "yolov11"},
    }
    with pytest.raises(SystemExit) as exc:
        _run_script(
            "fetch_dataset.py",
            output=[str(tmp_path / "source")],
            params=_named(spec=json.dumps(spec), timeout_s=5),
            log=[str(tmp_path / "fetch.log")],
        )
    assert str(exc.value).startswith("Error: ROBOFLOW_API_KEY is not set")
    assert "ROBOFLOW_API_KEY is not set" in (tmp_path / "fetch.log").read_text()
    assert not (tmp_path / "source").exists()


def test_snakemake_runs_the_data_stage(tmp_path: Path) -> None:
    """The real rules and scripts, on the demo (the default without a Roboflow key)."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["dataset"].update(
        source="demo",
        demo={**config["dataset"]["demo"], "train_images": 4, "val_images": 2, "image_size": 64},
    )
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "ROBOFLOW_API_KEY"}
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
         "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", "--workflow-profile", "none",
         "results/data/demo/summary.json"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "results" / "data" / "demo" / "summary.json").read_text())
    assert summary["source"] == "demo" and summary["splits"]["val"]["images"] == 2
