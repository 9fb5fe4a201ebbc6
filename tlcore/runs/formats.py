"""THE table of export formats: format → files, exporter, runtime, snippet, download name.

Adding a format is one row of :data:`FORMATS` plus its exporter and runtime loader (two
small functions below) and its snippet template in :mod:`tlcore.runs.snippets`; the
exports, the downloads, the snippets, the model card, the CLI and the Runs page all read
this table. Like Ultralytics' ``export_formats()``, without its flag unpacking.

Every exporter goes through Keras' own ``model.export(format=…)``; every runtime loader
opens the export the way a deployment would (onnxruntime, OpenVINO, the LiteRT
interpreter) and returns ``predict(batch) -> probabilities``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tlcore.runs import snippets

# A float32 export computes what the Keras model computes, in another order: its probabilities
# differ by float32 rounding (< 5e-5 on every float32 row of the README's bench). A difference
# above this is a wrong file (a layer exported differently), never rounding: it is not offered.
FLOAT32_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ExportFormat:
    """One export format.

    Attributes:
        name: what ``--format`` and the report call it.
        label: its name in words (Runs page).
        files: what the export is, relative to the run folder (the first is what the
            runtime opens; a folder or an OpenVINO ``.xml`` brings the rest along).
        export: ``export(model, target, calibration)`` writes ``files[0]``;
            ``calibration`` is a batch of training images (only full int8 uses it).
            ``None``: the run's own ``model.keras``, nothing to export.
        runtime: the package that runs it, in words.
        load: ``load(path) -> predict(batch) -> probabilities``, in that runtime.
        snippet: the template of its self-contained ``predict.py``.
        requires: modules the exporter and runtime import (a missing one is named).
        calibrated: the exporter needs ``calibration`` (the run's training images).
        local_name: what the file is called beside the snippet (``{run_id}`` filled in);
            empty: the name of ``files[0]``.
        quantized: its numbers are float16 or int8, so its probabilities may differ from
            the Keras model's by more than float32 rounding (see :data:`FLOAT32_TOLERANCE`).
    """

    name: str
    label: str
    files: tuple[str, ...]
    export: Callable | None
    runtime: str
    load: Callable
    snippet: str
    requires: tuple[str, ...] = ()
    calibrated: bool = False
    local_name: str = ""
    quantized: bool = False

    def download_name(self, run_id: str) -> str:
        """The zip a user downloads, named after its format (several would look alike otherwise)."""
        return f"{run_id}-{self.name}.zip"

    def model_file(self, run_id: str) -> str:
        """The file (or folder) the snippet opens, beside it once unzipped."""
        return self.local_name.format(run_id=run_id) or Path(self.files[0]).name


def _saved_model_export(model, target: Path, calibration) -> None:
    model.export(str(target), format="tf_saved_model", verbose=False)


def _onnx_export(model, target: Path, calibration) -> None:
    model.export(str(target), format="onnx", verbose=False)


def _openvino_export(model, target: Path, calibration) -> None:
    model.export(str(target), format="openvino", verbose=False)


def _litert_export(model, target: Path, calibration, quantization: str) -> None:
    import tensorflow as tf

    # TFLite builtins only: a plain interpreter (a phone, ai-edge-litert) runs it without the Flex delegate.
    target_spec: dict = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}
    options: dict = {"target_spec": target_spec}
    if quantization != "float32":
        options["optimizations"] = [tf.lite.Optimize.DEFAULT]  # alone: dynamic-range int8 weights
    if quantization == "float16":
        target_spec["supported_types"] = [tf.float16]
    elif quantization.startswith("int8"):
        # Weights and activations int8, ranges measured on the run's own training images; "int8"
        # keeps float32 input and output (a quantize/dequantize op each end), so the float code runs it.
        target_spec["supported_ops"] = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        options["representative_dataset"] = lambda: ([image[None]] for image in calibration)
    if quantization == "int8-io":
        # int8 in and out, as integer-only accelerators (Edge TPU, microcontrollers) take it: the caller
        # quantizes the pixels and dequantizes the probabilities with the tensors' own scale and zero point.
        options.update(inference_input_type=tf.int8, inference_output_type=tf.int8)
    model.export(str(target), format="litert", verbose=False, **options)
    if quantization.startswith("int8"):
        share_repeated_vectors(target)


def _sharing_builder():
    """A flatbuffers builder that writes each distinct numeric vector once (flatbuffers comes with
    TensorFlow: imported only when a full-int8 file is written)."""
    import flatbuffers

    class SharingBuilder(flatbuffers.Builder):
        def __init__(self):
            super().__init__(1024)
            self.written: dict = {}

        def CreateNumpyVector(self, values):  # noqa: N802 — the flatbuffers method it wraps
            key = (values.dtype.str, values.tobytes())
            if key not in self.written:
                if values.dtype == np.uint8:
                    self.Prep(16, values.nbytes)  # TFLite's schema aligns buffer data to 16 bytes
                self.written[key] = super().CreateNumpyVector(values)
            return self.written[key]

    return SharingBuilder()


def share_repeated_vectors(path: Path) -> None:
    """Rewrites a ``.tflite`` file with each distinct vector stored once; no number in it changes.

    The converter gives every quantized tensor its own int64 zero-point vector (all zeros for
    weights and biases, one entry per channel): 0.27 MB, 10 % of a full-int8 MobileNetV2 file.
    A flatbuffer may point many tables at one vector, so each distinct one is written once.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    builder = _sharing_builder()
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))


