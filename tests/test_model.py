import dataclasses

import keras
import numpy as np
import pytest

from tlcore.config import POOLING_CHOICES, FreezePlan, ModelConfig, TrainConfig
from tlcore.errors import StudioError
from tlcore.model import backbones as backbones_lib
from tlcore.model import choices
from tlcore.model import classifier as model_lib
from tlcore.model.backbones import load_backbone
from tlcore.model.choices import image_size_choices, weights_choices


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


def test_top_n_beyond_the_layer_count_trains_every_weighted_layer():
    backbone = load_backbone(ModelConfig("SmallCNN", weights="none", image_size=32))
    weighted = {layer.name for layer in backbone.model.layers if layer.weights}
    assert len(weighted) == 8  # four conv + BatchNorm blocks
    for count in (8, 10, 100):
        assert (
            model_lib.trainable_names(backbone.model, FreezePlan("top", count), backbone.block_pattern, False)
            == weighted
        )
    assert model_lib.trainable_names(backbone.model, FreezePlan("top", 2), backbone.block_pattern, False) == {
        "block4_conv",
        "block4_bn",
    }


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


def test_partial_unfreezing_moves_only_the_unfrozen_blocks(mobilenet):
    """One training step with "from block_16": exactly block_16's non-BatchNorm layers and the head change."""
    pretrained = dataclasses.replace(mobilenet, pretrained=True)
    classifier = model_lib.build_classifier(pretrained, 3, ModelConfig(freeze=FreezePlan("from", "block_16")))
    model_lib.compile_classifier(classifier, "adam", 1e-2)
    backbone = model_lib.backbone_part(classifier)
    before = {layer.name: [w.numpy().copy() for w in layer.weights] for layer in backbone.layers if layer.weights}
    head_before = [w.numpy().copy() for w in model_lib.head_part(classifier).weights]
    images = np.random.default_rng(0).uniform(0, 255, (8, 64, 64, 3)).astype("float32")
    classifier.fit(images, np.arange(8) % 3, epochs=1, batch_size=8, verbose=0)

    moved = {
        name
        for name, old in before.items()
        if any(not np.array_equal(a, w.numpy()) for a, w in zip(old, backbone.get_layer(name).weights))
    }
    blocks = dict(zip([layer.name for layer in backbone.layers], backbone_blocks(backbone)))
    unfrozen = {
        name for name in before if blocks[name] == "block_16" and not model_lib.is_batchnorm(backbone.get_layer(name))
    }
    assert unfrozen and moved == unfrozen
    for name in unfrozen:  # every weight of an unfrozen layer moved, not just one
        assert all(not np.array_equal(a, w.numpy()) for a, w in zip(before[name], backbone.get_layer(name).weights))
    assert all(not np.array_equal(a, w.numpy()) for a, w in zip(head_before, model_lib.head_part(classifier).weights))


def backbone_blocks(backbone_model):
    from tlcore.model.backbones import BACKBONES, assign_blocks

    return assign_blocks([layer.name for layer in backbone_model.layers], BACKBONES["MobileNetV2"].block_pattern)


def test_backbone_part_is_found_by_role_not_position(mobilenet):
    classifier = build(mobilenet)
    assert model_lib.backbone_part(classifier) is classifier.get_layer(mobilenet.model.name)
    with pytest.raises(StudioError, match="Expected a classifier of input → preprocess → backbone → head"):
        model_lib.backbone_part(mobilenet.model)


# ----------------------------------------------------------------------------- phase plan


def test_block_names_are_the_unfreeze_choices(mobilenet, tmp_path):
    names = backbones_lib.block_names(mobilenet)
    assert names[0] == "stem" and names[-1] == "block_16" and len(names) == 17
    unknown = load_backbone(ModelConfig(_unknown_family_file(tmp_path / "plain.keras")))
    assert backbones_lib.block_names(unknown) == []


def _unknown_family_file(path):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, name="first")(inputs)
    keras.Model(inputs, keras.layers.Conv2D(8, 3, name="second")(x)).save(path)
    return str(path)


