"""Copy a seeded random subset of a YOLO-layout dataset (to move it to a GPU host).

    python benchmarks/subset_dataset.py ../shared/data/crop-or-weed .data/crop-or-weed \
        --train 600 --valid 130
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

import yaml


def subset(src: Path, dst: Path, counts: dict[str, int], seed: int) -> None:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--valid", type=int, default=130)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    subset(args.src, args.dst, {"train": args.train, "valid": args.valid}, args.seed)


if __name__ == "__main__":
    main()
