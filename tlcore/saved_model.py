"""The studio's own saved classifiers: the layer they hold, and loading them back.

A classifier saved by a run contains a :class:`Preprocess` layer; importing this
module registers it, so ``model.keras`` files load back with ``safe_mode=True``.
A visitor's model file is checked and loaded by :mod:`tlcore.model_files` instead.
"""

from __future__ import annotations

from pathlib import Path

import keras

from tlcore.errors import UnsafeModelError, first_line
from tlcore.model_files import inspect_model_file, keras_settings_guard
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


def load_saved_model(path: str | Path):
    """Loads a classifier the studio saved (a run's ``model.keras``) with ``safe_mode=True``.

    Runs are written by this server or put in the runs folder by whoever runs it, so
    the file is inspected (:func:`tlcore.model_files.inspect_model_file`: allow-listed
    layers, no functions or paths, bounded sizes) but not trial-run in a child process;
    a visitor's own file goes through :func:`tlcore.model_files.load_model_file`.

    Raises:
        UnsafeModelError: the file is missing, corrupt or refused; the reason in words.
    """
    path = Path(path)
    inspect_model_file(path)
    with keras_settings_guard(path.name):
        try:
            return keras.models.load_model(path, compile=False, safe_mode=True)
        except Exception as error:  # noqa: BLE001  - any failure here means "unusable file"
            raise UnsafeModelError(
                f"{path.name} could not be read as a Keras model ({first_line(error, 200)}). "
                "Is the file complete and saved with model.save()?"
            ) from None
