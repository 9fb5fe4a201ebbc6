"""The preprocessing table: how pixels are scaled before a backbone, by name.

Plain data, no TensorFlow at import: the dashboard lists the choices before
TensorFlow has loaded. Each name except ``"none"`` is a ``keras.applications``
submodule whose ``preprocess_input`` is looked up only when it is applied.
"""

from __future__ import annotations

from tlcore.errors import StudioError

# name → what ``keras.applications.<name>.preprocess_input`` does to 0..255 RGB pixels.
PREPROCESSING: dict[str, str] = {
    "mobilenet_v2": "scale to [-1, 1]",
    "mobilenet": "scale to [-1, 1]",
    "efficientnet": "none: the model rescales inside",
    "efficientnet_v2": "none: the model rescales inside",
    "resnet50": "BGR, ImageNet mean subtracted (caffe)",
    "resnet_v2": "scale to [-1, 1]",
    "vgg16": "BGR, ImageNet mean subtracted (caffe)",
    "densenet": "scale to [0, 1], ImageNet mean and std (torch)",
    "xception": "scale to [-1, 1]",
    "inception_v3": "scale to [-1, 1]",
    "convnext": "none: the model normalises inside",
    "none": "pixels passed through as 0..255",
}


def describe_preprocessing(name: str) -> str:
    """``"mobilenet_v2 (scale to [-1, 1])"``: the name and what it does."""
    check_preprocessing(name)
    return f"{name} ({PREPROCESSING[name]})"


def check_preprocessing(name: str) -> None:
    """Raises a ``StudioError`` naming the choices when ``name`` is not in the table."""
    if name not in PREPROCESSING:
        raise StudioError(f"Unknown preprocessing. Expected one of {list(PREPROCESSING)}. Received: {name!r}.")


def preprocess_function(name: str):
    """Returns the ``preprocess_input`` function for a preprocessing name (imports Keras)."""
    check_preprocessing(name)
    if name == "none":
        return _identity
    import keras

    return getattr(keras.applications, name).preprocess_input


def _identity(images):
    return images
