"""Import a dataset the user already has: a folder or .zip in YOLO/Roboflow layout.

Files are hard-linked when source and destination share a filesystem (a 140 MB dataset
costs nothing) and copied otherwise. Hard links are safe here because nothing writes
into an existing file: data.yaml is replaced, not rewritten, and Ultralytics swaps a
repaired JPEG in with a rename.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import zipfile
from pathlib import Path

from attnbench.data.layout import (
    SKIP_NAMES,
    canonical_names,
    check_layout,
    move_tree,
    read_data_yaml,
    staging_dir,
    write_source_yaml,
)
from attnbench.errors import UserError

LOG = logging.getLogger(__name__)

_SKIP_SUFFIXES = {".cache"}  # Ultralytics' label caches, rebuilt for the new paths


def _dataset_root(folder: Path) -> Path:
    """`folder` itself, or its single sub-folder holding data.yaml (zips often wrap one)."""
    if (folder / "data.yaml").is_file():
        return folder
    candidates = [
        d
        for d in folder.iterdir()
        if d.is_dir() and d.name not in SKIP_NAMES and (d / "data.yaml").is_file()
    ]
    return candidates[0] if len(candidates) == 1 else folder


def _skipped(path: Path) -> bool:
    return path.name in SKIP_NAMES or path.suffix in _SKIP_SUFFIXES


class _Linker:
    """Hard-link files while the filesystem allows it, then fall back to copying."""

    def __init__(self, link: bool) -> None:
        self.link = link
        self.linked = 0
        self.copied = 0

    def __call__(self, src: Path, dst: Path) -> None:
        if self.link:
            try:
                os.link(src, dst)
                self.linked += 1
                return
            except OSError as exc:  # other filesystem, or protected_hardlinks
                LOG.info("hard links not possible (%s): copying instead", exc.strerror or exc)
                self.link = False
        shutil.copyfile(src, dst)
        self.copied += 1


def _copy_tree(root: Path, dest: Path, link: bool) -> _Linker:
    """Copy `root` into `dest` with fresh, writable folders (the source may be read-only)."""
    renames = canonical_names(root)
    linker = _Linker(link)
    for top in sorted(root.iterdir()):
        if _skipped(top):
            continue
        target = dest / renames.get(top.name, top.name)
        if top.is_file():
            linker(top, target)
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_NAMES)
            here = Path(dirpath)
            out = target / here.relative_to(top)
            out.mkdir(parents=True, exist_ok=True)
            for name in sorted(filenames):
                if not _skipped(here / name):
                    linker(here / name, out / name)
    return linker


def unsafe_entry(name: str) -> str | None:
    """Why a zip entry would land outside the folder it is unpacked into, or None.

    Absolute names (a leading slash or backslash, or a drive such as `C:`) and any `..`
    part are refused, with either slash: zipfile would quietly rewrite them and keep
    files where the archive never meant to put them.
    """
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if ".." in parts:
        return "a '..' part"
    return None


def _unzip(archive: Path, into: Path) -> None:
    if not zipfile.is_zipfile(archive):
        raise UserError(
            f"dataset.local = {archive} is a file but not a zip archive: "
            "give a .zip of the dataset or the unpacked folder"
        )
    try:
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():  # all of them, before anything is unpacked
                if why := unsafe_entry(name):
                    raise UserError(
                        f"dataset.local = {archive} has the entry {name!r} ({why}), which "
                        "would unpack outside the dataset folder; nothing was unpacked: "
                        "rebuild the zip with relative paths (cd into the dataset folder; "
                        "zip -r ../dataset.zip .)"
                    )
            zf.extractall(into)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"dataset.local = {archive} is a damaged zip ({detail}): re-download it or unzip "
            "it and point dataset.local at the folder"
        ) from None


def import_dataset(path: str | os.PathLike, out_dir: str | os.PathLike, link: bool = True) -> Path:
    """Import a YOLO/Roboflow dataset folder or .zip into `out_dir`, atomically.

    data.yaml is rewritten with an absolute `path` and the split folders that exist;
    a `val` folder is renamed `valid`. Returns `out_dir`.
    """
    src = Path(path).expanduser()
    out_dir = Path(out_dir)
    if not src.exists():
        raise UserError(
            f"dataset.local = {src} does not exist: point it at a folder or .zip in "
            "YOLO/Roboflow layout (data.yaml, train/, valid/)"
        )
    with staging_dir(out_dir) as staging:
        if src.is_dir():
            root = _dataset_root(src)
            where: str | Path = root / "data.yaml"  # the user's file, named in errors
            check_layout(root, f"dataset.local = {src}")
            linker = _copy_tree(root, staging, link)
            LOG.info(
                "imported %s: %d files hard-linked, %d copied", root, linker.linked, linker.copied
            )
        else:
            unpacked = staging / ".unpacked"
            _unzip(src, unpacked)
            root = _dataset_root(unpacked)
            inside = f"{root.name}/" if root != unpacked else ""
            check_layout(root, f"dataset.local = {src}" + (f" ({inside})" if inside else ""))
            where = f"{inside}data.yaml in {src}"
            move_tree(root, staging)
            shutil.rmtree(unpacked)
            LOG.info("imported %s (unzipped)", src)
        write_source_yaml(staging, out_dir, read_data_yaml(staging / "data.yaml"), where)
    return out_dir
