"""A visitor's Keras model file: proven harmless before the server process touches it.

``safe_mode`` is not a sandbox: it refuses Lambda bytecode, but a file can still name
Keras' own functions (``keras.config.set_epsilon`` as a Lambda's function changes Keras
for the whole process), declare a ``Dense(10**9)`` (gigabytes allocated when the layer is
built), a 10,000-filter convolution (a gigabyte per image when it runs), or archive
members and weights declared just under Keras' own 4 GiB guards. So a model file goes
through two steps, and the server loads it only when both pass:

1. :func:`inspect_model_file` reads the ``.keras`` archive's config.json or the .h5
   file's ``model_config`` **without deserializing anything**: every layer class must be
   a Keras built-in this studio can size (or tlcore's own ``Preprocess``), no setting may
   name a Python function or a file path, the parameters and the per-image activations
   at the chosen input size are computed from the config
   (:mod:`tlcore.layer_sizes`) and bounded, the archive's members, sizes and the
   weights' declared shapes are bounded.
2. :func:`check_model_file` runs that inspection, then loads the file with
   ``safe_mode=True`` and calls it on one dummy batch, in a child process
   (``python -m tlcore.model_files``) under memory, CPU-time and file-size limits; it
   checks that Keras' global settings are unchanged. A file that still misbehaves
   fails there, with a message, and the server lives. The verdict is cached by the
   file's sha256, so a file is checked once per content.

:func:`load_model_file` does both, then loads the file in this process. Every refusal is
an :class:`~tlcore.errors.UnsafeModelError` whose message names the real reason
(docs/LIMITS.md lists the bounds and their messages).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tlcore.errors import UnsafeModelError
from tlcore.layer_sizes import CONTAINERS, RULES, SizeError, same_shape_rule, show_shape, size_model, values_in

MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")
ARCHIVE_MEMBERS = ("config.json", "metadata.json", "model.weights.h5")
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
VERDICT_PREFIX = "TLCORE_MODEL_VERDICT "

# tlcore's own layer classes a saved classifier holds: registered name → (class, shape rule).
OWN_LAYERS = {"tlcore>Preprocess": ("Preprocess", same_shape_rule)}
# Keras' serialized settings objects a layer config may hold (initializers, regularizers,
# constraints, dtype policies): data, never code.
SETTING_CLASSES = frozenset(
    "Zeros Ones Constant GlorotUniform GlorotNormal HeUniform HeNormal LecunUniform LecunNormal RandomNormal "
    "RandomUniform TruncatedNormal VarianceScaling Orthogonal OrthogonalInitializer Identity IdentityInitializer "
    "L1 L2 L1L2 OrthogonalRegularizer MaxNorm MinMaxNorm NonNeg UnitNorm DTypePolicy FloatDTypePolicy "
    "__tuple__ __keras_tensor__".split()
)
ACTIVATIONS = frozenset(
    "linear relu relu6 leaky_relu elu selu gelu silu swish sigmoid hard_sigmoid hard_silu hard_swish softmax "
    "log_softmax softplus softsign tanh exponential mish celu glu sparsemax".split()
)
# Other layer classes Keras ships: refused (they cannot be sized, read files or run code).
OTHER_KERAS_LAYERS = frozenset(
    "Lambda TFSMLayer TorchModuleWrapper JaxLayer FlaxLayer LSTM GRU SimpleRNN ConvLSTM1D ConvLSTM2D ConvLSTM3D "
    "RNN StackedRNNCells Bidirectional MultiHeadAttention GroupQueryAttention Attention AdditiveAttention "
    "EinsumDense TextVectorization StringLookup IntegerLookup Hashing Discretization CategoryEncoding "
    "HashedCrossing Pipeline MelSpectrogram STFTSpectrogram Dot Wrapper".split()
)
PATH_KEYS = frozenset(("filepath", "file_path", "path", "vocabulary", "vocabulary_file", "idf_weights"))
# How running out of the child's address space shows (Python, C++, the dynamic loader, TensorFlow).
_OUT_OF_MEMORY = re.compile(r"MemoryError|bad_alloc|Cannot allocate memory|failed to map segment|OOM|ResourceExhausted")
_PATH_LIKE = re.compile(r"^(?:/|~|\\\\|[A-Za-z]:[\\/]|file:)|://")


@dataclass(frozen=True)
class ModelFileLimits:
    """Bounds on a visitor's model file (docs/LIMITS.md gives the messages).

    Attributes:
        max_parameters: most weights the model may declare. VGG16, the largest registry
            backbone, has 138 million.
        max_activation_bytes: most memory all layer outputs may take for one image at
            the chosen input size (float32). The registry backbones take 58–240 MiB.
        max_archive_bytes: most bytes a ``.keras`` archive may expand to (all members).
        max_archive_members: most files in a ``.keras`` archive (Keras writes three).
        max_config_bytes: largest config.json / ``model_config`` / metadata.json.
        max_h5_objects: most groups and datasets in an HDF5 file.
        trial_memory_bytes: address-space limit of the child process that loads and runs
            the file once (TensorFlow itself reserves about 2.3 GB of it).
        trial_seconds: CPU and wall-clock limit of that child process.
    """

    max_parameters: int = 150_000_000
    max_activation_bytes: int = 512 * 2**20
    max_archive_bytes: int = 2**30
    max_archive_members: int = 16
    max_config_bytes: int = 16 * 2**20
    max_h5_objects: int = 100_000
    trial_memory_bytes: int = 8 * 2**30
    trial_seconds: int = 300


DEFAULT_MODEL_LIMITS = ModelFileLimits()
DEFAULT_IMAGE_SIZE = 224


@dataclass(frozen=True)
class ModelFileReport:
    """What an accepted model file declares.

    Attributes:
        file_name: the file's name.
        parameters: weights its layers hold.
        activation_bytes: memory of all layer outputs for one image at ``image_size``.
        image_size: the input size the activations were computed at.
        input_shapes: the model's inputs (without the batch dimension).
        layers: how many layer calls it has (nested models included).
    """

    file_name: str
    parameters: int
    activation_bytes: int
    image_size: int
    input_shapes: list
    layers: int


def is_model_file_name(name: str) -> bool:
    """True when ``name`` ends like a Keras model file (``.keras``, ``.h5``, ``.hdf5``)."""
    return Path(str(name)).suffix.lower() in MODEL_FILE_SUFFIXES


def file_digest(path: str | Path) -> str:
    """sha256 of a file's contents (identifies weights and model files in cache keys)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _size(count: int) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


