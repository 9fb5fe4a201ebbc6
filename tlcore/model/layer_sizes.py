"""What a model config declares, computed from the config alone: output shapes and parameters.

A model file is sized before anything in it is deserialized: :func:`size_model` follows
the Functional / Sequential graph, nested models included, and applies each layer's rule
from :mod:`tlcore.model.layer_rules`. Nothing here imports Keras or TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tlcore.model.hub_layers import MODEL_CLASSES
from tlcore.model.layer_rules import CONTAINERS, RULES, SAME_SHAPE, Rule, Shape, SizeError, values_in


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
    free_size: bool = False  # an image input took the chosen size (the file leaves it free)

    @property
    def parameters(self) -> int:
        return sum(record.parameters for record in self.layers)

    @property
    def activation_values(self) -> int:
        """Values in all layer outputs for one image (what a forward pass keeps for training)."""
        return sum(record.output_values for record in self.layers)


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
        declared = _check_shape(shape, where)
        shape = _with_image_size(declared, self.image_size)
        self.size.free_size = self.size.free_size or shape != declared
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
                if layers[name].get("class_name") in MODEL_CLASSES:
                    outputs.setdefault((name, index + 1), outputs[(name, index)])
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
            # A rule may add a 4th value: the values a layer computes inside (a KerasHub backbone).
            shapes, parameters, words, *inside = self.rules[class_name](config, inputs, class_name)
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
        values = max([values_in(largest), *inside])
        self.size.layers.append(LayerRecord(path, class_name, parameters if first_call else 0, words, values, largest))
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
