"""The real thing: shared photos and the shared pretrained MobileNetV2 (see ../shared/README.md)."""

import json

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
    from tlcore.predict import grad_cam
    from tlcore.runs import read_run

    model = read_run(pretrained_run[0]).load_model()
    heatmap, _ = grad_cam(model, str(sorted((hymenoptera / "val" / "bees").iterdir())[0]))
    assert heatmap.shape == (5, 5) and heatmap.max() == pytest.approx(1.0)
