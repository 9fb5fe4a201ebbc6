"""What a model config declares, computed from the config alone: output shapes and parameters.

A model file is sized before anything in it is deserialized: each accepted layer class
has one rule here (its output shapes and parameter count from its config and its
input shapes), and :func:`size_model` follows the Functional / Sequential graph, nested
models included. Nothing here imports Keras or TensorFlow; the numbers are what Keras
would allocate when it builds the layers.

Shapes leave out the batch dimension. A rule raises :class:`SizeError` with the reason
when a config cannot be sized (a missing or nonsensical setting).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

Shape = tuple  # of int | None, without the batch dimension

# The containers whose config is a graph of layers, walked by :func:`size_model`.
CONTAINERS = ("Functional", "Model", "Sequential")
# Built-in layers whose output has the shape of their (first) input and no weights.
SAME_SHAPE = (
    "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "ThresholdedReLU", "Dropout", "SpatialDropout1D",
    "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "ActivityRegularization", "Rescaling", "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation",
    "RandomContrast", "RandomBrightness", "UnitNormalization", "Identity", "Masking",
)  # fmt: skip
ELEMENTWISE_MERGES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")


class SizeError(ValueError):
    """A layer config that cannot be sized; the message says why."""


@dataclass
class LayerRecord:
    """One layer as declared: where it is, what it holds, and its largest output.

    Attributes:
        path: the layer's name, prefixed by its nested models' names ("backbone/conv").
        class_name: the layer class.
        parameters: the weights Keras would create for it.
        size_words: its declared size in words ("1,000,000,000 units"), for messages.
        output_values: values in its largest output, per image.
        output_shape: that output's shape.
    """

    path: str
    class_name: str
    parameters: int = 0
    size_words: str = ""
    output_values: int = 0
    output_shape: Shape = ()


@dataclass
class ModelSize:
    """The totals of a sized model, and every layer's record."""

    layers: list[LayerRecord] = field(default_factory=list)
    input_shapes: list[Shape] = field(default_factory=list)

    @property
    def parameters(self) -> int:
        return sum(record.parameters for record in self.layers)

    @property
    def activation_values(self) -> int:
        """Values in all layer outputs for one image (what a forward pass keeps for training)."""
        return sum(record.output_values for record in self.layers)


# ----------------------------------------------------------------------------- config readers


def _int(config: dict, key: str, default=None, minimum: int = 1) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SizeError(f"expected `{key}` to be a whole number of at least {minimum}. Received: {key}={value!r}")
    return value


def _ints(config: dict, key: str, rank: int, default=None) -> tuple[int, ...]:
    value = config.get(key, default)
    if value is None:
        value = default
    values = (value,) * rank if isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(values, dict):  # a serialized tuple
        values = values.get("config", {}).get("value")
    if not isinstance(values, (list, tuple)) or len(values) != rank:
        raise SizeError(f"expected `{key}` to be {rank} whole numbers. Received: {key}={value!r}")
    return tuple(_int({key: item}, key) for item in values)


def _rank(class_name: str) -> int:
    return 1 if "1D" in class_name else 3 if "3D" in class_name else 2


def _channels_first(config: dict) -> bool:
    return config.get("data_format") == "channels_first"


def _split(shape: Shape, config: dict, rank: int) -> tuple[tuple, int | None]:
    if len(shape) != rank + 1:
        raise SizeError(f"expected a {rank + 2}-D input. Received shape {_show(shape)}")
    if _channels_first(config):
        return tuple(shape[1:]), shape[0]
    return tuple(shape[:-1]), shape[-1]


def _join(spatial: tuple, channels: int | None, config: dict) -> Shape:
    return (channels, *spatial) if _channels_first(config) else (*spatial, channels)


def _known(value: int | None, what: str) -> int:
    if value is None:
        raise SizeError(f"its {what} is not fixed by the model's input")
    return value


def _show(shape: Shape) -> str:
    return "x".join("?" if d is None else f"{d:,}" for d in shape) or "scalar"


