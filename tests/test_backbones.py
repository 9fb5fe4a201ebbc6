import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tlcore.config import ModelConfig
from tlcore.errors import StudioError, UnsafeModelError, WeightsUnavailableError
from tlcore.model import backbones, preprocessing
from tlcore.model.backbones import BACKBONES, assign_blocks, load_backbone

ROOT = Path(__file__).resolve().parents[1]


def test_registry_has_the_seed_backbones_and_more():
    assert {"VGG16", "ResNet50", "MobileNetV2", "EfficientNetB0"} <= set(BACKBONES)
    assert len([s for s in BACKBONES.values() if not s.builder]) >= 6


# The blocks each architecture is made of, as its paper and its keras.applications source
# name them: a new registry row needs a line here (the test below fails without one).
ARCHITECTURE_BLOCKS = {
    "MobileNetV2": ["stem"] + [f"block_{n}" for n in range(1, 17)],
    "EfficientNetB0": ["stem"] + [f"block{n}" for n in range(1, 8)] + ["top"],
    "EfficientNetV2B0": ["stem"] + [f"block{n}" for n in range(1, 7)] + ["top"],
    "ResNet50": ["stem", "conv1", "conv2", "conv3", "conv4", "conv5"],
    "VGG16": ["stem"] + [f"block{n}" for n in range(1, 6)],
    "DenseNet121": ["stem", "conv1", "conv2", "conv3", "conv4", "conv5"],
    "Xception": ["stem"] + [f"block{n}" for n in range(1, 15)],
    "InceptionV3": [f"mixed{n}" for n in range(11)],
    "SmallCNN": ["stem"] + [f"block{n}" for n in range(1, 5)],
}


def _parents(model) -> dict[str, set[str]]:
    """Each layer's inputs, by layer name, from the functional graph."""
    return {
        layer.name: {parent.operation.name for node in layer._inbound_nodes for parent in node.parent_nodes}
        for layer in model.layers
    }


def _block_crossings(model, labels: list[str]) -> dict[str, list[str]]:
    """For each block boundary, the layers of the blocks up to it that later blocks read.

    Where a block really ends, the graph passes through one tensor (that block's
    output): anything else means a label boundary cuts through a block.
    """
    names = [layer.name for layer in model.layers]
    parents, order = _parents(model), list(dict.fromkeys(labels))
    crossings = {}
    for position, block in enumerate(order[:-1]):
        done = {name for name, label in zip(names, labels) if order.index(label) <= position}
        crossings[block] = sorted({p for name in names if name not in done for p in parents[name] if p in done})
    return crossings


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_registry_backbone_builds_and_its_blocks_are_where_the_architecture_has_them(name):
    spec = BACKBONES[name]
    size = max(spec.min_size, 32)
    backbone = load_backbone(ModelConfig(name, weights="none", image_size=size))
    assert len(backbone.model.output.shape) == 4
    labels = assign_blocks([layer.name for layer in backbone.model.layers], spec.block_pattern)
    assert list(dict.fromkeys(labels)) == ARCHITECTURE_BLOCKS[name], "blocks in order, each one contiguous"
    for block, read_later in _block_crossings(backbone.model, labels).items():
        assert len(read_later) == 1, f"{name}: block {block} should end in one output, later blocks read {read_later}"
    assert backbones.block_names(backbone) == ARCHITECTURE_BLOCKS[name]
    assert preprocessing.preprocess_function(backbone.preprocess) is not None
    assert backbone.pretrained is False


def test_a_block_named_by_its_closing_layer_starts_after_the_previous_one():
    names = ["conv2d", "max_pooling2d", "mixed0", "conv2d_1", "mixed1", "mixed9_0", "concatenate", "mixed2", "extra"]
    assert assign_blocks(names, BACKBONES["InceptionV3"].block_pattern) == [
        "mixed0",
        "mixed0",
        "mixed0",
        "mixed1",
        "mixed1",
        "mixed2",
        "mixed2",
        "mixed2",
        "mixed2",
    ]


def test_unfreezing_from_an_inception_block_includes_its_branches():
    from tlcore.config import FreezePlan
    from tlcore.model.classifier import trainable_names

    backbone = load_backbone(ModelConfig("InceptionV3", weights="none", image_size=75))
    names = [layer.name for layer in backbone.model.layers]
    trainable = trainable_names(backbone.model, FreezePlan("from", "mixed10"), backbone.block_pattern, False)
    # mixed10's branches start right after mixed9; unfreezing from the layer "mixed10" would train nothing
    assert set(names[names.index("mixed9") + 1 :]) == trainable


