import io
import socket

import numpy as np
import pytest
from PIL import Image

from tlcore import predict
from tlcore.errors import StudioError, WeightsUnavailableError


@pytest.fixture(scope="module")
def model(trained_run):
    return trained_run.load_model()


def test_top_k_predicts_the_colour_for_paths_bytes_and_pil(trained_run, model, colour_dataset):
    path = sorted((colour_dataset / "red").iterdir())[0]
    data = path.read_bytes()
    results = predict.predict_top_k(model, trained_run.labels, [str(path), data, Image.open(io.BytesIO(data))], top_k=2)
    assert [r[0]["label"] for r in results] == ["red", "red", "red"]
    assert all(len(r) == 2 and r[0]["probability"] >= r[1]["probability"] for r in results)
    assert results[0] == results[1] == results[2]  # same decoding whatever the source


def test_top_k_is_capped_at_the_number_of_classes(trained_run, model, colour_dataset):
    path = sorted((colour_dataset / "blue").iterdir())[0]
    result = predict.predict_top_k(model, trained_run.labels, [str(path)], top_k=10)[0]
    assert len(result) == 3
    assert sum(r["probability"] for r in result) == pytest.approx(1.0, abs=1e-5)


def test_an_unreadable_upload_is_explained(trained_run, model):
    with pytest.raises(StudioError, match="not a readable image"):
        predict.predict_top_k(model, trained_run.labels, [b"<html>not an image</html>"])


def test_grad_cam_gives_a_normalised_map_at_feature_resolution(model, colour_dataset):
    path = sorted((colour_dataset / "green").iterdir())[0]
    heatmap, index = predict.grad_cam(model, str(path))
    assert heatmap.shape == (2, 2)  # SmallCNN at 32 px: 32 / 2 / 2 / 2 / 2
    assert 0.0 <= heatmap.min() and heatmap.max() <= 1.0
    assert index == 1  # green
    overlay = predict.overlay_heatmap(str(path), heatmap, 32)
    assert overlay.size == (32, 32) and overlay.mode == "RGB"


def test_imagenet_top5_offline_says_what_to_download(monkeypatch, tmp_path, colour_dataset):
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(socket.gaierror(-3, "offline")))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="mobilenet_v2_weights.*224.h5"):
        predict.imagenet_top5("MobileNetV2", [str(sorted((colour_dataset / "red").iterdir())[0])])


def test_imagenet_top5_refuses_backbones_without_a_top():
    with pytest.raises(StudioError, match="no ImageNet classification top"):
        predict.imagenet_top5("SmallCNN", [np.zeros((8, 8, 3), np.uint8)])
