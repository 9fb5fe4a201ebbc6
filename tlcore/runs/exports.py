"""Exports of a run's classifier: TensorFlow SavedModel and TFLite (float and quantized).

Files go to ``<run folder>/exports/``. :func:`export_all` re-loads every export and
checks it agrees with the Keras model, so a broken conversion is caught here rather
than on a phone.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tlcore.errors import StudioError

if TYPE_CHECKING:
    from tlcore.runs.store import Run


def export_saved_model(run: Run, model=None) -> Path:
    """Exports the run's classifier as a TensorFlow SavedModel (``model.export``)."""
    model = model or run.load_model()
    target = run.path / "exports" / "saved_model"
    shutil.rmtree(target, ignore_errors=True)
    model.export(str(target), format="tf_saved_model", verbose=False)
    return target


def export_tflite(run: Run, quantize: bool = False, model=None) -> Path:
    """Converts the SavedModel export to TFLite, float or dynamic-range quantized."""
    import tensorflow as tf

    saved = run.path / "exports" / "saved_model"
    if not saved.is_dir():
        export_saved_model(run, model)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    target = run.path / "exports" / ("model_dynamic_range.tflite" if quantize else "model_float.tflite")
    target.write_bytes(converter.convert())
    return target


def tflite_predict(path: Path, batch: np.ndarray) -> np.ndarray:
    """Runs a TFLite model on a batch, one image at a time."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path))
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(input_detail["index"], [1, *batch.shape[1:]])
    interpreter.allocate_tensors()
    outputs = []
    for image in batch:
        interpreter.set_tensor(input_detail["index"], image[None].astype(np.float32))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output_detail["index"])[0])
    return np.stack(outputs)


def export_all(run: Run, sample_images: list) -> dict:
    """Exports SavedModel + float and quantized TFLite, re-loads each, checks top-1.

    Returns:
        ``{format: {"path", "top1_agreement"}}``: the fraction of sample images whose
        top-1 class matches the Keras model's.

    Raises:
        StudioError: an export disagrees with the Keras model on any sample's top-1.
    """
    import tensorflow as tf

    from tlcore.inference.predict import load_batch

    model = run.load_model()
    batch = load_batch(sample_images, int(model.input_shape[1]))
    reference = np.argmax(model.predict(batch, verbose=0), axis=1)
    saved = export_saved_model(run, model)
    reloaded = tf.saved_model.load(str(saved))  # keep a reference: its variables die with it
    outputs = {"saved_model": (saved, reloaded.serve(tf.constant(batch)).numpy())}
    for quantize in (False, True):
        path = export_tflite(run, quantize, model)
        outputs[path.stem] = (path, tflite_predict(path, batch))
    report = {}
    for name, (path, probabilities) in outputs.items():
        agreement = float(np.mean(np.argmax(probabilities, axis=1) == reference))
        report[name] = {"path": str(path), "top1_agreement": agreement}
        if agreement < 1.0:
            raise StudioError(
                f"The {name} export disagrees with the Keras model on {1 - agreement:.0%} of the samples."
            )
    return report
