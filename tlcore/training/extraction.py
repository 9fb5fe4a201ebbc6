"""Filling the feature cache ahead of training: in this process, or with Ray Data.

Both engines compute the same thing. ``local`` runs in this process (decoding in
threads overlapped with the model). ``ray`` spreads the images over a pool of Ray Data
actors (``map_batches`` with a callable class): each actor loads the model once, takes
one GPU when the cluster has them, decodes and runs its batches; this process gathers
the results in order.

The cache entry is written by :mod:`tlcore.training.features`, the one owner of its key,
file name, layout and write, so ``python -m tlcore extract --engine ray`` followed by
``train`` skips the backbone. Ray pays a fixed cost per job (worker processes,
TensorFlow import, one model load per worker): it is for folders too big for one
machine, not for a few hundred images.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np

from tlcore.config import RunConfig
from tlcore.data.pipeline import iter_decoded, load_dataset
from tlcore.runners.cluster import connect_ray, worker_environment
from tlcore.runners.ray_data import actor_pool, check_engine, quiet_ray_data, ray_batches, ray_dataset
from tlcore.training import features as features_lib


def dataset_items(config: RunConfig) -> list:
    """The images whose features training caches: train then validation, split as training splits."""
    dataset = load_dataset(config.data, seed=config.train.seed)
    return dataset.train + dataset.val


def feature_model(config: RunConfig):
    """``(backbone, classifier)`` built as training builds them (same seed, same preprocessing)."""
    import keras

    from tlcore.model.backbones import load_backbone
    from tlcore.model.classifier import build_classifier

    keras.utils.set_random_seed(config.train.seed)
    backbone = load_backbone(config.model, seed=config.train.seed)
    return backbone, build_classifier(backbone, 2, config.model)  # the head plays no part in features


@dataclass
class ExtractionReport:
    """What an extraction did: the CLI prints the first four fields.

    Attributes:
        images: images whose features are now in the cache.
        seconds: wall time, model loading and Ray start-up included.
        engine: ``"local"`` or ``"ray"``.
        workers: parallel model copies (1 for local).
        from_cache: the entry was already there; nothing was computed.
        cache_file: the entry training will read.
    """

    images: int
    seconds: float
    engine: str
    workers: int
    from_cache: bool = False
    cache_file: str = ""

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("images", "seconds", "engine", "workers", "from_cache", "cache_file")}


def extract_to_cache(
    config: RunConfig, engine: str = "local", workers: int = 1, address: str | None = None, log=None
) -> ExtractionReport:
    """Fills the feature cache that training on ``config`` reads.

    Args:
        config: the run settings (data, backbone, seed) training will use.
        engine: ``"local"`` (this process) or ``"ray"`` (Ray Data actors).
        workers: Ray actors, each with its own model copy (ignored by ``local``).
        address: the Ray cluster (see :func:`tlcore.runners.connect_ray`).
        log: receives ``"extract"`` progress records.

    Raises:
        StudioError: bad data, an unknown engine, an image that cannot be decoded, or
            Ray cannot be reached.
        OSError: the cache folder cannot be written (Ray engine).
    """
    check_engine(engine, workers)
    started = time.perf_counter()
    items = dataset_items(config)
    digests = [item.digest for item in items]
    backbone, classifier = feature_model(config)
    path = features_lib.feature_cache_file(backbone, digests)
    from_cache = path.is_file()
    if engine == "local" or from_cache:
        _, from_cache = features_lib.cached_features(classifier, backbone, items, log)
    else:
        features = extract_features_ray(config, [item.path for item in items], workers, address, log)
        features_lib.write_feature_cache(path, digests, features)
    seconds = time.perf_counter() - started
    used = workers if engine == "ray" else 1
    return ExtractionReport(len(items), round(seconds, 3), engine, used, from_cache, str(path))


class FeatureExtractor:
    """A Ray Data actor: the backbone of ``config``, loaded once, applied to batches of paths."""

    def __init__(self, config: RunConfig, environment: dict):
        os.environ.update(environment)
        import tensorflow as tf

        from tlcore.model.classifier import backbone_part, preprocess_part

        backbone, classifier = feature_model(config)
        self.image_size = backbone.image_size
        preprocess, model = preprocess_part(classifier), backbone_part(classifier)
        self.forward = tf.function(lambda images: model(preprocess(images), training=False), reduce_retracing=True)

    def __call__(self, batch: dict) -> dict:
        images = np.stack(list(iter_decoded([str(p) for p in batch["path"]], self.image_size)))
        return {"index": batch["index"], "features": self.forward(images).numpy()}


def extract_features_ray(
    config: RunConfig, paths: list[str], workers: int = 2, address: str | None = None, log=None
) -> np.ndarray:
    """Backbone features of ``paths`` from ``workers`` Ray Data actors, in the order of ``paths``.

    Raises:
        StudioError: Ray cannot be reached, or an image cannot be decoded (named).
    """
    connect_ray(address, num_cpus=max(os.cpu_count() or 1, workers))
    quiet_ray_data()
    batch_size = features_lib.EXTRACTION_BATCH_SIZE
    dataset = ray_dataset(paths, batch_size).map_batches(
        FeatureExtractor,
        fn_constructor_args=(config, worker_environment()),
        batch_size=batch_size,
        batch_format="numpy",
        **actor_pool(workers),
    )
    features, steps = None, math.ceil(len(paths) / batch_size)
    for step, batch in enumerate(ray_batches(dataset)):
        if features is None:
            features = np.empty((len(paths), *batch["features"].shape[1:]), np.float32)
        features[batch["index"]] = batch["features"]
        if log is not None:
            log.append("extract", step=step + 1, steps=steps)
    return features if features is not None else np.zeros((0,), np.float32)
