"""The training job: head phase, optional fine-tune phase, one continuous history.

Fast path: when the whole backbone is frozen and augmentation is off, every epoch
would push the same images through the same frozen backbone. So the backbone runs
once over train and validation images (decoding overlapped with compute), the
features are kept on disk keyed by everything that determines them, and the head
trains on the features. A second run on the same data and backbone skips decoding
and the backbone entirely.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from tlcore.caches import BoundedCache, size_of
from tlcore.config import FreezePlan, RunConfig
from tlcore.data.pipeline import Dataset, activation_dataset, image_dataset, load_dataset
from tlcore.inference.input_check import write_reference
from tlcore.jobs import ProgressLog, history_frame
from tlcore.metrics import evaluate_probabilities
from tlcore.model import classifier as model_lib
from tlcore.model import cut as cut_lib
from tlcore.model.backbones import Backbone, load_backbone
from tlcore.training.callbacks import KeepBest, ProgressCallback
from tlcore.training.features import cached_features, cut_activations, mirrored_activations, pooled_features
from tlcore.training.head import HeadFit, acquire_engine, fit_head, head_settings, release_engine, write_tensorboard
from tlcore.training.kept import KeptWeights, PhaseOutcome, kept_reason
from tlcore.training.strategy import (
    ReplicaStatisticsSync,
    check_batch_size,
    choose_strategy,
    even_batches,
)

FEATURE_BATCH_SIZE = 1024  # batches of cached features: the head is tiny


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


# ----------------------------------------------------------------------------- the job


def run_training(
    config: RunConfig,
    *,
    run_dir: str | Path | None = None,
    log: ProgressLog | None = None,
    stop: threading.Event | None = None,
    strategy=None,
    backbone: Backbone | None = None,
    dataset: Dataset | None = None,
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
        self.head_probabilities = None  # validation probabilities of the engine's kept epoch
        self._pipelines = {}
        self.cut = cut_lib.ActivationCut(reason="not worked out yet")
        self.top = self.val_activations = None  # phase 2 on cached activations: its model and data

    def prepare(self, backbone: Backbone | None = None, dataset: Dataset | None = None) -> None:
        """Seeds everything, loads the data and builds the classifier in the strategy's scope."""
        if not self._head_engine_only():
            # The head engine seeds itself. Seeding TensorFlow's global generator also
            # clears its caches of instantiated functions: the next call of the (already
            # traced) engine would pay ~0.2 s to set its graph up again.
            keras.utils.set_random_seed(self.settings.seed)
        self.log.append("status", status="loading data")
        self.dataset = dataset or load_dataset(self.config.data, seed=self.settings.seed)
        self.labels = {split: self.dataset.label_ids(getattr(self.dataset, split)) for split in ("train", "val")}
        self.log.append("status", status="building model")
        with self.strategy.scope():
            self.backbone = backbone or self._backbone()
            self.classifier = model_lib.build_classifier(self.backbone, len(self.dataset.classes), self.config.model)
        self.cut = cut_lib.activation_cut(self.backbone, self.config.model, self.settings)
        if self.replicas > 1 and self.cut.cached:
            self.cut = cut_lib.ActivationCut(reason="several replicas train on images")

    def train_head(self) -> None:
        """Phase 1: the head (and whatever the freeze plan leaves trainable)."""
        frozen = model_lib.is_fully_frozen(self.classifier)
        if self.settings.feature_cache and not self.settings.augmented and frozen:
            self._train_head_on_features()
            return
        self._compile(self.classifier, self.settings.learning_rate)
        self._fit(self.classifier, self.image_data("train"), self.image_data("val"), "head", self.settings.epochs)

    def _head_engine_only(self) -> bool:
        """True when the whole run is the head engine on cached features (no Keras fit)."""
        settings, frozen = self.settings, self.config.model.freeze.mode == "all"
        cached = settings.feature_cache and not settings.augmented and frozen
        return cached and not settings.fine_tune_epochs and self.replicas == 1

    def _backbone(self) -> Backbone:
        # A run that never changes the backbone's weights can share one loaded backbone
        # with the runs before it: loading a model file costs seconds, the head milliseconds.
        frozen = self.config.model.freeze.mode == "all" and not self.settings.fine_tune_epochs
        if frozen:
            return shared_backbone(self.config.model, self.settings.seed)
        return load_backbone(self.config.model, seed=self.settings.seed)

    def _train_head_on_features(self) -> None:
        if self.replicas > 1:
            self._fit_head_with_keras()
            return
        self.log.append("phase", phase="extract")
        started = time.perf_counter()
        head = model_lib.head_part(self.classifier)
        width = int(np.prod(head.get_layer("pool").output.shape[1:]))
        settings = head_settings(self.config.model, self.settings)
        engine = acquire_engine(width, len(self.dataset.classes), settings.hidden_units, settings.optimizer)
        try:
            # The first run of a shape traces the engine while the backbone extracts.
            warming = _warm_up_in_background(engine, len(self.dataset.train), len(self.dataset.val))
            items = self.dataset.train + self.dataset.val
            cut = self.cut if self.cut.cached else None  # the same pass keeps phase 2's activations
            pooled, hit = pooled_features(self.classifier, self.backbone, items, self.log, cut=cut)
            self.timings = {"feature_extraction_seconds": time.perf_counter() - started, "features_from_cache": hit}
            warming.join()
            count = len(self.dataset.train)
            train, val = (pooled[:count], self.labels["train"]), (pooled[count:], self.labels["val"])
            self.log.append("phase", phase="head", epochs=settings.epochs)
            fit = fit_head(engine, train, val, settings, self._head_epoch_logger(count), self.stop)
        finally:
            release_engine(engine)
        self._keep_head(fit)

    def _head_epoch_logger(self, count: int):
        """Logs an engine epoch as the Keras callbacks log a fitted one (one batch record per epoch)."""
        steps, rate = -(-count // self.settings.batch_size), self.settings.learning_rate

        def on_epoch(epoch: int, record: dict, improved: bool) -> None:
            values = {name: record[name] for name in ("loss", "accuracy", "val_loss", "val_accuracy")}
            self.log.append("batch", phase="head", epoch=epoch, step=steps, steps=steps, loss=record["loss"])
            self.log.append("epoch", phase="head", epoch=epoch, **values, learning_rate=rate, seconds=record["seconds"])
            if improved and record["val_loss"] < self.kept.val_loss:
                self.kept.val_loss, self.kept.epoch, self.kept.phase = record["val_loss"], epoch, "head"
                self.log.append("best", epoch=epoch, phase="head", val_loss=record["val_loss"])

        return on_epoch

    def _keep_head(self, fit: HeadFit) -> None:
        """Puts the engine's kept weights into the classifier's head (by layer name) and records the phase."""
        head = model_lib.head_part(self.classifier)
        for name, weights in fit.weights.items():
            head.get_layer(name).set_weights(weights)
        if self.settings.fine_tune_epochs:  # a fine-tuning that does worse falls back to these
            self.kept.weights = self.classifier.get_weights()
        self.head_probabilities = fit.val_probabilities
        outcome = PhaseOutcome("head", len(fit.history), fit.best_val_loss, fit.best_epoch, fit.early_stopped)
        self.phases.append(outcome)
        if self.run_dir is not None:
            write_tensorboard(Path(self.run_dir) / "tensorboard" / "head", fit.history)

    def _fit_head_with_keras(self) -> None:
        """The cached-feature phase through ``model.fit`` (several replicas: even batches for each)."""
        self.log.append("phase", phase="extract")
        started = time.perf_counter()
        features, hit = cached_features(self.classifier, self.backbone, self.dataset.train + self.dataset.val, self.log)
        self.timings = {"feature_extraction_seconds": time.perf_counter() - started, "features_from_cache": hit}
        count = len(self.dataset.train)
        train_features, self.val_features = features[:count], features[count:]
        head = model_lib.head_part(self.classifier)
        # Keras' multi-step execution fails under MirroredStrategy: one step per call there.
        self._compile(head, self.settings.learning_rate)
        train, val = _feature_datasets(
            (train_features, self.labels["train"]),
            (self.val_features, self.labels["val"]),
            self.settings,
            self.replicas,
        )
        self._fit(head, train, val, "head", self.settings.epochs)

    def fine_tune(self) -> None:
        """Phase 2: unfreeze from a block on and train at the lower learning rate.

        When the layers below the unfreeze point stay frozen and the images do not change
        (see :func:`tlcore.model.cut.activation_cut`), their output is computed once per image
        and only the top part trains: the same result as pushing every image through the
        whole backbone every epoch, several times faster.
        """
        plan = model_lib.phase_freeze_plans(self.backbone, self.config.model, self.settings)[1]
        model_lib.apply_freeze_plan(
            model_lib.backbone_part(self.classifier), plan, self.backbone.block_pattern, self.backbone.pretrained
        )
        self.val_features = self.head_probabilities = None  # the backbone changes: features no longer describe it
        if self.cut.cached:
            model, train, val = self._activation_data()
        else:
            model, train, val = self.classifier, self.image_data("train"), self.image_data("val")
        steps = -(-len(self.dataset.train) // self.settings.batch_size)
        multipliers = self._rate_multipliers(plan)
        # Recompile: Keras fixes the set of trainable weights at compile time. The top part
        # on activations skips XLA: compiling it cost more than it saved (5 epochs from
        # block_15 on 244 images: 42 s with XLA, 31 s without, on this loaded machine).
        jit = "auto" if model is self.classifier else False
        rate = model_lib.fine_tune_schedule(self.settings, steps)
        self._compile(model, rate, rate_multipliers=multipliers, jit_compile=jit)
        self._fit(model, train, val, "fine-tune", self.settings.fine_tune_epochs)
        if multipliers:  # the saved model gets a standard optimizer: any Keras loads it
            self._compile(self.classifier, self.settings.effective_fine_tune_learning_rate)

    def _rate_multipliers(self, plan: FreezePlan) -> dict[int, float]:
        """Discriminative learning rates as ``{id(variable): multiplier}`` (empty: one rate)."""
        by_layer = cut_lib.block_rate_multipliers(self.backbone, plan, self.settings.fine_tune_rate_decay)
        backbone_model = model_lib.backbone_part(self.classifier)
        return {
            id(variable): by_layer[layer.name]
            for layer in backbone_model.layers
            if layer.name in by_layer
            for variable in layer.trainable_weights
        }

    def _activation_data(self) -> tuple:
        """The top part and its train/validation pipelines on the cut's cached activations.

        Built as :meth:`image_data` builds the image pipelines (same seeded reshuffle, same
        batches), so both paths see the same batches in the same order.
        """
        self.log.append("phase", phase="extract", cut=self.cut.name)
        started = time.perf_counter()
        items = self.dataset.train + self.dataset.val
        activations, hit = cut_activations(self.classifier, self.backbone, items, self.cut, self.log)
        self.timings["activation_extraction_seconds"] = time.perf_counter() - started
        self.timings["activations_from_cache"] = hit
        self.timings["activation_bytes_per_image"] = int(activations[0].nbytes) if len(activations) else 0
        count, batch_size = len(self.dataset.train), self.settings.batch_size
        self.val_activations = activations[count:]
        mirrored = None  # flip only: each training image's flipped entry, one of the two drawn per epoch
        if self.settings.augment == "flip":
            mirrored, _ = mirrored_activations(self.classifier, self.backbone, self.dataset.train, self.cut, self.log)
        seed = self.settings.seed
        train = activation_dataset(activations[:count], self.labels["train"], batch_size, seed, mirrored)
        val = tf.data.Dataset.from_tensor_slices((self.val_activations, np.asarray(self.labels["val"], np.int32)))
        self.top = cut_lib.top_part(self.classifier, self.cut)
        return self.top, train.prefetch(tf.data.AUTOTUNE), val.batch(batch_size).cache()

    def finish(self) -> TrainResult:
        """Evaluates the kept weights on the validation images and reports the job."""
        self.log.append("status", status="evaluating")
        probabilities = self.predict_validation()
        write_reference(self)  # what Predict's not-a-photo check compares new images with
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
        if self.head_probabilities is not None:  # computed by the head engine at the kept epoch
            return self.head_probabilities
        if self.top is not None:  # phase 2 ran on cached activations: the top part finishes them
            # Called directly, in chunks: predict() would trace the top part once more.
            chunks = range(0, len(self.val_activations), 256)
            probabilities = np.concatenate(
                [np.asarray(self.top(self.val_activations[i : i + 256], training=False)) for i in chunks]
            )
        elif self.val_features is not None:
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
            augment = self.settings.augment if training else "off"
            options = {"shuffle": training, "augment": augment, "seed": self.settings.seed}
            pipeline = image_dataset(items, self.labels[split], size, batch_size, **options)
            if self.replicas > 1:
                pipeline = even_batches(pipeline.unbatch(), len(items), batch_size, self.replicas)
                pipeline = pipeline.prefetch(tf.data.AUTOTUNE)
            self._pipelines[split] = pipeline
        return self._pipelines[split]

    def _compile(self, model, learning_rate, steps_per_execution=1, rate_multipliers=None, jit_compile="auto") -> None:
        with self.strategy.scope():
            optimizer = self.settings.optimizer
            model_lib.compile_classifier(
                model, optimizer, learning_rate, steps_per_execution, rate_multipliers, jit_compile
            )

    def _fit(self, model, train, val, phase: str, epochs: int) -> None:
        """One phase, epochs numbered on from the previous phase; leaves the job's best weights in place."""
        first = self.phases[-1].last_epoch if self.phases else 0
        self.log.append("phase", phase=phase, epochs=epochs)
        patience = self.settings.early_stopping_patience or epochs + 1
        early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience)
        progress = ProgressCallback(self.log, phase, self.stop)
        keeper = KeepBest(self.kept, self.classifier, self.log, phase, progress)
        callbacks = [progress, keeper, early]
        if self.replicas > 1:
            callbacks.insert(0, ReplicaStatisticsSync())  # before anything reads validation or weights
        if self.run_dir is not None:
            tensorboard_dir = str(Path(self.run_dir) / "tensorboard" / phase)
            callbacks.append(keras.callbacks.TensorBoard(tensorboard_dir, write_graph=False))
        # shuffle=False: the tf.data pipelines reshuffle every epoch themselves.
        fit_range = {"epochs": first + epochs, "initial_epoch": first}
        model.fit(train, validation_data=val, callbacks=callbacks, verbose=0, shuffle=False, **fit_range)
        last = self.log.last("epoch")  # a partial epoch too: "stopped in epoch N" names it
        outcome = PhaseOutcome(phase, last["epoch"] if last else first, keeper.best_val_loss, keeper.best_epoch)
        outcome.early_stopped = early.stopped_epoch > 0
        self.phases.append(outcome)


# ----------------------------------------------------------------------------- shared across runs

# Frozen backbones shared by runs: a retrain does not load its backbone again.
_BACKBONES = BoundedCache("frozen backbones", max_items=2, max_bytes=2 * 2**30, sizer=lambda b: size_of(b.model))
_BACKBONES_LOADING = threading.Lock()  # two jobs starting together load one backbone, not two


def shared_backbone(model_config, seed: int) -> Backbone:
    """A loaded backbone shared by the runs of this process that keep it frozen.

    Keyed by the settings that determine it, the model or weights file's modification
    time, and the seed when its weights are random. Runs that fine-tune load their own.
    """
    files = [Path(name) for name in (model_config.backbone, model_config.weights) if name and Path(name).is_file()]
    random_weights = model_config.weights == "none" and not model_config.is_model_file
    key = (model_config.backbone_key(), tuple(f.stat().st_mtime_ns for f in files), seed if random_weights else None)
    with _BACKBONES_LOADING:
        return _BACKBONES.get_or_create(key, lambda: load_backbone(model_config, seed=seed))


def _warm_up_in_background(engine, num_train: int, num_val: int) -> threading.Thread:
    """Starts tracing the engine for these sizes unless it already ran them; join before use."""
    cold = (num_train, num_val) not in engine.warmed_sizes
    thread = threading.Thread(target=engine.warm_up if cold else None, args=(num_train, num_val), daemon=True)
    thread.start()
    return thread


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