# ----------------------------------------------------------------------------- step 0: is it a model file at all


def check_model_path(path: str | Path) -> Path:
    """Refuses what is not a Keras model file by name, existence and first bytes (cheap, no parsing).

    Raises:
        UnsafeModelError: missing, wrong suffix, empty, or the bytes are not a zip
            (``.keras``) or HDF5 (``.h5``) file.
    """
    path = Path(path)
    if not is_model_file_name(path.name):
        raise UnsafeModelError(
            f"Expected a Keras model file ending in {', '.join(MODEL_FILE_SUFFIXES)}. Received: {path.name}."
        )
    if not path.is_file():
        raise UnsafeModelError(f"Model file not found: {path}. Expected a .keras or .h5 Keras model file.")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if not head:
        raise _unreadable(path, "the file is empty")
    if path.suffix.lower() == ".keras" and not head.startswith(ZIP_MAGIC):
        raise _unreadable(path, f"a .keras file is a zip archive, and this one starts with {head!r}")
    if path.suffix.lower() != ".keras" and head != HDF5_MAGIC:
        raise _unreadable(path, f"an .h5 model file is an HDF5 file, and this one starts with {head!r}")
    return path


def _unreadable(path: Path, detail: str) -> UnsafeModelError:
    return UnsafeModelError(
        f"{path.name} could not be read as a Keras model ({detail[:200]}). Is the file complete and saved with "
        "model.save()?"
    )


# ----------------------------------------------------------------------------- step 1: inspection without deserializing


