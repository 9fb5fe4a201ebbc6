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
from tlcore.evaluation import KeptWeights, PhaseOutcome, evaluate_probabilities, kept_reason
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
    """Trains a classifier as ``config`` describes: the head, then optionally fine-tuning.

    Args:
        config: the run settings (validated here).
        run_dir: where TensorBoard logs go; ``None`` writes none.
        log: receives progress records; a new one when omitted.
        stop: set it to stop after the current batch; best weights are kept.
        strategy: a ``tf.distribute`` strategy; default :func:`choose_strategy`.
        backbone: a prebuilt backbone (benchmarks reuse one); built from config otherwise.
        dataset: a prepared dataset; scanned from config otherwise.

    Returns:
        A :class:`TrainResult` with the weights of the epoch that had the lowest
        validation loss over both phases.

    Raises:
        ValueError: invalid settings, or a batch size the devices cannot share.
    """
    trainer = Trainer(config, run_dir=run_dir, log=log, stop=stop, strategy=strategy)
    trainer.prepare(backbone, dataset)
    if config.train.epochs:
        trainer.train_head()
    if config.train.fine_tune_epochs and not trainer.stop.is_set():
        trainer.fine_tune()
    return trainer.finish()


class Trainer:
    """One training job, step by step: prepare, train the head, fine-tune, finish.

    The arguments are :func:`run_training`'s; the steps share the model, data and log.
    """

    def __init__(self, config: RunConfig, *, run_dir=None, log=None, stop=None, strategy=None):
        config.validate()
        self.started = time.perf_counter()
        self.config, self.settings, self.run_dir = config, config.train, run_dir
        self.log = log if log is not None else ProgressLog()
        self.stop = stop or threading.Event()
        self.strategy = strategy or choose_strategy()
        self.replicas = self.strategy.num_replicas_in_sync
        check_batch_size(self.settings.batch_size, self.replicas)
        self.kept = KeptWeights()
        self.phases: list[PhaseOutcome] = []
        self.timings = {"feature_extraction_seconds": 0.0, "features_from_cache": False}
        self.val_features = None  # set while cached features describe the backbone
        self._pipelines = {}

    def prepare(self, backbone: Backbone | None = None, dataset: data_lib.Dataset | None = None) -> None:
        """Seeds everything, loads the data and builds the classifier in the strategy's scope."""
        keras.utils.set_random_seed(self.settings.seed)
        self.log.append("status", status="loading data")
        self.dataset = dataset or data_lib.load_dataset(self.config.data, seed=self.settings.seed)
        self.labels = {split: self.dataset.label_ids(getattr(self.dataset, split)) for split in ("train", "val")}
        self.log.append("status", status="building model")
        with self.strategy.scope():
            self.backbone = backbone or load_backbone(self.config.model, seed=self.settings.seed)
            self.classifier = model_lib.build_classifier(self.backbone, len(self.dataset.classes), self.config.model)

    def train_head(self) -> None:
        """Phase 1: the head (and whatever the freeze plan leaves trainable)."""
        frozen = model_lib.is_fully_frozen(self.classifier)
        if self.settings.feature_cache and not self.settings.augment and frozen:
            self._train_head_on_features()
            return
        self._compile(self.classifier, self.settings.learning_rate)
        self._fit(self.classifier, self.image_data("train"), self.image_data("val"), "head", self.settings.epochs)

    def _train_head_on_features(self) -> None:
        self.log.append("phase", phase="extract")
        started = time.perf_counter()
        features, hit = cached_features(self.classifier, self.backbone, self.dataset.train + self.dataset.val, self.log)
        self.timings = {"feature_extraction_seconds": time.perf_counter() - started, "features_from_cache": hit}
        count = len(self.dataset.train)
        train_features, self.val_features = features[:count], features[count:]
        head = model_lib.head_part(self.classifier)
        # An epoch on cached features takes milliseconds: run it as one call (the stop
        # request is then checked once per epoch) instead of a call per batch. Keras'
        # multi-step execution fails under MirroredStrategy: one step per call there.
        steps = -(-count // self.settings.batch_size) if self.replicas == 1 else 1
        self._compile(head, self.settings.learning_rate, steps_per_execution=steps)
        train, val = _feature_datasets(
            (train_features, self.labels["train"]),
            (self.val_features, self.labels["val"]),
            self.settings,
            self.replicas,
        )
        self._fit(head, train, val, "head", self.settings.epochs)

    def fine_tune(self) -> None:
        """Phase 2: unfreeze from a block on and train on images at the lower learning rate."""
        backbone_model = model_lib.backbone_part(self.classifier)
        pattern = self.backbone.block_pattern
        start = self.settings.unfreeze_from or model_lib.last_block(backbone_model, pattern)
        model_lib.apply_freeze_plan(backbone_model, FreezePlan("from", start), pattern, self.backbone.pretrained)
        # Recompile: Keras fixes the set of trainable weights at compile time.
        self._compile(self.classifier, self.settings.effective_fine_tune_learning_rate)
        self.val_features = None  # the backbone changes: cached features no longer describe it
        train, val = self.image_data("train"), self.image_data("val")
        self._fit(self.classifier, train, val, "fine-tune", self.settings.fine_tune_epochs)

    def finish(self) -> TrainResult:
        """Evaluates the kept weights on the validation images and reports the job."""
        self.log.append("status", status="evaluating")
        probabilities = self.predict_validation()
        history = history_frame(self.log)
        stopped = self.stop.is_set()
        metrics = {
            **evaluate_probabilities(probabilities, self.labels["val"]),
            "train_seconds": time.perf_counter() - self.started,
            **self.timings,
            "epochs_run": len(history),
            "num_train": len(self.dataset.train),
            "num_val": len(self.dataset.val),
            "num_classes": len(self.dataset.classes),
            "skipped_files": len(self.dataset.skipped),
            "stopped_early_by_user": stopped,
            "backbone": self.backbone.name,
            "image_size": self.backbone.image_size,
            "parameters": model_lib.parameter_totals(self.classifier),
            "best_epoch": self.kept.epoch,
            "best_phase": self.kept.phase,
            "kept_reason": kept_reason(self.kept, self.phases, stopped),
        }
        self.log.append("status", status="stopped" if stopped else "done")
        val = self.dataset.val
        return TrainResult(self.classifier, self.dataset.classes, history, metrics, val, probabilities, stopped)

    def predict_validation(self) -> np.ndarray:
        """Class probabilities of the validation images, one row per image, in order."""
        if self.val_features is not None:
            features = tf.data.Dataset.from_tensor_slices(self.val_features)
            batch_size = FEATURE_BATCH_SIZE // self.replicas * self.replicas
            features = even_batches(features, len(self.val_features), batch_size, self.replicas)
            probabilities = model_lib.head_part(self.classifier).predict(features, verbose=0)
        else:
            probabilities = self.classifier.predict(self.image_data("val"), verbose=0)
        # On several replicas a one-batch set is predicted repeated whole: keep one copy.
        return probabilities[: len(self.dataset.val)]

    def image_data(self, split: str):
        """The ``"train"`` or ``"val"`` image pipeline, built once: building decodes every image."""
        if split not in self._pipelines:
            items, size, batch_size = getattr(self.dataset, split), self.backbone.image_size, self.settings.batch_size
            training = split == "train"
            options = {"shuffle": training, "augment": training and self.settings.augment, "seed": self.settings.seed}
            pipeline = data_lib.image_dataset(items, self.labels[split], size, batch_size, **options)
            if self.replicas > 1:
                pipeline = even_batches(pipeline.unbatch(), len(items), batch_size, self.replicas)
                pipeline = pipeline.prefetch(tf.data.AUTOTUNE)
            self._pipelines[split] = pipeline
        return self._pipelines[split]

    def _compile(self, model, learning_rate: float, steps_per_execution: int = 1) -> None:
        with self.strategy.scope():
            model_lib.compile_classifier(model, self.settings.optimizer, learning_rate, steps_per_execution)

    def _fit(self, model, train, val, phase: str, epochs: int) -> None:
        """One phase, epochs numbered on from the previous phase; leaves the job's best weights in place."""
        first = self.phases[-1].last_epoch if self.phases else 0
        self.log.append("phase", phase=phase, epochs=epochs)
        patience = self.settings.early_stopping_patience or epochs + 1
        early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience)
        keeper = KeepBest(self.kept, self.classifier, self.log, phase)
        callbacks = [ProgressCallback(self.log, phase, self.stop), keeper, early]
        if self.replicas > 1:
            callbacks.insert(0, ReplicaStatisticsSync())  # before anything reads validation or weights
        if self.run_dir is not None:
            tensorboard_dir = str(Path(self.run_dir) / "tensorboard" / phase)
            callbacks.append(keras.callbacks.TensorBoard(tensorboard_dir, write_graph=False))
        # shuffle=False: the tf.data pipelines reshuffle every epoch themselves.
        fit_range = {"epochs": first + epochs, "initial_epoch": first}
        model.fit(train, validation_data=val, callbacks=callbacks, verbose=0, shuffle=False, **fit_range)
        last = self.log.last("epoch")
        outcome = PhaseOutcome(phase, last["epoch"] if last else first, keeper.best_val_loss, keeper.best_epoch)
        outcome.early_stopped = early.stopped_epoch > 0
        self.phases.append(outcome)


