"""The synthetic demo: deterministic bytes, exact boxes, the layout training expects."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from attnbench.data import demo


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "data.yaml"  # data.yaml holds the absolute path
    }


def _plant_pixels(image: Image.Image) -> np.ndarray:
    """Plants are the only pixels greener than red (soil and pebbles never are)."""
    rgb = np.asarray(image).astype(int)
    return rgb[..., 1] - rgb[..., 0] > 10


def test_layout_and_data_yaml(tmp_path: Path) -> None:
    out = demo.generate(tmp_path / "source", train_images=5, val_images=3, image_size=128, seed=1)
    assert out == tmp_path / "source"
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["path"] == str(out.resolve())
    assert data["names"] == {0: "crop", 1: "weed"} and data["nc"] == 2
    assert data["train"] == "train/images" and data["val"] == "valid/images" and "test" not in data
    for split, count in (("train", 5), ("valid", 3)):
        images = sorted((out / split / "images").glob("*.jpg"))
        labels = sorted((out / split / "labels").glob("*.txt"))
        assert len(images) == len(labels) == count
        assert [p.stem for p in images] == [p.stem for p in labels]
        for image in images:
            with Image.open(image) as im:
                assert im.size == (128, 128) and im.mode == "RGB"
    assert not list(tmp_path.glob(".*"))  # no staging folder left behind


def test_same_arguments_give_the_same_bytes(tmp_path: Path) -> None:
    a = demo.generate(tmp_path / "a", 6, 2, 96, seed=3)
    b = demo.generate(tmp_path / "b", 6, 2, 96, seed=3)
    c = demo.generate(tmp_path / "c", 6, 2, 96, seed=4)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_image_count_does_not_change_the_other_images(tmp_path: Path) -> None:
    small = _digest(demo.generate(tmp_path / "small", 3, 2, 96, seed=0))
    large = _digest(demo.generate(tmp_path / "large", 6, 4, 96, seed=0))
    assert all(large[name] == digest for name, digest in small.items() if "images" in name)


@pytest.mark.parametrize("seed", range(12))
def test_boxes_are_the_exact_extent_of_each_plant(seed: int) -> None:
    size = 160
    image, plants, masks = demo.render(np.random.default_rng(seed), size, with_masks=True)
    assert 1 <= len(plants) <= 4
    plant_pixels = _plant_pixels(image)
    union = np.zeros((size, size), dtype=bool)
    for plant, mask in zip(plants, masks, strict=True):
        ys, xs = np.nonzero(mask)
        assert plant.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert not (union & mask).any(), "plants overlap"
        union |= mask
    # What the labels claim is exactly what is drawn: every green pixel, nothing else.
    assert np.array_equal(union, plant_pixels)


def test_label_rows_match_rendered_plants(tmp_path: Path) -> None:
    size = 128
    out = demo.generate(tmp_path / "source", 4, 2, size, seed=7)
    for split, folder in (("train", "train"), ("val", "valid")):
        for label in sorted((out / folder / "labels").glob("*.txt")):
            index = int(label.stem.rsplit("_", 1)[1])
            _, plants, _ = demo.render(demo.image_rng(7, split, index), size)
            rows = [list(map(float, line.split())) for line in label.read_text().splitlines()]
            assert len(rows) == len(plants)
            for row, plant in zip(rows, plants, strict=True):
                x0, y0, x1, y1 = plant.box
                assert row[0] == plant.cls
                expected = [
                    (x0 + x1) / 2 / size,
                    (y0 + y1) / 2 / size,
                    (x1 - x0) / size,
                    (y1 - y0) / size,
                ]
                assert row[1:] == pytest.approx(expected, abs=1e-6)
                assert all(0.0 <= v <= 1.0 for v in row[1:])


def test_saved_images_keep_plants_inside_their_boxes(tmp_path: Path) -> None:
    """After JPEG compression the green is still where the labels say (a sanity check)."""
    size = 128
    out = demo.generate(tmp_path / "source", 6, 1, size, seed=2)
    inside = outside = 0.0
    for image in sorted((out / "train" / "images").glob("*.jpg")):
        green = _plant_pixels(Image.open(image).convert("RGB"))
        boxes = np.zeros_like(green)
        for line in (out / "train" / "labels" / f"{image.stem}.txt").read_text().splitlines():
            _, cx, cy, w, h = map(float, line.split())
            x0, x1 = round((cx - w / 2) * size), round((cx + w / 2) * size)
            y0, y1 = round((cy - h / 2) * size), round((cy + h / 2) * size)
            boxes[y0:y1, x0:x1] = True
        inside += green[boxes].mean()
        outside += green[~boxes].mean()
    assert inside / 6 > 0.3 and outside / 6 < 0.01


def test_both_classes_appear_and_look_different() -> None:
    """Crops are broad bright leaves, weeds narrow yellow-green spikes: fill ratio differs."""
    fills: dict[int, list[float]] = {0: [], 1: []}
    for seed in range(30):
        _, plants, masks = demo.render(np.random.default_rng(seed), 192, with_masks=True)
        for plant, mask in zip(plants, masks, strict=True):
            x0, y0, x1, y1 = plant.box
            fills[plant.cls].append(mask[y0:y1, x0:x1].mean())
    assert len(fills[0]) >= 10 and len(fills[1]) >= 10
    assert np.median(fills[0]) > np.median(fills[1]) + 0.2


def test_default_size_is_fast(tmp_path: Path) -> None:
    started = time.perf_counter()
    demo.generate(tmp_path / "source", **{k: v for k, v in demo.DEFAULTS.items()})
    assert time.perf_counter() - started < 5.0


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one"):
        demo.generate(tmp_path / "x", train_images=0)
    with pytest.raises(ValueError, match="too small"):
        demo.generate(tmp_path / "x", image_size=16)
    assert not (tmp_path / "x").exists()


def test_replaces_an_existing_folder(tmp_path: Path) -> None:
    out = tmp_path / "source"
    (out / "stale").mkdir(parents=True)
    demo.generate(out, 2, 1, 64)
    assert not (out / "stale").exists() and (out / "data.yaml").is_file()
