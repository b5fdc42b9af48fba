"""Check a fetched dataset, count what is in it, and write what training reads.

Ultralytics silently skips images it cannot use (corrupt files, bad label rows) and
trains on the rest, so two runs could see different data without anyone noticing. Here
every problem is listed by file before training: policy `fail` stops with the list (in
problems.json), policy `drop` leaves those images out of the image lists and says so in
summary.json. Images without a label file, or with an empty one, are background images,
as in Ultralytics; but a split in which no image has a label file at all is an error
(labels lost on the way) unless `allow_background_only` says that is intended.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from attnbench import intermediates, io
from attnbench.data.layout import (
    SPLIT_DIRS,
    check_layout,
    class_names,
    find_splits,
    label_path,
    list_images,
    read_data_yaml,
)
from attnbench.errors import UserError

LOG = logging.getLogger(__name__)

POLICIES = ("fail", "drop")
PROBLEMS_FILE = "problems.json"
_MIN_SIDE = 10  # Ultralytics rejects images smaller than this
_EXIF_ORIENTATION = 0x0112
_SHOWN_IN_ERROR = 3


@dataclass
class Problem:
    """One thing wrong with one file. `image` is the image it costs (None: the split)."""

    file: str
    split: str
    kind: str  # unreadable_image | malformed_row | class_out_of_range | coords_out_of_range | empty_split
    problem: str
    image: str | None = None

    def as_dict(self) -> dict[str, str]:
        return {"file": self.file, "split": self.split, "kind": self.kind, "problem": self.problem}


@dataclass
class ImageRecord:
    path: Path
    size: tuple[int, int] | None = None  # (width, height) as displayed (EXIF applied)
    classes: list[int] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    labelled: bool = False  # it has a label file (an empty one says: background)


def image_size(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """((width, height), None) for a decodable image, else (None, why).

    The whole image is decoded (at reduced scale for JPEG), so truncated files are found.
    """
    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
            if im.format == "JPEG":
                im.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            im.load()
    except Exception as exc:  # PIL raises many types for broken files
        return None, f"unreadable image ({' '.join(str(exc).split()) or type(exc).__name__})"
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    if min(width, height) < _MIN_SIDE:
        return None, f"unreadable image (size {width}x{height} is under {_MIN_SIDE} px)"
    return (width, height), None


def check_label_file(path: Path, num_classes: int) -> tuple[list[int], list[tuple[str, str]]]:
    """Class ids of the rows of a label file, and its problems as (kind, message).

    Rows are boxes (class cx cy w h) or polygons (class x1 y1 ... xk yk, k >= 3), as
    Ultralytics reads them; one entry per kind of problem, naming the first bad line.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [("malformed_row", f"unreadable label file ({type(exc).__name__})")]
    classes: list[int] = []
    found: dict[str, str] = {}
    shapes: set[str] = set()

    def note(kind: str, message: str) -> None:
        found.setdefault(kind, message)

    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        n = len(fields)
        if n != 5 and (n < 7 or n % 2 == 0):
            note(
                "malformed_row",
                f"line {number}: {n} values (a box row has 5, a polygon row 1+2k, k >= 3)",
            )
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            note("malformed_row", f"line {number}: not all values are numbers")
            continue
        if not all(math.isfinite(v) for v in values):
            note("malformed_row", f"line {number}: values must be finite")
            continue
        shapes.add("box" if n == 5 else "polygon")
        cls = values[0]
        if cls != int(cls):
            note("malformed_row", f"line {number}: class id {fields[0]} is not an integer")
            continue
        if not 0 <= cls < num_classes:
            note(
                "class_out_of_range",
                f"line {number}: class id {int(cls)} out of range 0..{num_classes - 1}",
            )
            continue
        bad = [v for v in values[1:] if not 0.0 <= v <= 1.0]
        if bad:
            note("coords_out_of_range", f"line {number}: coordinate {bad[0]:g} outside [0, 1]")
            continue
        classes.append(int(cls))
    if len(shapes) > 1:
        note("malformed_row", "mixes box rows and polygon rows (Ultralytics rejects such a file)")
    return classes, list(found.items())


def _check(record: ImageRecord, split: str, root: Path, num_classes: int) -> ImageRecord:
    """Fill in one image's size, classes and problems."""
    image_rel = record.path.relative_to(root).as_posix()
    record.size, why = image_size(record.path)
    if why:
        record.problems.append(Problem(image_rel, split, "unreadable_image", why, image_rel))
    labels = label_path(record.path)
    record.labelled = labels.is_file()
    if record.labelled:
        record.classes, issues = check_label_file(labels, num_classes)
        label_rel = labels.relative_to(root).as_posix()
        record.problems += [Problem(label_rel, split, kind, msg, image_rel) for kind, msg in issues]
    return record


def scan(source_dir: Path) -> tuple[list[str], dict[str, list[ImageRecord]], list[Problem]]:
    """Check every image and label file: (class names, records per split, split problems)."""
    check_layout(source_dir, f"dataset folder {source_dir}")
    names = class_names(read_data_yaml(source_dir / "data.yaml"), source_dir / "data.yaml")
    splits = find_splits(source_dir)
    records: dict[str, list[ImageRecord]] = {}
    split_problems: list[Problem] = []
    jobs = []
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decodes without the GIL
        for split, folder in splits.items():
            images = list_images(folder / "images")
            if not images:
                rel = (folder / "images").relative_to(source_dir).as_posix()
                split_problems.append(
                    Problem(rel, split, "empty_split", f"the {split} split has no images")
                )
            records[split] = [ImageRecord(p) for p in images]
            jobs += [pool.submit(_check, r, split, source_dir, len(names)) for r in records[split]]
        for job in jobs:
            job.result()
    return names, records, split_problems


