"""What the tests that train for real share: a tiny demo dataset validated into the
data.yaml the train rule reads, and the project's training settings sized for a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attnbench import config as cfg
from attnbench.data import demo, validate

REPO = Path(__file__).resolve().parents[1]


def demo_data_yaml(root: Path, train_images: int) -> Path:
    """A demo dataset (96 px, 4 validation images) under `root`, validated: its data.yaml."""
    demo.generate(root / "source", train_images=train_images, val_images=4, image_size=96, seed=0)
    validate.summarize(root / "source", root / "data", name="demo", source="demo")
    return root / "data" / "data.yaml"


def cpu_train_settings(**sizes: Any) -> dict[str, Any]:
    """The default config's train section on the CPU without loader workers, at `sizes`."""
    settings = cfg.load_file(REPO / "config.yaml")["train"]
    settings.update(**sizes, workers=0, device="cpu")
    return settings
