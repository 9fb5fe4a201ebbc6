"""Keras callbacks shared by image training and GPT-2 fine-tuning: progress and stop requests."""

from __future__ import annotations

import threading
import time

import keras

from tlcore.jobs import ProgressLog


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
