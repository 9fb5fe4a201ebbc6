"""A hostile model-file corpus, built here in tmp: every file refused with its real reason.

The files are tiny: each hostile config is written straight into a ``.keras`` zip (or an
.h5 made with h5py), as an attacker would, so nothing hostile is ever deserialized to
make them. Good files (the real shared MobileNetV2, a classifier the studio saved) must
still load.
"""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from tlcore.errors import UnsafeModelError
from tlcore.model.file_trial import check_model_file, keras_settings, keras_settings_guard, load_model_file
from tlcore.model.files import ModelFileLimits, inspect_model_file

ROOT = Path(__file__).resolve().parents[1]
DTYPE = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}


# ----------------------------------------------------------------------------- building the corpus


def tensor(name: str, shape: list) -> dict:
    return {
        "class_name": "__keras_tensor__",
        "config": {"shape": shape, "dtype": "float32", "keras_history": [name, 0, 0]},
    }


def layer(class_name: str, name: str, inputs: list, module: str = "keras.layers", **config) -> dict:
    """One Keras 3 layer entry of a Functional config, called on ``inputs`` (layer names)."""
    args = [tensor(i, []) for i in inputs]
    return {
        "module": module,
        "class_name": class_name,
        "config": {"name": name, "trainable": True, "dtype": DTYPE, **config},
        "registered_name": None,
        "name": name,
        "inbound_nodes": [{"args": args if len(args) == 1 else [args], "kwargs": {}}],
    }


def functional(layers: list, name: str = "model", size: int | None = 32, output: str | None = None) -> dict:
    image = {
        "module": "keras.layers",
        "class_name": "InputLayer",
        "config": {"batch_shape": [None, size, size, 3], "dtype": "float32", "name": "image"},
        "registered_name": None,
        "name": "image",
        "inbound_nodes": [],
    }
    return {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "config": {
            "name": name,
            "trainable": True,
            "layers": [image, *layers],
            "input_layers": ["image", 0, 0],
            "output_layers": [output or layers[-1]["name"], 0, 0],
        },
        "registered_name": "Functional",
    }


def conv(name: str, source: str, filters: int = 4, **extra) -> dict:
    settings = {"kernel_size": [3, 3], "strides": [1, 1], "padding": "same", "activation": "relu", "use_bias": True}
    return layer("Conv2D", name, [source], filters=filters, **{**settings, **extra})


def dense(name: str, source: str, units: int, **extra) -> dict:
    return layer("Dense", name, [source], units=units, activation=extra.pop("activation", "softmax"), **extra)


def write_keras(path: Path, config: dict, weights=None, extra_members: dict | None = None) -> Path:
    """A .keras zip holding ``config`` and a weights file (``weights(h5_file)`` fills it)."""
    weights_path = path.with_suffix(".weights.tmp")
    with h5py.File(weights_path, "w") as handle:
        (weights or (lambda h: h.create_dataset("layers/conv/vars/0", data=np.zeros((3, 3, 3, 4), "f4"))))(handle)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        archive.writestr("config.json", json.dumps(config))
        archive.write(weights_path, "model.weights.h5")
        for name, data in (extra_members or {}).items():
            archive.writestr(name, data)
    weights_path.unlink()
    return path


def declare_sizes(path: Path, sizes: dict[str, int]) -> Path:
    """Rewrites the central directory so members *declare* other uncompressed sizes (a lying header)."""
    data = bytearray(path.read_bytes())
    start = data.index(b"PK\x01\x02")
    while start != -1:
        name_length = int.from_bytes(data[start + 28 : start + 30], "little")
        name = data[start + 46 : start + 46 + name_length].decode()
        if name in sizes:
            data[start + 24 : start + 28] = sizes[name].to_bytes(4, "little")
        start = data.find(b"PK\x01\x02", start + 46)
    path.write_bytes(bytes(data))
    return path


def small_model(tmp_path: Path, name: str = "good.keras") -> Path:
    """A real, harmless model saved by Keras (conv → pool → dense)."""
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inputs, outputs).save(tmp_path / name)
    return tmp_path / name


