"""Loading, building and quantizing GPT-2 models.

Loaded models are cached per process and per (source, quantization): an int8 copy
never replaces the float32 model other sessions are generating with. The cache is the
only one (pages call :func:`load_gpt2`, they keep no copy of their own) and bounded:
two models and 8 GB (GPT-2 base is 0.5 GB in float32, extra large 6 GB).
"""

from __future__ import annotations

import json
from pathlib import Path

from tlcore.caches import BoundedCache
from tlcore.errors import StudioError, first_line
from tlcore.paths import DOWNLOADS_REFUSED

PRESETS = ("gpt2_base_en", "gpt2_medium_en", "gpt2_large_en", "gpt2_extra_large_en")
QUANTIZATIONS = ("none", "int8")
SPEED_LABELS = {"none": "standard (float32)", "int8": "fast (int8)"}  # the Text page's "Speed" for each
SPEED_HELP = (
    "fast (int8) stores the weights as 8-bit integers and compiles with XLA: about 1.5x the tokens/s on a CPU for "
    "a small loss in quality (see the README). The first click with new settings compiles; later clicks run warm."
)
# Where the Text page's model comes from: a preset name, a Hugging Face handle, a preset folder.
MODEL_SOURCE_KINDS = {
    "preset": "KerasHub preset (downloaded once)",
    "hf": "Hugging Face (hf://…)",
    "local": "Local preset folder",
}

_MODELS = BoundedCache("GPT-2 models", max_items=2, max_bytes=8 * 2**30)


def load_gpt2(source: str, quantization: str = "none"):
    """A ``GPT2CausalLM`` from a preset name, ``hf://`` handle or local preset directory (cached).

    Args:
        source: a preset name, an ``hf://`` handle or a preset folder.
        quantization: ``"none"`` (float32) or ``"int8"`` (see :func:`quantize`); each
            is cached separately.

    Raises:
        StudioError: unknown name, missing directory, a download that failed, or an
            unknown quantization; the message says what to do.
    """
    source = (source or "").strip()
    if not source:
        raise StudioError(
            f"No model given. Expected a preset ({', '.join(PRESETS)}), an hf:// handle or a preset folder."
        )
    _check_quantization(quantization)
    return _MODELS.get_or_create((source, quantization), lambda: quantize(load_gpt2_fresh(source), quantization))


REMOTE_PREFIXES = ("hf://", "kaggle://")
# The way forward without downloads: fine-tuning here needs a GPT-2 to start from, so "a folder
# saved by fine-tuning" alone goes in a circle. A preset saved on a connected machine does not.
PRESET_FOLDER_HOWTO = (
    "To use GPT-2 without downloads, save a KerasHub preset folder on a machine with internet: "
    'keras_hub.models.GPT2CausalLM.from_preset("gpt2_base_en").save_to_preset("gpt2_base_en"), '
    "copy that folder into one of this server's data folders (TLCORE_DATA_ROOTS), then choose "
    "'Local preset folder' and give its path. A preset folder saved by a fine-tune here works too."
)
DOWNLOADS_OFF = DOWNLOADS_REFUSED + PRESET_FOLDER_HOWTO
# Files that hold only a GPT-2 tokenizer: the original BPE pair, Hugging Face's, or a KerasHub preset's assets.
TOKENIZER_FILES = ("encoder.json", "vocab.bpe", "vocab.json", "merges.txt", "tokenizer.json")


def is_remote(source: str) -> bool:
    """Whether loading ``source`` downloads it (a preset name, ``hf://`` or ``kaggle://``)."""
    source = (source or "").strip()
    return source in PRESETS or source.startswith(REMOTE_PREFIXES)


def check_model_source(source: str, store, owner: str | None, downloads: bool) -> str:
    """The model source a dashboard visitor may load, checked before anything is read or fetched.

    A download only where the operator allows it; a folder inside the run store only if
    the visitor may see that run (``store``: their :class:`~tlcore.runs.store.RunStore`); any
    other folder only inside the folders they may read (``tlcore.paths.check_allowed``).

    Args:
        source: what the visitor chose or typed.
        store: the run store as this visitor sees it.
        owner: the visitor's owner id.
        downloads: whether this server lets visitors download (``tlcore.paths.downloads_allowed``).

    Returns:
        The source to load (a folder resolved).

    Raises:
        StudioError: a download that is not allowed, or a folder the visitor may not read.
    """
    from tlcore.paths import check_allowed

    source = (source or "").strip()
    if is_remote(source):
        if not downloads:
            raise StudioError(DOWNLOADS_OFF)
        return source
    if not source:
        return source  # load_gpt2 says what to give
    path = Path(source).expanduser().resolve()
    runs = Path(store.root).resolve()
    if path.is_relative_to(runs) and path != runs:
        store.get(path.relative_to(runs).parts[0])  # "No run named …" unless the visitor may see that run
        return str(path)
    return str(check_allowed(path, owner))


def load_gpt2_fresh(source: str):
    """Like :func:`load_gpt2` but always a new float32 model object (fine-tuning trains its own copy)."""
    source = (source or "").strip()
    is_remote = source in PRESETS or source.startswith(REMOTE_PREFIXES)
    if not is_remote:
        path = Path(source).expanduser()
        if not (path / "config.json").is_file():
            raise StudioError(not_a_preset_message(source, path))
        source = str(path)
    import keras_hub

    try:
        return keras_hub.models.GPT2CausalLM.from_preset(source)
    except Exception as error:  # downloads fail in many ways (DNS, HTTP, auth): all mean "not available"
        if is_remote:
            raise StudioError(download_failure_message(source, error)) from None
        raise StudioError(f"{source} is not a loadable GPT-2 preset folder ({first_line(error, 200)}).") from None


