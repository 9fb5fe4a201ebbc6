"""Phase 2 on cached activations: where the backbone can be cut, and its two parts.

Below the unfreeze point every layer is frozen (BatchNorm in inference mode), so for
un-augmented images it computes the same activations every epoch: the training job
computes them once per image (:mod:`tlcore.training.features`) and trains only the part above
the cut. This module decides whether that holds for a setup (:func:`activation_cut`,
with the reason when it does not), builds the two parts on the classifier's shared
layers, gives the per-block rate multipliers of discriminative fine-tuning, and
measures what a fine-tune epoch should take on this machine for the Train page.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import keras
import numpy as np

from tlcore.config import FreezePlan, ModelConfig, TrainConfig
from tlcore.model.backbones import Backbone, assign_blocks
from tlcore.model.classifier import backbone_part, head_part, phase_freeze_plans, start_index, trainable_names

# Layers that behave differently in training: below the cut they would make the cached
# activations differ from what the full path computes every epoch.
_RANDOM_IN_TRAINING = ("Dropout", "SpatialDropout", "GaussianNoise", "GaussianDropout", "AlphaDropout", "Random")


@dataclass
class ActivationCut:
    """Where phase 2 can start from cached activations instead of images.

    Attributes:
        tensor: the one tensor that crosses from the frozen layers into the trainable
            ones (a Keras symbolic tensor of the backbone), or ``None``.
        name: the layer that produces it (``"block_14_add"``), part of the cache key.
        reason: why phase 2 takes the full path (images through the whole backbone);
            empty when the cut applies.
    """

    tensor: object = None
    name: str | None = None
    reason: str = ""

    @property
    def cached(self) -> bool:
        return self.tensor is not None


def activation_cut(backbone: Backbone, model_config: ModelConfig, train_config: TrainConfig) -> ActivationCut:
    """Whether phase 2 can train the top part on activations computed once per image.

    It can when augmentation is off (each image is then the same every epoch) or flip
    only (each image is one of two, both computed once), the
    feature cache is allowed, every layer below the unfreeze point is frozen and
    deterministic in training (BatchNorm frozen runs in inference mode), and exactly one
    tensor crosses from those layers into the trainable ones: MobileNetV2's residual
    blocks mean that holds at a block's first layer, not inside a block. Phase 1 must
    leave those layers frozen too (the cache is keyed by the backbone's weights file).
    """
    if not train_config.fine_tune_epochs:
        return ActivationCut(reason="no fine-tune phase")
    if train_config.augment == "full":
        return ActivationCut(reason="augmentation changes every image every epoch (random rotations, zooms, contrast)")
    if not train_config.feature_cache:
        return ActivationCut(reason="the feature cache is switched off")
    model = backbone.model
    names = [layer.name for layer in model.layers]
    head_plan, fine_tune_plan = phase_freeze_plans(backbone, model_config, train_config)
    start = start_index(names, fine_tune_plan.value, backbone.block_pattern)
    lower = model.layers[:start]
    random = [layer.name for layer in lower if _random_in_training(layer)]
    if random:
        return ActivationCut(reason=f"layers below the unfreeze point are random in training ({', '.join(random[:3])})")
    if train_config.epochs:
        phase_one = trainable_names(model, head_plan, backbone.block_pattern, backbone.pretrained)
        trained = [layer.name for layer in lower if layer.name in phase_one]
        if trained:
            return ActivationCut(reason=f"phase 1 trains layers below the unfreeze point ({', '.join(trained[:3])})")
    crossing = _crossing_tensors(model, start)
    if len(crossing) != 1:
        producers = sorted({tensor._keras_history.operation.name for tensor in crossing})
        return ActivationCut(
            reason=f"{len(crossing)} tensors cross the unfreeze point ({', '.join(producers[:4])}): "
            "start at the first layer of a block"
        )
    tensor = crossing[0]
    if tensor is model.inputs[0]:
        return ActivationCut(reason="nothing below the unfreeze point is frozen")
    return ActivationCut(tensor, tensor._keras_history.operation.name)


def _random_in_training(layer) -> bool:
    return type(layer).__name__.startswith(_RANDOM_IN_TRAINING)


def _crossing_tensors(model, start: int) -> list:
    """Tensors made by ``model.layers[:start]`` and read by ``model.layers[start:]`` (or output)."""
    lower = {id(layer) for layer in model.layers[:start]}
    crossing = {}
    for layer in model.layers[start:]:
        for index, node in enumerate(layer._inbound_nodes):
            if f"{id(layer)}_ib-{index}" not in model._nodes:  # a call outside this model's graph
                continue
            for tensor in node.input_tensors:
                if id(tensor._keras_history.operation) in lower:
                    crossing[id(tensor)] = tensor
    for tensor in model.outputs:
        if id(tensor._keras_history.operation) in lower:
            crossing[id(tensor)] = tensor
    return list(crossing.values())


def top_part(classifier, cut: ActivationCut):
    """The classifier from the cut's activations on: the trainable top of the backbone and the head.

    It shares every layer (and so every weight) with ``classifier``: training it fine-tunes
    the classifier, which is what gets saved.
    """
    backbone_model = backbone_part(classifier)
    upper = keras.Model(cut.tensor, backbone_model.outputs[0], name="backbone_top")
    inputs = keras.Input(tuple(cut.tensor.shape[1:]), name="activations")
    return keras.Model(inputs, head_part(classifier)(upper(inputs)), name="classifier_top")


def bottom_part(classifier, cut: ActivationCut):
    """The backbone with two outputs, the cut's activations and the feature map: one pass for both."""
    backbone_model = backbone_part(classifier)
    return keras.Model(backbone_model.inputs, [cut.tensor, backbone_model.outputs[0]], name="backbone_bottom")


def block_rate_multipliers(backbone: Backbone, plan: FreezePlan, decay: float) -> dict[str, float]:
    """Discriminative learning rates: a multiplier per unfrozen backbone layer name.

    The top unfrozen block (and the head, not listed) train at the full rate; each block
    below gets ``decay`` times the rate of the block above, as fastai's ``lr_mult`` and
    layer-wise decay give earlier, more general layers smaller steps. ``decay`` 1.0 gives
    an empty mapping (one rate).
    """
    if decay >= 1.0:
        return {}
    names = [layer.name for layer in backbone.model.layers]
    trainable = trainable_names(backbone.model, plan, backbone.block_pattern, backbone.pretrained)
    blocks = assign_blocks(names, backbone.block_pattern)
    unfrozen = [(name, block or name) for name, block in zip(names, blocks) if name in trainable]
    order = list(dict.fromkeys(block for _, block in unfrozen))  # bottom to top
    return {name: decay ** (len(order) - 1 - order.index(block)) for name, block in unfrozen}


def phase_two_epoch_seconds(
    backbone: Backbone, model_config: ModelConfig, train_config: TrainConfig, num_train: int, num_val: int
) -> dict:
    """What one fine-tune epoch should take here, on cached activations and on the full path.

    Measured, not guessed: the whole backbone and its part above the cut each run once
    (eagerly, after a warm-up call) on a batch, and an epoch is counted as a forward and a
    backward pass (about 3 forwards) of the trainable part per training image, plus the
    frozen part's forward on the full path, plus a forward per validation image.

    Returns:
        ``{"cut": ActivationCut for these settings, "possible_cut": the cut with
        augmentation off, "cached": seconds or None, "full": seconds}``.
    """
    cut = activation_cut(backbone, model_config, train_config)
    unaugmented = dataclasses.replace(train_config, augment="off", feature_cache=True)
    possible = cut if cut.cached else activation_cut(backbone, model_config, unaugmented)
    batch = max(1, min(train_config.batch_size, 16))
    size = backbone.image_size
    whole = _forward_seconds(backbone.model, (batch, size, size, 3)) / batch
    if not possible.cached:
        return {"cut": cut, "possible_cut": possible, "cached": None, "full": whole * (3 * num_train + num_val)}
    upper = keras.Model(possible.tensor, backbone.model.outputs[0])
    top = min(_forward_seconds(upper, (batch, *possible.tensor.shape[1:])) / batch, whole)
    cached = top * (3 * num_train + num_val)
    full = cached + (whole - top) * (num_train + num_val)
    return {"cut": cut, "possible_cut": possible, "cached": cached, "full": full}


def _forward_seconds(network, shape: tuple) -> float:
    inputs = np.random.default_rng(0).uniform(-1, 1, shape).astype("float32")
    network(inputs, training=False)  # warm-up: the first call builds kernels
    started = time.perf_counter()
    network(inputs, training=False)
    return time.perf_counter() - started


def fine_tune_timing(backbone: Backbone, settings: str, num_train: int, num_val: int) -> dict:
    """:func:`tlcore.model.choices.epoch_timing` of a fine-tune epoch with ``settings`` (a
    :class:`~tlcore.config.RunConfig` as JSON: a cache key), measured here by :func:`phase_two_epoch_seconds`."""
    from tlcore.config import RunConfig
    from tlcore.model.choices import epoch_timing

    config = RunConfig.from_json(settings)
    return epoch_timing(phase_two_epoch_seconds(backbone, config.model, config.train, num_train, num_val))