def rss() -> int:
    """This process' resident memory now, in bytes (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def function(module: str, name: str) -> dict:
    return {"module": module, "class_name": "function", "config": name, "registered_name": "function"}


def lambda_layer(name: str, source: str, fn: dict) -> dict:
    return layer("Lambda", name, [source], function=fn, output_shape=None, arguments={})


CORPUS = {
    # name: (config or builder, words the refusal must contain)
    "setter_gadget": (
        lambda: functional(
            [lambda_layer("set_eps", "image", function("keras.config", "set_epsilon")), conv("conv", "set_eps")]
        ),  # fmt: skip
        "Lambda layer 'set_eps' calling keras.config.set_epsilon",
    ),
    "floatx_gadget": (
        lambda: functional(
            [lambda_layer("floatx", "image", function("keras.src.backend", "set_floatx")), conv("conv", "floatx")]
        ),  # fmt: skip
        "Lambda layer 'floatx' calling keras.src.backend.set_floatx",
    ),
    "os_system_activation": (
        lambda: functional([conv("conv", "image", activation=function("os", "system"))]),
        "refers to the Python function os.system in layer 'conv' (its 'activation')",
    ),
    "builtins_exec_lambda": (
        lambda: functional([lambda_layer("run", "image", function("builtins", "exec")), conv("conv", "run")]),
        "Lambda layer 'run' calling builtins.exec",
    ),
    "exec_initializer": (
        lambda: functional(
            [conv("conv", "image", kernel_initializer={"module": "builtins", "class_name": "exec", "config": {}})]
        ),  # fmt: skip
        "serialized object of class 'exec' from builtins in layer 'conv'",
    ),
    "dense_bomb": (
        lambda: functional([layer("GlobalAveragePooling2D", "pool", ["image"]), dense("dense", "pool", 10**9)]),
        "declares 1,000,000,000 units in layer 'dense' (4,000,000,000 parameters;",
    ),
    "build_shape_bomb": (
        lambda: functional(
            [
                layer("GlobalAveragePooling2D", "pool", ["image"]),
                {**dense("dense", "pool", 1000), "build_config": {"input_shape": [None, 10**6]}},
            ]
        ),  # fmt: skip
        "declares 1,000 units in layer 'dense' (1,000,001,000 parameters;",
    ),
    "conv_activation_bomb": (
        lambda: functional([conv("wide", "image", filters=10_000)], size=160),
        "layer 'wide' outputs 160x160x10,000 values per image at 160x160 pixels",
    ),
    "tfsm_layer": (
        lambda: functional(
            [layer("TFSMLayer", "tfsm", ["image"], filepath="/srv/models/exported", call_endpoint="serve")]
        ),  # fmt: skip
        "refers to a file path ('/srv/models/exported') in layer 'tfsm'",
    ),
    "vocabulary_path": (
        lambda: functional([layer("StringLookup", "lookup", ["image"], vocabulary="vocab.txt", num_oov_indices=1)]),
        "refers to a file path ('vocab.txt') in layer 'lookup' (its 'vocabulary')",
    ),
    "custom_class": (
        lambda: functional(
            [
                {
                    **conv("conv", "image"),
                    "module": "evil.layers",
                    "class_name": "Backdoor",
                    "registered_name": "evil>Backdoor",
                }
            ]
        ),  # fmt: skip
        "uses layer class 'Backdoor' (registered as 'evil>Backdoor') in layer 'conv', which is not a Keras built-in",
    ),
    "lstm": (
        lambda: functional([layer("LSTM", "lstm", ["image"], units=4)]),
        "uses the Keras layer class 'LSTM' (layer 'lstm'), which this studio does not accept",
    ),
    "nested_lambda": (
        lambda: functional(
            [
                {
                    **functional(
                        [
                            lambda_layer("hidden", "image", {"class_name": "__lambda__", "config": {"code": "ZZ"}}),
                            conv("conv", "hidden"),
                        ],
                        name="inner",
                    ),  # fmt: skip
                    "name": "inner",
                    "inbound_nodes": [{"args": [tensor("image", [])], "kwargs": {}}],
                }
            ]  # fmt: skip
        ),
        "contains a Lambda layer 'inner/hidden'",
    ),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile")
    files = {name: write_keras(folder / f"{name}.keras", build()) for name, (build, _) in CORPUS.items()}
    good = functional([conv("conv", "image")])
    files["many_members"] = write_keras(folder / "many_members.keras", good, extra_members={
        f"assets/{i}.txt": b"" for i in range(10_000)})  # fmt: skip
    files["zip_bomb"] = declare_sizes(write_keras(folder / "zip_bomb.keras", good), {"model.weights.h5": 0xF0000000})
    assets = {f"assets/blob{i}.bin": b"x" for i in range(12)}
    files["asset_bomb"] = declare_sizes(
        write_keras(folder / "asset_bomb.keras", good, extra_members=assets), dict.fromkeys(assets, 250 * 2**20)
    )
    files["small_asset"] = write_keras(folder / "small_asset.keras", good, extra_members={"assets/vocab.txt": b"a\nb"})
    files["weights_bomb"] = write_keras(
        folder / "weights_bomb.keras",
        good,
        # Declared 1 GiB, stored in a few bytes: no chunk is ever written.
        weights=lambda h: h.create_dataset(
            "layers/conv/vars/0", shape=(2**28,), dtype="f4", chunks=(2**20,), compression="gzip"
        ),  # fmt: skip
    )
    files["renamed_text"] = folder / "notes.keras"
    files["renamed_text"].write_text("hello world, these are my notes")
    files["corrupt_zip"] = folder / "corrupt.keras"
    files["corrupt_zip"].write_bytes(b"PK\x03\x04" + b"\x00" * 200)
    files["corrupt_h5"] = folder / "corrupt.h5"
    files["corrupt_h5"].write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x01" * 300)
    files["weights_only_h5"] = folder / "weights_only.h5"
    with h5py.File(files["weights_only_h5"], "w") as handle:
        handle.create_dataset("conv/kernel", data=np.zeros((3, 3, 3, 4), "f4"))
    files["legacy_h5_lambda"] = _legacy_h5_with_lambda(folder / "legacy_lambda.h5")
    return files


def _legacy_h5_with_lambda(path: Path) -> Path:
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    keras.Model(inputs, keras.layers.Conv2D(2, 3)(x)).save(path)
    return path


REASONS = {
    **{name: words for name, (_, words) in CORPUS.items()},
    "many_members": "holds 10,003 files, over the limit of 16",
    "zip_bomb": "expands to 3.8 GB ('model.weights.h5' alone declares 3.8 GB), over the limit of 1.0 GB",
    "asset_bomb": "expands to 2.9 GB",
    "small_asset": "holds 'assets/vocab.txt' besides the model's config, metadata and weights",
    "weights_bomb": "its weights declare 268,435,456 values ('layers/conv/vars/0' alone 268,435,456), but its layers "
    "hold only 112 parameters",
    "renamed_text": "could not be read as a Keras model (a .keras file is a zip archive, and this one starts with "
    "b'hello wo')",
    "corrupt_zip": "could not be read as a Keras model (the zip archive is damaged",
    "corrupt_h5": "could not be read as a Keras model (HDF5 error",
    "weights_only_h5": "holds weights only (no model_config): it is not a whole model",
    "legacy_h5_lambda": "contains a Lambda layer 'double', which would run arbitrary Python code",
}


@pytest.mark.parametrize("name", sorted(REASONS))
def test_each_hostile_file_is_refused_by_the_inspection_with_its_real_reason(corpus, name):
    with pytest.raises(UnsafeModelError) as refused:
        inspect_model_file(corpus[name], image_size=160)
    assert REASONS[name] in str(refused.value)
    assert "\n" not in str(refused.value)


def test_the_setter_gadget_is_real_keras_safe_mode_alone_lets_it_change_keras(corpus):
    """Without the inspection, Keras' own safe mode runs the gadget: epsilon changes for the whole process
    (here the load then fails, too late: the setting stays changed)."""
    code = (
        "import keras\nbefore = keras.config.epsilon()\ntry:\n"
        f"    keras.models.load_model({str(corpus['setter_gadget'])!r}, compile=False, safe_mode=True)\n"
        "except Exception:\n    pass\nprint(before, str(keras.config.epsilon()).replace(' ', ''))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})  # fmt: skip
    before, after = completed.stdout.split()[-2:]
    assert before != after, completed.stderr[-2000:]


def test_loading_every_hostile_file_leaves_keras_and_this_process_unharmed(corpus):
    """Through the full path (inspection and child trial): refused, Keras' settings as they were, RSS flat."""
    settings = keras_settings()
    rss_before = rss()
    for name, path in corpus.items():
        with pytest.raises(UnsafeModelError) as refused:
            load_model_file(path, image_size=160)
        assert REASONS[name] in str(refused.value), name
        assert keras_settings() == settings, name
        assert rss() - rss_before < 200 * 2**20, name