def not_a_preset_message(source: str, path: Path) -> str:
    """Why ``path`` cannot be loaded as GPT-2 (it has no preset ``config.json``), and what works instead."""
    tokenizer = sorted(name for name in TOKENIZER_FILES if (path / name).is_file()) if path.is_dir() else []
    if tokenizer:
        return (
            f"{source} has a tokenizer but no model weights (it holds {', '.join(tokenizer)}; a GPT-2 preset "
            f"folder also holds config.json and model.weights.h5). {PRESET_FOLDER_HOWTO}"
        )
    return (
        f"Unknown model {source!r}. Expected a preset name ({', '.join(PRESETS)}), an hf:// handle, "
        f"or a GPT-2 preset folder (with config.json inside). {PRESET_FOLDER_HOWTO}"
    )


def download_failure_message(source: str, error: BaseException) -> str:
    """One sentence on why ``source`` could not be downloaded and what to do instead."""
    return (
        f"Could not download {source!r}: {download_reason(error)}. Download it on a connected machine with "
        f"keras_hub.models.GPT2CausalLM.from_preset({source!r}).save_to_preset('gpt2-folder'), copy the "
        "folder into one of this server's data folders (TLCORE_DATA_ROOTS), choose 'Local preset folder' "
        "and point to that folder."
    )


def download_reason(error: BaseException) -> str:
    """Why a KerasHub download failed, in words (offline, refused, no such model, or the error)."""
    detail = f"{type(error).__name__}: {error}".lower()
    offline_marks = ("getaddrinfo", "name resolution", "connection", "max retries", "timed out", "offline", "network")
    if any(mark in detail for mark in offline_marks):
        reason = "this machine cannot reach the download server (no internet connection, or it is blocked)"
    elif any(code in detail for code in ("401", "403", "unauthorized", "forbidden")):
        reason = "the server refused access (the model may need a login or accepted licence)"
    elif "404" in detail or "not found" in detail:
        reason = "the server has no model under that name"
    else:
        reason = f"the download failed ({first_line(error, 120)})"
    return reason


def forget_model(source: str) -> None:
    """Drops every cached model (all quantizations) loaded from ``source``."""
    _MODELS.discard_where(lambda key: key[0] == source)


def quantize(model, mode: str = "int8"):
    """Quantizes a model's weights in place and returns it.

    ``"int8"`` stores every dense and embedding kernel as int8 with a per-channel
    scale: a quarter of the memory, and with XLA about 1.5x the float32 speed on a
    CPU (bench/gpt2_generate.py). Quantize a copy (:func:`load_gpt2` with
    ``quantization="int8"``), never a model someone else is using.

    Raises:
        StudioError: an unknown mode, or a model that is already quantized.
    """
    _check_quantization(mode)
    if mode == "none":
        return model
    if quantization_of(model) != "none":
        raise StudioError(f"The model is already quantized ({quantization_of(model)}). Load a float32 copy first.")
    import warnings

    with warnings.catch_warnings():  # "Layer Dropout does not have a `quantize` method": expected, not news
        warnings.simplefilter("ignore")
        model.backbone.quantize(mode)  # the backbone only: the tokenizer layer has nothing to quantize
    # Generate functions compiled before are keyed by the weights' quantization, so none is reused.
    return model


def quantization_of(model) -> str:
    """``"int8"`` when the model's dense layers hold int8 kernels, else ``"none"``."""
    for layer in model.backbone._flatten_layers(include_self=False):
        mode = getattr(getattr(layer, "dtype_policy", None), "quantization_mode", None)
        if mode:
            return str(mode)
    return "none"


def _check_quantization(mode: str) -> None:
    if mode not in QUANTIZATIONS:
        raise StudioError(f"Unknown quantization. Expected one of {list(QUANTIZATIONS)}. Received: {mode!r}.")


def context_length(model) -> int:
    return int(model.backbone.max_sequence_length)


def build_tokenizer(vocabulary_json: str | Path, merges_bpe: str | Path):
    """The GPT-2 byte-level BPE tokenizer from OpenAI's ``encoder.json`` and ``vocab.bpe``."""
    import keras_hub

    vocabulary = json.loads(Path(vocabulary_json).read_text(encoding="utf-8"))
    merges = [
        line
        for line in Path(merges_bpe).read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#version")
    ]
    return keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=merges)


def build_gpt2(
    tokenizer,
    num_layers: int = 12,
    num_heads: int = 12,
    hidden_dim: int = 768,
    intermediate_dim: int = 3072,
    max_sequence_length: int = 1024,
    sequence_length: int = 128,
    seed: int = 0,
):
    """A randomly initialised GPT-2 (defaults: the 124M gpt2_base_en configuration)."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_layers=num_layers,
        num_heads=num_heads,
        hidden_dim=hidden_dim,
        intermediate_dim=intermediate_dim,
        max_sequence_length=max_sequence_length,
    )
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer=tokenizer, sequence_length=sequence_length)
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)
