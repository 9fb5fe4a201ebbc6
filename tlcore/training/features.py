"""The frozen backbone's features, computed once and kept on disk.

When the whole backbone is frozen and augmentation is off, every epoch would push the
same images through the same backbone. So it runs once over the images (decoding
overlapped with compute) and the features are cached under ``$TLCORE_CACHE_DIR``,
keyed by everything that determines them; any head, split or learning rate reuses them.

Fine-tuning from a block keeps the layers below it frozen too: their output at the cut
(the activations phase 2 starts from) is kept the same way, beside the features file, so
phase 2 trains only the top part (:func:`cut_activations`).

This module is the one owner of the cache file: its key, name, layout, write and read
(:func:`feature_cache_file`, :func:`write_feature_cache`, :func:`read_feature_cache`);
extraction with Ray (:mod:`tlcore.training.extraction`) writes through it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tlcore.caches import BoundedCache
from tlcore.data.images import DECODE_VERSION
from tlcore.data.pipeline import iter_decoded
from tlcore.jobs import ProgressLog
from tlcore.model import classifier as model_lib
from tlcore.model import cut as cut_lib
from tlcore.model.backbones import Backbone
from tlcore.paths import cache_dir

EXTRACTION_BATCH_SIZE = 64
DECODE_AHEAD_BYTES = 256 << 20  # decoded images kept ready for the backbone


def feature_cache_key(backbone: Backbone) -> str:
    """Everything that determines a backbone's features, except the images themselves."""
    facts = {
        "backbone": backbone.name,
        "weights": backbone.weights_id,
        "preprocess": backbone.preprocess,
        "image_size": backbone.image_size,
        "decode": DECODE_VERSION,
        "keras": keras.__version__,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]


def extract_features(
    classifier, items: list, image_size: int, log: ProgressLog | None = None, batch_size: int = EXTRACTION_BATCH_SIZE
) -> np.ndarray:
    """Runs preprocess + backbone once over ``items``; decoding overlaps the compute."""
    backbone = model_lib.backbone_part(classifier)
    return _run_over_images(classifier, backbone, items, image_size, log, batch_size)[0]