def test_block_labels_follow_the_architecture():
    names = [
        "input",
        "Conv1",
        "expanded_conv_project",
        "block_1_expand",
        "block_1_pad",
        "block_16_project",
        "Conv_1",
        "out_relu",
    ]
    assert assign_blocks(names, BACKBONES["MobileNetV2"].block_pattern) == [
        "stem",
        "stem",
        "stem",
        "block_1",
        "block_1",
        "block_16",
        "block_16",
        "block_16",
    ]
    assert assign_blocks(
        ["stem_conv", "block1a_dwconv", "block7a_project", "top_conv"], BACKBONES["EfficientNetB0"].block_pattern
    ) == [
        "stem",
        "block1",
        "block7",
        "top",
    ]


def test_too_small_input_is_refused_with_the_minimum():
    with pytest.raises(StudioError, match="at least 71x71"):
        load_backbone(ModelConfig("Xception", weights="none", image_size=64))


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(StudioError, match="MobileNetV2"):
        load_backbone(ModelConfig("MobileNetV9", weights="none"))


def test_offline_imagenet_download_names_the_file_and_where_to_put_it(monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    with pytest.raises(WeightsUnavailableError) as error:
        load_backbone(ModelConfig("MobileNetV2", weights="imagenet", image_size=128))
    message = str(error.value)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_128_no_top.h5" in message
    assert str(tmp_path / "keras-home" / "models") in message
    assert "random weights ('none')" in message


def test_small_cnn_has_no_imagenet_weights():
    with pytest.raises(StudioError, match="no ImageNet weights"):
        load_backbone(ModelConfig("SmallCNN", weights="imagenet"))


def test_local_weights_file_is_loaded(tmp_path):
    source = load_backbone(ModelConfig("MobileNetV2", weights="none", image_size=96), seed=1)
    path = tmp_path / "mnv2.weights.h5"
    source.model.save_weights(path)
    loaded = load_backbone(ModelConfig("MobileNetV2", weights=str(path), image_size=96), seed=2)
    assert loaded.pretrained
    assert loaded.weights_id.startswith("file:")
    for a, b in zip(source.model.get_weights(), loaded.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_missing_weights_file_is_explained():
    with pytest.raises(WeightsUnavailableError, match="Weights file not found"):
        load_backbone(ModelConfig("MobileNetV2", weights="/nowhere/w.h5"))


def _tiny_model(path, with_lambda=False):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs) if with_lambda else inputs
    x = keras.layers.Conv2D(4, 3, name="conv_a")(x)
    x = keras.layers.Conv2D(8, 3, name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, name="dense")(x)
    keras.Model(inputs, outputs).save(path)
    return path


def test_model_file_is_cut_at_the_last_feature_map_by_default(tmp_path):
    backbone = load_backbone(ModelConfig(str(_tiny_model(tmp_path / "m.keras"))))
    assert backbone.model.output.shape[1:] == (28, 28, 8)
    assert backbone.image_size == 32
    cut = load_backbone(ModelConfig(str(tmp_path / "m.keras"), cut_layer="conv_a"))
    assert cut.model.output.shape[1:] == (30, 30, 4)


def test_cut_at_unknown_or_flat_layer_is_explained(tmp_path):
    path = str(_tiny_model(tmp_path / "m.keras"))
    with pytest.raises(StudioError, match="No layer named 'nope'.*conv_b"):
        load_backbone(ModelConfig(path, cut_layer="nope"))
    with pytest.raises(StudioError, match="4-D"):
        load_backbone(ModelConfig(path, cut_layer="dense"))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_model_with_a_lambda_layer_is_refused_with_the_reason(tmp_path, suffix):
    path = _tiny_model(tmp_path / f"lambda{suffix}", with_lambda=True)
    with pytest.raises(UnsafeModelError, match="Lambda layer.*arbitrary Python code"):
        load_backbone(ModelConfig(str(path)))


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, b"PK\x03\x04broken zip"])
def test_corrupt_model_file_is_refused(tmp_path, content):
    path = tmp_path / "broken.keras"
    path.write_bytes(content)
    with pytest.raises(UnsafeModelError, match="could not be read as a Keras model"):
        load_backbone(ModelConfig(str(path)))


@pytest.mark.real_assets
def test_shared_pretrained_model_becomes_a_mobilenet_backbone(dog_model):
    backbone = load_backbone(ModelConfig(str(dog_model), cut_layer="mobilenetv2_1.00_160"))
    assert backbone.model.name == "mobilenetv2_1.00_160"
    assert backbone.model.output.shape[1:] == (5, 5, 1280)
    assert backbone.image_size == 160
    # The family is recognised from layer names: its preprocessing and blocks apply.
    assert backbone.preprocess == "mobilenet_v2"
    assert backbone.block_pattern == BACKBONES["MobileNetV2"].block_pattern
    assert backbone.pretrained


# ----------------------------------------------------------------------------- preprocessing and model files


