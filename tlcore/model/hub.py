"""KerasHub image backbones (ViT, DINOv2, CLIP/SigLIP image encoders, ResNet, EfficientNet).

A KerasHub backbone is named ``hub:SOURCE``, where SOURCE is a preset name
(``vit_base_patch16_224_imagenet``), a ``kaggle://`` or ``hf://`` handle, or a local
preset folder (what ``save_to_preset`` writes: the offline route). It is loaded with
``keras_hub.models.Backbone.from_preset``, preprocessed by its own image converter
(inside the feature model, so pixels arrive as 0..255 like every other backbone), and
its output pooled the way its family expects, into a 1x1 feature map the studio's head
takes like any other: a transformer's class token (ViT, DINOv2, CLIP), a mean over
tokens where there is none, a pooled vector (SigLIP) or a convolutional feature map
(ResNet, EfficientNet) as it is.

They are backbones like any other: the leaderboard, training (phase 1 on cached
features; phase 2 unfreezes the whole KerasHub backbone, the one weighted layer of the
feature model: KerasHub's blocks live inside it and get no block labels here), Predict,
Evaluate and exports. The pooling is built from plain Keras layers (``Cropping1D`` keeps
the class token, ``GlobalAveragePooling1D`` averages, ``Reshape``) so the saved
``model.keras`` holds only layers the saved-model check sizes. That check accepts exactly
the KerasHub classes of these families (:mod:`tlcore.model.hub_layers` says why and how);
a model file naming any other KerasHub class is refused.
"""

from __future__ import annotations

from pathlib import Path

from tlcore.errors import StudioError, WeightsUnavailableError, first_line

HUB_PREFIX = "hub:"
REMOTE_PREFIXES = ("kaggle://", "hf://")
# Presets offered by name: one per family the studio knows how to pool.
HUB_PRESETS = (
    "vit_base_patch16_224_imagenet",
    "dinov2_small",
    "siglip_base_patch16_224",
    "clip_vit_base_patch16",
    "resnet_50_imagenet",
    "efficientnet_b0_ra_imagenet",
)
# Backbone class → how its token sequence becomes one vector (3-D outputs only).
TOKEN_POOLING = {"ViTBackbone": "class_token", "DINOV2Backbone": "class_token", "CLIPVisionEncoder": "class_token"}


def hub_prompt(current: str) -> str:
    """What the Model page says while no KerasHub source is named: the choices, and that nothing changed yet."""
    return (
        f"Name a KerasHub preset ({', '.join(HUB_PRESETS[:3])}, …), a kaggle:// or hf:// handle, or a local "
        f"preset folder (offline: a folder written by save_to_preset). Presets download on first use (hundreds "
        f"of MB). Until then your model stays {current}."
    )


def is_hub_name(backbone: str) -> bool:
    """True for ``hub:…`` backbone names."""
    return backbone.startswith(HUB_PREFIX)


def hub_source(backbone: str) -> str:
    """The preset name, handle or folder behind ``hub:…``.

    Raises:
        StudioError: an empty source, or a folder without a KerasHub ``config.json``.
    """
    source = backbone[len(HUB_PREFIX) :].strip()
    if source in HUB_PRESETS or source.startswith(REMOTE_PREFIXES):
        return source
    folder = Path(source).expanduser()
    if not source or not (folder / "config.json").is_file():
        raise StudioError(
            f"Unknown KerasHub backbone. Expected hub: followed by a preset ({', '.join(HUB_PRESETS)}), a kaggle:// "
            f"or hf:// handle, or a preset folder with config.json inside. Received: {backbone!r}."
        )
    return str(folder)