def _run_over_images(
    classifier, network, items: list, image_size: int, log, batch_size: int, mirror: bool = False
) -> list[np.ndarray]:
    """Preprocess + ``network`` over ``items`` (flipped horizontally if ``mirror``), one array per output."""
    preprocess = model_lib.preprocess_part(classifier)

    # One trace for every batch size (the last batch is usually shorter): tracing the backbone
    # costs about as much as running it over a few hundred images, so a second trace showed
    # up as ~1.4 s of a cold run's 7 s here.
    @tf.function(input_signature=[tf.TensorSpec((None, image_size, image_size, 3), tf.uint8)])
    def forward(images):
        if mirror:  # what RandomFlip("horizontal") makes of the image: width reversed
            images = tf.reverse(images, axis=[2])
        outputs = network(preprocess(images), training=False)
        return list(outputs) if isinstance(outputs, list | tuple) else [outputs]

    # Decoding runs up to DECODE_AHEAD_BYTES ahead: while the first call traces the backbone
    # (one core, ~1.8 s here) the other core decodes most of the set, instead of both
    # competing later. Measured: cold run 5.5 s -> 4.6 s (bench/frozen_training.py).
    window = max(batch_size, DECODE_AHEAD_BYTES // (image_size * image_size * 3))
    steps = -(-len(items) // batch_size)
    outputs = []
    with contextlib.closing(iter_decoded([item.path for item in items], image_size, window=window)) as decoded:
        for step in range(steps):
            images = np.stack([next(decoded) for _ in range(min(batch_size, len(items) - step * batch_size))])
            outputs.append([output.numpy() for output in forward(images)])
            if log is not None:
                log.append("extract", step=step + 1, steps=steps)
    if not outputs:
        return [np.zeros((0,), np.float32)]
    return [np.concatenate(parts) for parts in zip(*outputs)]


# ----------------------------------------------------------------------------- the cache file format


def feature_cache_file(backbone: Backbone, digests: list[str]) -> Path:
    """The cache file of these images' features: keyed by :func:`feature_cache_key` and the image set.

    The set of image contents (sha256 digests, order ignored), so any split of the same
    images reuses the file.
    """
    set_hash = hashlib.sha256("\n".join(sorted(set(digests))).encode()).hexdigest()[:24]
    return cache_dir() / "features" / feature_cache_key(backbone) / f"{set_hash}.npz"


def write_feature_cache(path: Path, digests: list[str], array: np.ndarray) -> None:
    """Writes a cache entry atomically: a reader sees the whole file or none.

    Layout: ``digests`` (one per row) and ``features`` (the rows; activations at a cut
    use the same layout).

    Raises:
        OSError: the cache folder cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp.npz")
    np.savez(temporary, digests=np.array(digests), features=array)
    os.replace(temporary, path)


def read_feature_cache(path: Path, digests: list[str]) -> np.ndarray | None:
    """The rows of ``digests`` in that order from a cache entry; ``None`` when missing or damaged."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as stored:
            index = {digest: i for i, digest in enumerate(stored["digests"])}
            return stored["features"][[index[d] for d in digests]]
    except (OSError, KeyError, ValueError):
        return None  # a damaged or partial file is rebuilt


def cached_features(
    classifier,
    backbone: Backbone,
    items: list,
    log: ProgressLog | None = None,
    *,
    wait_for_write: bool = True,
    cut: cut_lib.ActivationCut | None = None,
) -> tuple[np.ndarray, bool]:
    """Features of ``items``, from the disk cache when every image is there.

    The file is keyed by :func:`feature_cache_key` and by the set of image contents
    (sha256), so any split of the same images, any head and any learning rate reuse
    it, while a changed image, backbone, weights, size or preprocessing does not.

    Args:
        wait_for_write: ``False`` writes a new cache file in a background thread
            (atomically: a reader sees the whole file or none) and returns at once.
        cut: when fine-tuning will start from a cut (see
            :func:`tlcore.model.cut.activation_cut`), an extraction also keeps the cut's
            activations (:func:`cut_activations`): one pass over the images for both.

    Returns:
        ``(features in the order of items, True if they came from the cache)``.
    """
    digests = [item.digest for item in items]
    path = feature_cache_file(backbone, digests)
    features = read_feature_cache(path, digests)
    if features is not None:
        return features, True
    if cut is not None and cut.cached:
        activations, features = _extract_both(classifier, backbone, items, cut, log)
    else:
        features = extract_features(classifier, items, backbone.image_size, log)
    writer = _write_in_background(path, digests, features)
    if wait_for_write:
        writer.join()
    return features, False


def _write_in_background(path, digests: list[str], array: np.ndarray) -> threading.Thread:
    writer = threading.Thread(target=_write_if_possible, args=(path, digests, array), name="feature-cache-write")
    writer.start()  # not a daemon: a CLI process waits for the file before it exits
    return writer


def _write_if_possible(path, digests: list[str], array: np.ndarray) -> None:
    try:
        write_feature_cache(path, digests, array)
    except OSError:
        pass  # a cache that cannot be written only costs the next run an extraction


# Pooled features of recent runs, in memory: a retrain in the same process reads neither
# the disk cache nor the full feature maps. Keyed like the disk file, cache folder included.
_POOLED = BoundedCache("pooled features", max_items=4, max_bytes=512 * 2**20)


def pooled_features(classifier, backbone: Backbone, items: list, log: ProgressLog | None = None, cut=None):
    """The features of ``items`` after the head's pooling layer, one vector per image.

    The pooling (average, max or flatten) is deterministic, so training the rest of
    the head on pooled vectors is training the whole head on the feature maps.

    ``cut`` is passed on to :func:`cached_features` (the same pass keeps the cut's activations).

    Returns:
        ``(float32 array (len(items), d), True if no extraction was needed)``.
    """
    pool = model_lib.head_part(classifier).get_layer("pool")
    digests = [item.digest for item in items]
    key = (str(feature_cache_file(backbone, digests)), type(pool).__name__)
    memo = _POOLED.get(key)
    if memo is not None and all(d in memo[0] for d in digests):
        return memo[1][[memo[0][d] for d in digests]], True
    features, hit = cached_features(classifier, backbone, items, log, wait_for_write=False, cut=cut)
    pooled = np.concatenate([np.asarray(pool(features[i : i + 256])) for i in range(0, len(features), 256)])
    _POOLED.put(key, ({d: i for i, d in enumerate(digests)}, pooled))
    return pooled, hit


# ----------------------------------------------------------------------------- activations at the cut

# Activations where phase 2 starts (e.g. MobileNetV2's block_14_add, 5x5x160 floats = 16 KB
# an image at 160 px), so the fine-tune phase trains the top part only. Bounded by bytes:
# the server keeps the recent sets of several visitors, never all of them.
ACTIVATION_CACHE_BYTES = 1 << 30
_ACTIVATIONS = BoundedCache("cut activations", max_items=8, max_bytes=ACTIVATION_CACHE_BYTES)


def _activation_path(backbone: Backbone, digests: list[str], cut: cut_lib.ActivationCut, mirrored: bool = False):
    """The activations file: beside the features file of the same images, named after the cut."""
    path = feature_cache_file(backbone, digests)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", cut.name) + ("-mirrored" if mirrored else "")
    return path.with_name(f"{path.stem}.cut-{name}.npz")


def cut_activations(
    classifier, backbone: Backbone, items: list, cut: cut_lib.ActivationCut, log: ProgressLog | None = None
) -> tuple[np.ndarray, bool]:
    """The activations at ``cut`` of ``items``, from memory, the disk cache, or one extraction.

    Keyed like the features (backbone, weights, size, preprocessing, decoding, the set of
    image contents) plus the cut's layer: only the layers below the cut, which phase 2
    never changes, determine them.

    Returns:
        ``(float32 array (len(items), *cut shape), True if no extraction was needed)``.
    """
    digests = [item.digest for item in items]
    activations = _stored_activations(_activation_path(backbone, digests, cut), digests)
    if activations is not None:
        return activations, True
    activations, _ = _extract_both(classifier, backbone, items, cut, log)
    return activations, False


def mirrored_activations(
    classifier, backbone: Backbone, items: list, cut: cut_lib.ActivationCut, log: ProgressLog | None = None
) -> tuple[np.ndarray, bool]:
    """The activations at ``cut`` of ``items`` flipped horizontally: each image's second entry
    under flip-only augmentation, kept as :func:`cut_activations` keeps the unflipped ones.

    Returns:
        ``(float32 array (len(items), *cut shape), True if no extraction was needed)``.
    """
    digests = [item.digest for item in items]
    path = _activation_path(backbone, digests, cut, mirrored=True)
    activations = _stored_activations(path, digests)
    if activations is not None:
        return activations, True
    network = keras.Model(model_lib.backbone_part(classifier).inputs, cut.tensor, name="backbone_below_cut")
    (activations,) = _run_over_images(
        classifier, network, items, backbone.image_size, log, EXTRACTION_BATCH_SIZE, mirror=True
    )
    _ACTIVATIONS.put(str(path), ({d: i for i, d in enumerate(digests)}, activations))
    _write_in_background(path, digests, activations)
    return activations, False


def _stored_activations(path, digests: list[str]) -> np.ndarray | None:
    """Activations from memory or the disk file at ``path`` when every image is there, else ``None``."""
    memo = _ACTIVATIONS.get(str(path))
    if memo is not None and all(d in memo[0] for d in digests):
        return memo[1][[memo[0][d] for d in digests]]
    activations = read_feature_cache(path, digests)
    if activations is not None:
        _ACTIVATIONS.put(str(path), ({d: i for i, d in enumerate(digests)}, activations))
    return activations


def _extract_both(classifier, backbone: Backbone, items: list, cut: cut_lib.ActivationCut, log):
    """One pass over the images for the cut's activations and the feature map; keeps the activations."""
    network = cut_lib.bottom_part(classifier, cut)
    activations, features = _run_over_images(
        classifier, network, items, backbone.image_size, log, EXTRACTION_BATCH_SIZE
    )
    digests = [item.digest for item in items]
    path = _activation_path(backbone, digests, cut)
    _ACTIVATIONS.put(str(path), ({d: i for i, d in enumerate(digests)}, activations))
    _write_in_background(path, digests, activations)
    return activations, features
