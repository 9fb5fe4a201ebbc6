"""The classifier: input → the backbone's preprocessing → backbone → head.

The classifier is a functional model of three named parts, ``preprocess``,
``backbone`` and ``head``, so that the training job can run the backbone alone
(feature extraction) or the head alone (training on cached features), and Grad-CAM
can read the backbone's feature map, all on the same shared weights.
"""

from __future__ import annotations

import threading

import keras
import numpy as np
import pandas as pd

from tlcore.backbones import Backbone, assign_blocks, preprocess_function
from tlcore.config import FreezePlan, ModelConfig
from tlcore.errors import StudioError


@keras.saving.register_keras_serializable(package="tlcore")
class Preprocess(keras.layers.Layer):
    """Applies a ``keras.applications`` ``preprocess_input`` by name, inside the model.

    Saving the name instead of a Lambda keeps ``model.keras`` loadable with
    ``safe_mode=True`` and guarantees prediction uses the training preprocessing.
    """

    def __init__(self, preprocess: str = "none", **kwargs):
        super().__init__(**kwargs)
        self.preprocess = preprocess
        self._function = preprocess_function(preprocess)

    def call(self, images):
        return self._function(keras.ops.cast(images, "float32"))

    def get_config(self):
        return {**super().get_config(), "preprocess": self.preprocess}


def build_head(
    feature_shape: tuple, num_classes: int, pooling: str = "avg", hidden_units: int = 0, dropout_rate: float = 0.2
):
    """The new classification head, as its own model (trainable on cached features)."""
    pool = {
        "avg": keras.layers.GlobalAveragePooling2D(name="pool"),
        "max": keras.layers.GlobalMaxPooling2D(name="pool"),
        "flatten": keras.layers.Flatten(name="pool"),
    }[pooling]
    layers = [keras.Input(feature_shape), pool]
    if hidden_units:
        layers.append(keras.layers.Dense(hidden_units, activation="relu", name="hidden"))
    if dropout_rate:
        layers.append(keras.layers.Dropout(dropout_rate, name="dropout"))
    layers.append(keras.layers.Dense(num_classes, activation="softmax", name="predictions"))
    return keras.Sequential(layers, name="head")


def build_classifier(backbone: Backbone, num_classes: int, model_config: ModelConfig):
    """Assembles input → preprocess → backbone → head and applies the freeze plan.

    BatchNormalization in a pretrained backbone must stay in inference mode, even when
    the layers around it are unfrozen: re-estimating its statistics from small batches
    of a new dataset wrecks the pretrained features. In Keras 3 a functional model
    passes the outer ``training`` flag to every layer, overriding a ``training=False``
    given when the graph was built (measured with Keras 3.15), so the rule is enforced
    where Keras 3 does honour it: a BatchNormalization layer with ``trainable=False``
    always runs in inference mode. :func:`apply_freeze_plan` never unfreezes them.
    A randomly initialised backbone has no statistics worth keeping; there BN trains.
    """
    if num_classes < 2:
        raise StudioError(f"Expected at least 2 classes. Received: num_classes={num_classes}.")
    size = backbone.image_size
    inputs = keras.Input((size, size, 3), name="image")
    x = Preprocess(backbone.preprocess, name="preprocess")(inputs)
    features = backbone.model(x)
    head = build_head(
        tuple(features.shape[1:]),
        num_classes,
        model_config.pooling,
        model_config.hidden_units,
        model_config.dropout_rate,
    )
    outputs = head(features)
    model = keras.Model(inputs, outputs, name="classifier")
    apply_freeze_plan(backbone_part(model), model_config.freeze, backbone.block_pattern, backbone.pretrained)
    return model


def backbone_part(model):
    """The backbone inside a classifier built by :func:`build_classifier`."""
    return model.layers[2]


def head_part(model):
    return model.get_layer("head")


def preprocess_part(model):
    return model.get_layer("preprocess")


def _weighted_layers(backbone_model) -> list:
    return [layer for layer in backbone_model.layers if layer.weights]


