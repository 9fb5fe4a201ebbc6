"""The real thing: shared photos and the shared pretrained MobileNetV2 (see ../shared/README.md)."""

import json

import numpy as np
import pytest

from tests.test_cli import tlcore

pytestmark = pytest.mark.real_assets


def train_on_hymenoptera(hymenoptera, out, *model_args) -> dict:
    """`tlcore train` for 20 epochs on the shared ants/bees photos (own feature cache); its JSON summary."""
    completed = tlcore(
        "train",
        "--data",
        hymenoptera / "train",
        "--val-data",
        hymenoptera / "val",
        *model_args,
        "--epochs",
        20,
        "--out",
        out,
        env={"TLCORE_CACHE_DIR": str(out.parent / "cache")},
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory, hymenoptera, dog_model):
    out = tmp_path_factory.mktemp("real") / "run"
    summary = train_on_hymenoptera(
        hymenoptera,
        out,
        "--backbone",
        dog_model,
        "--cut-layer",
        "mobilenetv2_1.00_160",
        "--preprocess",
        "mobilenet_v2",
    )
    return out, summary


def test_frozen_pretrained_mobilenet_reaches_0_92_on_ants_vs_bees(pretrained_run):
    out, summary = pretrained_run
    assert summary["val_accuracy"] >= 0.92
    assert summary["num_train"] == 244 and summary["num_val"] == 153
    assert summary["skipped_files"] == 1  # the placeholder GIF
    assert summary["feature_extraction_seconds"] > 0


def test_the_same_architecture_without_pretrained_weights_stays_far_below(tmp_path, hymenoptera, pretrained_run):
    random_accuracy = train_on_hymenoptera(
        hymenoptera, tmp_path / "random", "--backbone", "MobileNetV2", "--weights", "none", "--image-size", 160
    )["val_accuracy"]
    assert random_accuracy <= 0.75
    assert pretrained_run[1]["val_accuracy"] - random_accuracy >= 0.2


def test_predict_on_real_photos_of_each_class(pretrained_run, hymenoptera):
    out, _ = pretrained_run
    ants = sorted((hymenoptera / "val" / "ants").iterdir())[:5]
    bees = sorted((hymenoptera / "val" / "bees").iterdir())[:5]
    completed = tlcore("predict", "--model", out, "--top-k", 2, *ants, *bees)
    assert completed.returncode == 0, completed.stderr
    rows = json.loads(completed.stdout)
    top = [row["top_k"][0]["label"] for row in rows]
    assert sum(label == "ants" for label in top[:5]) >= 4 and sum(label == "bees" for label in top[5:]) >= 4
    assert all(abs(sum(p["probability"] for p in row["top_k"]) - 1) < 1e-4 for row in rows)


def test_grad_cam_on_the_real_model(pretrained_run, hymenoptera):
    from tlcore.inference.predict import grad_cam
    from tlcore.runs.store import read_run

    model = read_run(pretrained_run[0]).load_model()
    heatmap, _ = grad_cam(model, str(sorted((hymenoptera / "val" / "bees").iterdir())[0]))
    assert heatmap.shape == (5, 5) and heatmap.max() == pytest.approx(1.0)
    assert heatmap.std() > 0.1  # not uniform: some places matter more than others


@pytest.fixture(scope="module")
def dog_classifier(dog_model):
    """The shared dog-breed model rebuilt as a tlcore classifier: its backbone, a new head
    given the saved Dense(19) weights. Nothing is trained, so its outputs are known."""
    from tlcore.config import ModelConfig
    from tlcore.model import classifier as model_lib
    from tlcore.model.backbones import load_backbone
    from tlcore.model.file_trial import load_model_file

    saved = load_model_file(dog_model)
    model_config = ModelConfig(str(dog_model), cut_layer="mobilenetv2_1.00_160")
    classifier = model_lib.build_classifier(load_backbone(model_config), 19, model_config)
    model_lib.head_part(classifier).get_layer("predictions").set_weights(saved.layers[-1].get_weights())
    return classifier, saved


def real_photos(hymenoptera, per_class=6):
    return [path for label in ("bees", "ants") for path in sorted((hymenoptera / "val" / label).iterdir())[:per_class]]


def test_the_rebuilt_dog_classifier_predicts_exactly_like_the_saved_model(dog_classifier, hymenoptera):
    import keras

    from tlcore.inference.predict import load_batch

    classifier, saved = dog_classifier
    batch = load_batch([str(path) for path in real_photos(hymenoptera, 2)], 160)
    expected = saved.predict(keras.applications.mobilenet_v2.preprocess_input(batch.copy()), verbose=0)
    np.testing.assert_allclose(classifier.predict(batch, verbose=0), expected, atol=1e-5)


def test_grad_cam_on_real_photos_points_at_what_the_model_uses(dog_classifier, hymenoptera):
    """Grey out the 5 hottest cells of the 5x5 map, or the 5 coldest: hiding the hot ones
    must cost the predicted class more (a deletion test), and no map may be uniform."""
    from tlcore.inference.predict import grad_cam, load_batch

    classifier, _ = dog_classifier
    hot_drops, cold_drops = [], []
    for path in real_photos(hymenoptera):
        heatmap, index = grad_cam(classifier, str(path))
        assert heatmap.shape == (5, 5) and heatmap.std() > 0.15, path.name
        image = load_batch([str(path)], 160)
        order = np.argsort(heatmap.ravel())
        occluded = [image.copy(), image.copy()]
        for batch, cells in zip(occluded, (order[-5:], order[:5])):
            for row, column in (divmod(int(cell), 5) for cell in cells):
                batch[0, row * 32 : (row + 1) * 32, column * 32 : (column + 1) * 32] = 128
        scores = classifier.predict(np.concatenate([image, *occluded]), verbose=0)[:, index]
        hot_drops.append(scores[0] - scores[1])
        cold_drops.append(scores[0] - scores[2])
    assert np.mean(hot_drops) > np.mean(cold_drops) + 0.05
    assert sum(hot > cold for hot, cold in zip(hot_drops, cold_drops)) >= 8  # of 12 photos
