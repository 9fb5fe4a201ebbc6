import socket

import keras
import keras_hub
import numpy as np
import pytest

from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tlcore.errors import StudioError, WeightsUnavailableError
from tlcore.insight.backbone_compare import candidate_choices, compare_backbones
from tlcore.model.backbones import load_backbone


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    """A tiny random ViT with its image converter, saved as a local preset folder (no download)."""
    folder = tmp_path_factory.mktemp("tiny-vit")
    vit = keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32
    )
    vit.save_to_preset(str(folder))
    keras_hub.layers.ViTImageConverter(image_size=(32, 32), scale=1 / 127.5, offset=-1).save_to_preset(str(folder))
    return folder


def test_a_local_kerashub_preset_becomes_a_backbone_with_its_converter_and_class_token(tiny_vit):
    backbone = load_backbone(ModelConfig(f"hub:{tiny_vit}"))
    assert backbone.image_size == 32 and backbone.preprocess == "none" and backbone.pretrained
    assert tuple(backbone.model.output.shape) == (None, 1, 1, 16)  # the class token as a 1x1 feature map
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    hub_model = keras_hub.models.Backbone.from_preset(str(tiny_vit))
    expected = hub_model(images / 127.5 - 1.0)[:, 0]  # converter scaling, then the class token
    np.testing.assert_allclose(backbone.model(images)[:, 0, 0], expected, atol=1e-5)
    assert backbone.weights_id.startswith("hub-folder:")


def test_a_kerashub_preset_runs_through_the_leaderboard_beside_a_registry_backbone(tiny_vit, colour_dataset):
    config = RunConfig(DataConfig(str(colour_dataset), val_split=0.3), train=TrainConfig(epochs=20))
    board = compare_backbones(config, [f"hub:{tiny_vit}", "SmallCNN:none"], folds=2)
    hub_row = next(row for row in board.candidates if row.backbone.startswith("hub:"))
    assert hub_row.error is None, hub_row.error
    assert hub_row.input_size == 32 and hub_row.params > 1000 and len(hub_row.scores) == 2
    assert 0 <= hub_row.accuracy_mean <= 1 and hub_row.latency_ms > 0
    assert "hub:vit_base_patch16_224_imagenet" in candidate_choices()


def test_an_offline_kerashub_preset_says_how_to_use_a_local_folder(monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kaggle"))
    with pytest.raises(WeightsUnavailableError) as error:
        load_backbone(ModelConfig("hub:vit_base_patch16_224_imagenet"))
    message = str(error.value)
    assert "cannot reach the download server" in message
    assert "save_to_preset" in message and "hub:/path/to/folder" in message


def test_an_unknown_kerashub_source_names_the_choices(tmp_path):
    with pytest.raises(StudioError, match="dinov2_small"):
        load_backbone(ModelConfig(f"hub:{tmp_path}"))


def test_a_pooled_encoder_vector_or_tokens_become_a_feature_map():
    from tlcore.model.hub import _as_feature_map

    vector = keras.Input((24,))
    assert tuple(_as_feature_map(vector, "mean").shape) == (None, 1, 1, 24)
    tokens = keras.Input((5, 8))
    assert tuple(_as_feature_map(tokens, "mean").shape) == (None, 1, 1, 8)


def test_training_on_a_kerashub_backbone_is_refused_with_the_reason(tiny_vit, colour_dataset, tmp_path):
    from tlcore.training.launch import train_run

    config = RunConfig(DataConfig(str(colour_dataset)), ModelConfig(f"hub:{tiny_vit}"), TrainConfig(epochs=1))
    with pytest.raises(StudioError, match="compared on the leaderboard"):
        train_run(config, tmp_path / "run")
    assert not (tmp_path / "run" / "model.keras").exists()