def test_preprocessing_table_says_what_each_name_does():
    from tlcore.model.preprocessing import PREPROCESSING, describe_preprocessing, preprocess_function

    assert preprocessing.PREPROCESSING is PREPROCESSING  # still importable from the registry
    assert describe_preprocessing("mobilenet_v2") == "mobilenet_v2 (scale to [-1, 1])"
    pixels = np.array([0.0, 127.5, 255.0])
    np.testing.assert_allclose(preprocess_function("mobilenet_v2")(pixels.copy()), [-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(preprocess_function("none")(pixels), pixels)
    with pytest.raises(StudioError, match="Unknown preprocessing.*mobilenet_v2.*Received: 'mobilenet_v9'"):
        preprocess_function("mobilenet_v9")


def test_every_registry_entry_names_a_known_preprocessing():
    assert all(spec.preprocess in preprocessing.PREPROCESSING for spec in BACKBONES.values())
    # SmallCNN is not a MobileNetV2: it borrows only the [-1, 1] scaling.
    assert BACKBONES["SmallCNN"].preprocess == "mobilenet_v2" and not BACKBONES["SmallCNN"].imagenet_top


def test_a_saved_classifier_loads_with_only_the_saved_model_module(tmp_path):
    """tlcore.model.saved_layer registers the Preprocess layer itself (no tlcore.model.classifier import needed)."""
    from tlcore.model import classifier as model_lib

    backbone = load_backbone(ModelConfig("SmallCNN", weights="none", image_size=32))
    model_lib.build_classifier(backbone, 2, ModelConfig("SmallCNN")).save(tmp_path / "model.keras")
    code = (
        "import sys; from tlcore.model.file_trial import load_model_file;"
        f"m = load_model_file({str(tmp_path / 'model.keras')!r});"
        "print(m.get_layer('preprocess').preprocess, 'tlcore.model.classifier' in sys.modules)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["mobilenet_v2", "False"]


def test_a_missing_model_file_is_named():
    from tlcore.model.file_trial import load_model_file

    with pytest.raises(UnsafeModelError, match="Model file not found"):
        load_model_file("/nowhere/model.keras")


def test_imagenet_classifier_refuses_a_backbone_without_a_top_and_explains_offline(monkeypatch, tmp_path):
    with pytest.raises(StudioError, match="no ImageNet classification top"):
        backbones.load_imagenet_classifier("SmallCNN")
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(socket.gaierror(-3, "offline")))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"):
        backbones.load_imagenet_classifier("MobileNetV2")


def test_a_file_that_is_not_a_keras_model_file_is_refused_by_name(tmp_path):
    path = tmp_path / "weights.txt"
    path.write_text("not a model")
    from tlcore.model.file_trial import load_model_file

    with pytest.raises(UnsafeModelError, match=r"ending in \.keras, \.h5, \.hdf5\. Received: weights.txt"):
        load_model_file(path)


def test_a_failed_imagenet_download_is_remembered_until_the_file_appears_or_the_visitor_asks(monkeypatch, tmp_path):
    from tests.helpers import no_network
    from tlcore.model import downloads

    calls = no_network(monkeypatch, tmp_path / "keras-home")
    config = ModelConfig("MobileNetV2", weights="imagenet", image_size=96)
    with pytest.raises(WeightsUnavailableError) as first:
        load_backbone(config)
    tried = len(calls)
    assert tried >= 1
    message = str(first.value)
    place = tmp_path / "keras-home" / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5"
    assert message.startswith("No internet on the server: the ImageNet weights for MobileNetV2")
    assert f"Put the file at {place}" in message and "random weights ('none')" in message
    # The next visit says it again at once: no second wait for the network.
    with pytest.raises(WeightsUnavailableError) as again:
        load_backbone(config)
    assert len(calls) == tried and str(again.value) == message
    # The visitor asks (the page's "Try the download again" forgets the error's download): it is tried again.
    assert downloads.forget(again.value.download) is True
    with pytest.raises(WeightsUnavailableError):
        load_backbone(config)
    assert len(calls) > tried
    # The file has appeared where Keras looks: the failure is forgotten (Keras then reads the file).
    key = next(key for key in downloads.remembered() if key.endswith(":MobileNetV2:96"))
    place.parent.mkdir(parents=True, exist_ok=True)
    place.write_bytes(b"")
    assert downloads.known_failure(key) is None and key not in downloads.remembered()
    # After a while it is tried again too, and at most MAX_REMEMBERED files are remembered.
    downloads.remember_failure("old", "MobileNetV2", OSError("offline"), now=0.0)
    assert downloads.known_failure("old", now=downloads.RETRY_AFTER_SECONDS - 1) is not None
    assert downloads.known_failure("old", now=downloads.RETRY_AFTER_SECONDS) is None
    for index in range(downloads.MAX_REMEMBERED + 5):
        downloads.remember_failure(f"k{index}", "MobileNetV2", OSError("offline"))
    assert len(downloads.remembered()) == downloads.MAX_REMEMBERED and "k0" not in downloads.remembered()
    downloads.forget()
