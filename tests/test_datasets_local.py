"""Importing a dataset folder or zip: layout checks, hard links, one-line errors."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

from attnbench.data import demo, local, validate
from attnbench.errors import UserError

CROP_OR_WEED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "crop-or-weed"
needs_crop_or_weed = pytest.mark.skipif(
    not (CROP_OR_WEED / "data.yaml").is_file(),
    reason=f"real dataset not found at {CROP_OR_WEED} (only on machines with ../shared/data)",
)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dataset in Roboflow layout (the demo generator's output)."""
    return demo.generate(tmp_path_factory.mktemp("small") / "ds", 3, 2, 64, seed=5)


def _zip(folder: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(folder).as_posix())
    return archive


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _assert_import_fails(source: Path, out: Path, *parts: str) -> None:
    """Importing `source` into `out` fails with one line naming `parts`, leaving nothing."""
    with pytest.raises(UserError) as exc:
        local.import_dataset(source, out)
    message = str(exc.value)
    assert "\n" not in message
    for part in parts:
        assert part in message
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_folder_import_rewrites_data_yaml(small_dataset: Path, tmp_path: Path) -> None:
    out = local.import_dataset(small_dataset, tmp_path / "source")
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["path"] == str(out.resolve())
    assert (data["train"], data["val"]) == ("train/images", "valid/images")
    assert data["names"] == {0: "crop", 1: "weed"}
    assert _files(out) == _files(small_dataset)


def test_folder_import_hard_links_and_leaves_the_original_alone(
    small_dataset: Path, tmp_path: Path
) -> None:
    original_yaml = (small_dataset / "data.yaml").read_bytes()
    out = local.import_dataset(small_dataset, tmp_path / "source")
    image = next((out / "train" / "images").iterdir())
    assert os.path.samefile(image, small_dataset / "train" / "images" / image.name)
    assert (small_dataset / "data.yaml").read_bytes() == original_yaml  # replaced, not rewritten


def test_copy_when_links_are_off(small_dataset: Path, tmp_path: Path) -> None:
    out = local.import_dataset(small_dataset, tmp_path / "source", link=False)
    image = next((out / "train" / "images").iterdir())
    assert not os.path.samefile(image, small_dataset / "train" / "images" / image.name)
    assert image.read_bytes() == (small_dataset / "train" / "images" / image.name).read_bytes()


def test_val_folder_is_accepted_as_valid(small_dataset: Path, tmp_path: Path) -> None:
    src = tmp_path / "yolo"
    shutil.copytree(small_dataset, src)
    (src / "valid").rename(src / "val")
    out = local.import_dataset(src, tmp_path / "source")
    assert (out / "valid" / "images").is_dir() and not (out / "val").exists()
    assert yaml.safe_load((out / "data.yaml").read_text())["val"] == "valid/images"


@pytest.mark.parametrize("prefix", ["", "crop-weed-1/"])
def test_zip_import(small_dataset: Path, tmp_path: Path, prefix: str) -> None:
    archive = _zip(small_dataset, tmp_path / "dataset.zip", prefix)
    out = local.import_dataset(archive, tmp_path / "source")
    assert _files(out) == _files(small_dataset)
    assert yaml.safe_load((out / "data.yaml").read_text())["path"] == str(out.resolve())


def test_read_only_source_gives_writable_folders(small_dataset: Path, tmp_path: Path) -> None:
    src = tmp_path / "ro"
    shutil.copytree(small_dataset, src)
    for folder in sorted((p for p in src.rglob("*") if p.is_dir()), reverse=True):
        folder.chmod(0o555)
    try:
        out = local.import_dataset(src, tmp_path / "source")
        assert all(os.stat(p).st_mode & 0o200 for p in [out, *out.rglob("*")] if p.is_dir())
    finally:
        for folder in src.rglob("*"):
            if folder.is_dir():
                folder.chmod(0o755)


def test_missing_path(tmp_path: Path) -> None:
    _assert_import_fails(
        tmp_path / "nowhere", tmp_path / "source", str(tmp_path / "nowhere"), "does not exist"
    )


def test_file_that_is_not_a_zip(tmp_path: Path) -> None:
    bogus = tmp_path / "dataset.zip"
    bogus.write_text("not a zip at all")
    _assert_import_fails(bogus, tmp_path / "source", str(bogus), "not a zip archive")


def test_damaged_zip(small_dataset: Path, tmp_path: Path) -> None:
    archive = _zip(small_dataset, tmp_path / "dataset.zip")
    data = bytearray(archive.read_bytes())
    data[40:400] = b"\x00" * 360  # corrupt the first member, keep the central directory
    archive.write_bytes(bytes(data))
    _assert_import_fails(archive, tmp_path / "source", str(archive), "damaged zip")


def test_no_data_yaml(small_dataset: Path, tmp_path: Path) -> None:
    src = tmp_path / "ds"
    shutil.copytree(small_dataset, src)
    (src / "data.yaml").unlink()
    _assert_import_fails(src, tmp_path / "source", str(src), "no data.yaml")


