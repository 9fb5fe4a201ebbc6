"""The allow-list walk of a model config: plain, known layers and settings, nothing else.

:func:`check_config` reads a ``.keras`` config.json or an .h5 ``model_config`` as data
(nothing is deserialized) and refuses, with the real reason, a Lambda layer of any
kind, a setting that names a Python function or a serialized object other than Keras'
initializers, regularizers, constraints and dtype policies, a file path (TFSMLayer,
vocabulary files), and a layer class that is not a Keras built-in this studio can size
(:mod:`tlcore.model.layer_rules`), tlcore's own ``Preprocess`` or one of the KerasHub image
backbones and converters :mod:`tlcore.model.hub_layers` lists (by registered name, class and
module; any other KerasHub class is refused). Nested models and wrappers are walked.
"""

from __future__ import annotations

import re

from tlcore.errors import UnsafeModelError
from tlcore.model.hub_layers import hub_refusal, is_hub_layer
from tlcore.model.layer_rules import CONTAINERS, RULES, same_shape_rule
from tlcore.model.layer_sizes import layer_name

# tlcore's own layer classes a saved classifier holds: registered name → (class, shape rule).
OWN_LAYERS = {"tlcore>Preprocess": ("Preprocess", same_shape_rule)}
# Keras' serialized settings objects a layer config may hold (initializers, regularizers,
# constraints, dtype policies): data, never code.
SETTING_CLASSES = frozenset(
    "Zeros Ones Constant GlorotUniform GlorotNormal HeUniform HeNormal LecunUniform LecunNormal RandomNormal "
    "RandomUniform TruncatedNormal VarianceScaling Orthogonal OrthogonalInitializer Identity IdentityInitializer "
    "L1 L2 L1L2 OrthogonalRegularizer MaxNorm MinMaxNorm NonNeg UnitNorm DTypePolicy FloatDTypePolicy "
    "__tuple__ __keras_tensor__".split()
)
ACTIVATIONS = frozenset(
    "linear relu relu6 leaky_relu elu selu gelu silu swish sigmoid hard_sigmoid hard_silu hard_swish softmax "
    "log_softmax softplus softsign tanh exponential mish celu glu sparsemax".split()
)
# Activation settings of KerasHub's accepted classes: Keras' names and the two KerasHub resolves itself.
ACTIVATION_KEYS = {"activation": ACTIVATIONS, "recurrent_activation": ACTIVATIONS}
ACTIVATION_KEYS |= {
    key: ACTIVATIONS | {"quick_gelu", "gelu_approximate"}
    for key in ("intermediate_activation", "projection_activation")
}
# Other layer classes Keras ships: refused (they cannot be sized, read files or run code).
OTHER_KERAS_LAYERS = frozenset(
    "Lambda TFSMLayer TorchModuleWrapper JaxLayer FlaxLayer LSTM GRU SimpleRNN ConvLSTM1D ConvLSTM2D ConvLSTM3D "
    "RNN StackedRNNCells Bidirectional MultiHeadAttention GroupQueryAttention Attention AdditiveAttention "
    "EinsumDense TextVectorization StringLookup IntegerLookup Hashing Discretization CategoryEncoding "
    "HashedCrossing Pipeline MelSpectrogram STFTSpectrogram Dot Wrapper".split()
)
PATH_KEYS = frozenset(("filepath", "file_path", "path", "vocabulary", "vocabulary_file", "idf_weights"))
_PATH_LIKE = re.compile(r"^(?:/|~|\\\\|[A-Za-z]:[\\/]|file:)|://")


def check_config(config: dict, file_name: str) -> None:
    """Refuses a model config that holds anything but plain, known layers and settings.

    Args:
        config: the top-level model config (``{"class_name": …, "config": …}``).
        file_name: the file's name, for the message.

    Raises:
        UnsafeModelError: a Lambda layer, a Python function, a file path, a layer class
            that is not an accepted Keras built-in, or a setting that is not plain data.
    """
    if not isinstance(config, dict) or config.get("class_name") not in CONTAINERS:
        received = config.get("class_name") if isinstance(config, dict) else type(config).__name__
        raise UnsafeModelError(
            f"{file_name} is not a Keras Functional or Sequential model (its top is {received!r}). It is refused."
        )
    _check_layer(config, "", file_name, top=True)


