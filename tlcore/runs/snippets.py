"""Inference snippets a user downloads with a run: plain Python that needs no tlcore.

One template per export format (:data:`tlcore.runs.formats.FORMATS` names which);
``{model_file}`` is the file or folder beside the script, ``{size}`` the input size.

Each snippet decodes an image the way the studio does (upright by EXIF, any mode to
RGB with alpha on white, 16-bit scaled, JPEG draft decoding, bilinear sampling without
antialiasing), so it agrees with the dashboard's prediction. tests/test_snippets.py runs every snippet in
a fresh folder outside the repository and compares its top-1 with the studio's.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tlcore.runs.formats import ExportFormat

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

KERAS = """
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

SAVED_MODEL = """
import sys

import tensorflow as tf

model = tf.saved_model.load("{model_file}")  # the folder the .zip unzips to
labels = open("labels.txt").read().splitlines()
probabilities = model.serve(tf.constant(load_image(sys.argv[1], {size}))).numpy()[0]
print(labels[probabilities.argmax()], float(probabilities.max()))
"""

ONNX = """
import sys

import onnxruntime  # pip install onnxruntime

session = onnxruntime.InferenceSession("{model_file}", providers=["CPUExecutionProvider"])
labels = open("labels.txt").read().splitlines()
probabilities = session.run(None, {{session.get_inputs()[0].name: load_image(sys.argv[1], {size})}})[0][0]
print(labels[probabilities.argmax()], float(probabilities.max()))
"""

OPENVINO = """
import sys

import openvino  # pip install openvino

# model.bin (the weights) must sit beside model.xml. f32: the precision the export was checked in.
model = openvino.Core().compile_model("{model_file}", "CPU", {{"INFERENCE_PRECISION_HINT": "f32"}})
labels = open("labels.txt").read().splitlines()
probabilities = model(load_image(sys.argv[1], {size}))[0][0]
print(labels[probabilities.argmax()], float(probabilities.max()))
"""

LITERT = """
import sys

from ai_edge_litert.interpreter import Interpreter  # pip install ai-edge-litert (or tf.lite.Interpreter)

interpreter = Interpreter(model_path="{model_file}")
interpreter.allocate_tensors()
labels = open("labels.txt").read().splitlines()
# Float32 in and out, also for the full-int8 file with float32 ends (it quantizes inside).
interpreter.set_tensor(interpreter.get_input_details()[0]["index"], load_image(sys.argv[1], {size}))
interpreter.invoke()
probabilities = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
print(labels[probabilities.argmax()], float(probabilities.max()))
"""

LITERT_INT8_IO = """
import sys

from ai_edge_litert.interpreter import Interpreter  # pip install ai-edge-litert (or tf.lite.Interpreter)

interpreter = Interpreter(model_path="{model_file}")
interpreter.allocate_tensors()
labels = open("labels.txt").read().splitlines()
source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
# int8 in and out: the pixels are quantized, the probabilities dequantized, by each tensor's own scale and zero point.
scale, zero_point = source["quantization"]
limits = np.iinfo(source["dtype"])
pixels = np.round(load_image(sys.argv[1], {size}) / scale + zero_point)
interpreter.set_tensor(source["index"], np.clip(pixels, limits.min, limits.max).astype(source["dtype"]))
interpreter.invoke()
scale, zero_point = target["quantization"]
probabilities = (interpreter.get_tensor(target["index"])[0].astype(np.float32) - zero_point) * scale
print(labels[probabilities.argmax()], float(probabilities.max()))
"""


def snippet(export_format: ExportFormat, run_id: str, image_size: int) -> str:
    """A runnable script that classifies the image given as its first argument.

    Args:
        export_format: a row of :data:`tlcore.runs.formats.FORMATS`; the script expects
            its file (:meth:`~tlcore.runs.formats.ExportFormat.model_file`) beside it
            with ``labels.txt``, as its download unzips.
        run_id: the run.
        image_size: the model's input size.

    Returns:
        The script's text; run it as ``python predict.py photo.jpg``.
    """
    body = export_format.snippet.format(model_file=export_format.model_file(run_id), size=int(image_size))
    head = f'"""Classify one image with run {run_id} ({export_format.label}): python predict.py photo.jpg"""\n'
    return head + textwrap.dedent(_LOAD_IMAGE) + textwrap.dedent(body)
