"""Step 2 for a visitor's model file: load and run it once in a child process, with limits.

:func:`check_model_file` runs :func:`tlcore.model.files.inspect_model_file` and then a
trial, both in a child process (``python -m tlcore.model.file_trial``) under address-space,
CPU-time and file-size limits and a wall-clock timeout: the file is loaded with
``safe_mode=True`` and called on one batch of zeros, and Keras' global settings must be
unchanged. HDF5 parsing of a hostile file and anything the load does stay out of the
server; a file that still misbehaves fails with a message while the server lives. The
verdict is cached by the file's sha256, so each content is checked once.
:func:`load_model_file` then loads the accepted file in this process.
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
from pathlib import Path

from tlcore.caches import BoundedCache
from tlcore.errors import UnsafeModelError, first_line
from tlcore.model.files import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_MODEL_LIMITS,
    HDF5_MAGIC,
    ModelFileLimits,
    ModelFileReport,
    check_model_path,
    file_digest,
    h5_summary,
    human_size,
    inspect_model_file,
    unreadable,
)

VERDICT_PREFIX = "TLCORE_MODEL_VERDICT "
# How running out of the child's address space shows (Python, C++, the dynamic loader, TensorFlow).
_OUT_OF_MEMORY = re.compile(r"MemoryError|bad_alloc|Cannot allocate memory|failed to map segment|OOM|ResourceExhausted")


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


def register_classes(report: ModelFileReport) -> None:
    """Registers the layer classes an accepted file names: tlcore's ``Preprocess``, KerasHub's when it holds them."""
    import tlcore.model.saved_layer  # noqa: F401  (registers Preprocess, the studio's own layer)

    if report.keras_hub:
        import keras_hub  # noqa: F401  (registers the KerasHub classes tlcore.model.hub_layers accepts)


def _trial(path: Path, report: ModelFileReport) -> None:
    """Loads the file with safe mode and runs it on one batch of zeros (in the child process)."""
    import keras
    import numpy as np

    register_classes(report)
    with keras_settings_guard(path.name):
        try:
            model = keras.models.load_model(path, compile=False, safe_mode=True)
        except MemoryError:
            raise
        except Exception as error:  # noqa: BLE001  - any failure here means "unusable file"
            raise unreadable(path, first_line(error, 200)) from None
        batch = [np.zeros((1, *[d or report.image_size for d in shape]), "float32") for shape in report.input_shapes]
        try:
            model(batch[0] if len(batch) == 1 else batch, training=False)
        except Exception as error:  # noqa: BLE001
            raise UnsafeModelError(
                f"{path.name} loads but fails on a batch of {report.image_size}x{report.image_size} images: "
                f"{first_line(error, 200)}"
            ) from None


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
    """``python -m tlcore.model.file_trial PATH IMAGE_SIZE LIMITS_JSON [--weights-only MAX]``."""
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
        verdict = {"ok": False, "reason": reason or unreadable(path, first_line(error, 200)).args[0]}
    print(VERDICT_PREFIX + json.dumps(verdict), flush=True)
    return 0


def _memory_reason(name: str, limits: ModelFileLimits) -> str:
    return (
        f"{name} needed more than the {human_size(limits.trial_memory_bytes)} memory limit while being loaded and "
        "run once in a separate process. It is refused."
    )


# Verdicts by (file digest, arguments): a long-lived server sees many uploads; the disk keeps the rest.
_VERDICTS = BoundedCache("model-file verdicts", max_items=256)


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
            summary = h5_summary(path, handle, limits, model_group="")
    except OSError as error:
        raise unreadable(path, f"HDF5 error: {error}") from None
    if summary["all_values"] > max_values:
        name, count = summary["largest"]
        raise UnsafeModelError(
            f"{path.name} declares {summary['all_values']:,} weight values ('{name}' alone {count:,}), more than "
            f"the {max_values:,} this backbone can hold. It is refused."
        )


def _verdict(path: Path, digest: str, args: list[str], limits: ModelFileLimits) -> dict:
    limits_json = json.dumps(dataclasses.asdict(limits), sort_keys=True)
    key = (digest, tuple(args), limits_json)
    # A model whose input size the file fixes gets one verdict whatever size is chosen.
    fixed_key = (digest, ("fixed-size", *args[1:]), limits_json)
    for candidate in (key, fixed_key):
        verdict = _cached(candidate)
        if verdict is not None:
            return verdict
    verdict = {**_run_child(path, args, limits_json, limits), "file_name": path.name}
    if not verdict.get("transient"):
        _store(key, verdict)
        if verdict["ok"] and not verdict.get("report", {}).get("free_size", True):
            _store(fixed_key, verdict)
    return verdict


def _cached(key: tuple) -> dict | None:
    verdict = _VERDICTS.get(key)
    if verdict is not None:
        return verdict
    with contextlib.suppress(OSError, ValueError):
        return _remember(key, json.loads(_cache_file(key).read_text()))
    return None


def _store(key: tuple, verdict: dict) -> None:
    _remember(key, verdict)
    with contextlib.suppress(OSError):
        cache_file = _cache_file(key)
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(verdict))


def _remember(key: tuple, verdict: dict) -> dict:
    return _VERDICTS.put(key, verdict)


def _cache_file(key: tuple) -> Path:
    from tlcore.paths import cache_dir

    name = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]
    return cache_dir() / "model-checks" / f"{name}.json"


def _run_child(path: Path, args: list[str], limits_json: str, limits: ModelFileLimits) -> dict:
    root = str(Path(__file__).resolve().parents[2])  # the folder holding tlcore/
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        "CUDA_VISIBLE_DEVICES": "-1",  # the trial runs on the CPU: it must not take GPU memory
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "OMP_NUM_THREADS": "1",
        "TF_NUM_INTRAOP_THREADS": "1",
        "TF_NUM_INTEROP_THREADS": "1",
    }
    command = [sys.executable, "-m", "tlcore.model.file_trial", str(path.resolve()), args[0], limits_json, *args[1:]]
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
    report = check_model_file(path, image_size, limits)
    import keras

    register_classes(report)

    with keras_settings_guard(path.name):
        try:
            model = keras.models.load_model(path, compile=False, safe_mode=True)
        except Exception as error:  # noqa: BLE001  - any failure here means "unusable file"
            raise unreadable(path, first_line(error, 200)) from None
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
    report = inspect_model_file(path)
    import keras

    register_classes(report)

    with keras_settings_guard(path.name):
        try:
            return keras.models.load_model(path, compile=False, safe_mode=True)
        except Exception as error:  # noqa: BLE001  - any failure here means "unusable file"
            raise unreadable(path, first_line(error, 200)) from None


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
