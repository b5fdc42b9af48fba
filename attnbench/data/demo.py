"""The embedded demo dataset: synthetic crop and weed plants on soil, made with numpy + PIL.

It lets the whole workflow run offline in minutes. Crops are rosettes of broad, rounded
bright-green leaves; weeds are tufts of narrow, spiky yellow-green leaves. Boxes are the
exact pixel extent of each drawn plant, and plants never overlap, so labels are exact.
Each image comes from its own random stream (seed, split, index): the same arguments
give the same bytes, and changing the image count does not change the other images.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from attnbench.data.layout import SPLIT_DIRS, staging_dir, write_source_yaml

CLASSES = ("crop", "weed")
DEFAULTS = {"train_images": 48, "val_images": 16, "image_size": 256, "seed": 0}
_SPLIT_CODES = {"train": 0, "val": 1}
_JPEG_QUALITY = 90
_MAX_PLANTS = 4


@dataclass(frozen=True)
class Plant:
    """One drawn plant: class id and pixel box (x0, y0, x1, y1), x1 and y1 exclusive."""

    cls: int
    box: tuple[int, int, int, int]

    def yolo_row(self, size: int) -> str:
        """The YOLO label row: class, centre x, centre y, width, height (normalised)."""
        x0, y0, x1, y1 = self.box
        values = ((x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size)
        return f"{self.cls} " + " ".join(f"{v:.6f}" for v in values)


def _smooth_noise(rng: np.random.Generator, cells: int, size: int) -> np.ndarray:
    """Random values on a coarse grid, bicubically upsampled: soil moisture and clods."""
    coarse = rng.normal(0.0, 1.0, (cells, cells)).astype(np.float32)
    return np.asarray(
        Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    )


def _soil(rng: np.random.Generator, size: int) -> Image.Image:
    """Textured brown soil. Noise moves all channels together, so red stays above green."""
    red = rng.uniform(110.0, 145.0)
    green = red - rng.uniform(28.0, 42.0)
    blue = green - rng.uniform(26.0, 38.0)
    shade = (
        14.0 * _smooth_noise(rng, 5, size)
        + 7.0 * _smooth_noise(rng, 24, size)
        + rng.normal(0.0, 6.0, (size, size)).astype(np.float32)
    )
    shade = np.clip(shade, -60.0, 60.0)[..., None]
    rgb = np.clip(np.array([red, green, blue], dtype=np.float32) + shade, 0, 255)
    image = Image.fromarray(rgb.astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(8, 25))):  # pebbles: grey, never greener than red
        x, y = rng.uniform(0, size, 2)
        rx, ry = rng.uniform(1.0, 3.5, 2) * size / 256
        value = rng.uniform(90, 170)
        color = (int(value), int(value * 0.96), int(value * 0.9))
        draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=color)
    return image


def _rotate(
    points: np.ndarray, angle: float, centre: tuple[float, float]
) -> list[tuple[float, float]]:
    c, s = math.cos(angle), math.sin(angle)
    rotated = points @ np.array([[c, s], [-s, c]], dtype=np.float64)
    return [(float(x + centre[0]), float(y + centre[1])) for x, y in rotated]


def _crop_leaves(rng: np.random.Generator, cx: float, cy: float, r: float):
    """A rosette: 5-8 broad elliptic leaves radiating from the centre, plus a bud."""
    n = int(rng.integers(5, 9))
    start = rng.uniform(0, 2 * math.pi)
    t = np.linspace(0, 2 * math.pi, 24, endpoint=False)
    for k in range(n):
        angle = start + 2 * math.pi * k / n + rng.normal(0, 0.15)
        length = r * rng.uniform(0.65, 1.0)
        width = length * rng.uniform(0.36, 0.5)
        ellipse = np.stack([length / 2 * (1 + np.cos(t)), width / 2 * np.sin(t)], axis=1)
        red, green, blue = rng.uniform(45, 85), rng.uniform(145, 185), rng.uniform(40, 75)
        yield "polygon", _rotate(ellipse, angle, (cx, cy)), (int(red), int(green), int(blue))
        rib = np.array([[0.0, 0.0], [length * 0.85, 0.0]])
        yield (
            "line",
            _rotate(rib, angle, (cx, cy)),
            (int(red + 30), int(green + 35), int(blue + 25)),
        )
    bud = r * 0.15
    yield "ellipse", [(cx - bud, cy - bud), (cx + bud, cy + bud)], (120, 205, 95)


def _weed_leaves(rng: np.random.Generator, cx: float, cy: float, r: float):
    """A tuft: 9-14 narrow, pointed, yellow-green leaves at irregular angles."""
    n = int(rng.integers(9, 15))
    for _ in range(n):
        angle = rng.uniform(0, 2 * math.pi)
        length = r * rng.uniform(0.5, 1.0)
        half = length * rng.uniform(0.04, 0.08)
        spike = np.array(
            [
                [0.0, -half],
                [length * 0.35, -half * 1.2],
                [length, 0.0],
                [length * 0.35, half * 1.2],
                [0.0, half],
            ]
        )
        red = rng.uniform(85, 115)
        color = (int(red), int(red + rng.uniform(32, 50)), int(rng.uniform(18, 42)))
        yield "polygon", _rotate(spike, angle, (cx, cy)), color


def _place(rng: np.random.Generator, size: int) -> list[tuple[float, float, float]]:
    """Non-overlapping discs (x, y, radius) that hold the plants, inside the image."""
    discs: list[tuple[float, float, float]] = []
    wanted = int(rng.integers(1, _MAX_PLANTS + 1))
    for _ in range(60):
        if len(discs) == wanted:
            break
        r = rng.uniform(0.05, 0.14) * size
        x, y = rng.uniform(r + 2, size - r - 2, 2)
        if all(math.hypot(x - a, y - b) > r + c + 4 for a, b, c in discs):
            discs.append((float(x), float(y), float(r)))
    return discs


def render(
    rng: np.random.Generator, size: int, with_masks: bool = False
) -> tuple[Image.Image, list[Plant], list[np.ndarray]]:
    """Draw one image; return it, its plants, and (if asked) each plant's pixel mask."""
    image = _soil(rng, size)
    draw = ImageDraw.Draw(image)
    plants: list[Plant] = []
    masks: list[np.ndarray] = []
    for x, y, r in _place(rng, size):
        cls = int(rng.integers(0, len(CLASSES)))
        mask = Image.new("L", (size, size), 0)
        mask_draw = ImageDraw.Draw(mask)
        shapes = _crop_leaves(rng, x, y, r) if cls == 0 else _weed_leaves(rng, x, y, r)
        for kind, points, color in shapes:
            for target, fill in ((draw, color), (mask_draw, 255)):
                if kind == "polygon":
                    target.polygon(points, fill=fill)
                elif kind == "line":
                    target.line(points, fill=fill, width=1)
                else:
                    target.ellipse(points, fill=fill)
        box = mask.getbbox()
        if box is None:  # a plant too small to cover a pixel: nothing to label
            continue
        plants.append(Plant(cls, box))
        if with_masks:
            masks.append(np.asarray(mask) > 0)
    return image, plants, masks


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of one image, independent of how many images are made."""
    return np.random.default_rng([seed, _SPLIT_CODES[split], index])


def generate(
    out_dir: str | os.PathLike,
    train_images: int = DEFAULTS["train_images"],
    val_images: int = DEFAULTS["val_images"],
    image_size: int = DEFAULTS["image_size"],
    seed: int = DEFAULTS["seed"],
) -> Path:
    """Write the demo dataset in YOLO/Roboflow layout to `out_dir` (atomically) and return it."""
    if train_images < 1 or val_images < 1:
        raise ValueError("the demo needs at least one train and one val image")
    if image_size < 32:
        raise ValueError(f"image_size {image_size} is too small (minimum 32)")
    out_dir = Path(out_dir)
    with staging_dir(out_dir) as staging:
        for split, count in (("train", train_images), ("val", val_images)):
            images = staging / SPLIT_DIRS[split] / "images"
            labels = staging / SPLIT_DIRS[split] / "labels"
            images.mkdir(parents=True)
            labels.mkdir(parents=True)
            for index in range(count):
                image, plants, _ = render(image_rng(seed, split, index), image_size)
                stem = f"{split}_{index:04d}"
                image.save(images / f"{stem}.jpg", "JPEG", quality=_JPEG_QUALITY)
                rows = "".join(p.yolo_row(image_size) + "\n" for p in plants)
                (labels / f"{stem}.txt").write_text(rows)
        (staging / "README.txt").write_text(
            "Synthetic crop/weed detection data generated by attnbench.data.demo "
            f"(train_images={train_images}, val_images={val_images}, "
            f"image_size={image_size}, seed={seed}). Not real plants: for smoke runs only.\n"
        )
        write_source_yaml(staging, out_dir, {"names": list(CLASSES)})
    return out_dir
