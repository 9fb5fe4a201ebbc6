"""From a scanned folder to training batches: split, ``load_dataset``, tf.data, augmentation.

The only TensorFlow part of the data package, imported lazily inside the functions
that need it, so the dashboard's home page renders before TensorFlow loads.
"""

from __future__ import annotations

import collections
import os
import random
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from tlcore.data.common import DEFAULT_LIMITS, Limits
from tlcore.data.images import decode_image
from tlcore.data.scan import DatasetScan, ImageItem, Skipped, scan_folder
from tlcore.data.sources import resolve_source
from tlcore.errors import StudioError
from tlcore.insight.overlay import apply_stored_overlay  # hook: the user's relabel/exclude decisions
from tlcore.paths import dataset_fence


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
    scan = _scan(data_config.data_dir, data_config, data_config.min_images_per_class, limits)
    scans = [scan]
    classes = [label for label in scan.classes if scan.counts[label] > 0]
    if len(classes) < 2:
        raise StudioError(
            f"Expected at least 2 classes with images in {scan.root}. Received: {scan.counts}. "
            "Add a folder of images for each class."
        )
    if data_config.val_dir:
        val_scan = _scan(data_config.val_dir, data_config, 1, limits)
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


def _scan(source: str, data_config, min_images_per_class: int, limits: Limits) -> DatasetScan:
    """One folder scanned as its owner's dashboard saw it (:func:`scan_source`), the owner's label decisions applied."""
    owner = data_config.owner
    scan = scan_source(source, owner, data_config.skip_placeholders, min_images_per_class, limits)
    return apply_stored_overlay(scan, owner)  # insight hook: relabel/exclude kept in the workspace, files untouched


def scan_source(
    source: str, owner: str | None, skip_placeholders: bool, min_images_per_class: int = 5, limits=DEFAULT_LIMITS
) -> DatasetScan:
    """A folder, .zip or the demo set, scanned as training reads it: a dashboard visitor's (``owner`` set)
    through the data-roots fence and their own folders; without an owner (the CLI) as given."""
    root = resolve_source(source, limits, restricted=owner is not None, owner=owner)
    fence = dataset_fence(root, owner) if owner else None
    return scan_folder(root, min_images_per_class, limits, skip_placeholders=skip_placeholders, fence=fence)


def iter_decoded(paths: Iterable[str], size: int, workers: int | None = None, window: int = 64) -> Iterator[np.ndarray]:
    """Decodes images in background threads, in order, at most ``window`` ahead.

    Pillow releases the GIL while decoding and resizing, so this overlaps with the
    consumer (the backbone's compute) and with itself.

    Raises:
        StudioError: an image that passed the scan could not be decoded now.
    """
    paths = list(paths)
    with ThreadPoolExecutor(workers or os.cpu_count() or 2) as pool:
        pending = collections.deque()  # up to `window` long: thousands with the 256 MB of features.py
        try:
            for path in paths:
                pending.append((path, pool.submit(decode_image, path, size)))
                if len(pending) >= window:
                    yield _result(*pending.popleft())
            while pending:
                yield _result(*pending.popleft())
        finally:  # an error or an early close: don't decode the rest of a long window first
            for _, future in pending:
                future.cancel()


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


def augmentation_layers(seed: int, mode: str = "full"):
    """Keras preprocessing layers: a random horizontal flip (``"flip"``), or flip, rotation,
    zoom and contrast (``"full"``)."""
    import keras

    layers = [keras.layers.RandomFlip("horizontal", seed=seed)]
    if mode == "full":
        layers += [
            keras.layers.RandomRotation(0.1, seed=seed + 1),
            keras.layers.RandomZoom(0.15, seed=seed + 2),
            keras.layers.RandomContrast(0.2, seed=seed + 3),
        ]
    return keras.Sequential(layers, name="augmentation")


def image_dataset(
    items: list[ImageItem],
    labels: np.ndarray,
    size: int,
    batch_size: int,
    *,
    shuffle: bool = False,
    augment: str | bool = "off",
    seed: int = 0,
):
    """A ``tf.data`` pipeline of ``(float32 images 0..255, int labels)`` batches.

    Images are decoded once, up front, by a pool of threads (Pillow releases the GIL)
    and kept in memory as uint8; training order is reshuffled every epoch and
    augmentation (``"flip"`` or ``"full"``, see :func:`augmentation_layers`; ``True`` means
    ``"full"``) runs as Keras preprocessing layers inside the pipeline. No Python runs
    inside the pipeline during ``fit``: with several jobs in one server process, a
    Python generator there starves on the GIL.
    """
    import tensorflow as tf

    images = decode_all([item.path for item in items], size)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.asarray(labels, dtype=np.int32)))
    if shuffle:
        dataset = dataset.shuffle(len(items), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y))
    mode = {True: "full", False: "off"}.get(augment, augment)
    if mode != "off":
        layers = augmentation_layers(seed, mode)
        dataset = dataset.map(lambda x, y: (layers(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def activation_dataset(activations: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, mirrored=None):
    """Training batches of cached activations, reshuffled every epoch as :func:`image_dataset` does.

    Args:
        mirrored: the activations of the same images flipped horizontally, or ``None``. When
            given, each image contributes one of its two entries per epoch, drawn at random
            (seeded, new draws every epoch): the cached form of a random horizontal flip.
    """
    import tensorflow as tf

    labels = np.asarray(labels, dtype=np.int32)
    if mirrored is None:
        dataset = tf.data.Dataset.from_tensor_slices((activations, labels))
        return dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    dataset = tf.data.Dataset.from_tensor_slices((activations, mirrored, labels))
    dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    coins = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).map(lambda value: value % 2 == 1)
    dataset = tf.data.Dataset.zip(dataset, coins)
    return dataset.map(lambda entries, flip: (tf.where(flip, entries[1], entries[0]), entries[2])).batch(batch_size)
