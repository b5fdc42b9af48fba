"""A content digest of a dataset folder: what a staged copy is checked against.

Unlike `attnbench.config.local_fingerprint` (names, sizes and mtimes: a cheap rerun
trigger), this hashes every file's bytes, so two copies of a dataset that agree here hold
the same files. benchmarks/subset_dataset.py records it for the subset it makes, and
tools/gpu-host/stage_parts.py checks a dataset assembled from parts against it. Stdlib
only: it runs on the GPU host before any wheel is installed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_of(root: str | os.PathLike) -> list[str]:
    """Every file under `root`, as sorted POSIX paths relative to it (symlinks followed)."""
    root = Path(root)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def digest(root: str | os.PathLike, names: Iterable[str] | None = None) -> str:
    """sha256 over one line `<relative path>\\t<size>\\t<sha256 of the bytes>` per file, in
    sorted order: of every file under `root`, or of `names` (relative paths) only."""
    root = Path(root)
    total = hashlib.sha256()
    for name in sorted(files_of(root) if names is None else names):
        path = root / name
        total.update(f"{name}\t{path.stat().st_size}\t{file_sha256(path)}\n".encode())
    return total.hexdigest()


def summary(root: str | os.PathLike) -> dict:
    """Files, bytes, images and labels per split, and the digest of a YOLO-layout folder."""
    root = Path(root)
    names = files_of(root)
    counts = {}
    for split in sorted({n.split("/")[0] for n in names if n.count("/") >= 2}):
        counts[split] = {
            sub: sum(1 for n in names if n.startswith(f"{split}/{sub}/"))
            for sub in ("images", "labels")
        }
    return {
        "files": len(names),
        "bytes": sum((root / n).stat().st_size for n in names),
        "splits": counts,
        "digest": digest(root, names),
    }
