"""A visitor's Keras model file: proven harmless before the server process touches it.

``safe_mode`` is not a sandbox: it refuses Lambda bytecode, but a file can still name
Keras' own functions (``keras.config.set_epsilon`` as a Lambda's function changes Keras
for the whole process), declare a ``Dense(10**9)`` (gigabytes allocated when the layer is
built), a 10,000-filter convolution (a gigabyte per image when it runs), or archive
members and weights declared just under Keras' own 4 GiB guards. So a model file goes
through two steps, and the server loads it only when both pass:

1. :func:`inspect_model_file` (this module) reads the ``.keras`` archive's config.json
   or the .h5 file's ``model_config`` **without deserializing anything**: the config is
   walked against an allow-list (:mod:`tlcore.model.file_config`: no Lambda, no Python
   function, no file path, only Keras built-ins this studio can size and tlcore's own
   ``Preprocess``), the parameters and the per-image activations at the chosen input
   size are computed from the config (:mod:`tlcore.model.layer_sizes`) and bounded, and the
   archive's members, sizes and the weights' declared shapes are bounded.
2. :func:`tlcore.model.file_trial.check_model_file` runs that inspection and a trial load
   with one dummy batch in a child process with limits (verdict cached by sha256);
   :func:`tlcore.model.file_trial.load_model_file` then loads the file in the server.

This module is THE "is this a model file" check: its suffixes, :func:`is_model_file_name`
and :func:`check_model_path` are what the config, the run store and the registry use.
Every refusal is an :class:`~tlcore.errors.UnsafeModelError` whose message names the
real reason (docs/LIMITS.md lists the bounds and their messages).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tlcore.errors import UnsafeModelError
from tlcore.model.file_config import OWN_LAYERS, check_config
from tlcore.model.hub_layers import SIZE_RULES, uses_keras_hub
from tlcore.model.layer_rules import SizeError, show_shape, values_in
from tlcore.model.layer_sizes import size_model

MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")
ARCHIVE_MEMBERS = ("config.json", "metadata.json", "model.weights.h5")
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


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
        free_size: whether an image input took ``image_size`` (the file leaves it free).
        keras_hub: whether it holds KerasHub classes (loading it imports keras_hub).
    """

    file_name: str
    parameters: int
    activation_bytes: int
    image_size: int
    input_shapes: list
    layers: int
    free_size: bool = True
    keras_hub: bool = False


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


def human_size(count: int) -> str:
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
        raise unreadable(path, "the file is empty")
    if path.suffix.lower() == ".keras" and not head.startswith(ZIP_MAGIC):
        raise unreadable(path, f"a .keras file is a zip archive, and this one starts with {head!r}")
    if path.suffix.lower() != ".keras" and head != HDF5_MAGIC:
        raise unreadable(path, f"an .h5 model file is an HDF5 file, and this one starts with {head!r}")
    return path


def unreadable(path: Path, detail: str) -> UnsafeModelError:
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
        size = size_model(config, image_size, {**{name: rule for name, rule in OWN_LAYERS.values()}, **SIZE_RULES})
    except SizeError as error:
        raise UnsafeModelError(f"{path.name} cannot be sized before loading: {error}. It is refused.") from None
    _check_sizes(path.name, size, image_size, limits)
    _check_declared_weights(path.name, weights, size.parameters, limits)
    return ModelFileReport(
        path.name,
        size.parameters,
        size.activation_values * 4,
        image_size,
        size.input_shapes,
        len(size.layers),
        size.free_size,
        uses_keras_hub(config),
    )


def _read_archive(path: Path, limits: ModelFileLimits) -> tuple[dict, dict]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise unreadable(path, f"the zip archive is damaged: {error}") from None
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
                f"{path.name} expands to {human_size(declared)} ('{biggest.filename}' alone declares "
                f"{human_size(biggest.file_size)}), over the limit of {human_size(limits.max_archive_bytes)}. It is refused."
            )
        extra = [member.filename for member in members if member.filename not in ARCHIVE_MEMBERS]
        if extra:
            raise UnsafeModelError(
                f"{path.name} holds '{extra[0]}' besides the model's config, metadata and weights; model files "
                "with asset files (vocabularies, lookup tables) are not accepted here. It is refused."
            )
        if "config.json" not in archive.namelist() or "model.weights.h5" not in archive.namelist():
            raise unreadable(path, "the archive has no config.json or no model.weights.h5")
        config = _json(path, _read_capped(archive, "config.json", limits.max_config_bytes, path), "config.json")
        if "metadata.json" in archive.namelist():
            _json(path, _read_capped(archive, "metadata.json", limits.max_config_bytes, path), "metadata.json")
        with archive.open("model.weights.h5") as handle:
            weights = h5_summary(path, handle, limits, model_group="")
    return config, weights


def _read_capped(archive: zipfile.ZipFile, name: str, cap: int, path: Path) -> bytes:
    """A member's bytes, read in chunks and stopped past ``cap`` whatever its header says."""
    chunks, total = [], 0
    try:
        with archive.open(name) as handle:
            while chunk := handle.read(1 << 20):
                total += len(chunk)
                if total > cap:
                    raise UnsafeModelError(
                        f"{path.name}: its {name} is over the limit of {human_size(cap)}. It is refused."
                    )
                chunks.append(chunk)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise unreadable(path, f"{name} could not be read: {error}") from None
    return b"".join(chunks)


def _json(path: Path, data: bytes | str, what: str):
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise unreadable(path, f"its {what} is not valid JSON: {error}") from None


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
                    f"{path.name}: its model_config is over the limit of {human_size(limits.max_config_bytes)}. "
                    "It is refused."
                )
            config = _json(path, raw, "model_config")
            weights = h5_summary(path, handle, limits, model_group="model_weights")
    except OSError as error:
        raise unreadable(path, f"HDF5 error: {error}") from None
    return config, weights


def h5_summary(path: Path, source, limits: ModelFileLimits, model_group: str) -> dict:
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
        raise unreadable(path, f"its weights are not a readable HDF5 file: {error}") from None
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
            f"{image_size}x{image_size} pixels; all its layer outputs take {human_size(activation_bytes)} per image, "
            f"over the limit of {human_size(limits.max_activation_bytes)}. Choose a smaller input size or model."
        )
