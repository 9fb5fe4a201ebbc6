"""The offline demo dataset: circles, squares and triangles drawn with Pillow."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tlcore.data.common import build_once
from tlcore.paths import cache_dir

DEMO_DATASET = "demo:shapes"
DEMO_CLASSES = ("circle", "square", "triangle")


def make_demo_dataset(per_class: int = 200, image_size: int = 96, seed: int = 0) -> Path:
    """Generates (once) the offline demo dataset: shapes drawn with Pillow.

    Three classes (circle, square, triangle) of coloured shapes at random positions,
    sizes and colours on noisy backgrounds; a small backbone learns them to high
    accuracy in under a minute on a CPU (SmallCNN from scratch reaches ~1.0 in 20
    epochs, about 15 s on 2 cores).
    """
    root = cache_dir() / "datasets" / f"demo-shapes-{per_class}-{image_size}-{seed}"

    def build(target: Path) -> None:
        rng = random.Random(seed)
        for label in DEMO_CLASSES:
            (target / label).mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                draw_shape(label, image_size, rng).save(target / label / f"{label}_{index:03d}.png")

    return build_once(root, build)


def draw_shape(label: str, size: int, rng: random.Random) -> Image.Image:
    """One demo image: a ``label`` shape on a noisy background."""
    background = tuple(rng.randint(0, 110) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    grain = np.random.default_rng(rng.randrange(2**32)).integers(-25, 26, (size, size, 1), dtype=np.int16)
    noise = np.asarray(image, dtype=np.int16) + grain
    image = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    colour = tuple(rng.randint(140, 255) for _ in range(3))
    radius = rng.uniform(0.22, 0.38) * size
    cx, cy = (rng.uniform(radius, size - radius) for _ in range(2))
    if label == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
    elif label == "square":
        angle = rng.uniform(0, math.pi / 2)
        draw.polygon(_polygon(cx, cy, radius, 4, angle), fill=colour)
    else:
        angle = rng.uniform(0, 2 * math.pi)
        draw.polygon(_polygon(cx, cy, radius * 1.15, 3, angle), fill=colour)
    return image.filter(ImageFilter.SMOOTH)


def _polygon(cx: float, cy: float, radius: float, sides: int, angle: float) -> list[tuple[float, float]]:
    return [
        (
            cx + radius * math.cos(angle + 2 * math.pi * k / sides),
            cy + radius * math.sin(angle + 2 * math.pi * k / sides),
        )
        for k in range(sides)
    ]
