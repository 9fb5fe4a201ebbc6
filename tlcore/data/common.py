"""What every data module shares: the size limits, the file names to ignore, and
``build_once``, the safe way to create a cached folder (extracted zips, the demo set)."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
# The same formats for a person: what to say when a file is none of them, and an uploader's types.
IMAGE_FORMATS = "JPEG, PNG, WebP, BMP, GIF or TIFF"
UPLOAD_TYPES = [suffix[1:] for suffix in IMAGE_SUFFIXES]
IGNORED_NAMES = ("__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini")


@dataclass(frozen=True)
class Limits:
    """Bounds that keep hostile or huge inputs from exhausting the server.

    Attributes:
        max_pixels: largest image (width x height) that is decoded.
        max_file_bytes: largest single image file.
        max_zip_bytes: largest total uncompressed size of a zip.
        max_zip_files: most entries in a zip.
        max_compression_ratio: largest uncompressed/compressed ratio of an entry.
        min_side: smallest image side worth classifying.
    """

    max_pixels: int = 50_000_000
    max_file_bytes: int = 50 * 2**20
    max_zip_bytes: int = 2 * 2**30
    max_zip_files: int = 50_000
    max_compression_ratio: float = 200.0
    min_side: int = 16


DEFAULT_LIMITS = Limits()


def is_ignored(name: str) -> bool:
    """Operating-system junk and hidden files: never data, never reported."""
    return name in IGNORED_NAMES or name.startswith(".") or name.startswith("._")


def short_reason(error: BaseException) -> str:
    """The first line of an error's message, cut to 160 characters, for a skip reason."""
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:160]


_BUILD_LOCK = threading.Lock()


def build_once(root: Path, build: Callable[[Path], object]) -> Path:
    """Creates ``root`` with ``build(folder)`` exactly once, safely under concurrency.

    Sessions may ask for the same cached folder (the demo set, an uploaded zip) at
    the same moment: the folder is built privately and renamed into place, so nobody
    ever sees, or deletes, a half-built one.
    """
    with _BUILD_LOCK:
        if (root / ".complete").is_file():
            return root
        staging = root.with_name(f".{root.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            build(staging)
            (staging / ".complete").touch()
            shutil.rmtree(root, ignore_errors=True)
            root.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return root