def _load_keras(path: Path):
    from tlcore.inference.predict import predict_probabilities
    from tlcore.model.file_trial import load_saved_model

    model = load_saved_model(path)
    return functools.partial(predict_probabilities, model)


def _load_saved_model(path: Path):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))

    def predict(batch: np.ndarray) -> np.ndarray:
        return loaded.serve(tf.constant(batch)).numpy()  # ``loaded`` is held here: its variables die with it

    return predict


def _load_onnx(path: Path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch.astype(np.float32)})[0]


def _load_openvino(path: Path):
    import openvino

    # f32: OpenVINO may otherwise run a float model in bf16 on CPUs that have it (a 1-2 % probability change).
    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda batch: np.asarray(compiled(batch.astype(np.float32))[0])


def _load_litert(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def predict(batch: np.ndarray) -> np.ndarray:
        outputs = []
        for image in batch:  # one image at a time, as a phone runs it
            interpreter.set_tensor(source["index"], litert_quantize(image[None], source))
            interpreter.invoke()
            outputs.append(litert_dequantize(interpreter.get_tensor(target["index"])[0], target))
        return np.stack(outputs)

    return predict


def litert_quantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """``values`` in a LiteRT tensor's own type: an integer one by its scale and zero point, else float32.

    Args:
        values: float pixels (0..255).
        detail: the tensor's entry of ``interpreter.get_input_details()``.
    """
    dtype = np.dtype(detail["dtype"])
    if not np.issubdtype(dtype, np.integer):
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    limits = np.iinfo(dtype)
    return np.clip(np.round(values / scale + zero_point), limits.min, limits.max).astype(dtype)


def litert_dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """A LiteRT output as float32: an integer one by its tensor's own scale and zero point."""
    if not np.issubdtype(values.dtype, np.integer):
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return (values.astype(np.float32) - zero_point) * scale


def _litert(name: str, label: str, file: str, quantization: str) -> ExportFormat:
    return ExportFormat(
        name,
        label,
        (f"exports/{file}",),
        functools.partial(_litert_export, quantization=quantization),
        "LiteRT interpreter (ai-edge-litert)",
        _load_litert,
        snippets.LITERT_INT8_IO if quantization == "int8-io" else snippets.LITERT,
        ("tensorflow", "ai_edge_litert"),
        calibrated=quantization.startswith("int8"),
        quantized=quantization != "float32",
    )


FORMATS: dict[str, ExportFormat] = {
    row.name: row
    for row in (
        ExportFormat(
            "keras",
            "Keras",
            ("model.keras",),
            None,
            "Keras (compiled forward)",
            _load_keras,
            snippets.KERAS,
            ("keras",),
            local_name="{run_id}.keras",
        ),
        ExportFormat(
            "saved_model",
            "SavedModel",
            ("exports/saved_model",),
            _saved_model_export,
            "TensorFlow",
            _load_saved_model,
            snippets.SAVED_MODEL,
            ("tensorflow",),
        ),
        ExportFormat(
            "onnx",
            "ONNX",
            ("exports/model.onnx",),
            _onnx_export,
            "onnxruntime",
            _load_onnx,
            snippets.ONNX,
            ("tf2onnx", "onnx", "onnxruntime"),
        ),
        ExportFormat(
            "openvino",
            "OpenVINO",
            ("exports/openvino/model.xml", "exports/openvino/model.bin"),
            _openvino_export,
            "OpenVINO",
            _load_openvino,
            snippets.OPENVINO,
            ("openvino",),
        ),
        _litert("litert", "LiteRT float32", "model_float.tflite", "float32"),
        _litert("litert-fp16", "LiteRT float16", "model_float16.tflite", "float16"),
        _litert("litert-dynamic", "LiteRT dynamic-range int8", "model_dynamic_range.tflite", "dynamic"),
        _litert("litert-int8", "LiteRT full int8", "model_int8.tflite", "int8"),
        _litert("litert-int8-io", "LiteRT full int8, int8 in/out", "model_int8_io.tflite", "int8-io"),
    )
}
EXPORTED = tuple(name for name, row in FORMATS.items() if row.export is not None)


def export_format(name: str) -> ExportFormat:
    """The row of ``name``.

    Raises:
        ValueError: an unknown format (the message lists the known ones).
    """
    if name not in FORMATS:
        raise ValueError(f"Unknown export format. Expected one of {list(FORMATS)}. Received: {name!r}.")
    return FORMATS[name]