def values_in(shape: Shape) -> int:
    """Values in one sample of ``shape`` (unknown dimensions count as 1)."""
    return math.prod(d for d in shape if d is not None)


# ----------------------------------------------------------------------------- rules: (config, inputs) -> (outputs, parameters, words)

Rule = Callable[[dict, list, str], tuple[list, int, str]]


def _window(length: int | None, kernel: int, stride: int, dilation: int, padding: str) -> int | None:
    if length is None:
        return None
    if padding == "valid":
        length = (length - dilation * (kernel - 1) - 1) // stride + 1
    else:  # "same" and "causal" keep ceil(length / stride)
        length = -(-length // stride)
    if length < 1:
        raise SizeError("its output would be empty (the input is smaller than the kernel)")
    return length


def _spatial_out(config: dict, spatial: tuple, kernel: tuple, strides: tuple, dilation: tuple) -> tuple:
    padding = config.get("padding", "valid")
    return tuple(_window(n, k, s, d, padding) for n, k, s, d in zip(spatial, kernel, strides, dilation))


def _conv(config: dict, inputs: list, class_name: str):
    rank = _rank(class_name)
    spatial, channels = _split(inputs[0], config, rank)
    channels = _known(channels, "channel count")
    kernel = _ints(config, "kernel_size", rank)
    strides, dilation = _ints(config, "strides", rank, 1), _ints(config, "dilation_rate", rank, 1)
    bias = bool(config.get("use_bias", True))
    if class_name.startswith("Depthwise"):
        multiplier = _int(config, "depth_multiplier", 1)
        out_channels = channels * multiplier
        parameters, words = math.prod(kernel) * out_channels + bias * out_channels, f"depth multiplier {multiplier:,}"
    else:
        filters = _int(config, "filters")
        words = f"{filters:,} filters"
        if class_name.startswith("Separable"):
            multiplier = _int(config, "depth_multiplier", 1)
            parameters = math.prod(kernel) * channels * multiplier + channels * multiplier * filters
        elif "Transpose" in class_name:
            parameters = math.prod(kernel) * channels * filters
        else:
            parameters = math.prod(kernel) * (channels // _int(config, "groups", 1)) * filters
        out_channels, parameters = filters, parameters + bias * filters
    if "Transpose" in class_name:
        padding = config.get("padding", "valid")
        out = tuple(
            None if n is None else n * s if padding == "same" else (n - 1) * s + d * (k - 1) + 1
            for n, k, s, d in zip(spatial, kernel, strides, dilation)
        )
    else:
        out = _spatial_out(config, spatial, kernel, strides, dilation)
    return [_join(out, out_channels, config)], parameters, words


def _dense(config: dict, inputs: list, class_name: str):
    units = _int(config, "units")
    features = _known(inputs[0][-1] if inputs[0] else None, "input width")
    parameters = features * units + units * bool(config.get("use_bias", True))
    return [(*inputs[0][:-1], units)], parameters, f"{units:,} units"


def _axes(config: dict, shape: Shape, default) -> list[int]:
    axis = config.get("axis", default)
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    rank = len(shape) + 1  # the configs count the batch dimension
    try:
        return [(a if a >= 0 else a + rank) - 1 for a in axes]
    except TypeError:
        raise SizeError(f"expected `axis` to be whole numbers. Received: axis={axis!r}") from None


def _normalization(config: dict, inputs: list, class_name: str):
    shape = inputs[0]
    axes = _axes(config, shape, -1 if class_name != "Normalization" else -1)
    if any(not 0 <= a < len(shape) for a in axes):
        raise SizeError(f"its axis {config.get('axis')!r} is outside the input shape {_show(shape)}")
    width = math.prod(_known(shape[a], "normalized axis") for a in axes)
    copies = {"BatchNormalization": 4, "Normalization": 2}.get(class_name, 2)
    return [shape], copies * width, ""


def _prelu(config: dict, inputs: list, class_name: str):
    shared = config.get("shared_axes") or []
    shared = [shared] if isinstance(shared, int) else shared
    dims = [1 if index + 1 in shared else _known(d, "input size") for index, d in enumerate(inputs[0])]
    return [inputs[0]], math.prod(dims), ""


def _embedding(config: dict, inputs: list, class_name: str):
    rows, width = _int(config, "input_dim"), _int(config, "output_dim")
    return [(*inputs[0], width)], rows * width, f"{rows:,} x {width:,} embeddings"


def _pooling(config: dict, inputs: list, class_name: str):
    rank = _rank(class_name)
    spatial, channels = _split(inputs[0], config, rank)
    pool = _ints(config, "pool_size", rank, 2)
    strides = _ints(config, "strides", rank, pool) if config.get("strides") is not None else pool
    out = _spatial_out(config, spatial, pool, strides, (1,) * rank)
    return [_join(out, channels, config)], 0, ""


def _global_pooling(config: dict, inputs: list, class_name: str):
    rank = _rank(class_name)
    spatial, channels = _split(inputs[0], config, rank)
    if config.get("keepdims"):
        return [_join((1,) * rank, channels, config)], 0, ""
    return [(channels,)], 0, ""


def _flatten(config: dict, inputs: list, class_name: str):
    shape = inputs[0]
    return [(None if None in shape else math.prod(shape),)], 0, ""


def _reshape(config: dict, inputs: list, class_name: str):
    target = config.get("target_shape")
    if isinstance(target, dict):
        target = target.get("config", {}).get("value")
    if not isinstance(target, (list, tuple)) or not all(isinstance(d, int) and (d > 0 or d == -1) for d in target):
        raise SizeError(f"expected `target_shape` to be whole numbers. Received: {target!r}")
    known = math.prod(d for d in target if d != -1)
    total = None if None in inputs[0] else math.prod(inputs[0])
    if -1 in target:
        missing = total // known if total is not None else None
        target = [missing if d == -1 else d for d in target]
    elif total is not None and known != total:
        raise SizeError(f"its target shape {_show(tuple(target))} does not hold the {total:,} input values")
    return [tuple(target)], 0, ""


def _permute(config: dict, inputs: list, class_name: str):
    dims = config.get("dims")
    shape = inputs[0]
    if not isinstance(dims, (list, tuple)) or sorted(dims) != list(range(1, len(shape) + 1)):
        raise SizeError(f"expected `dims` to be a permutation of 1..{len(shape)}. Received: {dims!r}")
    return [tuple(shape[d - 1] for d in dims)], 0, ""


def _repeat_vector(config: dict, inputs: list, class_name: str):
    return [(_int(config, "n"), *inputs[0])], 0, ""


def _pairs(config: dict, key: str, rank: int) -> list[tuple[int, int]]:
    value = config.get(key, 1)
    if isinstance(value, int):
        return [(value, value)] * rank
    if isinstance(value, (list, tuple)) and len(value) == rank:
        pairs = [(v, v) if isinstance(v, int) else tuple(v) for v in value]
        if all(len(p) == 2 and all(isinstance(n, int) and n >= 0 for n in p) for p in pairs):
            return pairs
    raise SizeError(f"expected `{key}` to be whole numbers. Received: {key}={value!r}")


def _padding(config: dict, inputs: list, class_name: str):
    rank = _rank(class_name)
    spatial, channels = _split(inputs[0], config, rank)
    key = "cropping" if class_name.startswith("Cropping") else "padding"
    sign = -1 if key == "cropping" else 1
    out = tuple(None if n is None else n + sign * (a + b) for n, (a, b) in zip(spatial, _pairs(config, key, rank)))
    if any(n is not None and n < 1 for n in out):
        raise SizeError("its cropping leaves nothing")
    return [_join(out, channels, config)], 0, ""


def _upsampling(config: dict, inputs: list, class_name: str):
    rank = _rank(class_name)
    spatial, channels = _split(inputs[0], config, rank)
    size = _ints(config, "size", rank, 2)
    return [_join(tuple(None if n is None else n * s for n, s in zip(spatial, size)), channels, config)], 0, ""


def _resize(config: dict, inputs: list, class_name: str):
    spatial, channels = _split(inputs[0], config, 2)
    out = (_int(config, "height"), _int(config, "width"))
    return [_join(out, channels, config)], 0, f"{out[0]:,}x{out[1]:,} pixels"


def _same_shape(config: dict, inputs: list, class_name: str):
    return [inputs[0]], 0, ""


def _merge(config: dict, inputs: list, class_name: str):
    if len(inputs) < 2 or len({len(shape) for shape in inputs}) != 1:
        raise SizeError(f"expected two or more inputs of one rank. Received shapes {[_show(s) for s in inputs]}")
    out = tuple(None if None in dims else max(dims) for dims in zip(*inputs))
    return [out], 0, ""


def _concatenate(config: dict, inputs: list, class_name: str):
    if len(inputs) < 2 or len({len(shape) for shape in inputs}) != 1:
        raise SizeError(f"expected two or more inputs of one rank. Received shapes {[_show(s) for s in inputs]}")
    axis = config.get("axis", -1)
    axis = (axis if axis >= 0 else axis + len(inputs[0]) + 1) - 1
    if not 0 <= axis < len(inputs[0]):
        raise SizeError(f"its axis {config.get('axis')!r} is outside the inputs")
    joined = [shape[axis] for shape in inputs]
    out = list(inputs[0])
    out[axis] = None if None in joined else sum(joined)
    return [tuple(out)], 0, ""


RULES: dict[str, Rule] = {
    **{f"Conv{r}D": _conv for r in (1, 2, 3)},
    **{f"Conv{r}DTranspose": _conv for r in (1, 2, 3)},
    **{f"DepthwiseConv{r}D": _conv for r in (1, 2)},
    **{f"SeparableConv{r}D": _conv for r in (1, 2)},
    **{f"{kind}Pooling{r}D": _pooling for kind in ("Max", "Average") for r in (1, 2, 3)},
    **{f"Global{kind}Pooling{r}D": _global_pooling for kind in ("Max", "Average") for r in (1, 2, 3)},
    **{f"ZeroPadding{r}D": _padding for r in (1, 2, 3)},
    **{f"Cropping{r}D": _padding for r in (1, 2, 3)},
    **{f"UpSampling{r}D": _upsampling for r in (1, 2, 3)},
    **{name: _same_shape for name in SAME_SHAPE},
    **{name: _merge for name in ELEMENTWISE_MERGES},
    "Concatenate": _concatenate,
    "Dense": _dense,
    "BatchNormalization": _normalization,
    "LayerNormalization": _normalization,
    "GroupNormalization": _normalization,
    "Normalization": _normalization,
    "PReLU": _prelu,
    "Embedding": _embedding,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Permute": _permute,
    "RepeatVector": _repeat_vector,
    "Resizing": _resize,
    "CenterCrop": _resize,
    "RandomCrop": _resize,
}


# ----------------------------------------------------------------------------- the graph


def layer_name(layer: dict) -> str:
    """A layer's name in a model config (Keras 3 keeps it beside and inside ``config``)."""
    config = layer.get("config") if isinstance(layer.get("config"), dict) else {}
    return str(layer.get("name") or config.get("name") or "?")


def _input_shape(config: dict) -> Shape | None:
    for key in ("batch_shape", "batch_input_shape"):
        if isinstance(config.get(key), (list, tuple)):
            return tuple(config[key][1:])
    if isinstance(config.get("shape"), (list, tuple)):
        return tuple(config["shape"])
    return None


def _with_image_size(shape: Shape, image_size: int) -> Shape:
    """An image input of free height and width takes the chosen input size."""
    if len(shape) == 3:
        return tuple(image_size if d is None and index < 2 else d for index, d in enumerate(shape))
    return shape


def _check_shape(shape, where: str) -> Shape:
    if not isinstance(shape, (list, tuple)) or not all(d is None or (isinstance(d, int) and d > 0) for d in shape):
        raise SizeError(f"{where} declares an input shape that is not whole numbers: {shape!r}")
    return tuple(shape)


class _Sizer:
    """Follows a model config's graph, recording every layer (rules come from :data:`RULES`)."""

    def __init__(self, image_size: int, rules: dict[str, Rule]):
        self.image_size = image_size
        self.rules = rules
        self.size = ModelSize()

    def model(self, layer: dict, inputs: list | None, prefix: str) -> list:
        config = layer.get("config") or {}
        if layer.get("class_name") == "Sequential":
            return self._sequential(config, inputs, prefix)
        return self._functional(config, inputs, prefix)

    def _sequential(self, config: dict, inputs: list | None, prefix: str) -> list:
        layers = list(config.get("layers") or [])
        if inputs is None:
            first = layers[0].get("config", {}) if layers else {}
            shape = _input_shape(first) or _input_shape({"batch_shape": config.get("build_input_shape")})
            if shape is None:
                raise SizeError(f"the Sequential model '{config.get('name')}' declares no input shape")
            inputs = [self._top_input(shape, prefix + str(config.get("name")))]
        current = inputs
        for layer in layers:
            if layer.get("class_name") == "InputLayer":
                continue
            current = self.call(layer, current, prefix, first_call=True)
        return current

    def _top_input(self, shape, where: str) -> Shape:
        shape = _with_image_size(_check_shape(shape, where), self.image_size)
        self.size.input_shapes.append(shape)
        return shape

    def _functional(self, config: dict, inputs: list | None, prefix: str) -> list:
        layers = {layer_name(layer): layer for layer in config.get("layers") or []}
        outputs: dict[tuple[str, int], list] = {}
        input_refs = _refs(config.get("input_layers"))
        for position, (name, _node, _tensor) in enumerate(input_refs):
            if name not in layers:
                raise SizeError(f"the model's input '{name}' is not one of its layers")
            if inputs is not None:
                if position >= len(inputs):
                    raise SizeError(f"the nested model '{config.get('name')}' takes more inputs than it is given")
                outputs[(name, 0)] = [inputs[position]]
            else:
                shape = _input_shape(layers[name].get("config") or {})
                outputs[(name, 0)] = [self._top_input(shape, f"input '{name}'")]
        pending = [
            (name, index, node)
            for name, layer in layers.items()
            if layer.get("class_name") != "InputLayer"
            for index, node in enumerate(layer.get("inbound_nodes") or [])
        ]
        seen: set[str] = set()
        while pending:
            ready = [item for item in pending if all(ref[:2] in outputs for ref in _node_refs(item[2]))]
            if not ready:
                raise SizeError(f"the graph of '{config.get('name')}' refers to layers that are never computed")
            for item in ready:
                name, index, node = item
                shapes = [outputs[ref[:2]][ref[2]] for ref in _node_refs(node, args_only=True) if ref[2] < 10**6]
                outputs[(name, index)] = self.call(layers[name], shapes, prefix, first_call=name not in seen)
                seen.add(name)
                pending.remove(item)
        try:
            return [outputs[(name, node)][tensor] for name, node, tensor in _refs(config.get("output_layers"))]
        except (KeyError, IndexError):
            raise SizeError(f"the outputs of '{config.get('name')}' are not layers of it") from None

    def call(self, layer: dict, inputs: list, prefix: str, first_call: bool) -> list:
        """Sizes one call of ``layer`` on ``inputs``; parameters count on the first call only."""
        class_name, path = layer.get("class_name"), prefix + layer_name(layer)
        if not inputs:
            raise SizeError(f"layer '{path}' is called on no input")
        if class_name in CONTAINERS:
            return self.model(layer, inputs, path + "/")
        config = layer.get("config") or {}
        if class_name == "TimeDistributed":
            inner = config.get("layer") or {}
            steps = inputs[0][0] if inputs[0] else None
            shapes = self.call(inner, [tuple(inputs[0][1:])], path + "/", first_call)
            return [(steps, *shape) for shape in shapes]
        try:
            shapes, parameters, words = self.rules[class_name](config, inputs, class_name)
            build_shape = (layer.get("build_config") or {}).get("input_shape")
            if first_call and isinstance(build_shape, (list, tuple)) and build_shape and class_name not in SAME_SHAPE:
                # Keras builds a layer from its declared build shape before the graph
                # runs: what it allocates is the larger of the two.
                if not isinstance(build_shape[0], (list, tuple)):
                    declared = _check_shape(build_shape[1:], f"layer '{path}'")
                    parameters = max(parameters, self.rules[class_name](config, [declared, *inputs[1:]], class_name)[1])
        except SizeError as error:
            raise SizeError(f"layer '{path}' ({class_name}) cannot be sized: {error}") from None
        largest = max(shapes, key=values_in)
        self.size.layers.append(
            LayerRecord(path, class_name, parameters if first_call else 0, words, values_in(largest), largest)
        )
        return shapes


def _refs(value) -> list[tuple[str, int, int]]:
    """``input_layers`` / ``output_layers``: one ``[name, node, tensor]`` or a list of them."""
    if isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[0], str):
        value = [value]
    refs = []
    for item in value or []:
        if not (isinstance(item, (list, tuple)) and len(item) >= 3 and isinstance(item[0], str)):
            raise SizeError(f"expected [layer name, node, tensor] references. Received: {item!r}")
        refs.append((item[0], int(item[1]), int(item[2])))
    return refs


def _node_refs(node, args_only: bool = False) -> list[tuple[str, int, int]]:
    """The tensors one inbound node reads: Keras 3 ``{"args", "kwargs"}`` or legacy lists."""
    if isinstance(node, dict):
        found: list = []
        _collect(node.get("args"), found)
        if not args_only:
            _collect(node.get("kwargs"), found)
        return found
    legacy = [item for item in node or [] if isinstance(item, (list, tuple)) and item and isinstance(item[0], str)]
    return [(item[0], int(item[1]), int(item[2])) for item in legacy]


def _collect(value, found: list) -> None:
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            history = (value.get("config") or {}).get("keras_history") or []
            if len(history) == 3 and isinstance(history[0], str):
                found.append((history[0], int(history[1]), int(history[2])))
            return
        for item in value.values():
            _collect(item, found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _collect(item, found)


def size_model(model_config: dict, image_size: int, extra_rules: dict[str, Rule] | None = None) -> ModelSize:
    """Every layer's parameters and outputs for one image, from a model config alone.

    Args:
        model_config: the ``{"class_name": "Functional" | "Sequential", "config": …}``
            dict of a ``.keras`` archive's config.json or an .h5 file's ``model_config``.
        image_size: the height and width given to an image input whose size is free.
        extra_rules: rules for the studio's own layer classes, by class name.

    Returns:
        A :class:`ModelSize` with one record per layer call.

    Raises:
        SizeError: a layer or the graph cannot be sized; the message names the layer.
    """
    sizer = _Sizer(image_size, {**RULES, **(extra_rules or {})})
    if model_config.get("class_name") not in CONTAINERS:
        raise SizeError(f"expected a Functional or Sequential model. Received: {model_config.get('class_name')!r}")
    sizer.model(model_config, None, "")
    return sizer.size


def same_shape_rule(config: dict, inputs: list, class_name: str):
    """The rule of a layer whose output has its input's shape and no weights."""
    return _same_shape(config, inputs, class_name)


def show_shape(shape: Shape) -> str:
    """``(160, 160, 10000)`` as ``160x160x10,000``."""
    return _show(shape)