def inspect_model_file(
    path: str | Path, image_size: int | None = None, limits: ModelFileLimits = DEFAULT_MODEL_LIMITS
) -> ModelFileReport:
    """Checks a model file's declarations without deserializing anything in it.

    Args:
        path: a ``.keras``, ``.h5`` or ``.hdf5`` file.
        image_size: the input size used where the model's input size is free
            (default 224).
        limits: the bounds to enforce.

    Returns:
        A :class:`ModelFileReport` of what the file declares.

    Raises:
        UnsafeModelError: the first reason the file is refused, in words.
    """
    path = check_model_path(path)
    image_size = image_size or DEFAULT_IMAGE_SIZE
    if path.suffix.lower() == ".keras":
        config, weights = _read_archive(path, limits)
    else:
        config, weights = _read_h5(path, limits)
    check_config(config, path.name)
    try:
        size = size_model(config, image_size, {name: rule for name, rule in OWN_LAYERS.values()})
    except SizeError as error:
        raise UnsafeModelError(f"{path.name} cannot be sized before loading: {error}. It is refused.") from None
    _check_sizes(path.name, size, image_size, limits)
    _check_declared_weights(path.name, weights, size.parameters, limits)
    return ModelFileReport(
        path.name, size.parameters, size.activation_values * 4, image_size, size.input_shapes, len(size.layers)
    )


def _read_archive(path: Path, limits: ModelFileLimits) -> tuple[dict, dict]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise _unreadable(path, f"the zip archive is damaged: {error}") from None
    with archive:
        members = archive.infolist()
        if len(members) > limits.max_archive_members:
            raise UnsafeModelError(
                f"{path.name} holds {len(members):,} files, over the limit of {limits.max_archive_members} "
                "(a Keras model file holds config.json, metadata.json and model.weights.h5). It is refused."
            )
        declared = sum(member.file_size for member in members)
        if declared > limits.max_archive_bytes:
            biggest = max(members, key=lambda member: member.file_size)
            raise UnsafeModelError(
                f"{path.name} expands to {_size(declared)} ('{biggest.filename}' alone declares "
                f"{_size(biggest.file_size)}), over the limit of {_size(limits.max_archive_bytes)}. It is refused."
            )
        extra = [member.filename for member in members if member.filename not in ARCHIVE_MEMBERS]
        if extra:
            raise UnsafeModelError(
                f"{path.name} holds '{extra[0]}' besides the model's config, metadata and weights; model files "
                "with asset files (vocabularies, lookup tables) are not accepted here. It is refused."
            )
        if "config.json" not in archive.namelist() or "model.weights.h5" not in archive.namelist():
            raise _unreadable(path, "the archive has no config.json or no model.weights.h5")
        config = _json(path, _read_capped(archive, "config.json", limits.max_config_bytes, path), "config.json")
        if "metadata.json" in archive.namelist():
            _json(path, _read_capped(archive, "metadata.json", limits.max_config_bytes, path), "metadata.json")
        with archive.open("model.weights.h5") as handle:
            weights = _h5_summary(path, handle, limits, model_group="")
    return config, weights


def _read_capped(archive: zipfile.ZipFile, name: str, cap: int, path: Path) -> bytes:
    """A member's bytes, read in chunks and stopped past ``cap`` whatever its header says."""
    chunks, total = [], 0
    try:
        with archive.open(name) as handle:
            while chunk := handle.read(1 << 20):
                total += len(chunk)
                if total > cap:
                    raise UnsafeModelError(f"{path.name}: its {name} is over the limit of {_size(cap)}. It is refused.")
                chunks.append(chunk)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise _unreadable(path, f"{name} could not be read: {error}") from None
    return b"".join(chunks)


def _json(path: Path, data: bytes | str, what: str):
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise _unreadable(path, f"its {what} is not valid JSON: {error}") from None


def _read_h5(path: Path, limits: ModelFileLimits) -> tuple[dict, dict]:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            raw = handle.attrs.get("model_config")
            if raw is None:
                raise UnsafeModelError(
                    f"{path.name} holds weights only (no model_config): it is not a whole model. Upload the "
                    "model saved with model.save(), or use it as the weights of a registry backbone."
                )
            if len(raw) > limits.max_config_bytes:
                raise UnsafeModelError(
                    f"{path.name}: its model_config is over the limit of {_size(limits.max_config_bytes)}. "
                    "It is refused."
                )
            config = _json(path, raw, "model_config")
            weights = _h5_summary(path, handle, limits, model_group="model_weights")
    except OSError as error:
        raise _unreadable(path, f"HDF5 error: {error}") from None
    return config, weights