def test_phase_plan_counts_what_each_phase_trains(mobilenet):
    model_config = ModelConfig("MobileNetV2", weights="none", image_size=64)
    phases = model_lib.phase_plan(mobilenet, model_config, TrainConfig(epochs=3, fine_tune_epochs=2), 3)
    head, fine_tune = phases
    assert (head.number, head.phase, head.trains, head.epochs) == (1, "head", "head", 3)
    assert head.trainable_parameters == 1280 * 3 + 3
    assert (fine_tune.phase, fine_tune.trains, fine_tune.freeze) == (
        "fine-tune",
        "from block_16",
        FreezePlan("from", "block_16"),
    )
    assert fine_tune.learning_rate == pytest.approx(1e-4)
    # A random backbone's BatchNorm trains too: the count includes its scale and offset.
    classifier = build(mobilenet)
    model_lib.apply_freeze_plan(model_lib.backbone_part(classifier), fine_tune.freeze, mobilenet.block_pattern, False)
    assert fine_tune.trainable_parameters == model_lib.parameter_totals(classifier)["trainable"]

    earlier = model_lib.phase_plan(
        mobilenet, model_config, TrainConfig(epochs=3, fine_tune_epochs=2, unfreeze_from="block_15"), 3
    )[1]
    assert earlier.trains == "from block_15" and earlier.trainable_parameters > fine_tune.trainable_parameters
    skipped = model_lib.phase_plan(mobilenet, model_config, TrainConfig(epochs=3), 3)
    assert skipped[1].skipped and choices.describe_phases(skipped).endswith("phase 2: skipped (0 epochs)")
    with pytest.raises(StudioError, match="No layer or block named 'block_99'"):
        model_lib.phase_plan(mobilenet, model_config, TrainConfig(fine_tune_epochs=1, unfreeze_from="block_99"), 3)


def test_phase_plan_agrees_with_what_the_training_job_trains(tmp_path):
    """Train both phases for real; the classifier ends with phase 2's trainable weights."""
    from tests.helpers import make_colour_dataset
    from tlcore.config import DataConfig, RunConfig
    from tlcore.training.trainer import run_training

    model_config = ModelConfig(_pretrained_model_file(tmp_path / "pretrained.keras"))
    train_config = TrainConfig(epochs=1, fine_tune_epochs=1, batch_size=8)  # phase 2 from the last block
    backbone = load_backbone(model_config)
    phases = model_lib.phase_plan(backbone, model_config, train_config, 3)
    result = run_training(
        RunConfig(DataConfig(str(make_colour_dataset(tmp_path / "data", per_class=4))), model_config, train_config)
    )
    assert phases[1].trainable_parameters == model_lib.parameter_totals(result.model)["trainable"]
    assert phases[0].trainable_parameters == 8 * 3 + 3  # the head; BatchNorm never counts when pretrained
    assert phases[1].trainable_parameters == 3 * 3 * 8 * 8 + 8 + 8 * 3 + 3  # + block2_conv (kernel, bias)


@pytest.mark.real_assets
def test_phase_plan_on_the_real_pretrained_mobilenet(dog_model):
    model_config = ModelConfig(str(dog_model), cut_layer="mobilenetv2_1.00_160")
    backbone = load_backbone(model_config)
    phases = model_lib.phase_plan(backbone, model_config, TrainConfig(epochs=5, fine_tune_epochs=5), 2)
    assert choices.describe_phases(phases) == (
        "phase 1: head, 2,562 parameters · phase 2: from block_16, 881,602 parameters"
    )
    assert phases[0].trainable_parameters == 1280 * 2 + 2
    # block_16 (expand, depthwise, project) and Conv_1 without their BatchNorm, plus the head.
    convolutions = 160 * 960 + 3 * 3 * 960 + 960 * 320 + 320 * 1280
    assert phases[1].trainable_parameters == convolutions + 1280 * 2 + 2
    assert backbones_lib.block_names(backbone)[-1] == "block_16"


# ----------------------------------------------------------------------------- words and choices