# ----------------------------------------------------------------------------- which weights are kept


class KeepBest(keras.callbacks.Callback):
    """Keeps the weights of the job's lowest validation loss across both phases.

    A new best snapshots the fitted model (just the head on the cached-feature path) and
    logs a ``"best"`` record for live charts. At the end of a phase the classifier holds
    the job's best so far: a fine-tuning that only made validation worse is dropped.

    Args:
        kept: the job's record, shared by both phases.
        classifier: the whole model (the fitted one may be its head alone).
        log: receives the ``"best"`` records.
        phase: ``"head"`` or ``"fine-tune"``.
    """

    def __init__(self, kept: KeptWeights, classifier, log: ProgressLog, phase: str):
        super().__init__()
        self.kept, self.classifier, self.log, self.phase = kept, classifier, log, phase
        self.best_val_loss, self.best_epoch, self._weights = math.inf, None, None

    def on_epoch_end(self, epoch, logs=None):
        val_loss = (logs or {}).get("val_loss")
        if val_loss is None or not val_loss < self.best_val_loss:  # also skips NaN
            return
        self.best_val_loss, self.best_epoch = float(val_loss), epoch + 1
        if val_loss < self.kept.val_loss:
            self._weights = self.model.get_weights()
            self.kept.val_loss, self.kept.epoch, self.kept.phase = float(val_loss), epoch + 1, self.phase
            self.log.append("best", epoch=epoch + 1, phase=self.phase, val_loss=float(val_loss))

    def on_train_end(self, logs=None):
        if self._weights is not None:
            self.model.set_weights(self._weights)
            self.kept.weights = self.classifier.get_weights()
        elif self.kept.weights is not None:
            self.classifier.set_weights(self.kept.weights)