def _h5_summary(path: Path, source, limits: ModelFileLimits, model_group: str) -> dict:
    """Declared sizes of an HDF5 file's datasets, read from their headers (no data is read)."""
    import h5py

    summary = {"model_values": 0, "all_values": 0, "largest": ("", 0), "objects": 0}

    def visit(name: str, item) -> None:
        summary["objects"] += 1
        if summary["objects"] > limits.max_h5_objects:
            raise UnsafeModelError(
                f"{path.name}: its weights hold over {limits.max_h5_objects:,} groups and datasets. It is refused."
            )
        if isinstance(item, h5py.Dataset):
            count = values_in(item.shape or ())
            summary["all_values"] += count
            if name.startswith(model_group) and not name.startswith("optimizer"):
                summary["model_values"] += count
            if count > summary["largest"][1]:
                summary["largest"] = (name, count)

    handle = source if isinstance(source, h5py.File) else None
    try:
        with contextlib.ExitStack() as stack:
            if handle is None:
                handle = stack.enter_context(h5py.File(source, "r"))
            handle.visititems(visit)
    except (OSError, ValueError) as error:
        raise _unreadable(path, f"its weights are not a readable HDF5 file: {error}") from None
    return summary


def _check_declared_weights(name: str, weights: dict, parameters: int, limits: ModelFileLimits) -> None:
    # Keras reads a stored weight before comparing it with the variable it fills: a weight
    # declared bigger than its layer costs its declared size in memory first. Honest files
    # store exactly the layers' parameters (plus optimizer slots in a legacy .h5).
    allowed = parameters + parameters // 4 + 10_000
    largest, count = weights["largest"]
    if weights["model_values"] > allowed or weights["all_values"] > 4 * allowed:
        raise UnsafeModelError(
            f"{name}: its weights declare {weights['all_values']:,} values ('{largest}' alone {count:,}), but its "
            f"layers hold only {parameters:,} parameters. Weights larger than the model are refused."
        )


def _check_sizes(name: str, size, image_size: int, limits: ModelFileLimits) -> None:
    if size.parameters > limits.max_parameters:
        layer = max(size.layers, key=lambda record: record.parameters)
        words = layer.size_words or f"{layer.parameters:,} parameters"
        raise UnsafeModelError(
            f"{name} declares {words} in layer '{layer.path}' ({layer.parameters:,} parameters; "
            f"{size.parameters:,} in the whole model, over the limit of {limits.max_parameters:,}). "
            "Choose a smaller model (VGG16, the largest registry backbone, has 138 million)."
        )
    activation_bytes = size.activation_values * 4
    if activation_bytes > limits.max_activation_bytes:
        layer = max(size.layers, key=lambda record: record.output_values)
        raise UnsafeModelError(
            f"{name}: layer '{layer.path}' outputs {show_shape(layer.output_shape)} values per image at "
            f"{image_size}x{image_size} pixels; all its layer outputs take {_size(activation_bytes)} per image, "
            f"over the limit of {_size(limits.max_activation_bytes)}. Choose a smaller input size or model."
        )


# ----------------------------------------------------------------------------- the config walk


def check_config(config: dict, file_name: str) -> None:
    """Refuses a model config that holds anything but plain, known layers and settings.

    Args:
        config: the top-level model config (``{"class_name": …, "config": …}``).
        file_name: the file's name, for the message.

    Raises:
        UnsafeModelError: a Lambda layer, a Python function, a file path, a layer class
            that is not an accepted Keras built-in, or a setting that is not plain data.
    """
    if not isinstance(config, dict) or config.get("class_name") not in CONTAINERS:
        received = config.get("class_name") if isinstance(config, dict) else type(config).__name__
        raise UnsafeModelError(
            f"{file_name} is not a Keras Functional or Sequential model (its top is {received!r}). It is refused."
        )
    _check_layer(config, "", file_name, top=True)


def _check_layer(layer, prefix: str, file_name: str, top: bool = False) -> None:
    if not isinstance(layer, dict):
        raise UnsafeModelError(f"{file_name}: its config holds {type(layer).__name__} where a layer should be.")
    from tlcore.layer_sizes import layer_name

    class_name, path = layer.get("class_name"), prefix + layer_name(layer)
    config = layer.get("config") if isinstance(layer.get("config"), dict) else {}
    if class_name == "Lambda":
        function = config.get("function")
        named = isinstance(function, dict) and function.get("class_name") == "function"
        what = f" calling {_function_name(function)}" if named else ""
        raise UnsafeModelError(
            f"{file_name} contains a Lambda layer '{path}'{what}, which would run arbitrary Python code "
            "when loaded; it is refused. Re-save the model without Lambda layers (use built-in Keras "
            "layers), or use a registry backbone."
        )
    inner_prefix = "" if top else path + "/"
    for key, value in config.items():
        if key == "layers" and class_name in CONTAINERS:
            for inner in value or []:
                _check_layer(inner, inner_prefix, file_name)
        elif key == "layer" and class_name == "TimeDistributed":
            _check_layer(value, inner_prefix, file_name)
        elif key not in ("input_layers", "output_layers"):
            _check_setting(value, key, path, file_name)
    for key in ("inbound_nodes", "build_config"):
        _check_setting(layer.get(key), key, path, file_name)
    _check_class(layer, class_name, path, file_name)