def test_backbone_and_freeze_plan_descriptions_say_what_they_mean():
    own = ModelConfig("/uploads/dog_breed_mobilenetv2_160.h5")
    assert choices.describe_backbone(own) == "your model file dog_breed_mobilenetv2_160.h5 (pretrained weights inside)"
    assert choices.describe_backbone(ModelConfig("MobileNetV2")) == "MobileNetV2, ImageNet weights"
    assert "random weights" in choices.describe_backbone(ModelConfig("SmallCNN", weights="none"))
    assert choices.describe_backbone(ModelConfig("VGG16", weights="/w/vgg.weights.h5")) == (
        "VGG16, weights from vgg.weights.h5"
    )
    describe = choices.describe_freeze_plan
    assert describe(FreezePlan("all")) == "all backbone layers frozen: only the new head trains"
    assert describe(FreezePlan("from", "block_16")).startswith("unfrozen from block_16")
    assert "every backbone layer trains" in describe(FreezePlan("none"))
    assert "top 5" in describe(FreezePlan("top", 5))
    assert "Conv_1" in describe(FreezePlan("layers", ["Conv_1"]))
    assert "12 chosen backbone layers" in describe(FreezePlan("layers", [f"l{i}" for i in range(12)]))


def test_default_freeze_plan_and_choice_lists():
    from tlcore.model.backbones import BACKBONES

    assert choices.default_freeze_plan(pretrained=True) == FreezePlan("all")
    assert choices.default_freeze_plan(pretrained=False) == FreezePlan("none")
    assert POOLING_CHOICES == ("avg", "max", "flatten")
    assert choices.HIDDEN_UNITS_CHOICES[0] == 0
    assert image_size_choices(BACKBONES["Xception"])[0] == 96  # nothing below its minimum of 71
    assert 299 in image_size_choices(BACKBONES["Xception"]) and 224 in image_size_choices(BACKBONES["MobileNetV2"])
    assert weights_choices(BACKBONES["SmallCNN"]) == ["none"]
    assert weights_choices(BACKBONES["MobileNetV2"]) == ["imagenet", "none"]


def test_the_model_pages_choices_come_from_the_registry_and_say_what_they_mean():
    from tlcore.model.backbones import BACKBONES
    from tlcore.model.choices import (
        IMAGE_SIZE_CHOICES,
        cut_layer_index,
        cut_layer_setting,
        image_size_value,
        model_file_size_choices,
        model_file_size_label,
        preprocess_choices,
        preprocess_label,
        weights_choice,
    )
    from tlcore.model.preprocessing import PREPROCESSING

    # Weights: a path to a weights file is the "file" choice; the two words are themselves.
    assert [weights_choice(w) for w in ("imagenet", "none", "/u/mnv2_notop.h5")] == ["imagenet", "none", "file"]
    # A registry backbone shows a size it accepts; VGG16's 299 does not stay for SmallCNN.
    assert image_size_value(BACKBONES["Xception"], 64) == 299  # under its minimum of 71: its default
    assert image_size_value(BACKBONES["MobileNetV2"], 96) == 96
    # A fixed-size model file offers only its own size; a flexible one every size; a stale value stays listed.
    assert model_file_size_choices(160, None) == [None]
    assert model_file_size_choices(160, 224) == [None, 224]
    assert model_file_size_choices(None, None) == [None, *IMAGE_SIZE_CHOICES]
    assert model_file_size_label(None, 160) == "the model's own (160 px)"
    assert model_file_size_label(None, None) == "224 (default)" and model_file_size_label(96, None) == "96"
    # Preprocessing: guessed unless one of the named functions is chosen.
    assert preprocess_choices() == [None, *PREPROCESSING]
    assert preprocess_label(None) == "(guess from the layer names)" and preprocess_label("vgg16") == "vgg16"
    # Cutting at the last layer keeps the whole model: no cut_layer setting.
    layers = ["conv1", "block_16_project", "out_relu"]
    assert cut_layer_index(layers, None) == 2 and cut_layer_index(layers, "conv1") == 0
    assert cut_layer_index(layers, "gone") == 2  # a layer of another model file
    assert cut_layer_setting(layers, "out_relu") is None and cut_layer_setting(layers, "conv1") == "conv1"


