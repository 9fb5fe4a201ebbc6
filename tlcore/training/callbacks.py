"""Keras callbacks: progress and stop requests (image training and GPT-2 fine-tuning), kept weights."""

from __future__ import annotations

import math
import threading
import time

import keras

from tlcore.jobs import ProgressLog
from tlcore.training.kept import KeptWeights


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
        self._step = 0
        self.partial = False  # the last epoch was cut short by a stop request

    def on_epoch_begin(self, epoch, logs=None):
        # Keras counts on from initial_epoch, so the number runs on across both phases.
        self._epoch = epoch + 1
        self._epoch_start = time.perf_counter()
        self._step = 0

    def on_train_batch_end(self, batch, logs=None):
        self._step = batch + 1
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
        # Keras ends a stopped epoch with on_epoch_end too, its training metrics covering only
        # the batches before the stop: logged as partial, so no chart plots it as a full epoch.
        steps = self.params.get("steps")
        self.partial = bool(self.stop.is_set() and steps and self._step < steps)
        self.log.append(
            "epoch",
            partial=self.partial,
            phase=self.phase,
            epoch=epoch + 1,
            loss=logs.get("loss"),
            accuracy=logs.get("accuracy"),
            val_loss=logs.get("val_loss"),
            val_accuracy=logs.get("val_accuracy"),
            learning_rate=float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            seconds=time.perf_counter() - self._epoch_start,
        )


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
        progress: the run's :class:`ProgressCallback` (placed before this one); an epoch it
            marks partial (cut short by Stop) is not a candidate: it is not in the history.
    """

    def __init__(self, kept: KeptWeights, classifier, log: ProgressLog, phase: str, progress=None):
        super().__init__()
        self.kept, self.classifier, self.log, self.phase = kept, classifier, log, phase
        self.progress = progress
        self.best_val_loss, self.best_epoch, self._weights = math.inf, None, None

    def on_epoch_end(self, epoch, logs=None):
        if self.progress is not None and self.progress.partial:
            return
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
