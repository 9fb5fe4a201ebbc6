"""Feature extraction and batch prediction over many images: in this process, or with Ray Data.

Both engines compute the same thing. ``local`` runs in this process (decoding in
threads overlapped with the model). ``ray`` spreads the images over a pool of Ray Data
actors (``map_batches`` with a callable class): each actor loads the model once, takes
one GPU when the cluster has them, decodes and runs its batches; this process gathers
the results in order.

Extraction writes exactly the feature-cache entry training reads
(:func:`tlcore.training.features.cached_features`: same key, same image set, same layout), so
``python -m tlcore extract --engine ray`` followed by ``train`` skips the backbone.
Ray pays a fixed cost per job (worker processes, TensorFlow import, one model load
per worker): it is for folders too big for one machine, not for a few hundred images.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tlcore.config import RunConfig
from tlcore.data.common import IMAGE_SUFFIXES, is_ignored
from tlcore.data.images import decode_image
from tlcore.data.pipeline import iter_decoded, load_dataset
from tlcore.errors import StudioError, first_line
from tlcore.paths import cache_dir
from tlcore.runners.cluster import connect_ray, worker_environment
from tlcore.runs.store import require_run_model

ENGINES = ("local", "ray")
BATCH_SIZE = 64  # images per model call, as tlcore.training.trainer extracts them


def check_engine(engine: str, workers: int) -> None:
    """Raises ``StudioError`` for an unknown engine or a worker count below 1."""
    if engine not in ENGINES:
        raise StudioError(f"Unknown engine. Expected one of {list(ENGINES)}. Received: --engine {engine}.")
    if workers < 1:
        raise StudioError(f"Expected at least 1 worker. Received: --workers {workers}.")


# ----------------------------------------------------------------------------- the feature cache


def feature_cache_file(cache_key: str, digests: list[str]) -> Path:
    """The cache file :func:`tlcore.training.features.cached_features` reads for these images and this key."""
    set_hash = hashlib.sha256("\n".join(sorted(set(digests))).encode()).hexdigest()[:24]
    return cache_dir() / "features" / cache_key / f"{set_hash}.npz"


def write_feature_cache(path: Path, digests: list[str], features: np.ndarray) -> None:
    """Writes a cache entry atomically, in the layout training reads (``digests``, ``features``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp.npz")
    np.savez(temporary, digests=np.array(digests), features=features)
    os.replace(temporary, path)


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
        address: the Ray cluster (see :func:`tlcore.runners.cluster.connect_ray`).
        log: receives ``"extract"`` progress records.

    Raises:
        StudioError: bad data, an unknown engine, an image that cannot be decoded, or
            Ray cannot be reached.
    """
    check_engine(engine, workers)
    started = time.perf_counter()
    items = dataset_items(config)
    from tlcore.training.features import cached_features, feature_cache_key

    backbone, classifier = feature_model(config)
    path = feature_cache_file(feature_cache_key(backbone), [item.digest for item in items])
    from_cache = path.is_file()
    if engine == "local" or from_cache:
        _, from_cache = cached_features(classifier, backbone, items, log)
    else:
        features = extract_features_ray(config, [item.path for item in items], workers, address, log)
        write_feature_cache(path, [item.digest for item in items], features)
    seconds = time.perf_counter() - started
    used = workers if engine == "ray" else 1
    return ExtractionReport(len(items), round(seconds, 3), engine, used, from_cache, str(path))


# ----------------------------------------------------------------------------- Ray Data


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


def ray_dataset(paths: list[str], batch_size: int = BATCH_SIZE):
    """Paths as a Ray dataset of ``{"index", "path"}`` rows, one block per batch."""
    import ray

    # Absolute paths: a worker's current folder may differ from this process's.
    rows = [{"index": index, "path": os.path.abspath(path)} for index, path in enumerate(paths)]
    return ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / batch_size)))


def actor_pool(workers: int) -> dict:
    """``map_batches`` arguments for ``workers`` actors, each with a GPU when the cluster has them."""
    import ray

    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    return {"compute": ray.data.ActorPoolStrategy(size=workers), "num_cpus": 1, "num_gpus": gpus}


def quiet_ray_data() -> None:
    """No progress bars or info logs on the CLI's streams."""
    import logging

    import ray

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def extract_features_ray(
    config: RunConfig, paths: list[str], workers: int = 2, address: str | None = None, log=None
) -> np.ndarray:
    """Backbone features of ``paths`` from ``workers`` Ray Data actors, in the order of ``paths``.

    Raises:
        StudioError: Ray cannot be reached, or an image cannot be decoded (named).
    """
    connect_ray(address, num_cpus=max(os.cpu_count() or 1, workers))
    quiet_ray_data()
    dataset = ray_dataset(paths).map_batches(
        FeatureExtractor,
        fn_constructor_args=(config, worker_environment()),
        batch_size=BATCH_SIZE,
        batch_format="numpy",
        **actor_pool(workers),
    )
    features, steps = None, math.ceil(len(paths) / BATCH_SIZE)
    for step, batch in enumerate(_ray_batches(dataset)):
        if features is None:
            features = np.empty((len(paths), *batch["features"].shape[1:]), np.float32)
        features[batch["index"]] = batch["features"]
        if log is not None:
            log.append("extract", step=step + 1, steps=steps)
    return features if features is not None else np.zeros((0,), np.float32)


def _ray_batches(dataset):
    """Batches as Ray Data produces them; a failed worker becomes one line that names the cause."""
    try:
        yield from dataset.iter_batches(batch_size=None, batch_format="numpy")
    except StudioError:
        raise
    except Exception as error:  # noqa: BLE001  - Ray wraps the worker's error in its own types
        cause = getattr(error, "cause", None) or error
        raise StudioError(f"A Ray worker failed: {first_line(cause)}") from None


# ----------------------------------------------------------------------------- batch prediction


@dataclass
class Predictions:
    """Batch predictions: one row per image, and every file that was skipped with its reason.

    Attributes:
        rows: ``{"path", "label", "probability"}`` in input order.
        skipped: ``{"path", "reason"}``.
        seconds: wall time.
        engine: ``"local"`` or ``"ray"``.
        workers: parallel model copies.
    """

    rows: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    engine: str = "local"
    workers: int = 1

    def write_csv(self, path: str | Path) -> Path:
        """Writes ``path,label,probability`` rows (probabilities with full float precision)."""
        import pandas as pd

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(self.rows, columns=["path", "label", "probability"]).to_csv(path, index=False)
        return path


def collect_images(sources: list[str]) -> tuple[list[str], list[dict]]:
    """Image files named or found (recursively) in ``sources``, and the other files with reasons."""
    paths, skipped = [], []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            for root, directories, files in os.walk(path):
                directories[:] = sorted(d for d in directories if not is_ignored(d))
                for name in sorted(files):
                    _sort_file(Path(root) / name, paths, skipped)
        elif path.is_file():
            _sort_file(path, paths, skipped, named=True)
        else:
            skipped.append({"path": str(path), "reason": "not found"})
    return paths, skipped


def _sort_file(path: Path, paths: list, skipped: list, named: bool = False) -> None:
    if is_ignored(path.name) or (path.name.startswith(".") and not named):
        return
    if path.suffix.lower() in IMAGE_SUFFIXES or named:
        paths.append(str(path))
    else:
        skipped.append({"path": str(path), "reason": f"not an image file ({path.suffix or 'no extension'})"})


def predict_batch(model, labels: list[str], paths: list[str]) -> list[dict]:
    """Top-1 of each path, in order: ``{"path", "label", "probability"}``, or ``{"path", "reason"}`` if unreadable."""
    size = int(model.input_shape[1])
    with ThreadPoolExecutor(min(8, os.cpu_count() or 2)) as pool:
        decoded = list(pool.map(lambda path: _decode_or_reason(path, size), paths))
    rows = [{"path": path, "reason": image} if isinstance(image, str) else None for path, image in zip(paths, decoded)]
    good = [index for index, row in enumerate(rows) if row is None]
    if good:
        probabilities = model.predict(np.stack([decoded[i] for i in good]).astype("float32"), verbose=0)
        for index, row in zip(good, probabilities):
            best = int(np.argmax(row))
            rows[index] = {"path": paths[index], "label": labels[best], "probability": float(row[best])}
    return rows


def _decode_or_reason(path: str, size: int):
    try:
        return decode_image(path, size)
    except (StudioError, OSError) as error:
        return str(error)


def load_run_model(run_dir: str | Path):
    """``(model, labels)`` of a finished run folder.

    Raises:
        StudioError: the folder has no saved model.
    """
    from tlcore.runs.store import read_run

    run = read_run(require_run_model(run_dir))
    return run.load_model(), run.labels


def predict_images(
    run_dir: str | Path, sources: list[str], engine: str = "local", workers: int = 1, address: str | None = None
) -> Predictions:
    """Top-1 predictions of a run for every image in ``sources`` (files, folders walked recursively).

    Raises:
        StudioError: no run model, no image found, an unknown engine, or Ray cannot be reached.
    """
    check_engine(engine, workers)
    started = time.perf_counter()
    paths, skipped = collect_images(sources)
    if not paths:
        raise StudioError(f"No image files found in {sources}. Expected image files or folders of them.")
    if engine == "local":
        model, labels = load_run_model(run_dir)
        rows = [row for start in range(0, len(paths), BATCH_SIZE) for row in predict_batch(model, labels, paths[start : start + BATCH_SIZE])]  # fmt: skip
    else:
        require_run_model(run_dir)
        rows = predict_rows_ray(run_dir, paths, workers, address)
    good = [row for row in rows if "reason" not in row]
    skipped += [{"path": row["path"], "reason": row["reason"]} for row in rows if "reason" in row]
    seconds = round(time.perf_counter() - started, 3)
    return Predictions(good, skipped, seconds, engine, workers if engine == "ray" else 1)


class Predictor:
    """A Ray Data actor: a run's model, loaded once, predicting batches of paths."""

    def __init__(self, run_dir: str, environment: dict):
        os.environ.update(environment)
        self.model, self.labels = load_run_model(run_dir)

    def __call__(self, batch: dict) -> dict:
        rows = predict_batch(self.model, self.labels, [str(p) for p in batch["path"]])
        return {
            "index": batch["index"],
            "label": np.array([row.get("label", "") for row in rows], dtype=object),
            "probability": np.array([row.get("probability", np.nan) for row in rows], dtype=np.float64),
            "reason": np.array([row.get("reason", "") for row in rows], dtype=object),
        }


def predict_rows_ray(run_dir: str | Path, paths: list[str], workers: int = 2, address: str | None = None) -> list:
    """:func:`predict_batch` rows for ``paths`` from ``workers`` Ray Data actors, in input order."""
    connect_ray(address, num_cpus=max(os.cpu_count() or 1, workers))
    quiet_ray_data()
    dataset = ray_dataset(paths).map_batches(
        Predictor,
        fn_constructor_args=(str(Path(run_dir).resolve()), worker_environment()),
        batch_size=BATCH_SIZE,
        batch_format="numpy",
        **actor_pool(workers),
    )
    rows: list = [None] * len(paths)
    for batch in _ray_batches(dataset):
        for index, label, probability, reason in zip(
            batch["index"], batch["label"], batch["probability"], batch["reason"]
        ):
            path = paths[int(index)]
            rows[int(index)] = (
                {"path": path, "reason": str(reason)}
                if reason
                else {"path": path, "label": str(label), "probability": float(probability)}
            )
    return rows
