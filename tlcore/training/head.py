"""The head-training engine: a classification head trained on cached, pooled features.

On cached features an epoch is milliseconds of arithmetic, so what a run costs is
Keras' fixed work around it: building a model, compiling, tracing a train function,
callbacks, a ``predict`` for the final evaluation. Here the head's layers and optimizer
live in a :class:`HeadEngine` whose epoch (every batch, then the validation pass) is
one ``tf.function`` traced once per shape and reused by every later run in the process:
a retrain resets the weights, optimizer state and random seed and calls it again.

What depends only on the settings that change between runs is a variable, not part of
the graph: the learning rate, the dropout rate, the batch size. The graph is keyed by
what changes shapes or code: feature size, classes, hidden units, optimizer.

Semantics are those of ``model.fit`` with the tlcore callbacks: seeded reshuffling
every epoch, dropout while training, loss/accuracy as the sample-weighted mean over the
epoch's batches, validation loss with Keras' clipping, early stopping on ``val_loss``
(patience 0 = off) and the weights of the lowest validation loss kept.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from tlcore.caches import BoundedCache
from tlcore.model import classifier as model_lib


@dataclass(frozen=True)
class HeadSettings:
    """What one head training run uses (the graph is shared across all but the first four).

    Attributes:
        hidden_units: size of the optional hidden ReLU layer (0 = none).
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` or ``"rmsprop"``.
        learning_rate: the optimizer's learning rate.
        dropout_rate: dropout before the classification layer while training.
        batch_size: features per step.
        epochs: epochs at most.
        patience: epochs without a lower ``val_loss`` before stopping; 0 = off.
        seed: seeds the initial weights, the shuffling and the dropout masks.
        label_smoothing: Keras' label smoothing of the training loss (0 = none).
    """

    hidden_units: int = 0
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    dropout_rate: float = 0.2
    batch_size: int = 32
    epochs: int = 40
    patience: int = 10
    seed: int = 42
    label_smoothing: float = 0.0


@dataclass
class HeadFit:
    """What a head training run produced.

    Attributes:
        history: one dict per epoch: loss, accuracy, val_loss, val_accuracy, seconds.
        best_epoch: 1-based epoch of the lowest validation loss (``None`` if none was finite).
        best_val_loss: that loss.
        weights: the head's weights at that epoch by layer name (``{"predictions": [kernel, bias]}``).
        val_probabilities: class probabilities of the validation features at that epoch.
        early_stopped: early stopping ended the run.
        stopped: a stop request ended the run.
    """

    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_val_loss: float = math.inf
    weights: dict | None = None
    val_probabilities: np.ndarray | None = None
    early_stopped: bool = False
    stopped: bool = False


class HeadEngine:
    """The head's layers, optimizer and compiled epoch for one shape; reusable, not thread-safe.

    The layers are the classifier's own definition (:func:`tlcore.model.classifier.head_layers`),
    so what the engine trains is what the classifier predicts with: :meth:`weights` are
    keyed by layer name and go into the classifier's head by name.

    Args:
        feature_size: length of a pooled feature vector.
        num_classes: classes of the classifier.
        hidden_units: units of the hidden layer (0 = none).
        optimizer: optimizer name (see :func:`tlcore.model.classifier.make_optimizer`).
    """

    def __init__(self, feature_size: int, num_classes: int, hidden_units: int, optimizer: str):
        self.key = (feature_size, num_classes, hidden_units, optimizer)
        # dropout_rate=None keeps the dropout layer's place: _forward applies dropout there
        # with the rate as a variable, one graph for every rate (0 included).
        self.layers = model_lib.head_layers(num_classes, hidden_units, dropout_rate=None)
        shape = (None, feature_size)
        for layer in self.layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.weighted = [layer for layer in self.layers if layer.weights]
        self.variables = [weight for layer in self.weighted for weight in layer.trainable_weights]
        self.optimizer = model_lib.make_optimizer(optimizer, 1e-3)
        self.optimizer.build(self.variables)
        self.dropout_rate = tf.Variable(0.0, trainable=False, dtype=tf.float32)
        self.label_smoothing = tf.Variable(0.0, trainable=False, dtype=tf.float32)
        self.num_classes = num_classes
        self.seeds = keras.random.SeedGenerator(0)
        self.epoch = tf.function(self._epoch, reduce_retracing=True)
        self.warmed_sizes: set[tuple[int, int]] = set()

    def _forward(self, features, training: bool):
        hidden = features
        for layer in self.layers:
            if not isinstance(layer, keras.layers.Dropout):
                hidden = layer(hidden)
            elif training:
                # tf.nn's dropout, as Keras' own uses, but with the rate as a variable: one graph for all rates.
                seed = tf.cast(self.seeds.next(), tf.int32)
                hidden = tf.nn.experimental.stateless_dropout(hidden, rate=self.dropout_rate, seed=seed)
        return hidden

    def _epoch(self, features, labels, val_features, val_labels, batch_size):
        """Every batch of one epoch in a seeded new order, then the validation pass."""
        count = tf.shape(features)[0]
        order = keras.random.shuffle(tf.range(count), seed=self.seeds)
        loss_sum, correct = tf.constant(0.0), tf.constant(0.0)
        for step in tf.range((count + batch_size - 1) // batch_size):
            index = order[step * batch_size : tf.minimum((step + 1) * batch_size, count)]
            batch_labels = tf.gather(labels, index)
            with tf.GradientTape() as tape:
                probabilities = self._forward(tf.gather(features, index), training=True)
                loss = self._loss(batch_labels, probabilities)
            gradients = tape.gradient(loss, self.variables)
            self.optimizer.apply_gradients(zip(gradients, self.variables))
            loss_sum += loss * tf.cast(tf.shape(index)[0], tf.float32)
            correct += _correct(batch_labels, probabilities)
        val_probabilities = self._forward(val_features, training=False)
        val_loss = self._loss(val_labels, val_probabilities)
        total, val_total = tf.cast(count, tf.float32), tf.cast(tf.shape(val_labels)[0], tf.float32)
        val_accuracy = _correct(val_labels, val_probabilities) / val_total
        return loss_sum / total, correct / total, val_loss, val_accuracy, val_probabilities

    def _loss(self, labels, probabilities):
        """Keras' categorical cross-entropy (sparse labels), smoothed as ``label_smoothing`` says."""
        # Keras' own smoothing formula, written out: its ``if label_smoothing:`` needs a Python number
        targets = tf.one_hot(labels, self.num_classes) * (1.0 - self.label_smoothing)
        targets += self.label_smoothing / self.num_classes
        return tf.reduce_mean(keras.losses.categorical_crossentropy(targets, probabilities))

    def warm_up(self, num_train: int, num_val: int) -> None:
        """Traces and runs the epoch once for these sizes (e.g. while the backbone extracts features).

        The first call of a traced function also pays for graph optimisation, so it is
        run on zeros here; the next :func:`fit_head` resets every state it touched.
        """
        width = self.key[0]
        zeros = [tf.zeros((count, width)) for count in (num_train, num_val)]
        labels = [tf.zeros((count,), tf.int32) for count in (num_train, num_val)]
        self.epoch(zeros[0], labels[0], zeros[1], labels[1], tf.constant(max(1, num_train), tf.int32))
        self.warmed_sizes.add((num_train, num_val))

    def reset(self, settings: HeadSettings) -> None:
        """Fresh seeded weights, an empty optimizer state and the run's rates."""
        initializer_seed = settings.seed
        for layer in self.weighted:
            initializer = keras.initializers.GlorotUniform(seed=initializer_seed)
            layer.kernel.assign(initializer(layer.kernel.shape))
            layer.bias.assign(np.zeros(layer.bias.shape, np.float32))
            initializer_seed += 1
        for variable in self.optimizer.variables:
            variable.assign(np.zeros(variable.shape, variable.dtype))
        self.optimizer.learning_rate = settings.learning_rate
        self.dropout_rate.assign(settings.dropout_rate)
        self.label_smoothing.assign(settings.label_smoothing)
        self.seeds.state.assign(np.array([settings.seed, 0], dtype=self.seeds.state.dtype))

    def weights(self) -> dict[str, list[np.ndarray]]:
        """The head's weights by layer name (``hidden``, ``predictions``), each as ``get_weights`` gives them."""
        return {layer.name: [np.array(weight) for weight in layer.weights] for layer in self.weighted}


def _correct(labels, probabilities):
    predicted = tf.argmax(probabilities, axis=-1, output_type=labels.dtype)
    return tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))


# ----------------------------------------------------------------------------- engines shared by the process


# Free engines by (shape, engine id): a finished run gives its engine back, the next run of
# that shape takes it instead of tracing a new one. Bounded: engines beyond it (kept only for
# concurrent jobs that have ended) are dropped.
def _engine_bytes(engine: HeadEngine) -> int:
    # weights and the optimizer's slots for them (Adam keeps two): about three copies
    return 3 * sum(int(np.prod(variable.shape)) * 4 for variable in engine.variables)


_FREE = BoundedCache("head engines", max_items=8, max_bytes=256 * 2**20, sizer=_engine_bytes)


def acquire_engine(feature_size: int, num_classes: int, hidden_units: int, optimizer: str) -> HeadEngine:
    """A free engine of this shape, compiled by an earlier run if there was one.

    Two concurrent jobs get two engines; give it back with :func:`release_engine`.
    """
    key = (feature_size, num_classes, hidden_units, optimizer)
    free = _FREE.take(lambda cached: cached[0] == key)
    return free if free is not None else HeadEngine(*key)


def release_engine(engine: HeadEngine) -> None:
    _FREE.put((engine.key, id(engine)), engine)


# ----------------------------------------------------------------------------- one training run


def fit_head(
    engine: HeadEngine,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    settings: HeadSettings,
    on_epoch: Callable[[int, dict, bool], None] | None = None,
    stop: threading.Event | None = None,
) -> HeadFit:
    """Trains the engine's head on pooled features as ``model.fit`` with early stopping would.

    Args:
        engine: from :func:`acquire_engine`; its state is reset first.
        train: ``(features (n, d) float32, labels (n,) int)``.
        val: the validation pair.
        settings: the run's settings.
        on_epoch: called after every epoch with ``(epoch, record, is_new_best)``.
        stop: when set, the run ends after the current epoch (best weights kept).

    Returns:
        A :class:`HeadFit`; the engine is left holding the last epoch's weights.
    """
    engine.reset(settings)
    tensors = [tf.constant(part, dtype) for part, dtype in zip((*train, *val), (tf.float32, tf.int32) * 2)]
    batch_size = tf.constant(settings.batch_size, tf.int32)
    patience = settings.patience or settings.epochs + 1
    fit, since_best = HeadFit(), 0
    for epoch in range(1, settings.epochs + 1):
        started = time.perf_counter()
        loss, accuracy, val_loss, val_accuracy, val_probabilities = engine.epoch(*tensors, batch_size)
        record = {"loss": float(loss), "accuracy": float(accuracy), "val_loss": float(val_loss)}
        record.update(val_accuracy=float(val_accuracy), seconds=time.perf_counter() - started)
        fit.history.append(record)
        improved = record["val_loss"] < fit.best_val_loss  # False for NaN
        if improved:
            fit.best_epoch, fit.best_val_loss, since_best = epoch, record["val_loss"], 0
            fit.weights, fit.val_probabilities = engine.weights(), val_probabilities.numpy()
        else:
            since_best += 1
        if on_epoch is not None:
            on_epoch(epoch, record, improved)
        if stop is not None and stop.is_set():
            fit.stopped = True
            break
        if since_best >= patience and epoch > 1:
            fit.early_stopped = True
            break
    if fit.val_probabilities is None:  # no finite validation loss: keep what it ended with
        fit.weights, fit.val_probabilities = engine.weights(), val_probabilities.numpy()
    return fit


def head_settings(model_config, train_config) -> HeadSettings:
    """The :class:`HeadSettings` of a run's config."""
    return HeadSettings(
        hidden_units=model_config.hidden_units,
        optimizer=train_config.optimizer,
        learning_rate=train_config.learning_rate,
        dropout_rate=model_config.dropout_rate,
        batch_size=train_config.batch_size,
        epochs=train_config.epochs,
        patience=train_config.early_stopping_patience,
        seed=train_config.seed,
    )


def train_head(train, val, num_classes: int, settings: HeadSettings, on_epoch=None, stop=None) -> HeadFit:
    """:func:`fit_head` on an engine borrowed from the process-wide pool (and given back)."""
    engine = acquire_engine(train[0].shape[1], num_classes, settings.hidden_units, settings.optimizer)
    try:
        return fit_head(engine, train, val, settings, on_epoch, stop)
    finally:
        release_engine(engine)


def write_tensorboard(log_dir, history: list[dict], first_epoch: int = 0) -> None:
    """The epochs' scalars as Keras' TensorBoard callback writes them (``train/`` and ``validation/``)."""
    writers = {name: tf.summary.create_file_writer(str(log_dir / name)) for name in ("train", "validation")}
    for number, record in enumerate(history, start=first_epoch):
        for name, prefix in (("train", ""), ("validation", "val_")):
            with writers[name].as_default(step=number):
                tf.summary.scalar("epoch_loss", record[prefix + "loss"])
                tf.summary.scalar("epoch_accuracy", record[prefix + "accuracy"])
    for writer in writers.values():
        writer.close()
