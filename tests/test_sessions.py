"""Browser identity and the setup a browser finds again after a refresh or a restart."""

import pytest

from tlcore import sessions
from tlcore.config import DataConfig, FreezePlan, ModelConfig, RunConfig, TrainConfig


def test_a_secret_gives_one_stable_owner_that_does_not_reveal_it():
    secret = sessions.new_secret()
    assert sessions.is_secret(secret)
    assert sessions.owner_id(secret) == sessions.owner_id(secret)
    assert sessions.owner_id(secret) != sessions.owner_id(sessions.new_secret())
    assert secret not in sessions.owner_id(secret) and secret[:16] != sessions.owner_id(secret)


@pytest.mark.parametrize("value", [None, "", "abc", "x" * 32, "0" * 31, "0" * 33, "../../etc/passwd" + "0" * 16])
def test_cookie_values_of_another_shape_are_not_secrets(value):
    assert not sessions.is_secret(value)


def test_the_whole_setup_round_trips_through_disk(tmp_path):
    config = RunConfig(
        DataConfig("/photos/train", val_dir="/photos/val"),
        ModelConfig("/models/dog.h5", weights="none", cut_layer="out_relu", freeze=FreezePlan("from", "block_16")),
        TrainConfig(epochs=10, fine_tune_epochs=3, unfreeze_from="block_15", learning_rate=3e-4),
    )
    store = sessions.SetupStore(tmp_path)
    owner = sessions.owner_id(sessions.new_secret())
    assert store.load(owner) is None
    store.save(owner, sessions.Setup(config, "398 images · 2 classes", 2))
    loaded = store.load(owner)
    assert loaded.config == config
    assert (loaded.data_summary, loaded.num_classes) == ("398 images · 2 classes", 2)


def test_a_damaged_setup_file_is_ignored_and_owner_ids_cannot_walk_out(tmp_path):
    store = sessions.SetupStore(tmp_path)
    owner = "0123456789abcdef"
    store.path(owner).parent.mkdir(parents=True)
    store.path(owner).write_text("{ not json")
    assert store.load(owner) is None
    for hostile in ("..", "../x", "a/b", ""):
        with pytest.raises(ValueError, match="owner id"):
            store.path(hostile)