def _function_name(value: dict) -> str:
    config = value.get("config")
    name = config if isinstance(config, str) else (config or {}).get("function_name") or value.get("class_name")
    return f"{value.get('module') or '?'}.{name}" if value.get("module") else str(name)


def _check_setting(value, key: str, path: str, file_name: str) -> None:
    where = f"in layer '{path}' (its '{key}')"
    if isinstance(value, dict):
        class_name = value.get("class_name")
        if class_name in ("function", "__lambda__") or value.get("registered_name") == "function":
            raise UnsafeModelError(
                f"{file_name} refers to the Python function {_function_name(value)} {where}, which is not a "
                "plain layer setting; only Keras' named activations are accepted. It is refused."
            )
        if class_name is not None:
            module = value.get("module")
            if class_name not in SETTING_CLASSES or (module and not _is_keras_module(module)):
                raise UnsafeModelError(
                    f"{file_name} holds a serialized object of class '{class_name}'"
                    f"{f' from {module}' if module else ''} {where}, which is not a plain Keras setting "
                    "(initializer, regularizer, constraint or dtype). It is refused."
                )
        for inner_key, inner in value.items():
            _check_setting(inner, key if inner_key in ("config", "value") else inner_key, path, file_name)
    elif isinstance(value, (list, tuple)):
        for inner in value:
            _check_setting(inner, key, path, file_name)
    elif isinstance(value, str):
        if key in PATH_KEYS and value or _PATH_LIKE.search(value):
            raise UnsafeModelError(
                f"{file_name} refers to a file path ({value[:80]!r}) {where}; a model file may not read other "
                "files on the server. It is refused."
            )
        if key in ("activation", "recurrent_activation") and value not in ACTIVATIONS:
            raise UnsafeModelError(
                f"{file_name} uses the activation {value[:80]!r} {where}, which is not one of Keras' named "
                "activations. It is refused."
            )


def _is_keras_module(module: str) -> bool:
    return module == "keras" or module.startswith("keras.")


def _check_class(layer: dict, class_name, path: str, file_name: str) -> None:
    module, registered = layer.get("module"), layer.get("registered_name")
    if registered in OWN_LAYERS and OWN_LAYERS[registered][0] == class_name:
        preprocess = (layer.get("config") or {}).get("preprocess")
        from tlcore.preprocessing import PREPROCESSING

        if preprocess not in PREPROCESSING:
            raise UnsafeModelError(f"{file_name}: layer '{path}' names an unknown preprocessing {preprocess!r}.")
        return
    accepted = class_name in RULES or class_name in CONTAINERS or class_name in ("InputLayer", "TimeDistributed")
    custom = registered not in (None, class_name) or (module and not _is_keras_module(module))
    if accepted and not custom:
        return
    if class_name in OTHER_KERAS_LAYERS and not custom:
        raise UnsafeModelError(
            f"{file_name} uses the Keras layer class '{class_name}' (layer '{path}'), which this studio does not "
            "accept in a model file: it cannot be sized before loading. Accepted: convolution, pooling, "
            "normalization, dense, merge, reshaping and image preprocessing layers."
        )
    origin = f" (registered as {registered!r})" if registered not in (None, class_name) else ""
    origin = origin or (f" from module {module!r}" if module and not _is_keras_module(module) else "")
    raise UnsafeModelError(
        f"{file_name} uses layer class {class_name!r}{origin} in layer '{path}', which is not a Keras built-in. "
        "Custom layers run their own code when loaded; it is refused."
    )


# ----------------------------------------------------------------------------- step 2: the trial in a child process