# ----------------------------------------------------------------------------- several devices


class ReplicaStatisticsSync(keras.callbacks.Callback):
    """Averages the replicas' copies of BatchNorm statistics before validation and at the end.

    Keras 3 under ``MirroredStrategy`` updates each replica's moving mean/variance from
    its own share of the batch only, so the copies drift apart: validation would depend
    on the device an image lands on, and ``get_weights`` would keep device 0's copy.
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
    """Refuses a batch the replicas cannot share equally (Keras builds from their mean first batch).

    Raises:
        ValueError: ``batch_size`` is not a multiple of ``replicas``.
    """
    if batch_size % replicas:
        raise ValueError(
            f"Expected a batch size that is a multiple of the number of devices ({replicas}), so that every "
            f"device gets an equal share. Received: batch_size={batch_size}."
        )


def even_batches(elements, count: int, batch_size: int, replicas: int):
    """Batches ``elements``, in order, so that every replica gets a share of every batch.

    ``tf.distribute`` splits each global batch across replicas; a last batch smaller than
    the replica count hands one an empty batch, which Keras layers fail on (keras#19246;
    with oneDNN, the default on AVX512-VNNI CPUs, a convolution returns an empty input
    unchanged). Dropping it would lose images and zero-weight padding still counts in
    Keras' loss average, so the short batch joins the one before it. When that would be
    the first batch (which must split equally: Keras builds the model from the replicas'
    mean first batch), the set is one batch, repeated whole until it splits equally;
    every sample then appears equally often, so means and gradients are unchanged, and
    callers keep the first ``count`` predictions.

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
