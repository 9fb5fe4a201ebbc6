"""Inference snippets a user downloads with a run: plain Python that needs no tlcore.

Each snippet decodes an image the way the studio does (upright by EXIF, any mode to
RGB with alpha on white, 16-bit scaled, JPEG draft decoding, bilinear sampling without
antialiasing), so it agrees with the dashboard's prediction. tests/test_snippets.py runs every snippet in
a fresh folder outside the repository and compares its top-1 with the studio's.
"""

from __future__ import annotations

import textwrap

SNIPPET_FORMATS = ("keras", "saved_model", "tflite")

_LOAD_IMAGE = '''
import numpy as np
from PIL import Image, ImageOps


def load_image(path, size):
    """Decodes like the studio: upright, RGB (alpha on white), resized to size x size."""
    image = Image.open(path)
    if image.format == "JPEG":
        image.draft("RGB", (2 * size, 2 * size))  # big JPEGs at a reduced scale >= 2x, as the studio does
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        high = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values / high * 255.0, 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    image = image.convert("RGB")
    # bilinear sampling without antialiasing, as tf.image.resize does (Image.resize would antialias)
    scale = (image.width / size, 0, 0, 0, image.height / size, 0)
    image = image.transform((size, size), Image.AFFINE, scale, resample=Image.BILINEAR)
    return np.asarray(image, dtype=np.float32)[None]  # a batch of one, pixels 0..255
'''

_KERAS = """
import sys

import keras

# The model scales pixels itself with this layer (saved by name, so it loads in safe mode).
@keras.saving.register_keras_serializable(package="tlcore")
class Preprocess(keras.layers.Layer):
    def __init__(self, preprocess="none", **kwargs):
        super().__init__(**kwargs)
        self.preprocess = preprocess

    def call(self, images):
        images = keras.ops.cast(images, "float32")
        if self.preprocess == "none":
            return images
        return getattr(keras.applications, self.preprocess).preprocess_input(images)

    def get_config(self):
        return {{**super().get_config(), "preprocess": self.preprocess}}


model = keras.models.load_model("{model_file}", compile=False, safe_mode=True)
labels = open("labels.txt").read().splitlines()
probabilities = model.predict(load_image(sys.argv[1], {size}), verbose=0)[0]
print(labels[probabilities.argmax()], float(probabilities.max()))
"""

_SAVED_MODEL = """
import sys

import tensorflow as tf

model = tf.saved_model.load("saved_model")  # the folder the SavedModel .zip unzips to
labels = open("labels.txt").read().splitlines()
probabilities = model.serve(tf.constant(load_image(sys.argv[1], {size}))).numpy()[0]
print(labels[probabilities.argmax()], float(probabilities.max()))
"""

_TFLITE = """
import sys

import tensorflow as tf  # or: from ai_edge_litert.interpreter import Interpreter

interpreter = tf.lite.Interpreter(model_path="{tflite_file}")
interpreter.allocate_tensors()
labels = open("labels.txt").read().splitlines()
interpreter.set_tensor(interpreter.get_input_details()[0]["index"], load_image(sys.argv[1], {size}))
interpreter.invoke()
probabilities = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
print(labels[probabilities.argmax()], float(probabilities.max()))
"""


def snippet(kind: str, run_id: str, image_size: int) -> str:
    """A runnable script that classifies the image given as its first argument.

    Args:
        kind: ``"keras"`` (``<run_id>.keras``), ``"saved_model"`` (the ``saved_model``
            folder its .zip unzips to) or ``"tflite"`` (``model_float.tflite``).
        run_id: the run, whose downloads the script expects beside it with
            ``labels.txt``.
        image_size: the model's input size.

    Returns:
        The script's text; run it as ``python predict.py photo.jpg``.
    """
    templates = {"keras": _KERAS, "saved_model": _SAVED_MODEL, "tflite": _TFLITE}
    if kind not in templates:
        raise ValueError(f"Unknown snippet format. Expected one of {list(SNIPPET_FORMATS)}. Received: {kind!r}.")
    body = templates[kind].format(
        model_file=f"{run_id}.keras",
        tflite_file="model_float.tflite",
        size=int(image_size),
    )
    head = f'"""Classify one image with run {run_id}: python predict.py photo.jpg"""\n'
    return head + textwrap.dedent(_LOAD_IMAGE) + textwrap.dedent(body)
