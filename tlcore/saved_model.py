"""tlcore's own saved layer: what a classifier saved by a run holds besides Keras built-ins.

A classifier saved by a run contains a :class:`Preprocess` layer; importing this
module registers it, so ``model.keras`` files load back with ``safe_mode=True``.
Model files (the studio's and a visitor's) are checked and loaded by
:mod:`tlcore.model_files`.
"""

from __future__ import annotations

import keras

from tlcore.preprocessing import preprocess_function


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