KERAS_SETTINGS = (
    "floatx", "epsilon", "image_data_format", "backend", "max_epochs", "max_steps_per_epoch",
    "is_flash_attention_enabled", "is_interactive_logging_enabled", "is_traceback_filtering_enabled",
)  # fmt: skip


def keras_settings() -> dict:
    """Keras' process-wide settings: what a hostile file could change for every visitor."""
    import keras
    from keras.src.saving import serialization_lib

    settings = {name: getattr(keras.config, name)() for name in KERAS_SETTINGS if hasattr(keras.config, name)}
    settings["dtype_policy"] = keras.config.dtype_policy().name
    settings["safe_mode"] = serialization_lib.in_safe_mode()
    return settings


def _restore(settings: dict) -> None:
    import keras
    from keras.src.backend.common import global_state

    for name in ("floatx", "epsilon", "image_data_format", "max_epochs", "max_steps_per_epoch", "dtype_policy"):
        if name in settings:
            getattr(keras.config, f"set_{name}")(settings[name])
    flags = {
        "is_flash_attention_enabled": ("enable_flash_attention", "disable_flash_attention"),
        "is_interactive_logging_enabled": ("enable_interactive_logging", "disable_interactive_logging"),
        "is_traceback_filtering_enabled": ("enable_traceback_filtering", "disable_traceback_filtering"),
    }
    for name, (enable, disable) in flags.items():
        if name in settings and settings[name] is not None:
            getattr(keras.config, enable if settings[name] else disable)()
    global_state.set_global_attribute("safe_mode_saving", settings.get("safe_mode"))


@contextlib.contextmanager
def keras_settings_guard(file_name: str):
    """Refuses (and undoes) any change to Keras' global settings made inside the block.

    Raises:
        UnsafeModelError: a setting changed; the message names it, old and new.
    """
    before = keras_settings()
    try:
        yield
    finally:
        after = keras_settings()
        changed = {name: (before[name], after.get(name)) for name in before if after.get(name) != before[name]}
        if changed:
            _restore(before)
            name, (old, new) = next(iter(changed.items()))
            raise UnsafeModelError(
                f"{file_name} changes Keras' global settings when loaded or run ({name}: {old!r} → {new!r}); "
                "it is refused and the setting restored."
            )


def _trial(path: Path, report: ModelFileReport) -> None:
    """Loads the file with safe mode and runs it on one batch of zeros (in the child process)."""
    import keras
    import numpy as np

    import tlcore.saved_model  # noqa: F401  (registers Preprocess, the studio's own layer)

    with keras_settings_guard(path.name):
        try:
            model = keras.models.load_model(path, compile=False, safe_mode=True)
        except MemoryError:
            raise
        except Exception as error:  # noqa: BLE001  - any failure here means "unusable file"
            raise _unreadable(path, _first_line(error)) from None
        batch = [np.zeros((1, *[d or report.image_size for d in shape]), "float32") for shape in report.input_shapes]
        try:
            model(batch[0] if len(batch) == 1 else batch, training=False)
        except Exception as error:  # noqa: BLE001
            raise UnsafeModelError(
                f"{path.name} loads but fails on a batch of {report.image_size}x{report.image_size} images: "
                f"{_first_line(error)}"
            ) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]


def _limit_resources(limits: ModelFileLimits) -> None:
    try:
        import resource
    except ImportError:  # Windows: no rlimits; the wall-clock timeout still applies
        return
    resource.setrlimit(resource.RLIMIT_AS, (limits.trial_memory_bytes, limits.trial_memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.trial_seconds, limits.trial_seconds + 5))
    # Loading writes nothing legitimately (Keras' temp copies are what an asset bomb abuses).
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 2**20, 64 * 2**20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _child_main(argv: list[str]) -> int:
    """``python -m tlcore.model_files PATH IMAGE_SIZE LIMITS_JSON [--weights-only MAX]``."""
    path, image_size, limits = Path(argv[0]), int(argv[1]), ModelFileLimits(**json.loads(argv[2]))
    _limit_resources(limits)
    try:
        if len(argv) > 3 and argv[3] == "--weights-only":
            _inspect_weights_file(path, int(argv[4]), limits)
            verdict = {"ok": True}
        else:
            report = inspect_model_file(path, image_size, limits)
            _trial(path, report)
            verdict = {"ok": True, "report": dataclasses.asdict(report)}
    except UnsafeModelError as error:
        verdict = {"ok": False, "reason": str(error)}
    except MemoryError:
        verdict = {"ok": False, "reason": _memory_reason(path.name, limits)}
    except Exception as error:  # noqa: BLE001  - whatever else went wrong, the server gets a reason
        reason = _memory_reason(path.name, limits) if _OUT_OF_MEMORY.search(str(error)) else None
        verdict = {"ok": False, "reason": reason or _unreadable(path, _first_line(error)).args[0]}
    print(VERDICT_PREFIX + json.dumps(verdict), flush=True)
    return 0


