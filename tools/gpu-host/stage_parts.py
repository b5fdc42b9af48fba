"""Move a dataset larger than one device call to the GPU host in parts, and check it there.

    # here: cut the subset into parts of at most 55 MB and write the manifest (committed)
    python tools/gpu-host/stage_parts.py split .gpu/study-data/crop-or-weed .gpu/study-data \\
        --max-mb 55 --manifest docs/reference/gpu/study/dataset.json \\
        --record .gpu/study-data/crop-or-weed.subset.json
    # on the host (tools/gpu-host/dag.sh, GPU_MANIFEST set): copy the parts carried so far
    # into .gpu/study-data/crop-or-weed and check the whole against the manifest's digest
    python3 tools/gpu-host/stage_parts.py assemble .gpu/study-data docs/reference/gpu/study/dataset.json

A part is `<parts dir>/partN/`: PART.json (which part, its files' digest) and files/ (the
files at their paths in the dataset). One call carries one part (`carry: .gpu/study-data/
partN`); a part already assembled on a warm host is remembered in `<parts dir>/.staged/`,
so later calls need not carry it again. `assemble` exits 3 with one line naming the parts
still missing, or saying the assembled folder's digest is not the manifest's; `--partial`
(a staging call) reports the same and exits 0. The digest is attnbench.data.digest's, the
one benchmarks/subset_dataset.py records. Stdlib and attnbench only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from attnbench.data import digest as datadigest  # noqa: E402

MB = 1_000_000
SUBSET_KEYS = ("source", "seed", "requested", "sampling")


class StagingError(RuntimeError):
    """One line saying what is missing or wrong."""


def plan_parts(root: Path, max_bytes: int) -> list[list[str]]:
    """The dataset's files in sorted order, cut into consecutive parts of <= max_bytes.

    An image and its label sort into the same split folder, not next to each other, so a
    part holds whole runs of images, then labels; assembly needs every part anyway.
    """
    parts: list[list[str]] = [[]]
    size = 0
    for name in datadigest.files_of(root):
        n = (root / name).stat().st_size
        if n > max_bytes:
            raise StagingError(f"{name} is {n} bytes, more than a part's {max_bytes}")
        if parts[-1] and size + n > max_bytes:
            parts.append([])
            size = 0
        parts[-1].append(name)
        size += n
    return [p for p in parts if p]


def split(dataset: Path, parts_dir: Path, max_mb: float, record: Path | None = None) -> dict:
    """Write partN/ folders under parts_dir and return the manifest (what assemble checks)."""
    dataset = dataset.resolve()
    whole = datadigest.summary(dataset)
    subset = None
    if record is not None:
        subset = json.loads(record.read_text())
        if subset.get("digest") != whole["digest"]:
            raise StagingError(
                f"{dataset} is not the subset {record} records "
                f"(digest {whole['digest'][:16]}, recorded {str(subset.get('digest'))[:16]})"
            )
    groups = plan_parts(dataset, int(max_mb * MB))
    manifest = {
        "dataset": dataset.name,
        **whole,
        "max_part_mb": max_mb,
        "parts": [],
        # How the subset was drawn (its counts and digest are the ones above).
        "subset": None if subset is None else {k: subset.get(k) for k in SUBSET_KEYS},
    }
    for number, names in enumerate(groups, 1):
        name = f"part{number}"
        target = parts_dir / name
        shutil.rmtree(target, ignore_errors=True)
        for rel in names:
            (target / "files" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(dataset / rel, target / "files" / rel)
        part = {
            "name": name,
            "files": len(names),
            "bytes": sum((dataset / n).stat().st_size for n in names),
            "digest": datadigest.digest(dataset, names),
        }
        (target / "PART.json").write_text(
            json.dumps({"dataset": dataset.name, "parts": len(groups), **part}, indent=1) + "\n"
        )
        manifest["parts"].append(part)
    return manifest


def _check_part(folder: Path, part: dict, dataset: str) -> list[str]:
    """The part's files (relative paths), after checking them against the manifest."""
    info = json.loads((folder / "PART.json").read_text())
    if info.get("dataset") != dataset or info.get("digest") != part["digest"]:
        raise StagingError(
            f"{folder} is not {part['name']} of this manifest's {dataset} "
            f"(its digest {str(info.get('digest'))[:16]}, expected {part['digest'][:16]}): "
            "split again and carry the new parts"
        )
    names = datadigest.files_of(folder / "files")
    found = datadigest.digest(folder / "files", names)
    if found != part["digest"]:
        raise StagingError(
            f"{folder} is damaged (files digest {found[:16]}, expected {part['digest'][:16]}): "
            "carry it again"
        )
    return names


