"""KerasHub's own layer classes a saved model may hold: the allow-list and their size rules.

Security decision. A run trained on a KerasHub backbone (:mod:`tlcore.model.hub`) saves a
``model.keras`` whose config names KerasHub classes: the backbone (``ViTBackbone``, …) and
its image converter. The saved-model check (:mod:`tlcore.model.file_config`) accepts
exactly the classes below, by their registered name (``keras_hub>ViTBackbone``) and only
with the class name that goes with it and a module inside ``keras_hub.src`` — the
families of :data:`tlcore.model.hub.HUB_PRESETS` and their converters, nothing else. Their
configs are walked like every other layer's (no Python function, no file path, no
serialized object but Keras' initializers and dtype policies, named activations only),
and each class has a size rule here computed from the config alone, so the parameters
and per-image activations are bounded before anything is built. Any other KerasHub
class (a text model, a generic layer that takes a callable) and any class claiming a
KerasHub name from another module is refused with the reason. KerasHub's classes build
only Keras layers from plain numbers; ``safe_mode=True`` still refuses Lambda bytecode.

The parameter rules are upper bounds (within a few percent for the transformers, a small
factor for the convolutional families: their exact counts depend on rounding the
studio does not repeat); ``tests/test_hub_backbones.py`` checks them against real
instances. Output shapes are exact.
"""

from __future__ import annotations

import math

from tlcore.model.layer_rules import SizeError

HUB_MODULE = "keras_hub.src."
# Registered name of each transformer → (config key of its MLP width, class token, pooled output).
TRANSFORMERS = {
    "ViTBackbone": ("mlp_dim", True, False),
    "DINOV2Backbone": ("intermediate_dim", True, False),
    "CLIPVisionEncoder": ("intermediate_dim", True, False),
    "SigLIPVisionEncoder": ("intermediate_dim", False, True),
}
CONVERTERS = (
    "ImageConverter",
    "ViTImageConverter",
    "DINOV2ImageConverter",
    "CLIPImageConverter",
    "SigLIPImageConverter",
    "ResNetImageConverter",
    "EfficientNetImageConverter",
)


def _int(config: dict, key: str, default=None, minimum: int = 1) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SizeError(f"expected `{key}` to be a whole number of at least {minimum}. Received: {key}={value!r}")
    return value


def _ints(config: dict, key: str, length: int | None = None, minimum: int = 1) -> list[int]:
    values = config.get(key)
    if isinstance(values, int) and not isinstance(values, bool) and length:
        values = [values] * length
    if not isinstance(values, (list, tuple)) or (length is not None and len(values) != length) or not values:
        raise SizeError(f"expected `{key}` to be a list of whole numbers. Received: {key}={values!r}")
    return [_int({key: value}, key, minimum=minimum) for value in values]


