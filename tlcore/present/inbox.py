"""The room teaches the model: audience photos kept (only while collecting), reviewed, added to
the presenter's own dataset, and a retrain of the head on cached features.

Layout in the presenter's own folder (``<workspace>/sessions/<owner>/present/<run id>/``):
``inbox/<class>/<digest>.jpg`` (what the audience sent, with the class they said) and, when
the run's dataset is not already in that folder, ``dataset/<class>/…``: a copy of the run's
training images (hard links where the file system allows) that the inbox is added to. A
photo is re-encoded as a JPEG of at most :data:`MAX_SIDE` pixels before it is kept: the
phone's EXIF (location, device) is not stored, and the inbox's bytes stay bounded.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import shutil
from collections import Counter
from pathlib import Path

from PIL import Image

from tlcore.config import RunConfig
from tlcore.data.common import DEFAULT_LIMITS, IMAGE_SUFFIXES, Limits
from tlcore.data.images import decode_image
from tlcore.errors import StudioError
from tlcore.paths import owner_dir
from tlcore.words import plural

MAX_SIDE = 1024
MAX_INBOX = 300
AUDIENCE_PREFIX = "audience-"


def present_dir(owner: str, run_id: str) -> Path:
    """``<workspace>/sessions/<owner>/present/<run id>``: what the room gave this run."""
    if "/" in run_id or run_id in ("", ".", ".."):
        raise StudioError(f"Expected a run id. Received: {run_id!r}.")
    return owner_dir(owner) / "present" / run_id


def inbox_photos(owner: str, run_id: str) -> list[tuple[str, Path]]:
    """``(class, photo)`` of the inbox, newest first."""
    inbox = present_dir(owner, run_id) / "inbox"
    found = [(path.parent.name, path) for path in inbox.glob("*/*.jpg")] if inbox.is_dir() else []
    return sorted(found, key=lambda entry: entry[1].stat().st_mtime, reverse=True)


def keep_photo(
    owner: str, run_id: str, labels: list[str], label: str, data: bytes, limits: Limits = DEFAULT_LIMITS
) -> Path:
    """Keeps an audience photo in the run's inbox, with the class its sender says it is.

    Args:
        owner: the presenter (the inbox is in their folder).
        run_id: the presented run.
        labels: the run's classes; ``label`` must be one of them.
        label: the class the audience member chose.
        data: the photo's bytes (checked as any upload: size, pixels, decodable).
        limits: the image limits.

    Returns:
        The kept file (named by its content: the same photo sent twice is kept once).

    Raises:
        StudioError: an unknown class, a bad image, or the inbox is full.
    """
    if label not in labels:
        raise StudioError(f"Expected one of the run's classes {labels}. Received: {label!r}.")
    if len(data) > limits.max_file_bytes:
        raise StudioError(
            f"The photo is {len(data) / 2**20:.0f} MB, over the {limits.max_file_bytes / 2**20:.0f} MB limit."
        )
    if len(inbox_photos(owner, run_id)) >= MAX_INBOX:
        raise StudioError(f"The presenter's inbox is full ({MAX_INBOX} photos): thank you, the room has sent enough.")
    image = Image.fromarray(decode_image(data, limits=limits))
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    folder = present_dir(owner, run_id) / "inbox" / label
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(buffer.getvalue()).hexdigest()[:20]}.jpg"
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(buffer.getvalue())
    os.replace(temporary, path)
    return path


def discard_inbox(owner: str, run_id: str, photo: Path | None = None) -> int:
    """Deletes one photo of the inbox (``photo``), or all of it; returns how many were deleted."""
    photos = [path for _, path in inbox_photos(owner, run_id) if photo is None or path == Path(photo)]
    for path in photos:
        path.unlink(missing_ok=True)
    return len(photos)


REVIEW_SHOWN = 12  # the inbox photos the Present page shows for review, newest first


def review_caption(count: int, shown: int = REVIEW_SHOWN) -> str:
    """The line above the presenter's inbox review."""
    which = f"the newest {shown} shown" if count > shown else "all shown"
    return (
        f"The inbox: {plural(count, 'photo')} ({which}), each with the class its sender chose. "
        "Discard a photo whose class is wrong: a discarded photo never reaches the dataset."
    )


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def room_dataset(owner: str, run) -> Path:
    """The presenter's own dataset folder that the inbox of ``run`` is added to.

    The run's training folder itself when it is in the presenter's folder (a dataset built from
    photos); otherwise a copy of its training images made once, so the original folder (a data
    root other visitors read, or the demo set) is never written to.

    Raises:
        StudioError: the run has no readable settings.
    """
    if run.config is None:
        raise StudioError(f"Run {run.run_id} has no readable settings (config.json): it cannot be retrained.")
    from tlcore.data.scan import scan_folder
    from tlcore.data.sources import resolve_source
    from tlcore.paths import dataset_fence

    # Read as the presenter may read it: their own folders and the data roots, never another visitor's.
    source = resolve_source(run.config.data.data_dir, restricted=True, owner=owner)
    if _inside(source, owner_dir(owner)):
        return source
    target = present_dir(owner, run.run_id) / "dataset"
    if not target.is_dir():
        scan = scan_folder(
            source, skip_placeholders=run.config.data.skip_placeholders, fence=dataset_fence(source, owner)
        )
        building = target.with_name(f".dataset.{os.getpid()}")
        shutil.rmtree(building, ignore_errors=True)
        for item in scan.items:
            _link_or_copy(Path(item.path), building / item.label / f"{item.digest[:12]}-{Path(item.path).name}")
        os.replace(building, target)
    return target


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)  # no bytes copied; the image file is never changed in place
    except OSError:
        shutil.copyfile(source, target)


