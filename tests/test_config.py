import pytest

from tlcore.config import DataConfig, FreezePlan, ModelConfig, RunConfig, TrainConfig


def test_json_round_trip_gives_an_equal_config(tmp_path):
    config = RunConfig(
        DataConfig("photos.zip", val_split=0.3, skip_placeholders=False),
        ModelConfig(
            "ResNet50",
            weights="none",
            image_size=128,
            pooling="max",
            hidden_units=64,
            freeze=FreezePlan("from", "conv5"),
        ),
        TrainConfig(epochs=3, fine_tune_epochs=2, augment=True, seed=7),
    )
    config.save(tmp_path / "config.json")
    assert RunConfig.load(tmp_path / "config.json") == config


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda c: setattr(c.train, "epochs", -1), "epochs"),
        (lambda c: setattr(c.train, "learning_rate", 0), "learning_rate"),
        (lambda c: setattr(c.train, "optimizer", "lion"), "optimizer"),
        (lambda c: setattr(c.model, "pooling", "mean"), "pooling"),
        (lambda c: setattr(c.model, "image_size", 8), "image_size"),
        (lambda c: setattr(c.data, "val_split", 1.5), "val_split"),
        (lambda c: setattr(c.model, "freeze", FreezePlan("top", "ten")), "top N"),
    ],
)
def test_validation_names_the_bad_setting_and_what_it_received(change, fragment):
    config = RunConfig()
    change(config)
    with pytest.raises(ValueError, match=fragment) as error:
        config.validate()
    assert "Received" in str(error.value)


def test_nothing_to_train_is_refused():
    with pytest.raises(ValueError, match="Nothing to train"):
        RunConfig(train=TrainConfig(epochs=0, fine_tune_epochs=0)).validate()


def test_unknown_setting_in_json_is_named():
    with pytest.raises(ValueError, match="learnin_rate"):
        RunConfig.from_dict({"train": {"learnin_rate": 0.1}})


def test_fine_tune_learning_rate_defaults_to_ten_times_lower():
    assert TrainConfig(learning_rate=1e-3).effective_fine_tune_learning_rate == pytest.approx(1e-4)
    assert TrainConfig(learning_rate=1e-3, fine_tune_learning_rate=5e-5).effective_fine_tune_learning_rate == 5e-5


@pytest.mark.parametrize(
    "text, plan",
    [
        ("all", FreezePlan("all")),
        ("none", FreezePlan("none")),
        ("top:12", FreezePlan("top", 12)),
        ("block_13", FreezePlan("from", "block_13")),
    ],
)
def test_freeze_plan_parses_cli_text(text, plan):
    assert FreezePlan.parse(text) == plan


def test_a_split_folder_is_named_with_its_dataset():
    """The newcomer's sidebar said "Dataset · train (validation folder: test)": which dataset?"""
    from tlcore.config import DataConfig

    assert DataConfig("/data/flowers3/train", val_dir="/data/flowers3/test").describe() == (
        "flowers3/train (validation folder: test)"
    )
    assert DataConfig("/data/cats_vs_dogs", val_split=0.2).describe() == "cats_vs_dogs (20% held out for validation)"
