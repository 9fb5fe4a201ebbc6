"""Where datasets come from: a folder, an uploaded zip, per-class uploads, a download.

Each source ends as a folder of class sub-folders; zips are extracted once into the
cache, keyed by their contents.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from tlcore.data.archives import extract_zip
from tlcore.data.common import DEFAULT_LIMITS, Limits, build_once, short_reason
from tlcore.data.demo import DEMO_DATASET, make_demo_dataset
from tlcore.data.images import open_image
from tlcore.data.scan import find_dataset_root
from tlcore.errors import StudioError
from tlcore.paths import cache_dir, check_allowed

# Where the Data page's images come from (its radio, in this order).
DATA_SOURCES = (
    "Demo: shapes (offline)",
    "Folder on this server",
    "Upload a .zip",
    "Build classes from photos",
    "Download a public dataset",
)


def source_of(data_dir: str) -> str:
    """The Data page's source for a setup's dataset after a refresh: the demo, else a folder on this server."""
    return DATA_SOURCES[0] if data_dir == DEMO_DATASET else DATA_SOURCES[1]


def save_upload(folder: str | Path, filename: str, data: bytes) -> Path:
    """Stores an uploaded file once, content-addressed; returns its path.

    The path is ``folder/<sha256 prefix>/<safe name>``: the same bytes always land on the
    same path, which is written at most once (a temporary file renamed into place), so a
    page that calls this on every rerun never rewrites a file another thread may be
    reading, and a different file under the same name gets a path of its own (caches
    keyed by the path see the new content).
    """
    name = safe_name(Path(filename).name) or "upload"
    path = Path(folder) / hashlib.sha256(data).hexdigest()[:16] / name
    if path.is_file() and path.stat().st_size == len(data):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)  # atomic: a reader sees the whole file or none
    return path


def resolve_source(
    source: str | Path, limits: Limits = DEFAULT_LIMITS, *, restricted: bool = False, owner: str | None = None
) -> Path:
    """Turns a folder, a .zip or the demo dataset name into a dataset folder.

    Zips are extracted once into the cache, keyed by their contents.

    Args:
        source: a folder, a .zip file, or ``DEMO_DATASET``.
        limits: zip bounds.
        restricted: the dashboard's setting: the folder or zip must lie inside
            ``TLCORE_DATA_ROOTS`` or the visitor's own folders (``tlcore.paths.check_allowed``).
        owner: the dashboard visitor (restricted): their own uploads are readable.

    Raises:
        StudioError: not found, a file that is not a zip, a hostile zip, or (restricted)
            a path outside the allowed folders.
    """
    text = str(source)
    if text == DEMO_DATASET:
        return make_demo_dataset()
    path = Path(text).expanduser()
    if restricted:
        check_allowed(path, owner)
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

    Raises:
        StudioError: a file that is not an image or is over the size or pixel limits (each named
            with its reason): nothing of this batch is written, what the dataset had is kept.
    """
    root = Path(root)
    refused = []
    for files in images.values():
        for filename, data in files:
            try:
                open_image(data)  # the header only: type, file size and pixel count
            except StudioError as error:
                refused.append(f"{filename}: {error}")
    if refused:
        raise StudioError(
            "Not added (nothing of this batch was; the photos added before are kept): "
            + "; ".join(refused)
            + ". Remove these files and add the others again."
        )
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
            f"Could not download {name} from {entry.url} ({short_reason(error)}). Without internet, "
            "download it elsewhere and upload the zip, or point to a folder of class sub-folders."
        ) from None
    return find_dataset_root(Path(path))