def is_batchnorm(layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


def trainable_names(backbone_model, plan: FreezePlan, block_pattern: str | None, pretrained: bool = True) -> set[str]:
    """The backbone layers a freeze plan makes trainable.

    In a pretrained backbone BatchNormalization layers are never made trainable (see
    :func:`build_classifier`).

    Raises:
        StudioError: the plan names a layer or block the backbone does not have.
    """
    names = _plan_names(backbone_model, plan, block_pattern)
    if pretrained:
        names -= {layer.name for layer in backbone_model.layers if is_batchnorm(layer)}
    return names


def _plan_names(backbone_model, plan: FreezePlan, block_pattern: str | None) -> set[str]:
    layers = backbone_model.layers
    names = [layer.name for layer in layers]
    if plan.mode == "all":
        return set()
    if plan.mode == "none":
        return set(names)
    if plan.mode == "top":
        weighted = _weighted_layers(backbone_model)
        return {layer.name for layer in weighted[len(weighted) - plan.value :]} if plan.value else set()
    if plan.mode == "layers":
        unknown = sorted(set(plan.value) - set(names))
        if unknown:
            raise StudioError(f"Unknown layers in the freeze plan: {unknown[:5]}. Expected names from the layer table.")
        return set(plan.value)
    return set(names[_start_index(names, plan.value, block_pattern) :])


def _start_index(names: list[str], layer_or_block: str, block_pattern: str | None) -> int:
    if layer_or_block in names:
        return names.index(layer_or_block)
    blocks = assign_blocks(names, block_pattern)
    if layer_or_block in blocks:
        return blocks.index(layer_or_block)
    known = list(dict.fromkeys(b for b in blocks if b))
    raise StudioError(
        f"No layer or block named {layer_or_block!r} in this backbone. "
        f"Expected a block ({', '.join(known[-6:]) or 'none known'}) or a layer name from the layer table."
    )


def last_block(backbone_model, block_pattern: str | None) -> str:
    """The block label of the backbone's last block (the default to fine-tune)."""
    blocks = [b for b in assign_blocks([layer.name for layer in backbone_model.layers], block_pattern) if b]
    if blocks and blocks[-1] != "stem":
        return blocks[-1]
    weighted = _weighted_layers(backbone_model)
    return weighted[max(0, len(weighted) - 10)].name if weighted else backbone_model.layers[-1].name


def apply_freeze_plan(backbone_model, plan: FreezePlan, block_pattern: str | None, pretrained: bool = True) -> set[str]:
    """Sets ``trainable`` on every backbone layer; returns the trainable names.

    Recompile the model afterwards: Keras fixes the trainable weights at compile time.
    """
    plan.validate()
    trainable = trainable_names(backbone_model, plan, block_pattern, pretrained)
    backbone_model.trainable = bool(trainable)
    for layer in backbone_model.layers:
        layer.trainable = layer.name in trainable
    return trainable


def is_fully_frozen(model) -> bool:
    """True when no backbone weight is trainable (the feature-cache fast path applies)."""
    return not backbone_part(model).trainable_weights


def layer_table(backbone_model, block_pattern: str | None) -> pd.DataFrame:
    """One row per backbone layer: index, name, type, block, parameters, trainable."""
    names = [layer.name for layer in backbone_model.layers]
    blocks = assign_blocks(names, block_pattern)
    rows = [
        {
            "index": index,
            "name": layer.name,
            "type": type(layer).__name__,
            "block": block,
            "parameters": int(sum(np.prod(w.shape) for w in layer.weights)),
            "trainable": bool(layer.trainable and layer.weights),
        }
        for index, (layer, block) in enumerate(zip(backbone_model.layers, blocks))
    ]
    return pd.DataFrame(rows, columns=["index", "name", "type", "block", "parameters", "trainable"])


_PLAN_LOCK = threading.Lock()


def plan_totals(backbone, plan: FreezePlan, num_classes: int, model_config: ModelConfig) -> dict[str, int]:
    """Trainable/frozen parameter totals a freeze plan would give, without building a classifier.

    The plan is applied to ``backbone.model`` only for the count and the previous
    flags are put back, so a backbone shared between sessions is left as it was.
    """
    model = backbone.model
    head = build_head(
        tuple(model.output.shape[1:]),
        num_classes,
        model_config.pooling,
        model_config.hidden_units,
        model_config.dropout_rate,
    )
    with _PLAN_LOCK:
        previous = [(layer, layer.trainable) for layer in model.layers]
        try:
            apply_freeze_plan(model, plan, backbone.block_pattern, backbone.pretrained)
            trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
            frozen = int(sum(np.prod(w.shape) for w in model.non_trainable_weights))
        finally:
            for layer, flag in previous:
                layer.trainable = flag
    head_parameters = int(head.count_params())
    return {
        "trainable": trainable + head_parameters,
        "frozen": frozen,
        "total": trainable + frozen + head_parameters,
        "head": head_parameters,
    }


def parameter_totals(model) -> dict[str, int]:
    """Trainable and frozen parameter counts of a whole classifier."""
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    frozen = int(sum(np.prod(w.shape) for w in model.non_trainable_weights))
    return {"trainable": trainable, "frozen": frozen, "total": trainable + frozen}


def make_optimizer(name: str, learning_rate: float):
    """A fresh Keras optimizer by name."""
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9)
    return {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW, "rmsprop": keras.optimizers.RMSprop}[name](
        learning_rate
    )


def compile_classifier(model, optimizer: str, learning_rate: float, steps_per_execution: int = 1):
    """(Re)compiles after any change of ``trainable``, with a fresh optimizer."""
    model.compile(
        optimizer=make_optimizer(optimizer, learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model
