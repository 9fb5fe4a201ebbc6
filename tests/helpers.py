"""Tiny synthetic datasets for fast tests."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220)}


def colour_image(colour: tuple, size: int, rng: random.Random) -> Image.Image:
    """A noisy image dominated by ``colour``: separable even by random conv features."""
    base = np.array(colour, dtype=np.int16)[None, None, :]
    noise = np.random.default_rng(rng.randrange(2**32)).integers(-60, 61, (size, size, 3), dtype=np.int16)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def make_colour_dataset(
    root: Path, per_class: int = 12, size: int = 40, classes=("red", "green", "blue"), seed: int = 0
) -> Path:
    """A folder of class sub-folders with ``per_class`` PNGs each."""
    rng = random.Random(seed)
    for label in classes:
        folder = Path(root) / label
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            colour_image(COLOURS[label], size, rng).save(folder / f"{label}_{index}.png")
    return Path(root)


def no_network(monkeypatch, keras_home: Path) -> list:
    """The machine offline (every name lookup fails) with an empty Keras cache; returns the lookups tried."""
    import socket

    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    return calls
