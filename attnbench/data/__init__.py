"""Datasets in YOLO/Roboflow layout: fetch them (demo, local, roboflow) and validate them.

Every fetcher builds the dataset in a hidden folder beside its destination and renames
it into place only when complete, so a failed or interrupted fetch leaves nothing that
Snakemake (or a person) could mistake for a finished dataset.

Layout (what Roboflow's YOLO exports and these fetchers produce)::

    data.yaml            names (list or {id: name}), absolute `path`
    train/images, train/labels
    valid/images, valid/labels
    test/images,  test/labels   (optional)

The layout's helpers are `attnbench.data.layout`; this module chooses the fetcher.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attnbench.errors import UserError


def fetch(spec: Mapping[str, Any], out_dir: str | os.PathLike, timeout_s: float = 60.0) -> Path:
    """Fetch the dataset described by `spec` (rules/common.smk dataset_spec()) into `out_dir`."""
    source = spec.get("source")
    out_dir = Path(out_dir)
    if source == "demo":
        from attnbench.data import demo

        opts = dict(spec.get("demo") or {})
        return demo.generate(
            out_dir,
            train_images=int(opts.get("train_images", demo.DEFAULTS["train_images"])),
            val_images=int(opts.get("val_images", demo.DEFAULTS["val_images"])),
            image_size=int(opts.get("image_size", demo.DEFAULTS["image_size"])),
            seed=int(opts.get("seed", demo.DEFAULTS["seed"])),
        )
    if source == "local":
        from attnbench.data import local

        if not spec.get("local"):
            raise UserError("dataset.local is empty: set it to a folder or .zip in YOLO layout")
        return local.import_dataset(spec["local"], out_dir)
    if source == "roboflow":
        from attnbench.data import roboflow

        rf = spec.get("roboflow") or {}
        return roboflow.download(
            rf["workspace"],
            rf["project"],
            int(rf["version"]),
            rf.get("format", "yolov11"),
            out_dir,
            timeout_s=timeout_s,
        )
    raise UserError(f"dataset source {source!r} is unknown (allowed: roboflow, local, demo)")


def source_kind(name: str) -> str:
    """roboflow, local or demo, from a dataset folder name made by config.resolve_dataset."""
    for kind in ("roboflow", "local"):
        if name.startswith(f"{kind}-"):
            return kind
    return "demo" if name == "demo" else "unknown"
