"""The training job: head phase, optional fine-tune phase, one continuous history.

Fast path: when the whole backbone is frozen and augmentation is off, every epoch
would push the same images through the same frozen backbone. So the backbone runs
once over train and validation images (decoding overlapped with compute), the
features are kept on disk keyed by everything that determines them, and the head
trains on the features. A second run on the same data and backbone skips decoding
and the backbone entirely.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from tlcore import data as data_lib
from tlcore import model as model_lib
from tlcore.backbones import Backbone, load_backbone
from tlcore.config import FreezePlan, RunConfig
from tlcore.jobs import ProgressLog

HISTORY_COLUMNS = ["phase", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"]
EXTRACTION_BATCH_SIZE = 64
FEATURE_BATCH_SIZE = 1024  # batches of cached features: the head is tiny


def history_frame(log: ProgressLog) -> pd.DataFrame:
    """Epoch records of a log as one continuous history DataFrame (both phases)."""
    rows = [{column: record.get(column) for column in HISTORY_COLUMNS} for record in log.records(kind="epoch")]
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def progress_summary(log: ProgressLog, total_epochs: int) -> dict:
    """Where a training job is: fraction done, ETA, and a one-line description.

    Args:
        log: the job's progress log.
        total_epochs: epochs planned over both phases (early stopping may end sooner).

    Returns:
        ``{"fraction", "eta_seconds", "text", "phase"}``; ``eta_seconds`` is ``None``
        until a training batch has been seen.
    """
    status = log.last("status")
    if status and status.get("status") in ("done", "stopped", "failed"):
        return {"fraction": 1.0, "eta_seconds": 0.0, "text": status["status"], "phase": None}
    batch = log.last("batch")
    if batch is None:
        extract = log.last("extract")
        if extract:
            text = f"Computing backbone features: batch {extract['step']}/{extract['steps']}"
            return {"fraction": 0.0, "eta_seconds": None, "text": text, "phase": "extract"}
        return {"fraction": 0.0, "eta_seconds": None, "text": (status or {}).get("status", "starting"), "phase": None}
    steps = batch.get("steps") or batch["step"]
    done = (batch["epoch"] - 1 + batch["step"] / steps) / max(total_epochs, 1)
    fraction = min(max(done, 0.0), 1.0)
    first = log.records(kind="batch")[0]
    elapsed = batch["time"] - first["time"]
    eta = elapsed / fraction * (1 - fraction) if fraction > 0.02 else None
    text = f"{batch['phase']} · epoch {batch['epoch']}/{total_epochs} · batch {batch['step']}/{steps}"
    return {"fraction": fraction, "eta_seconds": eta, "text": text, "phase": batch["phase"]}


class ProgressCallback(keras.callbacks.Callback):
    """Feeds a :class:`ProgressLog` and honours a stop request within one batch.

    Args:
        log: where records go.
        phase: ``"head"`` or ``"fine-tune"``.
        stop: when set, training stops after the current batch.
    """

    def __init__(self, log: ProgressLog, phase: str, stop: threading.Event | None = None):
        super().__init__()
        self.log = log
        self.phase = phase
        self.stop = stop or threading.Event()
        self._epoch_start = 0.0
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        # Keras counts on from initial_epoch, so the number runs on across both phases.
        self._epoch = epoch + 1
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.log.append(
            "batch",
            phase=self.phase,
            epoch=self._epoch,
            step=batch + 1,
            steps=self.params.get("steps"),
            loss=(logs or {}).get("loss"),
        )
        if self.stop.is_set():
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.log.append(
            "epoch",
            phase=self.phase,
            epoch=epoch + 1,
            loss=logs.get("loss"),
            accuracy=logs.get("accuracy"),
            val_loss=logs.get("val_loss"),
            val_accuracy=logs.get("val_accuracy"),
            learning_rate=float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            seconds=time.perf_counter() - self._epoch_start,
        )


class ReplicaStatisticsSync(keras.callbacks.Callback):
    """Averages the replicas' copies of non-trainable statistics before validation and at the end.

    Under ``MirroredStrategy`` Keras 3 updates each replica's copy of a BatchNormalization
    moving mean/variance from that replica's share of the batch only (the variables have
    no aggregation), so the copies drift apart. Validation would then depend on which
    device an image lands on, and ``get_weights`` (best-weights restore, saving) would
    keep device 0's copy alone. The average of the copies is what every device uses.
    """

    def on_test_begin(self, logs=None):
        average_replica_copies(self.model)

    def on_train_end(self, logs=None):
        average_replica_copies(self.model)


def average_replica_copies(model) -> None:
    """Sets every mirrored floating-point non-trainable variable of ``model`` to the mean of its copies."""
    for variable in model.non_trainable_variables:
        copies = getattr(variable.value, "values", ())
        if len(copies) > 1 and variable.value.dtype.is_floating:
            variable.assign(tf.add_n([tf.convert_to_tensor(copy) for copy in copies]) / len(copies))


@dataclass
class TrainResult:
    """What a training job produced.

    Attributes:
        model: the trained classifier (best weights restored).
        classes: class labels; index = label id.
        history: one row per epoch across both phases.
        metrics: the numbers written to ``metrics.json``.
        val_items: validation images, in the order of ``val_probabilities``.
        val_probabilities: the final model's class probabilities on them.
        stopped: True when a stop request ended training early.
    """

    model: object
    classes: list[str]
    history: pd.DataFrame
    metrics: dict
    val_items: list = field(default_factory=list)
    val_probabilities: np.ndarray | None = None
    stopped: bool = False


def choose_strategy():
    """``MirroredStrategy`` when several GPUs are visible, the default strategy otherwise.

    ``MultiWorkerMirroredStrategy`` is not offered: it is broken with Keras 3 (keras#20585).
    """
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


# ----------------------------------------------------------------------------- features


def feature_cache_key(backbone: Backbone) -> str:
    """Everything that determines a backbone's features, except the images themselves."""
    facts = {
        "backbone": backbone.name,
        "weights": backbone.weights_id,
        "preprocess": backbone.preprocess,
        "image_size": backbone.image_size,
        "decode": data_lib.DECODE_VERSION,
        "keras": keras.__version__,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]


def extract_features(
    classifier, items: list, image_size: int, log: ProgressLog | None = None, batch_size: int = EXTRACTION_BATCH_SIZE
) -> np.ndarray:
    """Runs preprocess + backbone once over ``items``; decoding overlaps the compute."""
    preprocess = model_lib.preprocess_part(classifier)
    backbone = model_lib.backbone_part(classifier)

    @tf.function(reduce_retracing=True)
    def forward(images):
        return backbone(preprocess(images), training=False)

    paths = [item.path for item in items]
    dataset = (
        tf.data.Dataset.from_generator(
            lambda: data_lib.iter_decoded(paths, image_size),
            output_signature=tf.TensorSpec((image_size, image_size, 3), tf.uint8),
        )
        .batch(batch_size)
        .prefetch(2)
    )
    steps = -(-len(items) // batch_size)
    outputs = []
    for step, images in enumerate(dataset):
        outputs.append(forward(images).numpy())
        if log is not None:
            log.append("extract", step=step + 1, steps=steps)
    return np.concatenate(outputs) if outputs else np.zeros((0,), np.float32)


def cached_features(
    classifier, backbone: Backbone, items: list, log: ProgressLog | None = None
) -> tuple[np.ndarray, bool]:
    """Features of ``items``, from the disk cache when every image is there.

    The file is keyed by :func:`feature_cache_key` and by the set of image contents
    (sha256), so any split of the same images, any head and any learning rate reuse
    it, while a changed image, backbone, weights, size or preprocessing does not.

    Returns:
        ``(features in the order of items, True if they came from the cache)``.
    """
    digests = [item.digest for item in items]
    set_hash = hashlib.sha256("\n".join(sorted(set(digests))).encode()).hexdigest()[:24]
    path = data_lib.cache_dir() / "features" / feature_cache_key(backbone) / f"{set_hash}.npz"
    if path.is_file():
        try:
            with np.load(path) as stored:
                index = {digest: i for i, digest in enumerate(stored["digests"])}
                return stored["features"][[index[d] for d in digests]], True
        except (OSError, KeyError, ValueError):
            pass  # a damaged cache file is rebuilt below
    features = extract_features(classifier, items, backbone.image_size, log)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp.npz")
    np.savez(temporary, digests=np.array(digests), features=features)
    os.replace(temporary, path)
    return features, False


# ----------------------------------------------------------------------------- the job


def run_training(
    config: RunConfig,
    *,
    run_dir: str | Path | None = None,
    log: ProgressLog | None = None,
    stop: threading.Event | None = None,
    strategy=None,
    backbone: Backbone | None = None,
    dataset: data_lib.Dataset | None = None,
) -> TrainResult:
    """Trains a classifier as ``config`` describes.

    Args:
        config: the run settings (validated here).
        run_dir: where TensorBoard logs go; ``None`` writes none.
        log: receives progress records; a new one when omitted.
        stop: set it to stop after the current batch; best weights are kept.
        strategy: a ``tf.distribute`` strategy; default :func:`choose_strategy`.
        backbone: a prebuilt backbone (benchmarks reuse one); built from config otherwise.
        dataset: a prepared dataset; scanned from config otherwise.

    Returns:
        A :class:`TrainResult`.
    """
    config.validate()
    started = time.perf_counter()
    log = log if log is not None else ProgressLog()
    stop = stop or threading.Event()
    train_cfg = config.train
    keras.utils.set_random_seed(train_cfg.seed)
    log.append("status", status="loading data")
    dataset = dataset or data_lib.load_dataset(config.data, seed=train_cfg.seed)
    y_train, y_val = dataset.label_ids(dataset.train), dataset.label_ids(dataset.val)
    strategy = strategy or choose_strategy()
    log.append("status", status="building model")
    with strategy.scope():
        backbone = backbone or load_backbone(config.model, seed=train_cfg.seed)
        classifier = model_lib.build_classifier(backbone, len(dataset.classes), config.model)
    size = backbone.image_size
    replicas = strategy.num_replicas_in_sync
    check_batch_size(train_cfg.batch_size, replicas)
    timings = {"feature_extraction_seconds": 0.0, "features_from_cache": False}
    val_features = None
    best = {"val_loss": np.inf, "weights": None}
    phase_epochs = 0

    pipelines = {}

    def image_data(split: str):
        # Built once per split and reused by both phases and the final evaluation:
        # building decodes every image.
        if split not in pipelines:
            training = split == "train"
            items, labels = (dataset.train, y_train) if training else (dataset.val, y_val)
            pipeline = data_lib.image_dataset(
                items,
                labels,
                size,
                train_cfg.batch_size,
                shuffle=training,
                augment=training and train_cfg.augment,
                seed=train_cfg.seed,
            )
            if replicas > 1:
                pipeline = even_batches(pipeline.unbatch(), len(items), train_cfg.batch_size, replicas)
                pipeline = pipeline.prefetch(tf.data.AUTOTUNE)
            pipelines[split] = pipeline
        return pipelines[split]

    def fit(model, train, val, phase, epochs, initial_epoch):
        return _fit(model, train, val, phase, epochs, initial_epoch, train_cfg, log, stop, run_dir, best, classifier)

    use_cache = train_cfg.feature_cache and not train_cfg.augment and model_lib.is_fully_frozen(classifier)
    if train_cfg.epochs and use_cache:
        log.append("phase", phase="extract")
        extract_start = time.perf_counter()
        features, hit = cached_features(classifier, backbone, dataset.train + dataset.val, log)
        timings = {"feature_extraction_seconds": time.perf_counter() - extract_start, "features_from_cache": hit}
        train_features, val_features = features[: len(dataset.train)], features[len(dataset.train) :]
        head = model_lib.head_part(classifier)
        with strategy.scope():
            # An epoch on cached features takes milliseconds: run it as one call (the
            # stop request is then checked once per epoch) instead of a call per batch.
            # (Keras' multi-step execution fails under MirroredStrategy: one step per call there.)
            steps = -(-len(dataset.train) // train_cfg.batch_size) if replicas == 1 else 1
            model_lib.compile_classifier(head, train_cfg.optimizer, train_cfg.learning_rate, steps_per_execution=steps)
        train_data, val_data = _feature_datasets((train_features, y_train), (val_features, y_val), train_cfg, replicas)
        phase_epochs = fit(head, train_data, val_data, "head", train_cfg.epochs, 0)
    elif train_cfg.epochs:
        with strategy.scope():
            model_lib.compile_classifier(classifier, train_cfg.optimizer, train_cfg.learning_rate)
        phase_epochs = fit(classifier, image_data("train"), image_data("val"), "head", train_cfg.epochs, 0)

    if train_cfg.fine_tune_epochs and not stop.is_set():
        backbone_model = model_lib.backbone_part(classifier)
        start = train_cfg.unfreeze_from or model_lib.last_block(backbone_model, backbone.block_pattern)
        model_lib.apply_freeze_plan(
            backbone_model, FreezePlan("from", start), backbone.block_pattern, backbone.pretrained
        )
        with strategy.scope():
            # Recompile: Keras fixes the set of trainable weights at compile time.
            model_lib.compile_classifier(classifier, train_cfg.optimizer, train_cfg.effective_fine_tune_learning_rate)
        fit(classifier, image_data("train"), image_data("val"), "fine-tune", train_cfg.fine_tune_epochs, phase_epochs)
        val_features = None  # the backbone changed: cached features no longer describe it

    if best["weights"] is not None:
        classifier.set_weights(best["weights"])
    log.append("status", status="evaluating")
    if val_features is not None:
        features = tf.data.Dataset.from_tensor_slices(val_features)
        features = even_batches(features, len(val_features), FEATURE_BATCH_SIZE // replicas * replicas, replicas)
        probabilities = model_lib.head_part(classifier).predict(features, verbose=0)
    else:
        probabilities = classifier.predict(image_data("val"), verbose=0)
    # A validation set smaller than the replica count is predicted repeated whole: keep one copy.
    probabilities = probabilities[: len(dataset.val)]
    history = history_frame(log)
    metrics = {
        **evaluate_probabilities(probabilities, y_val),
        "train_seconds": time.perf_counter() - started,
        **timings,
        "epochs_run": len(history),
        "num_train": len(dataset.train),
        "num_val": len(dataset.val),
        "num_classes": len(dataset.classes),
        "skipped_files": len(dataset.skipped),
        "stopped_early_by_user": stop.is_set(),
        "backbone": backbone.name,
        "image_size": size,
        "parameters": model_lib.parameter_totals(classifier),
    }
    log.append("status", status="stopped" if stop.is_set() else "done")
    return TrainResult(classifier, dataset.classes, history, metrics, dataset.val, probabilities, stop.is_set())


def evaluate_probabilities(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """``val_loss`` (cross-entropy) and ``val_accuracy`` of predicted probabilities."""
    clipped = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    return {
        "val_loss": float(-np.mean(np.log(clipped))),
        "val_accuracy": float(np.mean(np.argmax(probabilities, axis=1) == labels)),
    }


def _feature_datasets(train: tuple, val: tuple, train_cfg, replicas: int = 1) -> tuple:
    """Cached features as tf.data pipelines: built once, reshuffled every epoch (seeded)."""
    features, labels = train
    train_data = tf.data.Dataset.from_tensor_slices((features, labels)).shuffle(
        len(labels), seed=train_cfg.seed, reshuffle_each_iteration=True
    )
    train_data = even_batches(train_data, len(labels), train_cfg.batch_size, replicas).prefetch(tf.data.AUTOTUNE)
    val_batch_size = FEATURE_BATCH_SIZE // replicas * replicas  # an equal share for every replica
    val_data = even_batches(tf.data.Dataset.from_tensor_slices(val), len(val[1]), val_batch_size, replicas)
    return train_data, val_data.cache()


def check_batch_size(batch_size: int, replicas: int) -> None:
    """Refuses a global batch that cannot be shared equally between the replicas.

    Keras builds a distributed model from the mean of the replicas' first batches, so
    their shares must have the same shape.

    Raises:
        ValueError: ``batch_size`` is not a multiple of ``replicas``.
    """
    if batch_size % replicas:
        raise ValueError(
            f"Expected a batch size that is a multiple of the number of devices ({replicas}), so that every "
            f"device gets an equal share. Received: batch_size={batch_size}."
        )


def even_batches(elements, count: int, batch_size: int, replicas: int):
    """Batches ``elements`` so that every replica gets a share of every batch.

    ``tf.distribute`` splits every global batch across the replicas. A last batch with
    fewer samples than replicas hands a replica a zero-size batch, and Keras layers
    fail on it (keras#19246; with oneDNN, TensorFlow's default on CPUs with
    AVX512-VNNI, a convolution returns its input unchanged for an empty batch and the
    next BatchNormalization sees the wrong shape). Dropping the short batch would lose
    images, and zero-weight padding would still count in Keras' loss average. So:

    - the short last batch joins the full batch before it;
    - a dataset where that would be the first batch becomes one batch, repeated
      whole until it splits equally (Keras builds the model from the mean of the
      replicas' first batches, so their shapes must match).
      Every sample appears equally often, so means and gradients are unchanged, and
      callers keep the first ``count`` predictions.

    Order is kept.

    Args:
        elements: an unbatched dataset, in the order batches should follow.
        count: how many elements it holds.
        batch_size: the global batch size, a multiple of ``replicas``.
        replicas: ``strategy.num_replicas_in_sync``.

    Returns:
        The batched dataset; a single-replica one is plain ``elements.batch(batch_size)``.
    """
    if replicas == 1:
        return elements.batch(batch_size)
    full, remainder = divmod(count, batch_size)
    short = 0 < remainder < replicas
    if full == 0 or (full == 1 and short):  # the first batch would be all there is
        repeats = replicas // math.gcd(count, replicas)
        batches, steps = elements.repeat(repeats).batch(count * repeats), 1
    elif not short:
        batches, steps = elements.batch(batch_size), full + (remainder > 0)
    else:
        last = full - 1  # the full batch that takes in the short remainder
        batches, steps = _merge_last_batch(elements, batch_size, remainder, last), full
    # Keras reads the step count from the cardinality (progress, ETA); unbatching loses it.
    return batches.apply(tf.data.experimental.assert_cardinality(steps))


def _merge_last_batch(elements, batch_size: int, remainder: int, last: int):
    """Batches of ``batch_size`` in order, batch ``last`` taking ``remainder`` more elements."""
    merged_size = tf.constant(batch_size + remainder, tf.int64)
    return elements.enumerate().group_by_window(
        key_func=lambda index, element: tf.minimum(index // batch_size, last),
        reduce_func=lambda key, window: window.batch(batch_size + remainder).map(lambda index, element: element),
        window_size_func=lambda key: tf.where(key == last, merged_size, batch_size),
    )


def _fit(model, train, val, phase, epochs, initial_epoch, train_cfg, log, stop, run_dir, best, classifier) -> int:
    """One phase of training; returns the epoch count reached.

    Keeps the best weights of the whole job (lowest ``val_loss``) in ``best``: if the
    fine-tune phase never beats the head phase, the job ends with the head's weights.
    """
    log.append("phase", phase=phase, epochs=epochs)
    patience = train_cfg.early_stopping_patience or epochs + 1
    early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
    callbacks = [ProgressCallback(log, phase, stop), early]
    if model.distribute_strategy.num_replicas_in_sync > 1:
        callbacks.insert(0, ReplicaStatisticsSync())
    if run_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(str(Path(run_dir) / "tensorboard" / phase), write_graph=False))
    fit_args = dict(epochs=initial_epoch + epochs, initial_epoch=initial_epoch, callbacks=callbacks, verbose=0)
    model.fit(train, validation_data=val, shuffle=False, **fit_args)  # tf.data reshuffles itself
    if early.best_weights is not None and early.best < best["val_loss"]:
        best["val_loss"] = float(early.best)
        best["weights"] = classifier.get_weights()
    last = log.last("epoch")
    return last["epoch"] if last else initial_epoch
