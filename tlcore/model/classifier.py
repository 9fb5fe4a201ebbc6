"""The classifier: input → the backbone's preprocessing → backbone → head.

The classifier is a functional model of three parts, ``preprocess``, the backbone
and ``head``, so that the training job can run the backbone alone (feature
extraction) or the head alone (training on cached features), and Grad-CAM can read
the backbone's feature map, all on the same shared weights. The backbone keeps its
own Keras name (``mobilenetv2_1.00_224``, or the layer cut from a model file).

The words and choice lists for these settings live in :mod:`tlcore.model.choices`
(no TensorFlow) and are re-exported here.
"""

from __future__ import annotations

import threading

import keras
import numpy as np
import pandas as pd

from tlcore.caches import BoundedCache
from tlcore.config import FreezePlan, ModelConfig, TrainConfig
from tlcore.errors import StudioError
from tlcore.model.backbones import Backbone, assign_blocks
from tlcore.model.choices import PhasePlan, freeze_plan_label, head_epoch_seconds, phase_rows
from tlcore.model.saved_layer import Preprocess

HEAD_NAME = "head"
PREPROCESS_NAME = "preprocess"


def head_layers(num_classes: int, hidden_units: int = 0, dropout_rate: float | None = 0.2) -> list:
    """The head's layers after the pooling, in order: the one definition of the head.

    :func:`build_head` and the head engine (:class:`tlcore.training.head.HeadEngine`)
    both build them; the engine's weights go into the classifier by layer name.

    Args:
        num_classes: units of the softmax layer ``predictions``.
        hidden_units: units of an optional ReLU layer ``hidden`` (0 = none).
        dropout_rate: dropout before ``predictions`` (0 = none); ``None`` keeps the layer
            whatever the rate (the engine applies its own there, the rate a variable).
    """
    layers = []
    if hidden_units:
        layers.append(keras.layers.Dense(hidden_units, activation="relu", name="hidden"))
    if dropout_rate is None or dropout_rate:
        layers.append(keras.layers.Dropout(dropout_rate or 0.0, name="dropout"))
    layers.append(keras.layers.Dense(num_classes, activation="softmax", name="predictions"))
    return layers


def build_head(
    feature_shape: tuple, num_classes: int, pooling: str = "avg", hidden_units: int = 0, dropout_rate: float = 0.2
):
    """The new classification head, as its own model: the pooling layer ``pool``, then :func:`head_layers`."""
    pool = {
        "avg": keras.layers.GlobalAveragePooling2D(name="pool"),
        "max": keras.layers.GlobalMaxPooling2D(name="pool"),
        "flatten": keras.layers.Flatten(name="pool"),
    }[pooling]
    layers = [keras.Input(feature_shape), pool, *head_layers(num_classes, hidden_units, dropout_rate)]
    return keras.Sequential(layers, name=HEAD_NAME)


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
    x = Preprocess(backbone.preprocess, name=PREPROCESS_NAME)(inputs)
    # No ``training=False`` here, on purpose: a Keras 3 Functional model re-injects the
    # outer ``training`` flag into every nested call, so ``fit`` would still update the
    # BatchNorm statistics (checked with Keras 3.15.1). BatchNorm stays in inference mode
    # through ``trainable=False`` instead (see the docstring); the test
    # test_pretrained_batchnorm_stays_in_inference_mode_when_unfrozen guards it.
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
    """The backbone inside a classifier built by :func:`build_classifier`.

    The backbone keeps its own name, so it is found as the one layer that is neither
    the input, ``preprocess`` nor ``head`` (this also reads runs saved earlier).
    """
    parts = [
        layer
        for layer in model.layers
        if layer.name not in (HEAD_NAME, PREPROCESS_NAME) and not isinstance(layer, keras.layers.InputLayer)
    ]
    if len(parts) != 1:
        raise StudioError(
            "Expected a classifier of input → preprocess → backbone → head. "
            f"Received layers: {[layer.name for layer in model.layers]}."
        )
    return parts[0]