def _memory_reason(name: str, limits: ModelFileLimits) -> str:
    return (
        f"{name} needed more than the {_size(limits.trial_memory_bytes)} memory limit while being loaded and "
        "run once in a separate process. It is refused."
    )


_VERDICTS: dict[tuple, dict] = {}
_VERDICTS_LOCK = threading.Lock()


def check_model_file(
    path: str | Path, image_size: int | None = None, limits: ModelFileLimits = DEFAULT_MODEL_LIMITS
) -> ModelFileReport:
    """Inspects a model file, then loads and runs it once in a child process with limits.

    The verdict is cached by the file's sha256 (in memory and under
    ``$TLCORE_CACHE_DIR/model-checks``), so a file is checked once per content.

    Args:
        path: the model file.
        image_size: the input size used where the model's is free (default 224).
        limits: the bounds to enforce.

    Returns:
        The :class:`ModelFileReport` of the accepted file.

    Raises:
        UnsafeModelError: the file is refused; the message says why.
    """
    path = check_model_path(path)
    image_size = image_size or DEFAULT_IMAGE_SIZE
    verdict = _verdict(path, file_digest(path), [str(image_size)], limits)
    if not verdict["ok"]:
        raise UnsafeModelError(verdict["reason"].replace(verdict.get("file_name", path.name), path.name, 1))
    return ModelFileReport(**{**verdict["report"], "file_name": path.name})


