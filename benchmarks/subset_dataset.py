"""Copy a seeded random subset of a YOLO-layout dataset (to move it to a GPU host).

    python benchmarks/subset_dataset.py ../shared/data/crop-or-weed .data/crop-or-weed \
        --train 600 --valid 130 [--record .data/crop-or-weed.subset.json]

Prints a record of the subset (source, seed, counts, files, bytes and the content digest
of attnbench.data.digest) and writes it to --record: the digest is what a copy on the GPU
host is checked against (tools/gpu-host/stage_parts.py). A count above what a split
holds takes the whole split.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from attnbench.data import digest as datadigest  # noqa: E402


def subset(src: Path, dst: Path, counts: dict[str, int], seed: int) -> dict:
    """Copy the subset and return its record (with the digest of what was written)."""
    if dst.exists() and any(dst.iterdir()):
        raise SystemExit(f"{dst} is not empty: a subset goes into a new folder")
    rng = random.Random(seed)
    for split, n in counts.items():
        images = sorted((src / split / "images").iterdir())
        chosen = sorted(rng.sample(images, min(n, len(images))))
        for sub in ("images", "labels"):
            (dst / split / sub).mkdir(parents=True, exist_ok=True)
        for image in chosen:
            shutil.copy2(image, dst / split / "images" / image.name)
            label = src / split / "labels" / f"{image.stem}.txt"
            if label.exists():
                shutil.copy2(label, dst / split / "labels" / label.name)
    data = yaml.safe_load((src / "data.yaml").read_text())
    data.pop("path", None)
    data.pop("test", None)
    data.update(train="train/images", val="valid/images")
    (dst / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    for extra in ("README.dataset.txt", "README.roboflow.txt"):
        if (src / extra).exists():
            shutil.copy2(src / extra, dst / extra)
    return {
        "source": str(src),
        "seed": seed,
        "requested": counts,
        "sampling": "random.Random(seed).sample over each split's sorted image names",
        **datadigest.summary(dst),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--valid", type=int, default=130)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record", type=Path, help="write the subset's record (JSON) here")
    args = parser.parse_args()
    record = subset(args.src, args.dst, {"train": args.train, "valid": args.valid}, args.seed)
    text = json.dumps(record, indent=1) + "\n"
    if args.record:
        args.record.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
