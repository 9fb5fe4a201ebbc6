"""A second real image set for the accuracy study: Open Clip Art drawings in three classes.

The shared photos (ants/bees) are one set of one kind; the accuracy study of
bench/accuracy_study.py needs a second, different one. This builds it from Debian's
`openclipart-png` package (public-domain drawings by many artists, filed by subject):

- animals: animals/{mammals,birds,bugs,fish}
- food: food/{fruit,desserts,beverages,meats_and_eggs,breads_and_carbs,vegetables}
- vehicles: transportation/{vehicles,boating}

Each drawing is composited on white (its transparency would otherwise be black to some
decoders) and saved as a JPEG (quality 90) at its own size, as a user's exported
pictures would be (a few are rendered at up to 16000 px; those are scaled down to 3000 px
on the long side, a large photo's size); symlinked and byte-identical copies are dropped. A stable hash of the
file name puts about a third of each class in val/. Nothing is committed: the set is
built into a cache folder (default `~/.cache/tlcore-bench/clipart`) on first use:

    .venv/bin/python bench/clipart_set.py [--out DIR]   # prints the folder and counts

Needs `apt-get download` (Debian's package registry); the package is ~130 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

CLASSES = {
    "animals": ["animals/mammals", "animals/birds", "animals/bugs", "animals/fish"],
    "food": [
        "food/fruit",
        "food/desserts",
        "food/beverages",
        "food/meats_and_eggs",
        "food/breads_and_carbs",
        "food/vegetables",
    ],
    "vehicles": ["transportation/vehicles", "transportation/boating"],
}
DEFAULT_OUT = Path.home() / ".cache/tlcore-bench/clipart"
PACKAGE = "openclipart-png"
MAX_SIDE = 3000
Image.MAX_IMAGE_PIXELS = 200_000_000  # the package's largest renders are 169 megapixels


def build(out: Path = DEFAULT_OUT) -> Path:
    """The set's folder (with train/ and val/), built on the first call."""
    if (out / "train").is_dir() and (out / "val").is_dir():
        return out
    with tempfile.TemporaryDirectory(prefix="clipart-") as scratch:
        scratch = Path(scratch)
        subprocess.run(["apt-get", "download", PACKAGE], cwd=scratch, check=True, capture_output=True)
        package = next(scratch.glob(f"{PACKAGE}_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(package), str(scratch / "root")], check=True)
        convert(scratch / "root/usr/share/openclipart/png", out)
    return out


def convert(source: Path, out: Path) -> None:
    seen: set[str] = set()
    for label, folders in CLASSES.items():
        for folder in folders:
            for path in sorted((source / folder).glob("*.png")):
                if path.is_symlink() or path.stat().st_size == 0:
                    continue
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if digest in seen:
                    continue
                seen.add(digest)
                split = "val" if int(hashlib.md5(path.name.encode()).hexdigest(), 16) % 3 == 0 else "train"
                target = out / split / label / (path.stem + ".jpg")
                target.parent.mkdir(parents=True, exist_ok=True)
                with Image.open(path) as image:
                    image.thumbnail((MAX_SIDE, MAX_SIDE))
                    rgba = image.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                Image.alpha_composite(white, rgba).convert("RGB").save(target, quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    out = build(parser.parse_args().out)
    for split in ("train", "val"):
        counts = {folder.name: len(list(folder.glob("*.jpg"))) for folder in sorted((out / split).iterdir())}
        print(f"{out / split}: {counts}", file=sys.stdout)


if __name__ == "__main__":
    main()
