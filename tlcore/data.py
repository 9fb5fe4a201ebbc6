"""Datasets: folders, zips, per-class uploads, the offline demo set, and tf.data pipelines.

A dataset is a folder with one sub-folder per class. Zips and uploads are turned into
such a folder first (zips with a safe extractor), so everything downstream sees one
shape. Every image is decoded by Pillow: EXIF orientation applied, converted to RGB
whatever the mode (palette, RGBA, CMYK, 16-bit, grayscale), big JPEGs decoded at a
reduced scale (draft mode) instead of full size. Files that cannot be used are
skipped and listed with the reason; nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import random
import shutil
import stat
import threading
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFile, ImageFilter, ImageOps

from tlcore.errors import StudioError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
IGNORED_NAMES = ("__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini")
DEMO_DATASET = "demo:shapes"
# Bump when decoding changes: it is part of the feature-cache key.
DECODE_VERSION = "pillow-draft-bilinear-v1"
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass(frozen=True)
class Limits:
    """Bounds that keep hostile or huge inputs from exhausting the server.

    Attributes:
        max_pixels: largest image (width x height) that is decoded.
        max_file_bytes: largest single image file.
        max_zip_bytes: largest total uncompressed size of a zip.
        max_zip_files: most entries in a zip.
        max_compression_ratio: largest uncompressed/compressed ratio of an entry.
    """

    max_pixels: int = 50_000_000
    max_file_bytes: int = 50 * 2**20
    max_zip_bytes: int = 2 * 2**30
    max_zip_files: int = 50_000
    max_compression_ratio: float = 200.0
    min_side: int = 16


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class ImageItem:
    """One usable image: its path, class label and content digest."""

    path: str
    label: str
    digest: str


@dataclass(frozen=True)
class Skipped:
    """A file that was not used, and why."""

    path: str
    reason: str


@dataclass
class DatasetScan:
    """The result of scanning a dataset folder.

    Attributes:
        root: the folder scanned.
        classes: class labels, sorted; index = label id.
        items: usable images.
        skipped: unusable files with reasons.
        warnings: dataset-level problems (too-small classes, imbalance, empty classes).
    """

    root: str
    classes: list[str]
    items: list[ImageItem]
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        counter = Counter(item.label for item in self.items)
        return {label: counter.get(label, 0) for label in self.classes}

    def to_dict(self) -> dict:
        """A JSON-ready summary (the ``inspect`` CLI prints it)."""
        return {
            "root": self.root,
            "classes": self.classes,
            "counts": self.counts,
            "num_images": len(self.items),
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "warnings": self.warnings,
        }


# ----------------------------------------------------------------------------- decoding


def open_image(source: str | Path | bytes, limits: Limits = DEFAULT_LIMITS) -> Image.Image:
    """Opens an image (path or bytes) lazily, after checking its size against ``limits``.

    Raises:
        StudioError: not an image, or too large; the message says which.
    """
    try:
        if isinstance(source, (bytes, bytearray)):
            if len(source) == 0:
                raise StudioError("the file is empty (0 bytes)")
            image = Image.open(io.BytesIO(source))
        else:
            size = os.path.getsize(source)
            if size == 0:
                raise StudioError("the file is empty (0 bytes)")
            if size > limits.max_file_bytes:
                raise StudioError(
                    f"the file is {size / 2**20:.0f} MB, over the {limits.max_file_bytes / 2**20:.0f} MB limit"
                )
            image = Image.open(source)
    except StudioError:
        raise
    except Image.DecompressionBombError:
        raise StudioError(f"the image is larger than {limits.max_pixels:,} pixels (decompression-bomb guard)") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise StudioError(_decode_reason(error, "not a readable image")) from None
    width, height = image.size
    if width * height > limits.max_pixels:
        raise StudioError(
            f"the image is {width}x{height} = {width * height:,} pixels, over the {limits.max_pixels:,}-pixel limit"
        )
    if width < 1 or height < 1:
        raise StudioError("the image has no pixels")
    return image


def decode_image(
    source: str | Path | bytes | Image.Image, size: int | None = None, limits: Limits = DEFAULT_LIMITS
) -> np.ndarray:
    """Decodes an image to an RGB ``uint8`` array, upright, optionally resized.

    Args:
        source: a path, the file's bytes, or a PIL image.
        size: resize to ``size x size`` (bilinear, antialiased); ``None`` keeps the size.
        limits: pixel and file-size bounds.

    Returns:
        An array of shape ``(height, width, 3)``.

    Raises:
        StudioError: the image cannot be decoded; the message says why.
    """
    image = source if isinstance(source, Image.Image) else open_image(source, limits)
    try:
        if size and image.format == "JPEG":
            # Decode at the smallest 1/2, 1/4 or 1/8 scale that is still >= size:
            # most of the cost of a big JPEG is avoided and quality is unchanged.
            image.draft("RGB", (size, size))
        image = ImageOps.exif_transpose(image)
        image = to_rgb(image)
        if size:
            image = image.resize((size, size), Image.BILINEAR)
        return np.asarray(image, dtype=np.uint8)
    except StudioError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise StudioError(_decode_reason(error, "the image could not be decoded")) from None


def _decode_reason(error: BaseException, prefix: str) -> str:
    if "truncated" in str(error).lower():
        return f"the file is truncated, an incomplete download or copy? ({_short(error)})"
    return f"{prefix} ({_short(error)})"


def thumbnail(source: str | Path | bytes, max_side: int = 160) -> np.ndarray:
    """A small upright RGB preview (for galleries), decoded exactly like training images."""
    image = open_image(source)
    if image.format == "JPEG":
        image.draft("RGB", (max_side, max_side))
    image = to_rgb(ImageOps.exif_transpose(image))
    image.thumbnail((max_side, max_side))
    return np.asarray(image, dtype=np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Converts any Pillow mode to RGB: alpha composited on white, 16-bit scaled to 8-bit."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        high = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        gray = np.clip(values / high * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:160]


def check_image_file(path: str | Path, limits: Limits = DEFAULT_LIMITS, skip_placeholders: bool = True) -> str:
    """Fully decodes an image file cheaply (JPEG at 1/8 scale) and returns its sha256.

    Args:
        path: the image file.
        limits: size bounds.
        skip_placeholders: refuse blank or placeholder graphics ("image not found"
            pictures that scraped photo sets are full of): few colours, one dominant.

    Raises:
        StudioError: the file is not a usable image; the message says why.
    """
    data = Path(path).read_bytes() if os.path.getsize(path) <= limits.max_file_bytes else None
    if data is None:
        open_image(path, limits)  # raises the size message
    image = open_image(data, limits)
    if min(image.size) < limits.min_side:
        raise StudioError(f"the image is only {image.size[0]}x{image.size[1]} pixels, too small to classify")
    try:
        if image.format == "JPEG":
            image.draft("RGB", (1, 1))
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise StudioError(_decode_reason(error, "the image could not be decoded")) from None
    if skip_placeholders:
        _refuse_placeholder(image)
    return hashlib.sha256(data).hexdigest()


def _refuse_placeholder(image: Image.Image) -> None:
    # A photo, even on a white background, has thousands of colours (sensor and JPEG
    # noise); a blank or "image not found" graphic has a handful, one covering most of it.
    try:
        colours = image.getcolors(256)
    except ValueError:  # modes Pillow cannot count (16-bit, float): not a palette graphic
        return
    if colours is None:
        return
    dominant = max(count for count, _ in colours) / (image.size[0] * image.size[1])
    if dominant >= 0.8:
        raise StudioError(
            f"looks like a blank or placeholder graphic, not a photo ({len(colours)} colours, "
            f"{dominant:.0%} one colour); turn off 'skip placeholder images' to keep it"
        )


# ----------------------------------------------------------------------------- scanning


def _is_ignored(name: str) -> bool:
    return name in IGNORED_NAMES or name.startswith(".") or name.startswith("._")


def scan_folder(
    root: str | Path,
    min_images_per_class: int = 5,
    limits: Limits = DEFAULT_LIMITS,
    workers: int | None = None,
    skip_placeholders: bool = True,
) -> DatasetScan:
    """Scans a folder of class sub-folders and reports what can be used.

    Images in nested folders count for the class folder they are in. Hidden files,
    ``__MACOSX`` and ``.DS_Store`` are ignored; any other file that is not a usable
    image is listed in ``skipped`` with its reason.

    Args:
        root: the dataset folder.
        min_images_per_class: classes with fewer usable images get a warning.
        limits: pixel and file-size bounds.
        workers: decoding threads (default: CPU count).
        skip_placeholders: skip blank or placeholder graphics (see ``check_image_file``).

    Raises:
        StudioError: the folder does not exist or has no class sub-folders.
    """
    root = Path(root)
    if not root.is_dir():
        raise StudioError(f"Dataset folder not found: {root}. Expected a folder with one sub-folder per class.")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not _is_ignored(p.name))
    skipped = [
        Skipped(str(p), "not inside a class folder")
        for p in sorted(root.iterdir())
        if p.is_file() and not _is_ignored(p.name)
    ]
    if not class_dirs:
        raise StudioError(
            f"No class folders in {root}. Expected one sub-folder per class, e.g. {root}/cats/*.jpg and {root}/dogs/*.jpg."
        )
    candidates: list[tuple[Path, str]] = []
    for class_dir in class_dirs:
        for path in _walk_files(class_dir):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                candidates.append((path, class_dir.name))
            else:
                skipped.append(Skipped(str(path), f"not an image file ({path.suffix or 'no extension'})"))
    items: list[ImageItem] = []
    with ThreadPoolExecutor(workers or os.cpu_count() or 2) as pool:
        for (path, label), outcome in zip(
            candidates, pool.map(lambda c: _check_or_reason(c[0], limits, skip_placeholders), candidates)
        ):
            if outcome[0]:
                items.append(ImageItem(str(path), label, outcome[1]))
            else:
                skipped.append(Skipped(str(path), outcome[1]))
    classes = [d.name for d in class_dirs]
    scan = DatasetScan(str(root), classes, items, skipped)
    scan.warnings = dataset_warnings(scan.counts, min_images_per_class)
    return scan


def _walk_files(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not _is_ignored(d))
        for name in sorted(filenames):
            if not _is_ignored(name):
                path = Path(dirpath) / name
                if not path.is_symlink():
                    yield path


_CHECKED: dict[tuple, tuple[bool, str]] = {}
_CHECKED_LOCK = threading.Lock()


def _check_or_reason(path: Path, limits: Limits, skip_placeholders: bool) -> tuple[bool, str]:
    # Re-scanning an unchanged file (same path, size and modification time) reuses the
    # verdict: experimenting means scanning the same folder again and again.
    try:
        stat_result = path.stat()
    except OSError as error:
        return False, f"could not be read ({_short(error)})"
    key = (str(path), stat_result.st_size, stat_result.st_mtime_ns, limits, skip_placeholders)
    with _CHECKED_LOCK:
        if key in _CHECKED:
            return _CHECKED[key]
    try:
        outcome = (True, check_image_file(path, limits, skip_placeholders))
    except StudioError as error:
        outcome = (False, str(error))
    except OSError as error:
        outcome = (False, f"could not be read ({_short(error)})")
    except Exception as error:  # noqa: BLE001  - one odd file must never abort the whole scan
        outcome = (False, f"could not be checked ({type(error).__name__}: {_short(error)})")
    with _CHECKED_LOCK:
        if len(_CHECKED) > 200_000:
            _CHECKED.clear()
        _CHECKED[key] = outcome
    return outcome


def dataset_warnings(counts: dict[str, int], min_images_per_class: int) -> list[str]:
    """Dataset-level problems a user should know about before training."""
    warnings = []
    usable = {label: n for label, n in counts.items() if n > 0}
    for label, count in counts.items():
        if count == 0:
            warnings.append(f"Class '{label}' has no usable images; it is left out.")
        elif count < min_images_per_class:
            warnings.append(f"Class '{label}' has only {count} images (fewer than {min_images_per_class}); add more.")
    if len(usable) < 2:
        warnings.append("Fewer than 2 classes have images; a classifier needs at least 2.")
    elif max(usable.values()) >= 3 * min(usable.values()):
        big = max(usable, key=usable.get)
        small = min(usable, key=usable.get)
        warnings.append(
            f"Classes are imbalanced: '{big}' has {usable[big]} images, '{small}' only {usable[small]}; "
            "accuracy will favour the larger class."
        )
    return warnings


# ----------------------------------------------------------------------------- zips


def extract_zip(zip_path: str | Path, destination: str | Path, limits: Limits = DEFAULT_LIMITS) -> Path:
    """Extracts a zip safely and returns the folder that holds the class folders.

    No entry may land outside ``destination`` (``..``, absolute paths and symlinks are
    refused), and the total size, entry count and compression ratio are bounded, both
    as declared and as actually written. ``__MACOSX``, ``.DS_Store`` and hidden files
    are not extracted.

    Raises:
        StudioError: the zip is corrupt, hostile or over a limit; nothing is left behind.
    """
    destination = Path(destination)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as error:
        raise StudioError(f"{Path(zip_path).name} is not a readable zip file ({_short(error)}).") from None
    destination.mkdir(parents=True, exist_ok=True)
    try:
        with archive:
            members = _safe_members(archive, destination.resolve(), limits)
            written = 0
            for info, target in members:
                target.parent.mkdir(parents=True, exist_ok=True)
                written = _copy_bounded(archive, info, target, written, limits)
    except (StudioError, zipfile.BadZipFile, OSError, RuntimeError, EOFError) as error:
        shutil.rmtree(destination, ignore_errors=True)
        if isinstance(error, StudioError):
            raise
        raise StudioError(f"{Path(zip_path).name} could not be extracted ({_short(error)}).") from None
    return find_dataset_root(destination)


def _safe_members(archive: zipfile.ZipFile, root: Path, limits: Limits) -> list[tuple[zipfile.ZipInfo, Path]]:
    infos = archive.infolist()
    if len(infos) > limits.max_zip_files:
        raise StudioError(f"The zip has {len(infos):,} entries, over the {limits.max_zip_files:,} limit.")
    declared = sum(info.file_size for info in infos)
    if declared > limits.max_zip_bytes:
        raise StudioError(
            f"The zip expands to {declared / 2**30:.1f} GB, over the {limits.max_zip_bytes / 2**30:.0f} GB limit."
        )
    members = []
    for info in infos:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
            raise StudioError(f"The zip entry {name!r} points outside the extraction folder; the zip is refused.")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise StudioError(f"The zip entry {name!r} is a symbolic link; links are refused.")
        if info.is_dir() or any(_is_ignored(part) for part in parts if part):
            continue
        if info.compress_size and info.file_size / info.compress_size > limits.max_compression_ratio:
            raise StudioError(
                f"The zip entry {name!r} is compressed {info.file_size / info.compress_size:.0f}:1, "
                f"over the {limits.max_compression_ratio:.0f}:1 limit (zip bomb guard)."
            )
        target = (root / "/".join(p for p in parts if p)).resolve()
        if not target.is_relative_to(root):
            raise StudioError(f"The zip entry {name!r} points outside the extraction folder; the zip is refused.")
        members.append((info, target))
    return members


def _copy_bounded(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, written: int, limits: Limits) -> int:
    # Declared sizes can lie: count what is actually written.
    entry_written = 0
    with archive.open(info) as source, open(target, "wb") as sink:
        while chunk := source.read(1 << 20):
            entry_written += len(chunk)
            written += len(chunk)
            if entry_written > max(info.file_size, 1) or written > limits.max_zip_bytes:
                raise StudioError(
                    f"The zip entry {info.filename!r} expands beyond its declared size; the zip is refused."
                )
            sink.write(chunk)
    return written


def find_dataset_root(folder: Path) -> Path:
    """Descends through wrapper folders (``data.zip → data/ → classes``) to the class folders."""
    folder = Path(folder)
    while True:
        entries = [p for p in folder.iterdir() if not _is_ignored(p.name)]
        dirs = [p for p in entries if p.is_dir()]
        if len(dirs) == 1 and len(entries) == 1:
            folder = dirs[0]
        else:
            return folder


# ----------------------------------------------------------------------------- sources


def cache_dir() -> Path:
    """``$TLCORE_CACHE_DIR`` (default ``~/.cache/tlcore``): derived data that can be rebuilt."""
    return Path(os.environ.get("TLCORE_CACHE_DIR") or Path.home() / ".cache" / "tlcore")


def workspace_dir() -> Path:
    """``$TLCORE_WORKSPACE`` (default ``./workspace``): uploads and datasets built in the dashboard."""
    return Path(os.environ.get("TLCORE_WORKSPACE") or "workspace")


def save_upload(folder: str | Path, filename: str, data: bytes) -> Path:
    """Stores an uploaded file under ``folder`` with a safe name; returns its path."""
    name = safe_name(Path(filename).name) or "upload"
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def resolve_source(source: str | Path, limits: Limits = DEFAULT_LIMITS) -> Path:
    """Turns a folder, a .zip or the demo dataset name into a dataset folder.

    Zips are extracted once into the cache, keyed by their contents.
    """
    text = str(source)
    if text == DEMO_DATASET:
        return make_demo_dataset()
    path = Path(text).expanduser()
    if path.is_file() and path.suffix.lower() == ".zip":
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        target = build_once(cache_dir() / "zips" / digest, lambda folder: extract_zip(path, folder / "data", limits))
        return find_dataset_root(target / "data")
    if path.is_file():
        raise StudioError(f"{path} is a file. Expected a folder of class sub-folders or a .zip of one.")
    if not path.exists():
        raise StudioError(
            f"Dataset not found: {path}. Expected a folder of class sub-folders, a .zip, or {DEMO_DATASET!r}."
        )
    return path


def save_class_images(root: str | Path, images: dict[str, list[tuple[str, bytes]]]) -> Path:
    """Writes images assigned to classes one by one (uploads, camera shots) as a dataset folder.

    Args:
        root: the dataset folder to create or add to.
        images: ``{class label: [(file name, bytes), ...]}``.

    Returns:
        ``root``, now a folder of class sub-folders.
    """
    root = Path(root)
    for label, files in images.items():
        clean_label = safe_name(label)
        if not clean_label:
            raise StudioError(f"Class names must contain letters or digits. Received: {label!r}.")
        folder = root / clean_label
        folder.mkdir(parents=True, exist_ok=True)
        for index, (filename, data) in enumerate(files):
            name = safe_name(Path(filename).name) or f"image_{index}.png"
            digest = hashlib.sha256(data).hexdigest()[:8]
            (folder / f"{digest}_{name}").write_bytes(data)
    return root


def safe_name(name: str) -> str:
    """A file or folder name with path separators and leading dots removed (Unicode kept)."""
    cleaned = "".join("_" if ch in '/\\:*?"<>|\0' else ch for ch in name).strip().lstrip(".")
    return cleaned[:120]


@dataclass(frozen=True)
class DownloadableDataset:
    """A public dataset fetched with ``keras.utils.get_file`` (needs internet)."""

    name: str
    url: str
    description: str


DOWNLOADABLE = {
    d.name: d
    for d in (
        DownloadableDataset(
            "hymenoptera",
            "https://download.pytorch.org/tutorial/hymenoptera_data.zip",
            "ants vs bees, 398 photos (PyTorch transfer-learning tutorial)",
        ),
        DownloadableDataset(
            "flower_photos",
            "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz",
            "5 flower species, 3,670 photos (TensorFlow tutorials)",
        ),
    )
}


def download_dataset(name: str) -> Path:
    """Downloads (once, into the Keras cache) and extracts a well-known dataset.

    Raises:
        StudioError: unknown name, or the download failed (no internet).
    """
    if name not in DOWNLOADABLE:
        raise StudioError(f"Unknown dataset. Expected one of {sorted(DOWNLOADABLE)}. Received: {name!r}.")
    entry = DOWNLOADABLE[name]
    import keras

    try:
        path = keras.utils.get_file(origin=entry.url, extract=True, cache_subdir="datasets")
    except Exception as error:  # keras raises a bare Exception on a failed download
        raise StudioError(
            f"Could not download {name} from {entry.url} ({_short(error)}). Without internet, "
            "download it elsewhere and upload the zip, or point to a folder of class sub-folders."
        ) from None
    return find_dataset_root(Path(path))


# ----------------------------------------------------------------------------- demo


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


_BUILD_LOCK = threading.Lock()


def build_once(root: Path, build) -> Path:
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


# ----------------------------------------------------------------------------- splits


@dataclass
class Dataset:
    """A scanned, split dataset ready for training.

    Attributes:
        classes: labels; index = label id.
        train: training images.
        val: validation images.
        scans: the scans it came from (train folder, and validation folder if any).
    """

    classes: list[str]
    train: list[ImageItem]
    val: list[ImageItem]
    scans: list[DatasetScan]

    @property
    def skipped(self) -> list[Skipped]:
        return [s for scan in self.scans for s in scan.skipped]

    def label_ids(self, items: list[ImageItem]) -> np.ndarray:
        index = {label: i for i, label in enumerate(self.classes)}
        return np.array([index[item.label] for item in items], dtype=np.int32)


def split_items(items: list[ImageItem], val_split: float, seed: int) -> tuple[list[ImageItem], list[ImageItem]]:
    """Stratified split: ``val_split`` of each class (at least one image) goes to validation."""
    rng = random.Random(seed)
    train, val = [], []
    by_label: dict[str, list[ImageItem]] = {}
    for item in sorted(items, key=lambda i: i.path):
        by_label.setdefault(item.label, []).append(item)
    for label in sorted(by_label):
        group = by_label[label][:]
        rng.shuffle(group)
        n_val = max(1, round(len(group) * val_split)) if len(group) > 1 else 0
        val.extend(group[:n_val])
        train.extend(group[n_val:])
    return train, val


def load_dataset(data_config, limits: Limits = DEFAULT_LIMITS, seed: int = 42) -> Dataset:
    """Scans and splits the dataset a :class:`~tlcore.config.DataConfig` describes.

    Raises:
        StudioError: no usable classes, classes missing from the validation data, or
            nothing left to validate on.
    """
    scan = scan_folder(
        resolve_source(data_config.data_dir, limits),
        data_config.min_images_per_class,
        limits,
        skip_placeholders=data_config.skip_placeholders,
    )
    scans = [scan]
    classes = [label for label in scan.classes if scan.counts[label] > 0]
    if len(classes) < 2:
        raise StudioError(
            f"Expected at least 2 classes with images in {scan.root}. Received: {scan.counts}. "
            "Add a folder of images for each class."
        )
    if data_config.val_dir:
        val_scan = scan_folder(
            resolve_source(data_config.val_dir, limits), 1, limits, skip_placeholders=data_config.skip_placeholders
        )
        scans.append(val_scan)
        unknown = sorted(set(val_scan.counts) - set(classes) - {k for k, v in val_scan.counts.items() if v == 0})
        if unknown:
            raise StudioError(
                f"The validation data has classes the training data lacks: {unknown}. Expected only {classes}."
            )
        train, val = [i for i in scan.items if i.label in classes], val_scan.items
    else:
        train, val = split_items([i for i in scan.items if i.label in classes], data_config.val_split, seed)
    if not val:
        raise StudioError("No validation images. Add more images per class or give a validation folder.")
    return Dataset(classes, train, val, scans)


# ----------------------------------------------------------------------------- pipelines


def iter_decoded(paths: Iterable[str], size: int, workers: int | None = None, window: int = 64) -> Iterator[np.ndarray]:
    """Decodes images in background threads, in order, at most ``window`` ahead.

    Pillow releases the GIL while decoding and resizing, so this overlaps with the
    consumer (the backbone's compute) and with itself.

    Raises:
        StudioError: an image that passed the scan could not be decoded now.
    """
    paths = list(paths)
    with ThreadPoolExecutor(workers or os.cpu_count() or 2) as pool:
        pending = []
        for path in paths:
            pending.append((path, pool.submit(decode_image, path, size)))
            if len(pending) >= window:
                yield _result(*pending.pop(0))
        for path, future in pending:
            yield _result(path, future)


def _result(path: str, future) -> np.ndarray:
    try:
        return future.result()
    except StudioError as error:
        raise StudioError(f"{path}: {error}. Remove the file and try again.") from None


def decode_all(paths: list[str], size: int) -> np.ndarray:
    """All images decoded into one ``(n, size, size, 3)`` uint8 array."""
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for index, array in enumerate(iter_decoded(paths, size)):
        out[index] = array
    return out


def augmentation_layers(seed: int):
    """Random flip, rotation, zoom and contrast, as Keras preprocessing layers."""
    import keras

    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomRotation(0.1, seed=seed + 1),
            keras.layers.RandomZoom(0.15, seed=seed + 2),
            keras.layers.RandomContrast(0.2, seed=seed + 3),
        ],
        name="augmentation",
    )


def image_dataset(
    items: list[ImageItem],
    labels: np.ndarray,
    size: int,
    batch_size: int,
    *,
    shuffle: bool = False,
    augment: bool = False,
    seed: int = 0,
):
    """A ``tf.data`` pipeline of ``(float32 images 0..255, int labels)`` batches.

    Images are decoded once, up front, by a pool of threads (Pillow releases the GIL)
    and kept in memory as uint8; training order is reshuffled every epoch and
    augmentation runs as Keras preprocessing layers inside the pipeline. No Python runs
    inside the pipeline during ``fit``: with several jobs in one server process, a
    Python generator there starves on the GIL.
    """
    import tensorflow as tf

    images = decode_all([item.path for item in items], size)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.asarray(labels, dtype=np.int32)))
    if shuffle:
        dataset = dataset.shuffle(len(items), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y))
    if augment:
        layers = augmentation_layers(seed)
        dataset = dataset.map(lambda x, y: (layers(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