def assemble(parts_dir: Path, manifest: dict, partial: bool = False) -> str:
    """Copy every carried part into parts_dir/<dataset> and check the whole; returns a
    status line. Raises StagingError (one line) when parts are missing or the digest
    differs, unless `partial`, which only reports what is missing."""
    name = manifest["dataset"]
    target = parts_dir / name
    staged = parts_dir / ".staged"
    staged.mkdir(parents=True, exist_ok=True)
    copied = []
    for part in manifest["parts"]:
        folder = parts_dir / part["name"]
        marker = staged / f"{part['name']}.json"
        done = marker.exists() and json.loads(marker.read_text()).get("digest") == part["digest"]
        if done or not (folder / "PART.json").exists():
            continue
        for rel in _check_part(folder, part, name):
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / "files" / rel, target / rel)
        marker.write_text(json.dumps(part) + "\n")
        copied.append(part["name"])
    missing = [
        p["name"]
        for p in manifest["parts"]
        if not (staged / f"{p['name']}.json").exists()
        or json.loads((staged / f"{p['name']}.json").read_text()).get("digest") != p["digest"]
    ]
    total = len(manifest["parts"])
    if missing:
        line = (
            f"dataset {name} incomplete: {', '.join(missing)} of {total} part(s) missing "
            f"(carry {' '.join(str(parts_dir / m) for m in missing)}, one part a call)"
        )
        if partial:
            return line + (f"; assembled now: {', '.join(copied)}" if copied else "")
        raise StagingError(line)
    found = datadigest.digest(target) if target.is_dir() else "none"
    if found != manifest["digest"]:
        raise StagingError(
            f"dataset {name} assembled from {total} part(s) has digest {found[:16]}, the "
            f"manifest {manifest['digest'][:16]}: remove {target} and {staged} and stage again"
        )
    return (
        f"dataset {name}: {manifest['files']} files, digest {found[:16]} as recorded "
        f"({total} part(s); assembled now: {', '.join(copied) or 'none, already there'})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("split", help="cut a dataset folder into parts and write the manifest")
    s.add_argument("dataset", type=Path, help="the dataset folder (e.g. a subset_dataset.py copy)")
    s.add_argument("parts_dir", type=Path, help="where partN/ go (e.g. .gpu/study-data)")
    s.add_argument("--max-mb", type=float, default=55.0, help="largest part in MB (default 55)")
    s.add_argument("--manifest", type=Path, required=True, help="the manifest JSON to write")
    s.add_argument("--record", type=Path, help="subset_dataset.py's record: its digest must match")
    a = sub.add_parser("assemble", help="on the host: assemble the carried parts and check them")
    a.add_argument("parts_dir", type=Path)
    a.add_argument("manifest", type=Path)
    a.add_argument("--partial", action="store_true", help="report missing parts, exit 0")
    args = parser.parse_args(argv)
    try:
        if args.command == "split":
            manifest = split(args.dataset, args.parts_dir, args.max_mb, args.record)
            args.manifest.parent.mkdir(parents=True, exist_ok=True)
            args.manifest.write_text(json.dumps(manifest, indent=1) + "\n")
            for part in manifest["parts"]:
                print(f"{args.parts_dir / part['name']}: {part['files']} files, "
                      f"{part['bytes'] / MB:.1f} MB")  # fmt: skip
            print(f"manifest {args.manifest}: digest {manifest['digest'][:16]}")
        else:
            manifest = json.loads(args.manifest.read_text())
            print(assemble(args.parts_dir, manifest, args.partial))
    except StagingError as error:
        print(f"stage_parts: {error}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
