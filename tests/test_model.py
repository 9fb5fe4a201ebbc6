import keras
import numpy as np
import pytest

from tlcore import model as model_lib
from tlcore.backbones import load_backbone
from tlcore.config import FreezePlan, ModelConfig
from tlcore.errors import StudioError


@pytest.fixture(scope="module")
def mobilenet():
    return load_backbone(ModelConfig("MobileNetV2", weights="none", image_size=64))


def build(backbone, **model_options):
    return model_lib.build_classifier(backbone, 3, ModelConfig("MobileNetV2", **model_options))


def test_classifier_is_preprocess_backbone_head(mobilenet):
    classifier = build(mobilenet, hidden_units=16, dropout_rate=0.3)
    assert [layer.name for layer in classifier.layers][1:] == ["preprocess", mobilenet.model.name, "head"]
    head_layers = [type(layer).__name__ for layer in model_lib.head_part(classifier).layers]
    assert head_layers == ["GlobalAveragePooling2D", "Dense", "Dropout", "Dense"]
    assert classifier.output.shape[-1] == 3


@pytest.mark.parametrize(
    "pooling, layer", [("avg", "GlobalAveragePooling2D"), ("max", "GlobalMaxPooling2D"), ("flatten", "Flatten")]
)
def test_head_pooling_choices(mobilenet, pooling, layer):
    head = model_lib.head_part(build(mobilenet, pooling=pooling))
    assert type(head.layers[0]).__name__ == layer


def trainable_params(classifier):
    return model_lib.parameter_totals(classifier)["trainable"]


def test_freeze_plans_change_what_trains(mobilenet):
    classifier = build(mobilenet)
    backbone = model_lib.backbone_part(classifier)
    head_only = trainable_params(classifier)
    assert head_only == 1280 * 3 + 3
    assert model_lib.is_fully_frozen(classifier)

    counts = {}
    for plan in [
        FreezePlan("from", "block_16"),
        FreezePlan("from", "block_13"),
        FreezePlan("top", 5),
        FreezePlan("none"),
    ]:
        model_lib.apply_freeze_plan(backbone, plan, mobilenet.block_pattern, pretrained=False)
        counts[(plan.mode, plan.value)] = trainable_params(classifier)
    assert head_only < counts[("from", "block_16")] < counts[("from", "block_13")] < counts[("none", None)]
    assert counts[("none", None)] == model_lib.parameter_totals(classifier)["total"] - _bn_moving_stats(backbone)

    trainable = model_lib.apply_freeze_plan(
        backbone, FreezePlan("layers", ["Conv_1", "Conv_1_bn"]), mobilenet.block_pattern, False
    )
    assert trainable == {"Conv_1", "Conv_1_bn"}
    table = model_lib.layer_table(backbone, mobilenet.block_pattern)
    assert set(table.loc[table.trainable, "name"]) == {"Conv_1", "Conv_1_bn"}


def _bn_moving_stats(backbone):
    return int(
        sum(np.prod(w.shape) for layer in backbone.layers for w in layer.non_trainable_weights if "moving" in w.path)
    )


def test_unknown_layer_or_block_is_explained(mobilenet):
    backbone = model_lib.backbone_part(build(mobilenet))
    with pytest.raises(StudioError, match="No layer or block named 'block_99'.*block_16"):
        model_lib.apply_freeze_plan(backbone, FreezePlan("from", "block_99"), mobilenet.block_pattern)


def test_layer_table_lists_every_layer_with_block_and_parameters(mobilenet):
    table = model_lib.layer_table(model_lib.backbone_part(build(mobilenet)), mobilenet.block_pattern)
    assert list(table.columns) == ["index", "name", "type", "block", "parameters", "trainable"]
    assert len(table) == len(mobilenet.model.layers)
    assert table.loc[table.name == "Conv1", "parameters"].item() == 3 * 3 * 3 * 32
    assert table.loc[table.name == "block_5_expand", "block"].item() == "block_5"
    assert not table.trainable.any()


def test_last_block_is_the_default_fine_tune_start(mobilenet):
    assert model_lib.last_block(mobilenet.model, mobilenet.block_pattern) == "block_16"


def _pretrained_model_file(path):
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for index in range(2):
        x = keras.layers.Conv2D(8, 3, padding="same", name=f"block{index + 1}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"block{index + 1}_bn")(x)
        x = keras.layers.ReLU(name=f"block{index + 1}_relu")(x)
    keras.Model(inputs, x).save(path)
    return str(path)


def test_pretrained_batchnorm_stays_in_inference_mode_when_unfrozen(tmp_path):
    backbone = load_backbone(ModelConfig(_pretrained_model_file(tmp_path / "pretrained.keras")))
    assert backbone.pretrained
    classifier = model_lib.build_classifier(backbone, 3, ModelConfig(freeze=FreezePlan("none")))
    model_lib.compile_classifier(classifier, "adam", 1e-2)
    part = model_lib.backbone_part(classifier)
    bn = part.get_layer("block1_bn")
    assert not bn.trainable
    before = [w.numpy().copy() for w in bn.weights]
    kernel_before = part.get_layer("block1_conv").kernel.numpy().copy()
    images = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    classifier.fit(images, np.arange(16) % 3, epochs=2, verbose=0)
    for old, new in zip(before, bn.weights):
        np.testing.assert_array_equal(old, new.numpy())  # statistics (and scale/offset) untouched
    assert not np.allclose(kernel_before, part.get_layer("block1_conv").kernel.numpy())  # the conv did train


def test_pretrained_batchnorm_layers_are_never_unfrozen(mobilenet):
    backbone = model_lib.backbone_part(build(mobilenet))
    trainable = model_lib.apply_freeze_plan(backbone, FreezePlan("none"), mobilenet.block_pattern, pretrained=True)
    assert "Conv1" in trainable and "bn_Conv1" not in trainable
    assert not any(model_lib.is_batchnorm(layer) and layer.trainable for layer in backbone.layers)


def test_random_backbone_batchnorm_learns_its_statistics():
    backbone = load_backbone(ModelConfig("SmallCNN", weights="none"))
    classifier = build(backbone, freeze=FreezePlan("none"))
    model_lib.compile_classifier(classifier, "adam", 1e-3)
    bn = model_lib.backbone_part(classifier).get_layer("block1_bn")
    images = np.random.default_rng(0).uniform(0, 255, (8, 64, 64, 3)).astype("float32")
    classifier.fit(images, np.arange(8) % 3, epochs=1, verbose=0)
    assert not np.allclose(bn.moving_mean.numpy(), 0.0)


def test_preprocess_layer_saves_by_name_and_reloads_safely(tmp_path, mobilenet):
    classifier = build(mobilenet)
    classifier.save(tmp_path / "c.keras")
    reloaded = keras.models.load_model(tmp_path / "c.keras", safe_mode=True)
    assert reloaded.get_layer("preprocess").preprocess == "mobilenet_v2"
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(classifier.predict(images, verbose=0), reloaded.predict(images, verbose=0), atol=1e-6)