def test_registry_architectures_are_sized_exactly_from_their_configs():
    """The parameter and activation counts come from the config alone and match what Keras builds."""
    import keras

    from tlcore.model.layer_sizes import size_model

    for name in ("MobileNetV2", "ResNet50", "DenseNet121", "Xception"):
        model = getattr(keras.applications, name)(weights=None, include_top=False, input_shape=(96, 96, 3))
        size = size_model(json.loads(json.dumps(keras.saving.serialize_keras_object(model))), 96)
        outputs = sum(int(np.prod(layer.output.shape[1:])) for layer in model.layers[1:])
        assert (size.parameters, size.activation_values) == (model.count_params(), outputs), name


def test_a_model_the_studio_saved_passes_and_loads_through_the_child_trial(tmp_path):
    from tlcore.config import ModelConfig
    from tlcore.model import classifier as model_lib
    from tlcore.model.backbones import load_backbone
    from tlcore.model.file_trial import load_saved_model

    backbone = load_backbone(ModelConfig("SmallCNN", weights="none", image_size=32))
    model_lib.build_classifier(backbone, 3, ModelConfig("SmallCNN", hidden_units=8)).save(tmp_path / "model.keras")
    report = check_model_file(tmp_path / "model.keras")
    assert (
        report.parameters
        == model_lib.build_classifier(backbone, 3, ModelConfig("SmallCNN", hidden_units=8)).count_params()
    )
    assert load_model_file(tmp_path / "model.keras").get_layer("preprocess").preprocess == "mobilenet_v2"
    assert load_saved_model(tmp_path / "model.keras").output.shape[-1] == 3


