"""Training on several devices: the strategy, batches every replica can share, BatchNorm copies.

``MultiWorkerMirroredStrategy`` (several machines) is not offered: it is broken with
Keras 3 (keras#20585). One machine's GPUs go through ``MirroredStrategy``.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf


def choose_strategy():
    """``MirroredStrategy`` when several GPUs are visible, the default strategy otherwise.

    ``MultiWorkerMirroredStrategy`` is not offered: it is broken with Keras 3 (keras#20585).
    """
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


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