def head_part(model):
    """The classification head (pooling, dropout, dense) of a classifier."""
    return model.get_layer(HEAD_NAME)


def preprocess_part(model):
    """The :class:`~tlcore.model.saved_layer.Preprocess` layer of a classifier."""
    return model.get_layer(PREPROCESS_NAME)


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
        # max(0, …): "top 10" of 8 weighted layers is all 8 (a negative start would slice the last 2)
        return {layer.name for layer in weighted[max(0, len(weighted) - plan.value) :]} if plan.value else set()
    if plan.mode == "layers":
        unknown = sorted(set(plan.value) - set(names))
        if unknown:
            raise StudioError(f"Unknown layers in the freeze plan: {unknown[:5]}. Expected names from the layer table.")
        return set(plan.value)
    return set(names[start_index(names, plan.value, block_pattern) :])


def start_index(names: list[str], layer_or_block: str, block_pattern: str | None) -> int:
    """The index in ``names`` where a layer or block starts (a plan's "from" point).

    A block first: Inception's block "mixed0" is also the name of its last layer, and
    starting from that layer would unfreeze from the next block.

    Raises:
        StudioError: no layer or block has that name; the message lists the last blocks.
    """
    blocks = assign_blocks(names, block_pattern)
    if layer_or_block in blocks:
        return blocks.index(layer_or_block)
    if layer_or_block in names:
        return names.index(layer_or_block)
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
        if layer.trainable and pretrained and hasattr(layer, "layers"):  # a nested model (a KerasHub backbone)
            for inner in layer._flatten_layers(include_self=False):
                inner.trainable = inner.trainable and not is_batchnorm(inner)
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


def phase_freeze_plans(
    backbone: Backbone, model_config: ModelConfig, train_config: TrainConfig
) -> tuple[FreezePlan, FreezePlan]:
    """``(phase 1's, phase 2's)`` freeze plan: the one place they are worked out.

    Phase 1 (the head) keeps the model's freeze plan; phase 2 (fine-tune) unfreezes the
    backbone from ``train_config.unfreeze_from``, or from its last block. The training
    job applies them, the Train page's phase table (:func:`phase_plan`) counts them, and
    the activation cut and the learning-rate finder start from them.
    """
    start = train_config.unfreeze_from or last_block(backbone.model, backbone.block_pattern)
    return model_config.freeze, FreezePlan("from", start)


def phase_plan(
    backbone: Backbone, model_config: ModelConfig, train_config: TrainConfig, num_classes: int
) -> list[PhasePlan]:
    """What each training phase trains, by the rules the training job applies.

    Each phase's plan comes from :func:`phase_freeze_plans`, as the training job's does.
    In a pretrained backbone BatchNormalization layers stay frozen in both (see
    :func:`build_classifier`), so they are not counted.

    Returns:
        Two :class:`~tlcore.model.choices.PhasePlan`; a phase with 0 epochs is
        ``skipped`` but still described.

    Raises:
        StudioError: a freeze plan names a layer or block the backbone does not have.
    """

    def phase(number: int, name: str, epochs: int, learning_rate: float, plan: FreezePlan) -> PhasePlan:
        trainable = plan_totals(backbone, plan, num_classes, model_config)["trainable"]
        return PhasePlan(number, name, epochs, learning_rate, plan, freeze_plan_label(plan), trainable)

    head_plan, fine_tune_plan = phase_freeze_plans(backbone, model_config, train_config)
    return [
        phase(1, "head", train_config.epochs, train_config.learning_rate, head_plan),
        phase(
            2,
            "fine-tune",
            train_config.fine_tune_epochs,
            train_config.effective_fine_tune_learning_rate,
            fine_tune_plan,
        ),
    ]


