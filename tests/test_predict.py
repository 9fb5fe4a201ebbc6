import io
import socket

import numpy as np
import pytest
from PIL import Image

from tlcore.errors import StudioError, WeightsUnavailableError
from tlcore.inference import predict


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
    with pytest.raises(
        StudioError, match="not a readable image: its contents are not JPEG, PNG, WebP, BMP, GIF or TIFF"
    ):
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


# ----------------------------------------------------------------------------- Grad-CAM maths
#
# A classifier whose weights are set by hand, so the right map is known: the backbone's
# one channel is the pixel's "redness" (R - (G + B) / 2, then ReLU) averaged over 4x4
# cells, and the head says "red" in proportion to it. Grad-CAM for "red" must light up
# exactly where the image is red, and nothing where it is grey.


def hand_made_classifier(channel_weights: tuple, head_weight: float, num_classes: int = 2):
    """preprocess ("none") → one 1x1-conv feature, ReLU, 4x4 average cells → head.

    The feature is ``channel_weights · (R, G, B)``; the head's logit for the last class
    is ``head_weight`` times the averaged feature (minus that for the first class).
    """
    import keras

    from tlcore.config import ModelConfig
    from tlcore.model.backbones import Backbone
    from tlcore.model.classifier import build_classifier, head_part

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(1, 1, use_bias=False, name="feature")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    features = keras.layers.AveragePooling2D(4, name="cells")(x)
    network = keras.Model(inputs, features, name="hand_made")
    network.get_layer("feature").set_weights([np.array(channel_weights, dtype="float32").reshape(1, 1, 3, 1)])
    backbone = Backbone(network, "hand_made", "none", 32, None, "test:hand_made")
    classifier = build_classifier(backbone, num_classes, ModelConfig(dropout_rate=0.0))
    kernel = np.linspace(-head_weight, head_weight, num_classes)[None, :]
    head_part(classifier).get_layer("predictions").set_weights([kernel, np.zeros(num_classes)])
    return classifier