def check_weights_file(path: str | Path, max_values: int, limits: ModelFileLimits = DEFAULT_MODEL_LIMITS) -> None:
    """Refuses a weights file (.h5) that declares more values than ``max_values``, or is not HDF5.

    The file's headers are read in a child process (HDF5 parsing of a hostile file stays
    out of the server); the verdict is cached by sha256.

    Raises:
        UnsafeModelError: the reason, in words.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        if handle.read(8) != HDF5_MAGIC:
            raise UnsafeModelError(f"{path.name} is not an HDF5 weights file (.h5). It is refused.")
    verdict = _verdict(path, file_digest(path), ["0", "--weights-only", str(max_values)], limits)
    if not verdict["ok"]:
        raise UnsafeModelError(verdict["reason"])


def _inspect_weights_file(path: Path, max_values: int, limits: ModelFileLimits) -> None:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            summary = _h5_summary(path, handle, limits, model_group="")
    except OSError as error:
        raise _unreadable(path, f"HDF5 error: {error}") from None
    if summary["all_values"] > max_values:
        name, count = summary["largest"]
        raise UnsafeModelError(
            f"{path.name} declares {summary['all_values']:,} weight values ('{name}' alone {count:,}), more than "
            f"the {max_values:,} this backbone can hold. It is refused."
        )


def _verdict(path: Path, digest: str, args: list[str], limits: ModelFileLimits) -> dict:
    limits_json = json.dumps(dataclasses.asdict(limits), sort_keys=True)
    key = (digest, tuple(args), limits_json)
    cache_file = _cache_file(key)
    with _VERDICTS_LOCK:
        if key in _VERDICTS:
            return _VERDICTS[key]
    if cache_file.is_file():
        with contextlib.suppress(OSError, ValueError):
            return _remember(key, json.loads(cache_file.read_text()))
    verdict = {**_run_child(path, args, limits_json, limits), "file_name": path.name}
    if not verdict.get("transient"):
        with contextlib.suppress(OSError):
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            cache_file.write_text(json.dumps(verdict))
    return _remember(key, verdict)


def _remember(key: tuple, verdict: dict) -> dict:
    with _VERDICTS_LOCK:
        if len(_VERDICTS) > 256:  # bounded: a long-lived server sees many uploads
            _VERDICTS.clear()
        _VERDICTS[key] = verdict
    return verdict


def _cache_file(key: tuple) -> Path:
    from tlcore.paths import cache_dir

    name = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]
    return cache_dir() / "model-checks" / f"{name}.json"


def _run_child(path: Path, args: list[str], limits_json: str, limits: ModelFileLimits) -> dict:
    root = str(Path(__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        "CUDA_VISIBLE_DEVICES": "-1",  # the trial runs on the CPU: it must not take GPU memory
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "OMP_NUM_THREADS": "1",
        "TF_NUM_INTRAOP_THREADS": "1",
        "TF_NUM_INTEROP_THREADS": "1",
    }
    command = [sys.executable, "-m", "tlcore.model_files", str(path.resolve()), args[0], limits_json, *args[1:]]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=limits.trial_seconds, cwd=root
        )
    except subprocess.TimeoutExpired:
        return {
            "ok": False,
            "transient": True,
            "reason": f"{path.name} took longer than {limits.trial_seconds} s to load and run once. It is refused.",
        }
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith(VERDICT_PREFIX):
            return json.loads(line[len(VERDICT_PREFIX) :])
    return {"ok": False, "reason": _crash_reason(path.name, completed, limits)}


def _crash_reason(name: str, completed: subprocess.CompletedProcess, limits: ModelFileLimits) -> str:
    code = completed.returncode
    if code < 0:
        with contextlib.suppress(ValueError):
            what = signal.Signals(-code).name
            if what in ("SIGXCPU", "SIGKILL"):
                return f"{name} used more than {limits.trial_seconds} s of CPU while being loaded. It is refused."
            if what == "SIGXFSZ":
                return f"{name} tried to write large temporary files while being loaded. It is refused."
            return f"{name} crashed the separate process that loaded it ({what}); the server is unharmed. Refused."
    tail = (completed.stderr or "").strip().splitlines()
    if any(_OUT_OF_MEMORY.search(line) for line in tail[-20:]):
        return _memory_reason(name, limits)
    detail = tail[-1][:200] if tail else f"exit status {code}"
    return f"{name} could not be loaded in a separate process ({detail}). It is refused."


# ----------------------------------------------------------------------------- step 3: load in this process


def load_model_file(path: str | Path, image_size: int | None = None, limits: ModelFileLimits = DEFAULT_MODEL_LIMITS):
    """Loads a visitor's Keras model file after :func:`check_model_file` accepted it.

    Loaded with ``safe_mode=True`` and ``compile=False``; Keras' global settings are
    checked around the load, and the file's sha256 again after it (a file replaced
    between the check and the load is refused).

    Args:
        path: a ``.keras``, ``.h5`` or ``.hdf5`` file.
        image_size: the input size used where the model's is free (default 224).
        limits: the bounds to enforce.

    Returns:
        The Keras model.

    Raises:
        UnsafeModelError: the file is refused or could not be loaded; the reason in words.
    """
    path = check_model_path(path)
    digest = file_digest(path)
    check_model_file(path, image_size, limits)
    import keras

    import tlcore.saved_model  # noqa: F401  (registers Preprocess, the studio's own layer)

    with keras_settings_guard(path.name):
        try:
            model = keras.models.load_model(path, compile=False, safe_mode=True)
        except Exception as error:  # noqa: BLE001  - any failure here means "unusable file"
            raise _unreadable(path, _first_line(error)) from None
    if file_digest(path) != digest:
        raise UnsafeModelError(f"{path.name} changed while it was being checked. Upload it again.")
    return model


def load_saved_model(path: str | Path):
    """Loads a classifier the studio saved (a run's ``model.keras``) with ``safe_mode=True``.

    Runs are written by this server, or put in the runs folder by whoever runs it, so
    the file is inspected (:func:`inspect_model_file`: allow-listed layers, no functions
    or paths, bounded sizes) but not trial-run in a child process; a visitor's own file
    goes through :func:`load_model_file`.

    Raises:
        UnsafeModelError: the file is missing, corrupt or refused; the reason in words.
    """
    path = Path(path)
    inspect_model_file(path)
    import keras

    import tlcore.saved_model  # noqa: F401  (registers Preprocess, the studio's own layer)

    with keras_settings_guard(path.name):
        try:
            return keras.models.load_model(path, compile=False, safe_mode=True)
        except Exception as error:  # noqa: BLE001  - any failure here means "unusable file"
            raise _unreadable(path, _first_line(error)) from None


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