def test_the_verdict_is_cached_by_content(tmp_path, monkeypatch):
    from tlcore.model import file_trial as model_trial

    path = small_model(tmp_path)
    check_model_file(path)
    calls = []
    monkeypatch.setattr(model_trial, "_run_child", lambda *a: calls.append(a) or {"ok": False, "reason": "x"})
    copy = tmp_path / "copy.keras"
    copy.write_bytes(path.read_bytes())
    assert check_model_file(copy).file_name == "copy.keras" and not calls  # same content: no new child
    assert check_model_file(copy, image_size=96).input_shapes == [[32, 32, 3]] and not calls  # its size is fixed
    with zipfile.ZipFile(copy, "a") as archive:
        archive.writestr("assets/x", b"1")
    with pytest.raises(UnsafeModelError):
        check_model_file(copy)
    assert len(calls) == 1  # new content: checked again


def test_the_child_trial_enforces_its_memory_and_time_limits(tmp_path):
    """A file that passes inspection but needs more than the child may use fails there, with a message."""
    path = small_model(tmp_path)
    with pytest.raises(UnsafeModelError, match=r"needed more than the 1.0 GB memory limit|crashed the separate"):
        check_model_file(path, limits=ModelFileLimits(trial_memory_bytes=2**30))
    with pytest.raises(UnsafeModelError, match=r"took longer than 1 s|more than 1 s of CPU"):
        check_model_file(path, limits=ModelFileLimits(trial_seconds=1))


def test_a_change_to_keras_settings_during_a_load_is_refused_and_undone():
    import keras

    epsilon = keras.config.epsilon()
    with pytest.raises(UnsafeModelError, match=r"changes Keras' global settings when loaded or run \(epsilon"):
        with keras_settings_guard("gadget.keras"):
            keras.config.set_epsilon(0.5)
    assert keras.config.epsilon() == epsilon


def test_a_weights_file_declaring_more_than_its_architecture_is_refused(tmp_path):
    from tlcore.config import ModelConfig
    from tlcore.model.backbones import load_backbone

    path = tmp_path / "mnv2.weights.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("bomb", shape=(2**28,), dtype="f4", chunks=(2**20,), compression="gzip")
    with pytest.raises(UnsafeModelError, match=r"declares 268,435,456 weight values .*more than the 4,475,000"):
        load_backbone(ModelConfig("MobileNetV2", weights=str(path), image_size=96))


@pytest.mark.real_assets
def test_the_shared_pretrained_model_passes_and_loads(dog_model):
    report = check_model_file(dog_model)
    assert report.parameters == 2_282_323 and report.input_shapes == [[160, 160, 3]]
    assert load_model_file(dog_model).count_params() == report.parameters


def test_the_cli_refuses_a_hostile_backbone_with_one_line(corpus, colour_dataset, tmp_path):
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tlcore",
            "train",
            "--data",
            str(colour_dataset),
            "--backbone",
            str(corpus["dense_bomb"]),
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "run"),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=600,
    )
    assert completed.returncode == 2
    lines = [line for line in completed.stderr.splitlines() if line.strip() and "tensorflow" not in line.lower()]
    assert any(REASONS["dense_bomb"] in line for line in lines) and "Traceback" not in completed.stderr


def test_the_model_page_shows_the_reason_for_a_hostile_upload(corpus, tmp_path, monkeypatch):
    import streamlit as st

    from tests.test_app import app

    monkeypatch.setenv("TLCORE_DATA_ROOTS", str(tmp_path))
    monkeypatch.setenv("TLCORE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TLCORE_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()
    at = app("pages/image/model.py")
    at.selectbox[0].set_value("Your own Keras model file…").run()
    data = corpus["conv_activation_bomb"].read_bytes()
    at.file_uploader[0].set_value(("wide.keras", data, "application/octet-stream")).run()
    assert not at.exception, at.exception[0].stack_trace[-6:]
    assert "layer 'wide' outputs 160x160x10,000 values per image" in at.error[0].value
    st.cache_resource.clear()