def _check_layer(layer, prefix: str, file_name: str, top: bool = False) -> None:
    if not isinstance(layer, dict):
        raise UnsafeModelError(f"{file_name}: its config holds {type(layer).__name__} where a layer should be.")
    class_name, path = layer.get("class_name"), prefix + layer_name(layer)
    config = layer.get("config") if isinstance(layer.get("config"), dict) else {}
    if class_name == "Lambda":
        function = config.get("function")
        named = isinstance(function, dict) and function.get("class_name") == "function"
        what = f" calling {_function_name(function)}" if named else ""
        raise UnsafeModelError(
            f"{file_name} contains a Lambda layer '{path}'{what}, which would run arbitrary Python code "
            "when loaded; it is refused. Re-save the model without Lambda layers (use built-in Keras "
            "layers), or use a registry backbone."
        )
    inner_prefix = "" if top else path + "/"
    for key, value in config.items():
        if key == "layers" and class_name in CONTAINERS:
            for inner in value or []:
                _check_layer(inner, inner_prefix, file_name)
        elif key == "layer" and class_name == "TimeDistributed":
            _check_layer(value, inner_prefix, file_name)
        elif key not in ("input_layers", "output_layers"):
            _check_setting(value, key, path, file_name)
    for key in ("inbound_nodes", "build_config"):
        _check_setting(layer.get(key), key, path, file_name)
    _check_class(layer, class_name, path, file_name)


def _function_name(value: dict) -> str:
    config = value.get("config")
    name = config if isinstance(config, str) else (config or {}).get("function_name") or value.get("class_name")
    return f"{value.get('module') or '?'}.{name}" if value.get("module") else str(name)


def _check_setting(value, key: str, path: str, file_name: str) -> None:
    where = f"in layer '{path}' (its '{key}')"
    if isinstance(value, dict):
        class_name = value.get("class_name")
        if class_name in ("function", "__lambda__") or value.get("registered_name") == "function":
            raise UnsafeModelError(
                f"{file_name} refers to the Python function {_function_name(value)} {where}, which is not a "
                "plain layer setting; only Keras' named activations are accepted. It is refused."
            )
        if class_name is not None:
            module = value.get("module")
            if class_name not in SETTING_CLASSES or (module and not _is_keras_module(module)):
                raise UnsafeModelError(
                    f"{file_name} holds a serialized object of class '{class_name}'"
                    f"{f' from {module}' if module else ''} {where}, which is not a plain Keras setting "
                    "(initializer, regularizer, constraint or dtype). It is refused."
                )
        for inner_key, inner in value.items():
            _check_setting(inner, key if inner_key in ("config", "value") else inner_key, path, file_name)
    elif isinstance(value, (list, tuple)):
        for inner in value:
            _check_setting(inner, key, path, file_name)
    elif isinstance(value, str):
        if key in PATH_KEYS and value or _PATH_LIKE.search(value):
            raise UnsafeModelError(
                f"{file_name} refers to a file path ({value[:80]!r}) {where}; a model file may not read other "
                "files on the server. It is refused."
            )
        if key in ACTIVATION_KEYS and value not in ACTIVATION_KEYS[key]:
            raise UnsafeModelError(
                f"{file_name} uses the activation {value[:80]!r} {where}, which is not one of Keras' named "
                "activations. It is refused."
            )


def _is_keras_module(module: str) -> bool:
    return module == "keras" or module.startswith("keras.")


def _check_class(layer: dict, class_name, path: str, file_name: str) -> None:
    module, registered = layer.get("module"), layer.get("registered_name")
    if registered in OWN_LAYERS and OWN_LAYERS[registered][0] == class_name:
        preprocess = (layer.get("config") or {}).get("preprocess")
        from tlcore.model.preprocessing import PREPROCESSING

        if preprocess not in PREPROCESSING:
            raise UnsafeModelError(f"{file_name}: layer '{path}' names an unknown preprocessing {preprocess!r}.")
        return
    if is_hub_layer(layer):
        reason = hub_refusal(layer)
        if reason:
            raise UnsafeModelError(
                f"{file_name} uses {reason} in layer '{path}'. Other KerasHub classes are not checked by this "
                "studio and may run code or read files when loaded; it is refused."
            )
        return
    accepted = class_name in RULES or class_name in CONTAINERS or class_name in ("InputLayer", "TimeDistributed")
    custom = registered not in (None, class_name) or (module and not _is_keras_module(module))
    if accepted and not custom:
        return
    if class_name in OTHER_KERAS_LAYERS and not custom:
        raise UnsafeModelError(
            f"{file_name} uses the Keras layer class '{class_name}' (layer '{path}'), which this studio does not "
            "accept in a model file: it cannot be sized before loading. Accepted: convolution, pooling, "
            "normalization, dense, merge, reshaping and image preprocessing layers."
        )
    origin = f" (registered as {registered!r})" if registered not in (None, class_name) else ""
    origin = origin or (f" from module {module!r}" if module and not _is_keras_module(module) else "")
    raise UnsafeModelError(
        f"{file_name} uses layer class {class_name!r}{origin} in layer '{path}', which is not a Keras built-in. "
        "Custom layers run their own code when loaded; it is refused."
    )
