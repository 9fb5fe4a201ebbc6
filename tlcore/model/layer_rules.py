"""Per-layer size rules: a layer's output shapes and parameters from its config and input shapes.

One rule per accepted Keras layer class (:data:`RULES`); :mod:`tlcore.model.layer_sizes` follows
a model's graph with them. Nothing here imports Keras: the numbers are what Keras would
allocate when it builds the layer. Shapes leave out the batch dimension. A rule raises
:class:`SizeError` with the reason when a config cannot be sized (a missing or
nonsensical setting).
"""

from __future__ import annotations

import math
from collections.abc import Callable

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
    if isinstance(value, dict):  # a serialized tuple
        value = value.get("config", {}).get("value")
    if isinstance(value, int):
        return [(value, value)] * rank
    if rank == 1 and isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        value = [value]  # Cropping1D((0, 16)) / ZeroPadding1D((1, 2)): one (before, after) pair
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


def same_shape_rule(config: dict, inputs: list, class_name: str):
    """The rule of a layer whose output has its input's shape and no weights."""
    return _same_shape(config, inputs, class_name)


def show_shape(shape: Shape) -> str:
    """``(160, 160, 10000)`` as ``160x160x10,000``."""
    return _show(shape)
