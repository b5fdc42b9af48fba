"""The YOLO/Roboflow dataset layout that every fetcher builds and `validate` reads: image
and label paths, the split folders, data.yaml's class names, and the hidden staging folder
a fetch builds in before it renames the dataset into place.

Layout (what Roboflow's YOLO exports and these fetchers produce)::

    data.yaml            names (list or {id: name}), absolute `path`
    train/images, train/labels
    valid/images, valid/labels
    test/images,  test/labels   (optional)
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from attnbench.errors import UserError
from attnbench.io import write_text

LOG = logging.getLogger(__name__)

#: Image suffixes Ultralytics trains on (ultralytics.data.utils.IMG_FORMATS).
IMAGE_SUFFIXES = frozenset(
    {
        ".avif",
        ".bmp",
        ".dng",
        ".heic",
        ".heif",
        ".jp2",
        ".jpeg",
        ".jpg",
        ".mpo",
        ".png",
        ".tif",
        ".tiff",
        ".webp",
    }
)
#: Split folders of the layout, keyed by the name Ultralytics' data.yaml uses.
SPLIT_DIRS = {"train": "train", "val": "valid", "test": "test"}
#: Folder names accepted on input for each split (Roboflow writes `valid`, others `val`).
SPLIT_ALIASES = {"train": ("train",), "val": ("valid", "val"), "test": ("test",)}
REQUIRED_SPLITS = ("train", "val")


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def list_images(images_dir: Path) -> list[Path]:
    """Images of one split, sorted so that every list written from them is stable."""
    if not images_dir.is_dir():
        return []
    return sorted(p for p in images_dir.rglob("*") if is_image(p))


def label_path(image: Path) -> Path:
    """The label file Ultralytics reads for `image` (last `images` folder -> `labels`)."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def find_splits(root: Path) -> dict[str, Path]:
    """Map split (train, val, test) -> its folder under `root`; raises on ambiguity."""
    found: dict[str, Path] = {}
    for split, aliases in SPLIT_ALIASES.items():
        present = [root / a for a in aliases if (root / a / "images").is_dir()]
        if len(present) > 1:
            names = " and ".join(p.name for p in present)
            raise UserError(
                f"{root} has both {names} folders for the {split} split: keep one of them"
            )
        if present:
            found[split] = present[0]
    return found


def read_data_yaml(path: Path) -> dict[str, Any]:
    """The data.yaml as a mapping; malformed YAML is a one-line UserError."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise UserError(
            f"{path} not found: a YOLO dataset needs a data.yaml with its class names"
        ) from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise UserError(f"{path} is not valid YAML ({problem}): fix or re-export it") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a YAML mapping: it must hold at least `names:`")
    return data


def class_names(data: Mapping[str, Any], where: str | os.PathLike) -> list[str]:
    """Class names in id order from a data.yaml mapping (`names` list or dict, or `nc`).

    An `nc` beside the names must count them: which of the two is wrong is the user's
    call, so a disagreement is an error naming both, never silently rewritten.
    """
    names = _names(data, where)
    nc = data.get("nc")
    if names is not None and nc is not None and (nc is True or nc is False or nc != len(names)):
        listed = ", ".join(names)
        raise UserError(
            f"{where}: nc is {nc!r} but names lists {len(names)} class(es) ({listed}): "
            f"make them agree (nc: {len(names)}, or {nc!r} names)"
        )
    if names is not None:
        return names
    if isinstance(nc, int) and not isinstance(nc, bool) and nc > 0:
        return [f"class_{i}" for i in range(nc)]
    raise UserError(f"{where} has no class names: add `names: [a, b, ...]` to it")


def _names(data: Mapping[str, Any], where: str | os.PathLike) -> list[str] | None:
    """The `names` of a data.yaml mapping in id order, or None when it has none."""
    names = data.get("names")
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    if isinstance(names, dict) and names:
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise UserError(
                f"{where}: names keys must be class ids 0..n-1, got {list(names)}"
            ) from None
        if ids != list(range(len(ids))):
            raise UserError(f"{where}: names keys must be class ids 0..{len(ids) - 1}, got {ids}")
        by_id = {int(k): str(v) for k, v in names.items()}
        return [by_id[i] for i in ids]
    return None


def write_source_yaml(
    staging: Path,
    final_root: Path,
    data: Mapping[str, Any],
    where: str | os.PathLike | None = None,
) -> None:
    """Rewrite staging/data.yaml so it points at `final_root` (absolute) and our split folders.

    `where` names the user's data.yaml in errors (default: the staged copy).

    Ultralytics resolves a relative `path` against its own datasets folder, not the
    YAML's folder, so the path must be absolute; Roboflow's `../train/images` style
    entries are replaced by the folders that exist.
    """
    names = class_names(data, where or staging / "data.yaml")
    out = {
        k: v for k, v in data.items() if k not in ("path", "train", "val", "test", "names", "nc")
    }
    out["path"] = str(final_root.resolve())
    for split, folder in SPLIT_DIRS.items():
        if (staging / folder / "images").is_dir():
            out[split] = f"{folder}/images"
    out["nc"] = len(names)
    out["names"] = dict(enumerate(names))
    # Replace, never rewrite in place: data.yaml may be a hard link to the user's original.
    write_text(staging / "data.yaml", yaml.safe_dump(out, sort_keys=False, allow_unicode=True))
    os.chmod(staging / "data.yaml", 0o644)


@contextlib.contextmanager
def staging_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty hidden folder beside `out_dir`; on success it replaces `out_dir`.

    On any exception (or interrupt) the folder is removed and `out_dir` is untouched.
    The final rename is atomic when `out_dir` does not exist (Snakemake removes
    outputs before a job); an existing `out_dir` is removed just before it.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the dataset is not
    try:
        yield tmp
        if out_dir.is_symlink() or out_dir.is_file():
            out_dir.unlink()
        elif out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


#: Left behind by other tools; never part of the data.
SKIP_NAMES = frozenset({".snakemake_timestamp", "__MACOSX", ".DS_Store"})


def canonical_names(root: Path) -> dict[str, str]:
    """Top-level folder name -> its name in our layout (`val` becomes `valid`)."""
    renames: dict[str, str] = {}
    for split, aliases in SPLIT_ALIASES.items():
        for alias in aliases:
            if (root / alias / "images").is_dir():
                renames[alias] = SPLIT_DIRS[split]
    return renames


def move_tree(root: Path, dest: Path) -> None:
    """Move the top level of an unpacked dataset into `dest`, renaming split folders."""
    renames = canonical_names(root)
    for top in sorted(root.iterdir()):
        if top.name not in SKIP_NAMES:
            os.replace(top, dest / renames.get(top.name, top.name))


def check_layout(root: Path, what: str) -> dict[str, Path]:
    """Check data.yaml, train and valid exist under `root` (`what` names it in errors)."""
    if not (root / "data.yaml").is_file():
        raise UserError(
            f"{what} has no data.yaml: export the dataset in YOLO format "
            "(data.yaml + train/ valid/ with images/ and labels/)"
        )
    splits = find_splits(root)
    if "train" not in splits:
        raise UserError(
            f"{what} has no train/images folder: a YOLO/Roboflow dataset needs "
            "train/images and train/labels"
        )
    if "val" not in splits:
        raise UserError(
            f"{what} has no valid/images (or val/images) folder: add a validation split "
            "(Roboflow: generate the version with a valid split)"
        )
    return splits