def check_hub_source(source: str, owner: str | None, downloads: bool) -> str:
    """The ``hub:…`` backbone a dashboard visitor may load, checked before anything is read or fetched.

    Args:
        source: what the visitor typed: a preset name, a ``kaggle://``/``hf://`` handle or a folder.
        owner: the visitor's owner id (``tlcore.paths.check_allowed``).
        downloads: whether this server lets visitors download (``tlcore.paths.downloads_allowed``).

    Returns:
        ``hub:SOURCE`` with a folder resolved.

    Raises:
        StudioError: a download this server does not allow (the message gives the
            local-folder route), a folder the visitor may not read, or not a preset folder.
    """
    from tlcore.paths import DOWNLOADS_REFUSED, check_allowed

    source = (source or "").strip()
    if source in HUB_PRESETS or source.startswith(REMOTE_PREFIXES):
        if not downloads:
            raise StudioError(
                DOWNLOADS_REFUSED + "To use it without downloads, on a connected machine run "
                f"keras_hub.models.Backbone.from_preset({source!r}).save_to_preset('folder') and the same with "
                "keras_hub.layers.ImageConverter, copy the folder into one of this server's data folders "
                "(TLCORE_DATA_ROOTS) and give its path."
            )
        return HUB_PREFIX + source
    if source and "/" not in source and not source.startswith(("~", ".")):  # a name, not a folder path
        raise StudioError(
            f"Unknown KerasHub preset {source!r}. Known presets: {', '.join(HUB_PRESETS)}; or a kaggle:// or "
            "hf:// handle, or the path of a local preset folder (e.g. /data/presets/dinov2_small)."
        )
    folder = check_allowed(Path(source).expanduser(), owner) if source else source
    return HUB_PREFIX + hub_source(f"{HUB_PREFIX}{folder}")


def hub_feature_model(model_config, seed: int = 0) -> tuple:
    """Builds the feature model of a ``hub:…`` backbone (see the module docstring).

    Returns:
        ``(model, input size, weights id)``: :func:`tlcore.model.backbones.load_backbone`
        makes its ``Backbone`` of them.

    Raises:
        WeightsUnavailableError: the preset could not be downloaded; the message says how
            to save it on a connected machine and use the folder.
        StudioError: the source is not a loadable KerasHub image backbone.
    """
    import keras

    source = hub_source(model_config.backbone)
    keras.utils.set_random_seed(seed)
    hub_backbone, converter = _from_preset(source)
    size = int(converter.image_size[0]) if converter.image_size else int(hub_backbone.input.shape[1] or 224)
    inputs = keras.Input((size, size, 3), name="image")
    features = hub_backbone(converter(inputs))
    pooled = _as_feature_map(features, TOKEN_POOLING.get(type(hub_backbone).__name__, "mean"))
    model = keras.Model(inputs, pooled, name=f"hub_{type(hub_backbone).__name__}")
    return model, size, _weights_id(source)


def _from_preset(source: str):
    import keras_hub

    remote = not Path(source).is_dir()
    try:
        hub_backbone = keras_hub.models.Backbone.from_preset(source)
        converter = keras_hub.layers.ImageConverter.from_preset(source)
    except Exception as error:  # downloads fail in many ways (DNS, HTTP, auth): all mean "not available"
        if remote:
            raise WeightsUnavailableError(download_failure_message(source, error)) from None
        raise StudioError(f"{source} is not a loadable KerasHub image preset ({first_line(error, 200)}).") from None
    encoder = getattr(hub_backbone, "vision_encoder", None)  # CLIP/SigLIP: the image half
    return (encoder or hub_backbone), converter


def download_failure_message(source: str, error: BaseException) -> str:
    """Why ``source`` could not be downloaded, and the offline route (a local preset folder)."""
    from tlcore.text.models import download_reason

    return (
        f"Could not download the KerasHub preset {source!r}: {download_reason(error)}. On a connected machine run "
        f"keras_hub.models.Backbone.from_preset({source!r}).save_to_preset('folder') and "
        f"keras_hub.layers.ImageConverter.from_preset({source!r}).save_to_preset('folder'), copy the folder here "
        "and use the backbone hub:/path/to/folder."
    )


def _as_feature_map(features, pooling: str):
    """Tokens, a vector or a feature map → a 4-D feature map (1x1 unless it already was one)."""
    import keras

    if len(features.shape) == 4:
        return features
    if len(features.shape) == 3:
        if pooling == "class_token":
            tokens = int(features.shape[1])
            features = keras.layers.Cropping1D((0, tokens - 1), name="class_token")(features)
        else:
            features = keras.layers.GlobalAveragePooling1D(name="mean_token")(features)
    return keras.layers.Reshape((1, 1, int(features.shape[-1])), name="as_feature_map")(features)


def _weights_id(source: str) -> str:
    """Identifies the weights for the feature cache: the folder's weights file, or the preset and version."""
    import keras_hub

    from tlcore.model.files import file_digest

    weights = Path(source) / "model.weights.h5"
    if weights.is_file():
        return f"hub-folder:{file_digest(weights)}"
    return f"hub:{source}:{keras_hub.__version__}"
