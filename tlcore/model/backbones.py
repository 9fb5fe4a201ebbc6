"""The backbone registry: one table of per-architecture facts, and weight loading.

The table is plain data (no TensorFlow import), so the dashboard's home page can list
the backbones before TensorFlow has loaded. Constructors and ``preprocess_input``
functions are looked up in ``keras.applications`` only when a backbone is built.
Preprocessing by name lives in :mod:`tlcore.model.preprocessing`; a visitor's Keras model
file is checked and loaded by :mod:`tlcore.model.files`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlcore.errors import StudioError, UnsafeModelError, WeightsUnavailableError
from tlcore.model.downloads import known_failure, remember_failure
from tlcore.model.file_trial import check_weights_file
from tlcore.model.files import MODEL_FILE_SUFFIXES, file_digest, is_model_file_name
from tlcore.paths import keras_models_dir


@dataclass(frozen=True)
class BackboneSpec:
    """Facts about one ``keras.applications`` architecture.

    Attributes:
        name: the registry key and the ``keras.applications`` constructor name.
        preprocess: the default preprocessing, a name in
            :data:`tlcore.model.preprocessing.PREPROCESSING`. For a ``keras.applications``
            architecture it is also the submodule holding ``decode_predictions``.
        default_size: input size the ImageNet weights were trained at.
        min_size: the smallest input the architecture accepts.
        block_pattern: a regex over layer names; the first group that matches is
            the layer's block label ("unfreeze from block N"). Layers that match no
            group belong to the block before them (``"stem"`` at the start). A group
            named ``end`` matches names that close a block instead (see
            :func:`assign_blocks`).
        imagenet_top: whether an ImageNet ``include_top`` variant exists (for
            ImageNet top-5 predictions before any training).
        parameters_millions: size of the model, shown in the UI.
        builder: a constructor in this module instead of ``keras.applications``.
        imagenet_weights: whether ImageNet weights can be downloaded for it.
    """

    name: str
    preprocess: str
    default_size: int
    min_size: int
    block_pattern: str
    imagenet_top: bool = True
    parameters_millions: float = 0.0
    builder: str | None = None
    imagenet_weights: bool = True


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("MobileNetV2", "mobilenet_v2", 224, 32, r"^(block_\d+)_", True, 3.5),
        BackboneSpec("EfficientNetB0", "efficientnet", 224, 32, r"^(?:(block\d)[a-z]_|(top)_)", True, 5.3),
        BackboneSpec("EfficientNetV2B0", "efficientnet_v2", 224, 32, r"^(?:(block\d)[a-z]_|(top)_)", True, 7.2),
        BackboneSpec("ResNet50", "resnet50", 224, 32, r"^(conv\d)_", True, 25.6),
        BackboneSpec("VGG16", "vgg16", 224, 32, r"^(block\d+)_", True, 138.4),
        BackboneSpec("DenseNet121", "densenet", 224, 32, r"^(conv\d)_", True, 8.1),
        BackboneSpec("Xception", "xception", 299, 71, r"^(block\d+)_", True, 22.9),
        # Inception names the concatenation that ENDS a block (mixed0 … mixed10); the stem's
        # layers have generic names, so they are labelled with the first block, mixed0.
        BackboneSpec("InceptionV3", "inception_v3", 299, 75, r"^(?P<end>mixed\d+)$", True, 23.9),
        # Not a transfer backbone: a compact CNN trained from scratch. It is the
        # offline default (no download needed) and the "without transfer" baseline;
        # its inputs are scaled to [-1, 1], which is what "mobilenet_v2" preprocessing does.
        BackboneSpec(
            "SmallCNN",
            preprocess="mobilenet_v2",
            default_size=64,
            min_size=32,
            block_pattern=r"^(block\d)_",
            imagenet_top=False,
            parameters_millions=0.1,
            builder="build_small_cnn",
            imagenet_weights=False,
        ),
    )
}


def get_spec(name: str) -> BackboneSpec:
    """Returns the registry entry for ``name``; raises a ``StudioError`` naming the choices."""
    if name not in BACKBONES:
        raise StudioError(
            f"Unknown backbone. Expected one of {sorted(BACKBONES)} or a Keras model file "
            f"({', '.join(MODEL_FILE_SUFFIXES)}). Received: backbone={name!r}."
        )
    return BACKBONES[name]


def assign_blocks(layer_names: list[str], block_pattern: str | None) -> list[str]:
    """Labels each layer with its block, in order (see ``BackboneSpec.block_pattern``).

    A name matched by a group named ``end`` closes its block instead of opening it
    (Inception's ``mixedN`` is the concatenation at the end of block N): the layers
    since the previous closing name belong to it, and layers after the last one to
    the last block.
    """
    if not block_pattern:
        return ["" for _ in layer_names]
    pattern = re.compile(block_pattern)
    if "end" in pattern.groupindex:
        return _labels_from_ends(layer_names, pattern)
    current = "stem"
    labels = []
    for name in layer_names:
        match = pattern.search(name)
        if match:
            current = next(group for group in match.groups() if group)
        labels.append(current)
    return labels


def _labels_from_ends(layer_names: list[str], pattern: re.Pattern) -> list[str]:
    labels: list[str] = []
    open_from = 0  # the first layer whose block is not known yet
    for index, name in enumerate(layer_names):
        match = pattern.search(name)
        if match and match["end"]:
            labels.extend([match["end"]] * (index + 1 - open_from))
            open_from = index + 1
    labels.extend([labels[-1] if labels else "stem"] * (len(layer_names) - open_from))
    return labels


def guess_family(layer_names: list[str]) -> BackboneSpec | None:
    """The registry entry whose block pattern labels most of these layers, if any labels most.

    Lets a bring-your-own backbone built from a known architecture (for example a
    fine-tuned MobileNetV2 saved to .h5) get "unfreeze from block N" and a default
    preprocessing too.
    """
    best, best_hits = None, 0
    for spec in BACKBONES.values():
        pattern = re.compile(spec.block_pattern)
        hits = sum(1 for name in layer_names if pattern.search(name))
        if hits > best_hits:
            best, best_hits = spec, hits
    return best if best_hits >= len(layer_names) / 2 else None


@dataclass
class Backbone:
    """A built feature extractor and what is needed to use it.

    Attributes:
        model: a Keras model from images (already preprocessed) to a 4-D feature map.
        name: registry name, or the model file's name.
        preprocess: preprocessing name applied before ``model``.
        image_size: input height and width.
        block_pattern: regex for block labels (``None`` when unknown).
        weights_id: identifies the weights exactly (part of the feature-cache key).
        pretrained: False for random initialisation (then BatchNorm must train).
    """

    model: Any
    name: str
    preprocess: str
    image_size: int
    block_pattern: str | None
    weights_id: str
    pretrained: bool = True


def load_backbone(model_config, seed: int = 0) -> Backbone:
    """Builds the backbone a :class:`~tlcore.config.ModelConfig` describes.

    Args:
        model_config: the model settings (backbone, weights, cut layer, preprocessing,
            image size).
        seed: seeds random initialisation when ``weights="none"``.

    Returns:
        A :class:`Backbone`.

    Raises:
        WeightsUnavailableError: ImageNet weights could not be downloaded, or a local
            weights file is missing.
        UnsafeModelError: a model file or weights file is refused (corrupt, unsafe, too
            big; see :mod:`tlcore.model.files`) or has no usable cut layer.
        StudioError: an unknown name, or an input size the architecture refuses.
    """
    if model_config.backbone not in BACKBONES and is_model_file_name(model_config.backbone):
        return _load_from_model_file(model_config)
    from tlcore.model.hub import hub_feature_model, is_hub_name

    if is_hub_name(model_config.backbone):
        model, size, weights_id = hub_feature_model(model_config, seed)
        return Backbone(model, model_config.backbone, "none", size, None, weights_id, pretrained=True)
    spec = get_spec(model_config.backbone)
    size = model_config.image_size or spec.default_size
    if size < spec.min_size:
        raise StudioError(
            f"{spec.name} needs inputs of at least {spec.min_size}x{spec.min_size} pixels. Received: image_size={size}."
        )
    weights, weights_id = _resolve_weights(spec, model_config.weights, seed)
    import keras

    keras.utils.set_random_seed(seed)
    constructor = globals()[spec.builder] if spec.builder else getattr(keras.applications, spec.name)
    download = _download_key(spec.name, size) if weights == "imagenet" else None
    if download is not None and (failed := known_failure(download)) is not None:
        raise failed  # failed a moment ago: said at once, not after another wait for the network
    try:
        model = constructor(weights=weights, include_top=False, input_shape=(size, size, 3))
    except Exception as error:  # keras raises a bare Exception on a failed download
        if download is not None:
            raise remember_failure(download, spec.name, error) from None
        raise StudioError(f"Could not build {spec.name} with weights {model_config.weights!r}: {error}") from None
    return Backbone(
        model=model,
        name=spec.name,
        preprocess=model_config.preprocess or spec.preprocess,
        image_size=size,
        block_pattern=spec.block_pattern,
        weights_id=weights_id,
        pretrained=weights is not None,
    )


def build_small_cnn(weights=None, include_top=False, input_shape=(64, 64, 3)):
    """SmallCNN: four conv-BN-ReLU blocks (16→128 filters), about 0.1 M parameters.

    Fast enough to train from scratch on a CPU in seconds; it has no pretrained weights.
    """
    import keras

    if weights is not None or include_top:
        raise StudioError("SmallCNN has no pretrained weights or classification top: use weights 'none'.")
    inputs = keras.Input(input_shape, name="input")
    x = inputs
    for index, filters in enumerate((16, 32, 64, 128), start=1):
        x = keras.layers.Conv2D(
            filters, 3, strides=2 if index == 1 else 1, padding="same", use_bias=False, name=f"block{index}_conv"
        )(x)
        # momentum 0.9: with few steps on a small dataset the moving statistics must settle fast.
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{index}_bn")(x)
        x = keras.layers.ReLU(name=f"block{index}_relu")(x)
        if index < 4:
            x = keras.layers.MaxPooling2D(name=f"block{index}_pool")(x)
    return keras.Model(inputs, x, name="small_cnn")


def _resolve_weights(spec: BackboneSpec, weights: str, seed: int) -> tuple[str | None, str]:
    if weights == "imagenet":
        if not spec.imagenet_weights:
            raise StudioError(
                f"{spec.name} has no ImageNet weights; it is trained from scratch. Choose weights 'none'."
            )
        return "imagenet", f"imagenet:{spec.name}"
    if weights in ("none", "", None):
        return None, f"random:{spec.name}:seed{seed}"
    path = Path(weights)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"Weights file not found: {weights}. Expected 'imagenet', 'none' or the path of a "
            f"{spec.name} weights file (.h5 / .weights.h5) without the classification top."
        )
    # A weights file is read whole by Keras before the shapes are compared: bound what it
    # declares by the architecture's size (with its top, plus a margin).
    check_weights_file(path, int(spec.parameters_millions * 1_250_000) + 100_000)
    return str(path), f"file:{file_digest(path)}"


@dataclass
class ImageNetClassifier:
    """A registry architecture with its ImageNet classification top (1000 classes).

    Attributes:
        model: the ``include_top=True`` Keras model with ImageNet weights.
        preprocess_input: scales 0..255 RGB images as the model expects.
        decode_predictions: turns its probabilities into ``(id, name, probability)``
            rows (downloads the class index once).
    """

    model: Any
    preprocess_input: Any
    decode_predictions: Any


def load_imagenet_classifier(name: str) -> ImageNetClassifier:
    """The ImageNet classifier of a registry backbone, for predictions before any training.

    Raises:
        StudioError: an unknown name, or an architecture without an ImageNet top.
        WeightsUnavailableError: the ImageNet weights could not be downloaded; the
            message names the file and where to put it.
    """
    spec = get_spec(name)
    if not spec.imagenet_top:
        raise StudioError(f"{spec.name} has no ImageNet classification top in keras.applications.")
    import keras

    module = getattr(keras.applications, spec.preprocess)
    download = _download_key(spec.name, "top")
    if (failed := known_failure(download)) is not None:
        raise failed
    try:
        model = getattr(keras.applications, spec.name)(weights="imagenet", include_top=True)
    except Exception as error:  # keras raises a bare Exception on a failed download
        raise remember_failure(download, spec.name, error) from None
    return ImageNetClassifier(model, module.preprocess_input, module.decode_predictions)


def block_names(backbone: Backbone) -> list[str]:
    """The backbone's block labels in order ("stem", "block_1", …): the "unfreeze from" choices.

    Empty when the architecture is unknown (a model file of an unrecognised family).
    """
    labels = assign_blocks([layer.name for layer in backbone.model.layers], backbone.block_pattern)
    return [label for label in dict.fromkeys(labels) if label]


def _download_key(name: str, variant) -> str:
    """One weights file (architecture, input size or "top") in one Keras cache folder."""
    return f"{keras_models_dir()}:{name}:{variant}"


def model_file_facts(path: str | Path) -> dict:
    """What the Model page offers for a visitor's model file: ``{"layers": cut candidates, "image_size": its
    own input size or None}`` (loaded in a child process first, see :func:`tlcore.model.file_trial.load_model_file`)."""
    from tlcore.model.file_trial import load_model_file

    full = load_model_file(path)
    return {"layers": feature_layers(full), "image_size": full.input_shape[1]}


def feature_layers(model) -> list[str]:
    """Names of the layers (top level) whose output is a 4-D feature map: cut candidates."""
    import keras

    names = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if len(shape) == 4:
            names.append(layer.name)
    return names


def cut_model(model, cut_layer: str | None):
    """Returns the part of ``model`` from its input to ``cut_layer`` (a 4-D feature map).

    A nested model layer (e.g. the ``mobilenetv2_1.00_160`` inside a saved classifier)
    is returned whole; any other layer is cut out of the top-level graph. With no
    ``cut_layer``, the last layer with a 4-D output is used.
    """
    candidates = feature_layers(model)
    if cut_layer is None:
        if not candidates:
            raise UnsafeModelError(
                "This model has no layer with a 4-D (height x width x channels) output to use "
                "as a backbone. Expected a convolutional model."
            )
        cut_layer = candidates[-1]
    try:
        layer = model.get_layer(cut_layer)
    except ValueError:
        raise StudioError(
            f"No layer named {cut_layer!r} in the model. Layers with a feature-map output: {candidates}."
        ) from None
    if cut_layer not in candidates:
        raise StudioError(f"Layer {cut_layer!r} does not output a 4-D feature map. Choose one of {candidates}.")
    import keras

    if isinstance(layer, keras.Model) and len(layer.inputs) == 1:
        return layer
    return keras.Model(model.inputs, layer.output, name=f"cut_{cut_layer}")


# A model file that takes any input size is fed this size unless the setup names one.
MODEL_FILE_DEFAULT_SIZE = 224


def _load_from_model_file(model_config) -> Backbone:
    from tlcore.model.file_trial import load_model_file

    path = Path(model_config.backbone)
    full = load_model_file(path, model_config.image_size)
    cut = cut_model(full, model_config.cut_layer)
    input_shape = cut.input_shape
    size = input_shape[1]
    if size is None:
        size = model_config.image_size or MODEL_FILE_DEFAULT_SIZE
    elif model_config.image_size not in (None, size):
        raise StudioError(
            f"{path.name} takes {size}x{size} inputs. Expected image_size={size} or none (the model's own). "
            f"Received: image_size={model_config.image_size}."
        )
    if input_shape[-1] != 3:
        raise StudioError(f"Expected a backbone taking RGB images (3 channels). Received input shape {input_shape}.")
    family = guess_family([layer.name for layer in cut.layers])
    return Backbone(
        model=cut,
        name=path.name,
        preprocess=model_config.preprocess or (family.preprocess if family else "none"),
        image_size=size,
        block_pattern=family.block_pattern if family else None,
        weights_id=f"model:{file_digest(path)}:{cut.name}",
    )