def phase_table(backbone: Backbone, config, num_classes: int, timing: dict | None, runs: list) -> pd.DataFrame:
    """The Train page's table of the two phases (:func:`tlcore.model.choices.phase_rows`), one row per phase.

    Args:
        backbone: the loaded backbone of ``config.model``.
        config: the :class:`~tlcore.config.RunConfig` about to be trained.
        num_classes: classes of the dataset.
        timing: a fine-tune epoch's estimate (:func:`tlcore.model.choices.epoch_timing`), or ``None``.
        runs: the visitor's finished runs, newest first: a phase-1 epoch is timed from the latest one like this.

    Raises:
        StudioError: a freeze plan names a layer or block the backbone does not have.
    """
    phases = phase_plan(backbone, config.model, config.train, num_classes)
    rows = phase_rows(phases, config.train, timing, head_epoch_seconds(runs, config))
    return pd.DataFrame(rows).set_index("phase")


def parameter_totals(model) -> dict[str, int]:
    """Trainable and frozen parameter counts of a whole classifier."""
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    frozen = int(sum(np.prod(w.shape) for w in model.non_trainable_weights))
    return {"trainable": trainable, "frozen": frozen, "total": trainable + frozen}


_OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "sgd": "SGD"}


def make_optimizer(name: str, learning_rate, rate_multipliers: dict[int, float] | None = None):
    """A fresh Keras optimizer by name.

    Args:
        name: one of ``tlcore.config.OPTIMIZER_CHOICES``.
        learning_rate: a float or a ``keras.optimizers.schedules`` schedule.
        rate_multipliers: ``{id(variable): multiplier}`` for discriminative learning
            rates; variables not listed train at the full rate.
    """
    base = getattr(keras.optimizers, _OPTIMIZERS[name])
    options = {"momentum": 0.9} if name == "sgd" else {}
    if rate_multipliers:
        return _multiplied(base)(learning_rate, rate_multipliers=rate_multipliers, **options)
    return base(learning_rate, **options)


_MULTIPLIED = BoundedCache("optimizer classes with rate multipliers", max_items=len(_OPTIMIZERS))


def _multiplied(base: type) -> type:
    """``base`` with a learning-rate multiplier per variable (Keras has no built-in).

    Scaling gradients would not do it: Adam's step does not depend on the gradient's
    scale. So the rate itself is scaled where the optimizer applies it, per variable.
    """
    return _MULTIPLIED.get_or_create(base, lambda: _rate_multiplied_class(base))


def _rate_multiplied_class(base: type) -> type:
    class RateMultiplied(base):
        def __init__(self, *args, rate_multipliers=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.rate_multipliers = dict(rate_multipliers or {})
            self._multipliers = []

        def build(self, variables):
            super().build(variables)
            self._multipliers = [float(self.rate_multipliers.get(id(v), 1.0)) for v in variables]

        def update_step(self, gradient, variable, learning_rate):
            multiplier = self._multipliers[self._get_variable_index(variable)]
            super().update_step(gradient, variable, learning_rate * multiplier)

    RateMultiplied.__name__ = f"RateMultiplied{base.__name__}"
    return RateMultiplied


def fine_tune_schedule(train_config: TrainConfig, steps_per_epoch: int):
    """Phase 2's learning rate: a float (constant) or a Keras schedule over its steps."""
    rate, total = (
        train_config.effective_fine_tune_learning_rate,
        max(1, steps_per_epoch * train_config.fine_tune_epochs),
    )
    if train_config.fine_tune_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(rate, total)
    if train_config.fine_tune_schedule == "one-cycle":
        warmup = max(1, int(0.3 * total))
        return keras.optimizers.schedules.CosineDecay(
            rate / 25, total - warmup, warmup_target=rate, warmup_steps=warmup
        )
    return rate


def compile_classifier(
    model,
    optimizer: str,
    learning_rate,
    steps_per_execution: int = 1,
    rate_multipliers: dict | None = None,
    jit_compile="auto",
):
    """(Re)compiles after any change of ``trainable``, with a fresh optimizer."""
    model.compile(
        optimizer=make_optimizer(optimizer, learning_rate, rate_multipliers),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
        jit_compile=jit_compile,
    )
    return model
