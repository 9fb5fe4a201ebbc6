"""Insight analyses on the real ants/bees photos and the real pretrained MobileNetV2, with planted problems.

A copy of the dataset gets 10 training images moved into the other class (flipped
labels) and 10 validation images re-encoded (JPEG quality 70 or PNG, half resized to
2/3) into the training set (leakage). The recalls asserted are the ones measured here.
"""

import json
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.conftest import own_cache

pytestmark = pytest.mark.real_assets

FLIPS, COPIES = 10, 10


@dataclass
class Planted:
    root: Path
    flipped: list
    copies: list  # (training copy, validation original)
    config: object
    features: object
    cache: str


def plant(source: Path, target: Path, seed: int = 0):
    shutil.copytree(source, target)
    rng = random.Random(seed)
    train = sorted(p for p in (target / "train").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    flipped = []
    for path in rng.sample(train, FLIPS):
        moved = target / "train" / ("bees" if path.parent.name == "ants" else "ants") / path.name
        shutil.move(path, moved)
        flipped.append(str(moved))
    val = sorted(p for p in (target / "val").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    copies = []
    for index, path in enumerate(rng.sample(val, COPIES)):
        image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        if index % 2:
            image = image.resize((image.width * 2 // 3, image.height * 2 // 3))
        copy = target / "train" / path.parent.name / f"copy_{path.stem}.{'png' if index % 3 == 0 else 'jpg'}"
        image.save(copy, quality=70) if copy.suffix == ".jpg" else image.save(copy)
        copies.append((str(copy), str(path)))
    return flipped, copies


def real_config(root: Path, dog_model: Path):
    from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    model = ModelConfig(str(dog_model), cut_layer="mobilenetv2_1.00_160", preprocess="mobilenet_v2")
    return RunConfig(DataConfig(str(root / "train"), str(root / "val")), model, TrainConfig()).validate()


@pytest.fixture(scope="session")
def planted(tmp_path_factory, hymenoptera, dog_model):
    import os

    from tlcore.insight.features import dataset_features

    root = tmp_path_factory.mktemp("planted") / "hymenoptera"
    flipped, copies = plant(hymenoptera, root)
    config = real_config(root, dog_model)
    with own_cache(tmp_path_factory):
        cache = os.environ["TLCORE_CACHE_DIR"]
        features = dataset_features(config)
    return Planted(root, flipped, copies, config, features, cache)


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def test_planted_dataset_is_what_the_features_describe(planted):
    assert len(planted.features.train_items) == 244 + COPIES  # the placeholder GIF is skipped
    assert len(planted.features.val_items) == 153
    labels = {item.path: item.label for item in planted.features.train_items}
    assert all(labels[path] == Path(path).parent.name for path in planted.flipped)


def test_confident_learning_finds_every_flipped_label(planted):
    from tlcore.insight.label_issues import review_labels

    review, seconds = timed(review_labels, planted.features)
    ranked = review.ranked["path"].tolist()
    flipped = set(planted.flipped)
    # Measured here: 10/10 flagged, 10/10 in the top 20, 9/10 in the top 10 (5- and 10-fold, 3 seeds).
    assert len(flipped & set(review.issues()["path"])) == FLIPS
    assert len(flipped & set(ranked[:20])) == FLIPS
    assert len(flipped & set(ranked[:10])) >= 9
    assert review.checked == 407 and len(review.issues()) <= 25
    top = review.ranked.iloc[0]
    assert top["suggested"] != top["given"] and top["score"] > 0.9
    assert seconds < 30  # 0.5 s measured on an idle machine


def test_near_duplicates_find_every_reencoded_copy_and_nothing_else(planted):
    from tlcore.insight import duplicates

    pairs, seconds = timed(duplicates.near_duplicates, planted.features)
    found = {(row.a, row.b) for row in pairs.itertuples() if row.where == "train-val"}
    # Measured: copies at 0.79–1.00 cosine similarity, distinct photos at most 0.63 (threshold 0.72).
    assert found == set(planted.copies)
    assert len(pairs) == COPIES
    leak = duplicates.leakage(planted.features, pairs)
    assert sorted(leak.leaked) == sorted(original for _, original in planted.copies)
    assert leak.val_accuracy_without_leaks is not None and "10 of 153" in leak.describe()
    assert seconds < 5


def test_head_lr_finder_on_real_features_suggests_a_usual_rate(planted):
    from tlcore.insight.lr_finder import find_head_lr

    result = find_head_lr(planted.features, planted.config)
    assert result.method == "valley" and result.diverged
    assert 1e-4 <= result.suggested_lr <= 1e-1  # measured 1.7e-3 to 6.3e-3
    assert result.seconds < 60


def test_fine_tune_lr_finder_is_capped_in_steps(planted, monkeypatch):
    from tlcore.insight.lr_finder import find_fine_tune_lr

    monkeypatch.setenv("TLCORE_CACHE_DIR", planted.cache)
    result = find_fine_tune_lr(planted.config, num_it=12, head_epochs=2)
    assert result.phase == "fine-tune" and len(result.points) <= 12
    assert 1e-7 <= result.suggested_lr <= 10


def test_learning_curve_grows_and_projects(planted):
    from tlcore.insight.learning_curve import learning_curve

    curve, seconds = timed(learning_curve, planted.features)
    points = curve.points
    assert points["train_images"].tolist() == sorted(points["train_images"]) and points["train_images"].iloc[-1] == 254
    assert points["val_accuracy"].between(0.7, 1).all()
    assert len(curve.projection) == 3 and curve.projection["val_accuracy"].between(0, 1).all()
    assert "more images per class expect" in curve.describe()
    assert seconds < 60  # 0.7 s measured on an idle machine


def test_embedding_map_marks_the_flipped_images_as_suspect(planted):
    from tlcore.insight.embedding import embedding_map

    frame, seconds = timed(embedding_map, planted.features)
    assert len(frame) == 407 and np.isfinite(frame[["x", "y"]].to_numpy()).all()
    suspects = set(frame.loc[frame["suspect"], "path"])
    assert set(planted.flipped) <= suspects
    assert frame.loc[frame["path"].isin(planted.flipped), "mistake"].all()
    assert seconds < 60  # 2.3 s measured


def test_calibration_of_a_real_head_reports_cross_fitted_numbers(planted):
    from tlcore.insight.calibration import calibration_report
    from tlcore.insight.heads import fit_predict

    features = planted.features
    probabilities = fit_predict(features.train_x, features.train_y, features.val_x, 2)
    report = calibration_report(probabilities, features.val_y)
    assert 0 < report.ece_before < 0.2 and 0 <= report.ece_after < 0.2
    assert 0.2 < report.temperature < 5 and report.count == 153


def test_relabel_overlay_then_retrain_removes_the_issues(planted, tmp_path, monkeypatch):
    from tlcore.insight import overlay
    from tlcore.insight.features import dataset_features
    from tlcore.insight.label_issues import review_labels
    from tlcore.training import run_training

    monkeypatch.setenv("TLCORE_CACHE_DIR", planted.cache)
    monkeypatch.setenv("TLCORE_WORKSPACE", str(tmp_path / "workspace"))
    roots = [planted.config.data.data_dir, planted.config.data.val_dir]
    digests = {item.path: item.digest for item in planted.features.train_items}
    for path in planted.flipped:
        other = "bees" if Path(path).parent.name == "ants" else "ants"
        overlay.record(roots, path, digests[path], "relabel", other)
    before = {p: p.stat().st_mtime_ns for p in planted.root.rglob("*")}
    fixed = dataset_features(planted.config)
    assert fixed.from_cache  # same images, same features: only the labels changed
    review = review_labels(fixed)
    assert not set(planted.flipped) & set(review.issues()["path"])
    result = run_training(planted.config)
    assert result.metrics["val_accuracy"] >= 0.9 and result.metrics["features_from_cache"]
    assert {p: p.stat().st_mtime_ns for p in planted.root.rglob("*")} == before  # the user's files untouched


def test_cli_commands_on_real_photos(planted, monkeypatch, capsys):
    from tlcore.cli import main

    monkeypatch.setenv("TLCORE_CACHE_DIR", planted.cache)
    common = ["--data", planted.config.data.data_dir, "--val-data", planted.config.data.val_dir]
    common += ["--backbone", planted.config.model.backbone, "--cut-layer", "mobilenetv2_1.00_160"]
    common += ["--preprocess", "mobilenet_v2"]
    outputs = {}
    for command in ("lr-find", "label-issues", "near-duplicates", "learning-curve"):
        assert main([command, *common]) == 0
        outputs[command] = json.loads(capsys.readouterr().out)
    assert outputs["lr-find"]["method"] == "valley"
    issues = outputs["label-issues"]["issues"]
    assert outputs["label-issues"]["checked"] == 407
    assert set(planted.flipped) <= {issue["path"] for issue in issues}
    assert [issue["score"] for issue in issues] == sorted((issue["score"] for issue in issues), reverse=True)
    assert {(pair["a"], pair["b"]) for pair in outputs["near-duplicates"]["pairs"]} == set(planted.copies)
    assert {pair["where"] for pair in outputs["near-duplicates"]["pairs"]} == {"train-val"}
    assert outputs["learning-curve"]["points"][-1]["train_images"] == 254