def _numbers(config: dict, key: str, length: int, default: float = 1.0) -> list[float]:
    value = config.get(key)
    value = default if value is None else value
    values = [value] * length if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    if not isinstance(values, (list, tuple)) or len(values) != length:
        raise SizeError(f"expected `{key}` to be {length} numbers. Received: {key}={value!r}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 64 for v in values):
        raise SizeError(f"expected `{key}` to be numbers from 0 to 64. Received: {key}={value!r}")
    return [float(v) for v in values]


def _image(inputs: list, config: dict) -> tuple[int, int, int]:
    """The input image's shape. A free size (only in a declared build shape: the studio's model
    input is fixed) takes the config's own image shape, else 224: only its parameters are used."""
    shape = inputs[0]
    declared = config.get("image_shape") or config.get("input_shape") or (None, None, None)
    if len(shape) != 3 or not isinstance(declared, (list, tuple)) or len(declared) != 3:
        raise SizeError(f"expected an image input (height, width, channels). Received shape {shape!r}")
    shape = tuple(d if d is not None else declared[i] if declared[i] is not None else 224 for i, d in enumerate(shape))
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise SizeError(f"expected an image input of whole numbers. Received shape {shape!r}")
    return shape


def _transformer(config: dict, inputs: list, class_name: str):
    mlp_key, class_token, pooled = TRANSFORMERS[class_name]
    height, width, channels = _image(inputs, config)
    hidden, layers, heads = _int(config, "hidden_dim"), _int(config, "num_layers"), _int(config, "num_heads")
    mlp = _int(config, mlp_key)
    patch = _ints(config, "patch_size", 2)
    if class_name == "CLIPVisionEncoder" and config.get("intermediate_output_index") is not None:
        raise SizeError("a CLIP encoder with an intermediate output is not a single feature output")
    registers = _int(config, "num_register_tokens", 0, minimum=0) if class_name == "DINOV2Backbone" else 0
    extra = int(class_token and config.get("use_class_token", True)) + registers
    tokens = (height // patch[0]) * (width // patch[1]) + extra
    positions = tokens
    if class_name == "DINOV2Backbone" and config.get("position_embedding_shape") is not None:
        shape = _ints(config, "position_embedding_shape", 2)
        positions = max(tokens, (shape[0] // patch[0]) * (shape[1] // patch[1]) + extra)
    # per layer: attention (4h² + 4h), MLP (2hm + h + m; SwiGLU up to 3hm), norms and layer scales (8h)
    block = 4 * hidden * hidden + 3 * hidden * mlp + 13 * hidden + 2 * mlp
    embedding = patch[0] * patch[1] * channels * hidden + (positions + 2) * hidden + 4 * hidden
    head = block + hidden if pooled else 0  # SigLIP's attention-pooling head and its probe
    parameters = layers * block + embedding + head
    activations = layers * tokens * (10 * hidden + 3 * mlp + 2 * heads * tokens)
    output = (hidden,) if pooled else (tokens, hidden)
    words = f"{layers:,} layers of width {hidden:,}"
    return [output], parameters, words, activations


def _resnet(config: dict, inputs: list, class_name: str):
    height, width, channels = _image(inputs, config)
    stem_filters = _ints(config, "input_conv_filters")
    stem_kernels = _ints(config, "input_conv_kernel_sizes", len(stem_filters))
    filters = _ints(config, "stackwise_num_filters")
    blocks = _ints(config, "stackwise_num_blocks", len(filters))
    strides = _ints(config, "stackwise_num_strides", len(filters))
    expansion = 1 if config.get("block_type") == "basic_block" else 4
    parameters, activations, size = 0, 0, [-(-height // 4), -(-width // 4)]  # stem stride 2, max pooling 2
    for count, kernel in zip(stem_filters, stem_kernels):
        parameters += kernel * kernel * channels * count + 5 * count
        activations += 3 * count * height * width // 4
        channels = count
    for count, repeats, stride in zip(filters, blocks, strides):
        for index in range(repeats):
            size = [-(-d // stride) for d in size] if index == 0 else size
            out = count * expansion
            # bottleneck: 1x1, 3x3, 1x1 and a projected shortcut; basic: two 3x3 and the shortcut
            convs = 9 * channels * count + 9 * count * count + count * out + channels * out
            parameters += convs + 5 * (2 * count + 2 * out + channels)
            activations += size[0] * size[1] * (6 * count + 6 * out)
            channels = out
    words = f"{len(filters)} stages of up to {max(filters) * expansion:,} filters"
    return [(size[0], size[1], channels)], parameters, words, activations


def _efficientnet(config: dict, inputs: list, class_name: str):
    height, width, channels = _image(inputs, config)
    kernels = _ints(config, "stackwise_kernel_sizes")
    stacks = len(kernels)
    repeats = _ints(config, "stackwise_num_repeats", stacks)
    ins, outs = _ints(config, "stackwise_input_filters", stacks), _ints(config, "stackwise_output_filters", stacks)
    ratios = _numbers(config, "stackwise_expansion_ratios", stacks)
    strides = _ints(config, "stackwise_strides", stacks)
    widths = _numbers(config, "stackwise_width_coefficients", stacks)
    depths = _numbers(config, "stackwise_depth_coefficients", stacks)
    forced = (
        _ints(config, "stackwise_force_input_filters", minimum=0) if config.get("stackwise_force_input_filters") else []
    )
    forced = (forced + [0] * stacks)[:stacks]
    types = config.get("stackwise_block_types")
    full = [isinstance(types, (list, tuple)) and i < len(types) and types[i] in ("fused", "cba") for i in range(stacks)]
    stem = _round_filters(config, ins[0], widths[0])
    size = [-(-height // 2), -(-width // 2)]
    parameters, activations = 9 * channels * stem + 4 * stem, 3 * stem * size[0] * size[1]
    for i in range(stacks):
        c_in, c_out = _round_filters(config, ins[i], widths[i]), _round_filters(config, outs[i], widths[i])
        if forced[i]:
            c_in = max(c_in, _round_filters(config, forced[i], widths[i]))
        kernel, wide = kernels[i], int(max(1.0, ratios[i]) * max(c_in, c_out)) + 1
        for j in range(int(math.ceil(depths[i] * repeats[i]))):
            size = [-(-d // strides[i]) for d in size] if j == 0 else size
            c = max(c_in, c_out)
            # expansion (a full k x k convolution in a fused block), depthwise, squeeze-excite, projection
            expand = kernel * kernel if full[i] else 1
            parameters += expand * c * wide + kernel * kernel * wide + 3 * c * wide + wide * c_out
            parameters += 10 * wide + 5 * c_out
            activations += size[0] * size[1] * (8 * wide + 3 * c_out)
    top = _round_filters(config, _int(config, "num_features", 1280), widths[-1])
    parameters += _round_filters(config, max(outs), widths[-1]) * top + 5 * top
    activations += 3 * top * size[0] * size[1]
    words = f"{stacks} stacks up to {max(outs):,} filters"
    return [(size[0], size[1], top)], parameters, words, activations


def _round_filters(config: dict, filters: int, width: float) -> int:
    """KerasHub's ``round_filters``: ``filters`` scaled by ``width`` to a multiple of the depth divisor."""
    divisor = _int(config, "depth_divisor", 8)
    filters = filters * width
    minimum = divisor if config.get("use_depth_divisor_as_min_depth") else _int(config, "min_depth", 8)
    rounded = max(minimum, int(filters + divisor / 2) // divisor * divisor)
    if config.get("cap_round_filter_decrease") and rounded < 0.9 * filters:
        rounded += divisor
    return int(rounded)


def _converter(config: dict, inputs: list, class_name: str):
    height, width, channels = _image(inputs, config)
    size = config.get("image_size")
    if size is not None:
        height, width = _ints(config, "image_size", 2)
    return [(height, width, channels)], 0, "", height * width * channels


def _plain(value):
    """A config with Keras' serialized tuples (``{"class_name": "__tuple__", …}``) as lists."""
    if isinstance(value, dict):
        if value.get("class_name") == "__tuple__":
            return _plain((value.get("config") or {}).get("value"))
        return {key: _plain(inner) for key, inner in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(inner) for inner in value]
    return value


def _on_plain(rule):
    def sized(config: dict, inputs: list, class_name: str):
        return rule(_plain(config), inputs, class_name)

    return sized


SIZE_RULES = {
    **{name: _on_plain(_transformer) for name in TRANSFORMERS},
    "ResNetBackbone": _on_plain(_resnet),
    "EfficientNetBackbone": _on_plain(_efficientnet),
    **{name: _on_plain(_converter) for name in CONVERTERS},
}
# The backbones are Keras models: Keras numbers their calls in a graph from 1 (node 0 is their own construction).
MODEL_CLASSES = frozenset((*TRANSFORMERS, "ResNetBackbone", "EfficientNetBackbone"))
# Registered name → class name of every KerasHub class a saved model may hold.
HUB_LAYERS = {f"keras_hub>{name}": name for name in SIZE_RULES}


def is_hub_layer(layer: dict) -> bool:
    """True for a layer config that claims a KerasHub class (by registered name or module)."""
    registered, module = str(layer.get("registered_name") or ""), str(layer.get("module") or "")
    return registered.startswith(("keras_hub>", "keras_nlp>")) or module.split(".")[0] in ("keras_hub", "keras_nlp")


def hub_refusal(layer: dict) -> str | None:
    """Why a layer naming KerasHub is refused, or ``None`` when it is an accepted KerasHub class."""
    class_name, registered, module = layer.get("class_name"), layer.get("registered_name"), layer.get("module")
    accepted = ", ".join(sorted(SIZE_RULES))
    if registered not in HUB_LAYERS:
        return (
            f"KerasHub class {registered or class_name!r}, which is not one of the KerasHub image backbones and "
            f"converters this studio accepts ({accepted})"
        )
    if HUB_LAYERS[registered] != class_name:
        return f"class {class_name!r} under the KerasHub name {registered!r} (they must match)"
    if not isinstance(module, str) or not module.startswith(HUB_MODULE):
        return f"the KerasHub name {registered!r} from module {module!r} (expected a module inside keras_hub)"
    return None


def uses_keras_hub(config) -> bool:
    """True when a model config names a KerasHub class anywhere (its loading imports keras_hub)."""
    if isinstance(config, dict):
        if is_hub_layer(config):
            return True
        return any(uses_keras_hub(value) for value in config.values())
    if isinstance(config, list):
        return any(uses_keras_hub(value) for value in config)
    return False