def test_a_new_backbone_brings_its_own_size_weights_and_preprocessing():
    from tlcore.model.choices import backbone_settings

    vgg = backbone_settings("VGG16")
    assert (vgg["image_size"], vgg["weights"], vgg["preprocess"], vgg["freeze"].mode) == (224, "imagenet", None, "all")
    small = backbone_settings("SmallCNN")  # no ImageNet weights: random, every layer trains
    assert (small["image_size"], small["weights"], small["freeze"].mode) == (64, "none", "none")
    own = backbone_settings("/uploads/3f2a/dog_breed_mobilenetv2_160.h5")  # a model file: its own size, not VGG16's
    assert (own["image_size"], own["cut_layer"], own["preprocess"], own["freeze"].mode) == (None, None, None, "all")
    config = ModelConfig("VGG16", image_size=224, preprocess="vgg16", cut_layer="x")
    for name, value in own.items():
        setattr(config, name, value)
    config.validate()


def test_counts_are_written_in_the_singular_for_one():
    from tlcore.data.scan import dataset_warnings
    from tlcore.words import plural

    assert (plural(1, "colour"), plural(2, "colour"), plural(1, "class", "classes")) == (
        "1 colour",
        "2 colours",
        "1 class",
    )
    assert "has only 1 image (fewer than 5)" in dataset_warnings({"a": 1, "b": 9}, 5)[0]


def test_the_train_pages_phase_table_says_each_phases_rate_schedule_and_time():
    from types import SimpleNamespace

    from tlcore.model.choices import PhasePlan, epoch_timing, phase_rows

    phases = [
        PhasePlan(1, "head", 10, 1e-3, FreezePlan("all"), "head", 2562),
        PhasePlan(2, "fine-tune", 5, 1e-5, FreezePlan("from", "block_16"), "from block_16", 881602),
    ]
    measured = {
        "cached": 1.25,
        "full": 9.5,
        "cut": SimpleNamespace(cached=True, reason="", name="block_15_add"),
        "possible_cut": SimpleNamespace(cached=True, reason="", name="block_15_add"),
    }
    timing = epoch_timing(measured)
    assert timing == {"cached": 1.25, "full": 9.5, "reason": "", "cut": "block_15_add", "uses_cut": True}
    train = TrainConfig(fine_tune_schedule="cosine", fine_tune_rate_decay=0.5)
    head, fine = phase_rows(phases, train, timing)
    assert (head["phase"], head["learning rate"], head["time per epoch"]) == (
        "1 · head",
        "0.001",
        "after the first run",
    )
    assert phase_rows(phases, train, timing, 0.42)[0]["time per epoch"] == "≈ 0.4 s (your last run like this)"
    # Below the table's 0.1 s resolution (a head epoch on cached features): milliseconds, never "≈ 0.0 s".
    assert phase_rows(phases, train, timing, 0.004)[0]["time per epoch"] == "≈ 4 ms (your last run like this)"
    assert head["trainable parameters"] == "2,562"
    assert fine["learning rate"] == "1e-05, cosine; each lower block ×0.5"
    assert fine["time per epoch"] == "≈ 1.2 s (cached below block_15_add; full path ≈ 10 s)"
    # Augmentation changes every image: the full path, and why.
    full = {**timing, "uses_cut": False, "reason": "augmentation changes every image"}
    assert phase_rows(phases, TrainConfig(), full)[1]["time per epoch"] == (
        "≈ 9.5 s (full path: augmentation changes every image)"
    )
    skipped = PhasePlan(2, "fine-tune", 0, 1e-5, FreezePlan("all"), "head", 0)
    row = phase_rows([skipped], TrainConfig(), timing)[0]
    assert row["phase"] == "2 · fine-tune (skipped: 0 epochs)" and row["time per epoch"] == ""
    same_rate = TrainConfig(fine_tune_rate_decay=1.0)
    assert phase_rows(phases, same_rate)[1]["learning rate"] == "1e-05"  # constant, same rate for every block
    assert phase_rows(phases, TrainConfig())[1]["learning rate"] == "1e-05; each lower block ×0.5"  # the default


def test_a_head_epoch_is_timed_from_the_last_run_of_the_same_setup(trained_run):
    from dataclasses import replace

    from tlcore.model.choices import head_epoch_seconds

    seconds = head_epoch_seconds([trained_run], trained_run.config)
    history = trained_run.history
    timed = sorted(history.loc[history["phase"] == "head", "seconds"].tolist()[1:])
    assert seconds == timed[len(timed) // 2] and seconds > 0
    other = replace(trained_run.config, train=replace(trained_run.config.train, batch_size=64))
    assert head_epoch_seconds([trained_run], other) is None  # another batch size: another epoch time