def test_zip_without_data_yaml(small_dataset: Path, tmp_path: Path) -> None:
    src = tmp_path / "ds"
    shutil.copytree(small_dataset, src)
    (src / "data.yaml").unlink()
    archive = _zip(src, tmp_path / "dataset.zip")
    _assert_import_fails(archive, tmp_path / "source", str(archive), "no data.yaml")


@pytest.mark.parametrize(
    ("split", "expected"), [("train", "no train/images"), ("valid", "no valid/images")]
)
def test_missing_split(small_dataset: Path, tmp_path: Path, split: str, expected: str) -> None:
    src = tmp_path / "ds"
    shutil.copytree(small_dataset, src)
    shutil.rmtree(src / split)
    _assert_import_fails(src, tmp_path / "source", str(src), expected)


def test_both_val_and_valid_is_ambiguous(small_dataset: Path, tmp_path: Path) -> None:
    src = tmp_path / "ds"
    shutil.copytree(small_dataset, src)
    shutil.copytree(src / "valid", src / "val")
    _assert_import_fails(src, tmp_path / "source", "valid and val", "keep one")


def test_data_yaml_without_names(small_dataset: Path, tmp_path: Path) -> None:
    src = tmp_path / "ds"
    shutil.copytree(small_dataset, src)
    (src / "data.yaml").write_text("train: train/images\nval: valid/images\n")
    _assert_import_fails(src, tmp_path / "source", "no class names")


@pytest.mark.parametrize("names", ["[crop, weed]", "{0: crop, 1: weed}"])
def test_nc_disagreeing_with_names_is_an_error_naming_both(
    small_dataset: Path, tmp_path: Path, names: str
) -> None:
    """Regression: `nc: 3` beside two names was silently rewritten to 2."""
    src = tmp_path / "ds"
    shutil.copytree(small_dataset, src)
    (src / "data.yaml").write_text(f"nc: 3\nnames: {names}\n")
    _assert_import_fails(
        src,
        tmp_path / "source",
        f"{src / 'data.yaml'}: nc is 3 but names lists 2 class(es) (crop, weed)",
        "make them agree (nc: 2, or 3 names)",
    )
    archive = _zip(src, tmp_path / "dataset.zip", "weeds/")
    _assert_import_fails(
        archive, tmp_path / "source", f"weeds/data.yaml in {archive}: nc is 3 but names lists 2"
    )
    (src / "data.yaml").write_text(f"nc: 2\nnames: {names}\n")  # agreeing: as before
    out = local.import_dataset(src, tmp_path / "source")
    assert yaml.safe_load((out / "data.yaml").read_text())["nc"] == 2


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("../escape.txt", "a '..' part"),
        ("weeds/../../escape.txt", "a '..' part"),
        ("weeds\\..\\escape.txt", "a '..' part"),
        ("/tmp/escape.txt", "an absolute path"),
        ("C:/escape.txt", "an absolute path"),
    ],
)
def test_zip_entry_outside_the_dataset_is_rejected_before_unpacking(
    small_dataset: Path, tmp_path: Path, entry: str, why: str
) -> None:
    """Regression: such entries were unpacked (zipfile rewrites them to stay inside the
    folder) and kept in the dataset; now the zip is refused, naming the entry."""
    archive = _zip(small_dataset, tmp_path / "dataset.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(zipfile.ZipInfo(entry), b"not part of the dataset")
    assert entry in zipfile.ZipFile(archive).namelist()
    unpacked = []
    original = zipfile.ZipFile.extractall
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(zipfile.ZipFile, "extractall", lambda *a, **k: unpacked.append(a))
        _assert_import_fails(
            archive, tmp_path / "source", f"{archive} has the entry {entry!r} ({why})"
        )
    assert not unpacked and zipfile.ZipFile.extractall is original  # nothing was unpacked
    assert not (tmp_path / "escape.txt").exists()


@needs_crop_or_weed
def test_crop_or_weed_imports_and_validates(tmp_path: Path) -> None:
    """The real Roboflow export: `path: ../datasets/roboflow` and 9-column polygon rows."""
    assert "../datasets/roboflow" in (CROP_OR_WEED / "data.yaml").read_text()
    out = local.import_dataset(CROP_OR_WEED, tmp_path / "source")
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["path"] == str(out.resolve())
    assert data["names"] == {0: "crop", 1: "weed"}
    assert (data["train"], data["val"], data["test"]) == (
        "train/images",
        "valid/images",
        "test/images",
    )
    summary = validate.summarize(out, tmp_path, "fail", "local-crop-or-weed", "local", "test")
    assert summary["problems"] == [] and summary["dropped"] == 0
    counts = {s: (v["images"], v["boxes"]) for s, v in summary["splits"].items()}
    assert counts == {"train": (1820, 2835), "val": (260, 417), "test": (130, 237)}
    assert summary["splits"]["train"]["image_sizes"] == {"512x512": 1820}