def _half_red(red_side: str, size: int = 32) -> Image.Image:
    image = np.full((size, size, 3), 128, np.uint8)
    half = slice(0, size // 2) if red_side == "left" else slice(size // 2, size)
    image[:, half] = (220, 30, 30)
    return Image.fromarray(image)


@pytest.mark.parametrize("red_side", ["left", "right"])
def test_grad_cam_peaks_on_the_coloured_half(red_side):
    redness = hand_made_classifier((1.0, -0.5, -0.5), 0.01)  # class 1 = "red"
    heatmap, index = predict.grad_cam(redness, _half_red(red_side))
    assert index == 1  # "red" is the predicted class
    assert heatmap.shape == (8, 8)
    red, grey = (heatmap[:, :4], heatmap[:, 4:]) if red_side == "left" else (heatmap[:, 4:], heatmap[:, :4])
    assert red.min() > 0.9 and grey.max() < 0.1


def test_overlay_keeps_the_aspect_ratio_and_where_the_heat_is():
    image = Image.fromarray(np.full((30, 60, 3), 128, np.uint8))  # 60 wide, 30 high
    heatmap = np.array([[1.0, 0.0], [1.0, 0.0]])  # hot on the left
    overlay = predict.overlay_heatmap(image, heatmap, 32)
    assert overlay.size == (32, 16)
    assert predict.overlay_heatmap(image, heatmap).size == (60, 30)
    pixels = np.asarray(overlay, dtype=int)
    assert pixels[8, 2, 0] > pixels[8, 29, 0] and pixels[8, 2, 2] < pixels[8, 29, 2]  # red left, blue right


# ----------------------------------------------------------------------------- 16-bit uploads


def _sixteen_bit_png() -> tuple[bytes, np.ndarray]:
    """A 16-bit greyscale PNG spanning the full 0..65535 range, and its 16-bit values."""
    rows, columns = np.mgrid[0:48, 0:48]
    values = ((rows * 48 + columns) * 28 % 65536).astype(np.uint16)
    values[10:30, 5:20] = 65535
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")
    return buffer.getvalue(), values


def test_a_16_bit_upload_predicts_like_the_same_picture_in_8_bit():
    model = hand_made_classifier((1 / 3, 1 / 3, 1 / 3), 0.005, num_classes=3)  # dark … bright
    data, values = _sixteen_bit_png()
    assert Image.open(io.BytesIO(data)).mode.startswith("I")  # really 16-bit on disk
    eight_bit = Image.fromarray((values >> 8).astype(np.uint8), "L").convert("RGB")

    def probabilities(image) -> dict:
        return {
            r["label"]: r["probability"] for r in predict.predict_top_k(model, ["dark", "mid", "bright"], [image])[0]
        }

    from_bytes, from_8_bit = probabilities(data), probabilities(eight_bit)
    assert from_bytes == pytest.approx(from_8_bit, abs=2e-3)
    # The model does see the picture: a clipped conversion (every value above 255 turned
    # white, what Pillow's plain convert does) predicts very differently.
    clipped = Image.fromarray(np.minimum(values, 255).astype(np.uint8), "L").convert("RGB")
    assert probabilities(clipped)["bright"] > from_8_bit["bright"] + 0.1


def test_predict_reuses_one_compiled_forward_for_any_batch_and_matches_keras(model, colour_dataset):
    images = sorted(colour_dataset.rglob("*.png"))[:5]
    single = predict.predict_top_k(model, ["blue", "green", "red"], images[:1], top_k=3)
    batch = predict.predict_top_k(model, ["blue", "green", "red"], images, top_k=3)
    forward = predict.compiled(model, "forward", predict._forward)
    assert forward.experimental_get_tracing_count() == 1  # one trace for 1 and 5 images
    assert [row["label"] for row in batch[0]] == [row["label"] for row in single[0]]
    decoded = predict.load_batch(images, 32)
    np.testing.assert_allclose(
        predict.predict_probabilities(model, decoded), model.predict(decoded, verbose=0), atol=1e-5
    )


def test_flip_tta_averages_the_image_and_its_mirror(model, colour_dataset):
    decoded = predict.load_batch(sorted(colour_dataset.rglob("*.png"))[:3], 32)
    mirrored = decoded[:, :, ::-1]
    expected = (predict.predict_probabilities(model, decoded) + predict.predict_probabilities(model, mirrored)) / 2
    np.testing.assert_allclose(predict.predict_probabilities(model, decoded, tta="flip"), expected, atol=1e-6)
    with pytest.raises(StudioError, match="tta"):
        predict.predict_probabilities(model, decoded, tta="rotate")


# ----------------------------------------------------------------------------- inputs unlike the training images


def orange_disk(fmt: str = "PNG", noise: float = 0.0) -> bytes:
    """An orange disk on a transparent (PNG) or white background; ``noise`` hides its flat colours."""
    from PIL import ImageDraw

    image = Image.new("RGBA" if fmt == "PNG" else "RGB", (256, 256), (0, 0, 0, 0) if fmt == "PNG" else "white")
    ImageDraw.Draw(image).ellipse((40, 40, 216, 216), fill=(255, 140, 0))
    if noise:
        pixels = np.asarray(image, dtype=np.float32) + np.random.default_rng(0).normal(0, noise, (256, 256, 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def test_the_familiar_distance_comes_from_the_training_features():
    from tlcore.inference.input_check import nearest_distances, reference_from_features

    rng = np.random.default_rng(0)
    centre = rng.normal(size=64)
    for spread in (0.2, 0.6):  # a tighter training set gets a tighter threshold: nothing is a fixed constant
        training = centre + spread * rng.normal(size=(200, 64))
        reference = reference_from_features(training, min_side=100, flat_fraction=0.0)
        similar = centre + spread * rng.normal(size=(100, 64))
        far = -centre + spread * rng.normal(size=(5, 64))
        assert np.mean(nearest_distances(reference, similar) > reference.threshold) <= 0.05
        assert (nearest_distances(reference, far) > reference.threshold).all()
        if spread == 0.2:
            tight = reference.threshold
    assert tight < reference.threshold


@pytest.mark.real_assets
def test_a_photo_run_flags_drawings_and_strangers_but_not_its_own_kind_of_photo(photo_run, hymenoptera):
    from tlcore.inference.input_check import REFERENCE_FILE, input_warnings, load_reference

    assert (photo_run.path / REFERENCE_FILE).stat().st_size < 1 << 20  # small: kept with the run
    reference = load_reference(photo_run.path)
    model = photo_run.load_model()
    photos = sorted((hymenoptera / "val").rglob("*.jpg"))
    warned = [reason for reason in input_warnings(model, reference, photos) if reason]
    assert len(warned) <= 0.05 * len(photos), warned  # ~1 % by construction
    flat, hidden = input_warnings(model, reference, [orange_disk("PNG"), orange_disk("JPEG", noise=8)])
    assert flat.startswith("looks like a drawing or flat graphic, not a photo (2 colours")
    assert hidden.startswith("is unlike every training image (distance ")


def test_the_placeholder_note_follows_only_a_placeholder_warning():
    """The walk: "unlike every training image" ended with a sentence about the Data page skipping placeholders."""
    from tlcore.inference.input_check import warning_sentence

    unlike = warning_sentence("cat.jpg", "is unlike every training image (distance 0.61 to the nearest)")
    assert unlike.endswith("its class below is a guess, not an answer.") and "placeholder" not in unlike
    blank = warning_sentence(
        "grey.png", "looks like a blank or placeholder graphic, not a photo (1 colour, 100% one colour)"
    )
    assert blank.endswith("The Data page skips blank and placeholder files when training.")