def add_inbox_to_dataset(owner: str, run) -> tuple[Path, dict[str, int]]:
    """Moves the inbox's photos into the presenter's dataset (see :func:`room_dataset`).

    Returns:
        ``(dataset folder, photos added per class)``, classes in the run's order.

    Raises:
        StudioError: the inbox is empty, or the run cannot be retrained.
    """
    photos = inbox_photos(owner, run.run_id)
    if not photos:
        raise StudioError("The inbox is empty: turn on 'Collect audience photos' and let the room send some.")
    dataset = room_dataset(owner, run)
    added = Counter()
    for label, path in photos:
        target = dataset / label / f"{AUDIENCE_PREFIX}{path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)
        added[label] += 1
    order = {label: index for index, label in enumerate(run.labels)}
    return dataset, dict(sorted(added.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


def added_message(added: dict[str, int], dataset: Path) -> str:
    """What "Add … and retrain" did, for the presenter: the photos added per class and the dataset after.

    e.g. ``"+5 audience photos: ants +3, bees +2; the dataset now has 250 images (ants 126, bees 124)."``
    """
    per_class = ", ".join(f"{label} +{count}" for label, count in added.items())
    counts = {
        folder.name: sum(1 for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
        for folder in sorted(Path(dataset).iterdir())
        if folder.is_dir() and not folder.name.startswith(".")
    }
    totals = ", ".join(f"{label} {count}" for label, count in counts.items())
    return (
        f"+{plural(sum(added.values()), 'audience photo')}: {per_class}; "
        f"the dataset now has {plural(sum(counts.values()), 'image')} ({totals})."
    )


def audience_count(dataset: Path) -> int:
    """Audience photos already in a dataset folder."""
    return sum(1 for path in Path(dataset).glob(f"*/{AUDIENCE_PREFIX}*") if path.suffix.lower() in IMAGE_SUFFIXES)


def retrain_config(run, dataset: Path, owner: str | None) -> RunConfig:
    """The run's settings on the room's dataset, head only: the backbone's features of the
    images seen before come from the feature cache, so only the new photos are computed.

    Raises:
        StudioError: the run has no readable settings.
    """
    if run.config is None:
        raise StudioError(f"Run {run.run_id} has no readable settings (config.json): it cannot be retrained.")
    config = copy.deepcopy(run.config)
    config.data.data_dir = str(dataset)
    config.data.owner = owner
    config.train.fine_tune_epochs = 0
    config.train.feature_cache = True
    return config


def retrained_label(old, new) -> str:
    """The button that presents the retrained run: what it learnt from, and how it compares.

    e.g. ``"Present the retrained run: 146 training images (+2), validation accuracy 97% (was 95%)"``.
    """
    before, after = old.metrics.get("num_train"), new.metrics.get("num_train")
    label = f"Present the retrained run: {after if after is not None else '?'} training images"
    if before is not None and after is not None:
        label += f" ({after - before:+d})"
    accuracy, was = new.metrics.get("val_accuracy"), old.metrics.get("val_accuracy")
    if accuracy is not None:
        label += f", validation accuracy {accuracy:.0%}" + (f" (was {was:.0%})" if was is not None else "")
    return label