def _split_summary(kept: list[ImageRecord], names: list[str]) -> dict[str, Any]:
    per_class = Counter(c for r in kept for c in r.classes)
    sizes = Counter(f"{r.size[0]}x{r.size[1]}" for r in kept if r.size)
    return {
        "images": len(kept),
        "boxes": sum(per_class.values()),
        "boxes_per_class": {name: per_class.get(i, 0) for i, name in enumerate(names)},
        "image_sizes": dict(sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))),
        "backgrounds": sum(1 for r in kept if not r.classes),
    }


def _clear(out_dir: Path, names: list[str]) -> None:
    for name in names:
        (out_dir / name).unlink(missing_ok=True)


def _first_problems(problems: list[Problem]) -> str:
    shown = "; ".join(f"{p.file}: {p.problem}" for p in problems[:_SHOWN_IN_ERROR])
    more = len(problems) - _SHOWN_IN_ERROR
    return shown + (f"; and {more} more" if more > 0 else "")


def _unlabelled(source_dir: Path, records: dict[str, list[ImageRecord]], splits: list[str]) -> str:
    """The one-line error for splits whose images have no label file at all."""
    folders = find_splits(source_dir)
    where = "; ".join(
        f"the {s} split has {len(records[s])} image(s) and no label file in {folders[s] / 'labels'}"
        for s in splits
    )
    return (
        f"{where}: add the YOLO label files (one .txt per image, empty for an image "
        "without objects), or set dataset.allow_background_only: true if these images "
        "are meant to be background only"
    )


def summarize(
    source_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    policy: str = "fail",
    name: str | None = None,
    source: str | None = None,
    reason: str | None = None,
    allow_background_only: bool = False,
) -> dict[str, Any]:
    """Validate `source_dir` and write summary.json, data.yaml and the image lists to `out_dir`.

    On failure (policy `fail` with problems, or a train/val split left empty) only
    problems.json is written and stale outputs are removed, so nothing a rerun would
    trust is left behind. A split with images but not one label file fails too, unless
    `allow_background_only` (config dataset.allow_background_only). Returns the summary.
    """
    if policy not in POLICIES:
        raise UserError(f"dataset.on_problems = {policy!r} is unknown: use fail or drop")
    source_dir = Path(source_dir).resolve()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = ["summary.json", "data.yaml", *(f"{s}.txt" for s in SPLIT_DIRS)]
    _clear(out_dir, [*outputs, PROBLEMS_FILE])

    names, records, split_problems = scan(source_dir)
    unlabelled = [s for s, recs in records.items() if recs and not any(r.labelled for r in recs)]
    if unlabelled and not allow_background_only:
        raise UserError(_unlabelled(source_dir, records, unlabelled))
    problems = split_problems + [p for split in records.values() for r in split for p in r.problems]
    bad_images = {p.image for p in problems if p.image}
    kept = {
        split: [r for r in recs if r.path.relative_to(source_dir).as_posix() not in bad_images]
        for split, recs in records.items()
    }
    empty_required = [s for s in ("train", "val") if not kept.get(s)]
    base = {
        "name": name or out_dir.name,
        "source": source,
        "reason": reason,
        "policy": policy,
        "source_dir": str(source_dir),
        "classes": names,
    }
    if (problems and policy == "fail") or empty_required:
        report = {**base, "problems": [p.as_dict() for p in problems], "count": len(problems)}
        io.write_json(out_dir / PROBLEMS_FILE, report)
        if problems and policy == "fail":
            raise UserError(
                f"{len(problems)} problem(s) in dataset {source_dir}: {_first_problems(problems)} "
                f"(all in {out_dir / PROBLEMS_FILE}): fix them, or set dataset.on_problems: drop "
                "to train without those images"
            )
        raise UserError(
            f"no usable images left in the {' and '.join(empty_required)} split(s) of {source_dir} "
            f"after dropping {len(bad_images)} bad image(s) (see {out_dir / PROBLEMS_FILE}): "
            "fix the dataset"
        )

    data_yaml: dict[str, Any] = {"path": str(out_dir)}
    for split in SPLIT_DIRS:
        if kept.get(split):
            lines = "".join(f"{r.path}\n" for r in kept[split])
            io.write_text(out_dir / f"{split}.txt", lines)
            data_yaml[split] = f"{split}.txt"
    data_yaml["nc"] = len(names)
    data_yaml["names"] = dict(enumerate(names))
    io.write_text(out_dir / "data.yaml", _yaml(data_yaml))

    summary = {
        **base,
        "splits": {split: _split_summary(kept[split], names) for split in records},
        "problems": [p.as_dict() for p in problems],
        "dropped": len(bad_images),
        # Splits accepted without a single label file (dataset.allow_background_only).
        "background_only": unlabelled,
    }
    # Last: its presence means complete.
    io.write_json(out_dir / "summary.json", summary, schema=intermediates.DATASET_SUMMARY)
    for split, info in summary["splits"].items():
        LOG.info(
            "%s: %d images, %d boxes %s, %d background",
            split,
            info["images"],
            info["boxes"],
            info["boxes_per_class"],
            info["backgrounds"],
        )
    if problems:
        LOG.warning(
            "dropped %d image(s) with problems: %s", len(bad_images), _first_problems(problems)
        )
    return summary


def _yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
