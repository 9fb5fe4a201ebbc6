"""tlcore's own saved layer: what a classifier saved by a run holds besides Keras built-ins.

A classifier saved by a run contains a :class:`Preprocess` layer; importing this
module registers it, so ``model.keras`` files load back with ``safe_mode=True``.
Model files (the studio's and a visitor's) are checked and loaded by
:mod:`tlcore.model.files`.
"""

from __future__ import annotations

import keras

from tlcore.model.preprocessing import preprocess_function


@keras.saving.register_keras_serializable(package="tlcore")
class Preprocess(keras.layers.Layer):
    """Applies a ``keras.applications`` ``preprocess_input`` by name, inside the model.

    Saving the name instead of a Lambda keeps ``model.keras`` loadable with
    ``safe_mode=True`` and guarantees prediction uses the training preprocessing.
    """

    def __init__(self, preprocess: str = "none", **kwargs):
        super().__init__(**kwargs)
        self.preprocess = preprocess
        self._function = preprocess_function(preprocess)

    def call(self, images):
        return self._function(keras.ops.cast(images, "float32"))

    def get_config(self):
        return {**super().get_config(), "preprocess": self.preprocess}


_SAVING_OBJECT_TYPES = ("Operation", "Layer", "Functional", "Sequential", "Metric", "Optimizer", "Loss")


def prime_keras_saving() -> None:
    """Works around a Keras 3.15 cache miss that makes every ``model.save`` slower.

    ``saving_lib.get_attr_skipset`` stores its per-type result under
    ``saving_attr_skipset_*`` but looks it up under ``saving_attr_skiplist_*``, so each
    save builds a throwaway ``Layer()`` for every layer of the model (~170 for
    MobileNetV2: 0.1 s of a 0.3 s save here). Filling the key it reads (per thread: Keras
    keeps this state thread-local) restores the cache; with a fixed Keras this is a no-op.
    """
    try:
        from keras.src.backend.common import global_state
        from keras.src.saving import saving_lib
    except ImportError:
        return
    for kind in _SAVING_OBJECT_TYPES:
        name = f"saving_attr_skiplist_{kind}"
        if global_state.get_global_attribute(name) is None:
            try:
                global_state.set_global_attribute(name, saving_lib.get_attr_skipset(kind))
            except (AttributeError, ValueError, TypeError):
                return
