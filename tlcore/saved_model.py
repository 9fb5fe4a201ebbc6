"""Keras model files: tlcore's own saved layer, and loading a file safely.

A classifier saved by a run contains a :class:`Preprocess` layer; importing this
module registers it, so ``model.keras`` files load back with ``safe_mode=True``.
"""

from __future__ import annotations

from pathlib import Path

import keras

from tlcore.config import MODEL_FILE_SUFFIXES
from tlcore.errors import UnsafeModelError
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


def load_model_file(path: str | Path):
    """Loads a Keras model file (.keras or legacy .h5) with ``safe_mode=True``.

    Raises:
        UnsafeModelError: the file is missing, corrupt, not a Keras model, or contains a
            Lambda layer (arbitrary Python code, refused under safe mode).
    """
    path = Path(path)
    if not path.is_file():
        raise UnsafeModelError(f"Model file not found: {path}. Expected a .keras or .h5 Keras model file.")
    if path.suffix.lower() not in MODEL_FILE_SUFFIXES:
        raise UnsafeModelError(
            f"Expected a Keras model file ending in {', '.join(MODEL_FILE_SUFFIXES)}. Received: {path.name}."
        )
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001  - any failure here means "unusable file"
        text = str(error)
        if "Lambda" in text or "safe_mode" in text:
            raise UnsafeModelError(
                f"{path.name} contains a Lambda layer, which would run arbitrary Python code when "
                "loaded, so it is refused (safe_mode). Re-save the model without Lambda layers "
                "(use built-in Keras layers), or use a registry backbone."
            ) from None
        first_line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
        raise UnsafeModelError(
            f"{path.name} could not be read as a Keras model ({first_line[:200]}). "
            "Is the file complete and saved with model.save()?"
        ) from None
