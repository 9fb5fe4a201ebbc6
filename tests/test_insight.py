"""Insight analyses on synthetic data: fast checks of the rules each one promises."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tlcore.data.scan import ImageItem
from tlcore.insight import calibration, duplicates, learning_curve, lr_finder, overlay
from tlcore.insight import figures as charts
from tlcore.insight.feature_set import FeatureSet, pool
from tlcore.insight.probes import fold_count, out_of_fold_probabilities

ROOT = Path(__file__).resolve().parents[1]


def items(prefix: str, labels) -> list:
    return [ImageItem(f"/data/{prefix}/{label}/{i}.jpg", label, f"{prefix}{i}") for i, label in enumerate(labels)]


def blob_features(n_per_class=30, dims=16, seed=0) -> FeatureSet:
    """Two well-separated Gaussian classes, 2/3 train and 1/3 validation."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 1, (n_per_class, dims)), rng.normal(3, 1, (n_per_class, dims))])
    y = np.repeat([0, 1], n_per_class)
    order = rng.permutation(len(y))
    x, y = x[order].astype(np.float32), y[order]
    split = len(y) * 2 // 3
    classes = ["a", "b"]
    return FeatureSet(
        x[:split], y[:split], x[split:], y[split:], classes,
        items("train", [classes[v] for v in y[:split]]), items("val", [classes[v] for v in y[split:]]),
    )  # fmt: skip


# ----------------------------------------------------------------------------- features and heads


def test_pooling_matches_the_head_layers():
    maps = np.arange(2 * 2 * 2 * 3, dtype=np.float32).reshape(2, 2, 2, 3)
    assert np.allclose(pool(maps, "avg"), maps.mean(axis=(1, 2)))
    assert np.allclose(pool(maps, "max"), maps.max(axis=(1, 2)))
    assert pool(maps, "flatten").shape == (2, 12)
    with pytest.raises(ValueError, match="pooling"):
        pool(maps, "median")


def test_out_of_fold_probabilities_never_use_the_row_itself():
    features = blob_features()
    x, y = features.all_x, features.all_y
    y_flipped = y.copy()
    y_flipped[0] = 1 - y[0]  # a flipped label: out of sample, the head disagrees with it
    probabilities = out_of_fold_probabilities(x, y_flipped, 2, folds=5)
    assert probabilities.shape == (len(y), 2)
    assert probabilities[0, y_flipped[0]] < 0.2
    assert np.allclose(probabilities.sum(axis=1), 1)


def test_fold_count_is_lowered_for_small_classes_and_refuses_singletons():
    assert fold_count(np.array([0, 0, 0, 1, 1, 1]), 5) == 3
    with pytest.raises(ValueError, match="at least 2 images in every class"):
        fold_count(np.array([0, 0, 0, 1]), 5)


# ----------------------------------------------------------------------------- learning-rate finder


def test_valley_picks_the_middle_of_the_longest_fall():
    lrs = np.logspace(-6, 0, 50)
    losses = np.concatenate([np.full(10, 2.0), np.linspace(2.0, 0.5, 30), np.linspace(0.6, 5, 10)])
    index = lr_finder.valley(lrs, losses)
    # The fall is indices 10..39 (30 points); fastai: start = 39 - 30, then + int(30/3) + int(30/3/2).
    assert index == 9 + 10 + 5
    assert 1.0 < losses[index] < 1.5


def test_suggest_leaves_out_the_first_tenth_and_the_last_five_points():
    lrs = list(np.logspace(-7, 1, 100))
    losses = list(np.linspace(1, 0.1, 100))  # falls all the way: the valley is the whole kept range
    kept = lrs[10:-5]
    suggested, reason = lr_finder.suggest(lrs, losses, 100, raw=losses)
    assert suggested == pytest.approx(kept[lr_finder.valley(kept, losses[10:-5])]) and reason == ""


def test_no_suggestion_from_too_few_steps():
    # "3e-06 from 15 noisy steps" before: a valley read from a running average.
    lrs, losses = list(np.logspace(-7, 1, 15)), list(np.linspace(1, 0.5, 15))
    suggested, reason = lr_finder.suggest(lrs, losses, 15, raw=losses)
    assert suggested is None and "15 steps" in reason and f"at least {lr_finder.MIN_STEPS}" in reason


def test_no_suggestion_when_the_loss_only_wanders():
    rng = np.random.default_rng(0)
    raw = 0.7 + rng.normal(0, 0.2, 100)  # batch noise, no learning
    smoothed = list(pd.Series(raw).ewm(alpha=1 - lr_finder.SMOOTHING, adjust=True).mean())
    suggested, reason = lr_finder.suggest(list(np.logspace(-7, 1, 100)), smoothed, 100, raw=list(raw))
    assert suggested is None and "no clear valley" in reason
    result = lr_finder.LRFinderResult(None, points=list(zip(np.logspace(-7, 1, 100), smoothed)), reason=reason)
    assert (
        result.to_dict()["suggested_lr"] is None
        and "no suggestion" in charts.lr_finder_figure(result).layout.title.text
    )


def test_sweep_stops_on_divergence_and_restores_weights_and_optimizer():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    before = [w.copy() for w in model.get_weights()]
    batches = lr_finder.feature_batches(x, y, 16, seed=0)
    lrs, losses, diverged, raw = lr_finder.sweep(model, batches, 1e-5, 1e4, num_it=100)
    assert len(raw) == len(lrs)
    assert diverged and len(lrs) < 100  # stopped when the loss passed 4x its best
    assert losses[-1] > 4 * min(losses)
    assert lrs == sorted(lrs) and lrs[1] / lrs[0] == pytest.approx((1e4 / 1e-5) ** (1 / 100))
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert int(model.optimizer.iterations.numpy()) == 0


def test_head_lr_finder_names_valley_and_suggests_a_rate_inside_the_sweep():
    from tlcore.config import RunConfig

    result = lr_finder.find_head_lr(blob_features(), RunConfig())
    assert result.method == "valley" and result.phase == "head"
    assert 1e-7 < result.suggested_lr < 10
    payload = result.to_dict()
    assert set(payload) >= {"suggested_lr", "method", "points"}
    assert all(len(point) == 2 for point in payload["points"])
    assert len(charts.lr_finder_figure(result).data) == 2


# ----------------------------------------------------------------------------- label issues


def overlapping_features(seed: int = 0) -> FeatureSet:
    """Too few images for too many features: 120 rows of 300 dims, the classes barely apart."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], 60)
    x = rng.normal(0, 1, (120, 300)).astype(np.float32)
    x[:, :5] += 0.8 * y[:, None]
    names = ["a", "b"]
    return FeatureSet(
        x[::2], y[::2], x[1::2], y[1::2], names,
        items("train", [names[v] for v in y[::2]]), items("val", [names[v] for v in y[1::2]]),
    )  # fmt: skip


def test_label_review_flags_nothing_when_the_heads_cannot_tell():
    from tlcore.insight.label_issues import review_labels

    review = review_labels(overlapping_features())
    # One fold split, uncalibrated, no "clearly against" rule: 53 of 120 flagged, suspicion up to 0.999.
    assert review.issues().empty
    assert review.ranked["score"].max() < 0.9
    assert review.accuracy < 0.7 and "no label is clearly contradicted" in review.describe()
    assert "always guessing the largest class: 50.0%" in review.describe()


def test_label_review_flags_a_flip_with_every_split_against_it_and_sorts_by_the_score():
    from tlcore.insight.label_issues import review_labels

    features = blob_features()
    features.train_y[0] = 1 - features.train_y[0]
    review = review_labels(features)
    issues = review.issues()
    assert issues["path"].tolist() == [features.train_items[0].path]
    assert issues["agreement"].tolist() == [1.0] and issues["score"].iloc[0] >= 0.9
    assert review.splits == 3 and review.ranked["score"].is_monotonic_decreasing
    assert "1 suspect labels among 60 images: contradicted" in review.describe()


# ----------------------------------------------------------------------------- near-duplicates


def photo_features(tmp_path, n_per_class=30, spread=0.05, seed=0) -> FeatureSet:
    """Two tight classes (every photo of a class looks alike to the backbone, as same-breed dogs do to a
    dog-breed model), each row a different real picture on disk."""
    from PIL import Image

    features = blob_features(n_per_class, seed=seed)
    rng = np.random.default_rng(seed + 1)
    centres = rng.normal(0, 1, (2, features.train_x.shape[1]))
    for x, y in ((features.train_x, features.train_y), (features.val_x, features.val_y)):
        x[:] = centres[y] + rng.normal(0, spread, x.shape)
    for split in ("train_items", "val_items"):
        kept = []
        for index, item in enumerate(getattr(features, split)):
            path = tmp_path / f"{split}_{index}.png"
            pattern = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pattern).resize((64, 64), Image.BILINEAR).save(path)
            kept.append(dataclasses.replace(item, path=str(path)))
        setattr(features, split, kept)
    return features


def same_label(features, train_row: int, label: int, path: str | None = None) -> None:
    """Training row ``train_row`` gets label id ``label`` (and another file, if given)."""
    item = features.train_items[train_row]
    features.train_y[train_row] = label
    changes = {"label": features.classes[label], "path": path or item.path}
    features.train_items[train_row] = dataclasses.replace(item, **changes)


def test_near_duplicates_threshold_comes_from_the_data_not_a_constant(tmp_path):
    features = photo_features(tmp_path)
    pairs = duplicates.near_duplicates(features)
    thresholds = pairs.attrs["thresholds"]
    # Every same-class pair is > 0.9 alike here: a fixed 0.72 called all of them near-duplicates.
    assert thresholds.median > 0.9 and thresholds.similar > thresholds.median
    assert pairs.empty
    leak = duplicates.leakage(features, pairs)
    assert leak.leaked == [] and leak.inflation is None and "not inflated" in leak.describe()


def test_near_duplicates_tell_the_same_photo_from_a_look_alike(tmp_path):
    from PIL import Image

    features = photo_features(tmp_path)
    val = features.val_items
    # A leak: training image 5 is validation image 3 re-encoded (JPEG 70) and shrunk to 2/3.
    original = Image.open(val[3].path).convert("RGB")
    copy = tmp_path / "copy.jpg"
    original.resize((42, 42)).save(copy, quality=70)
    same_label(features, 5, features.val_y[3], str(copy))
    features.train_x[5] = features.val_x[3] * 1.01
    # A look-alike: nearly the same features, a different picture.
    same_label(features, 8, features.train_y[7])
    features.train_x[8] = features.train_x[7] + 0.001
    train, val = features.train_items, features.val_items
    pairs = duplicates.near_duplicates(features)
    kinds = {(row.a, row.b): (row.kind, row.where) for row in pairs.itertuples()}
    assert kinds[(train[5].path, val[3].path)] == ("same photo", "train-val")
    assert kinds[(train[7].path, train[8].path)] == ("similar photo", "train-train")
    assert len(pairs) == 2 and pairs["kind"].tolist() == ["same photo", "similar photo"]
    assert pairs.loc[0, "pixels"] >= duplicates.SAME_PHOTO_PIXELS > pairs.loc[1, "pixels"]
    leak = duplicates.leakage(features, pairs)
    assert leak.leaked == [val[3].path]
    assert "1 of 20 validation images are the same photo" in leak.describe()
    with pytest.raises(ValueError, match="threshold"):
        duplicates.near_duplicates(features, 1.5)


def test_a_look_alike_across_the_split_is_no_leak(tmp_path):
    features = photo_features(tmp_path)
    same_label(features, 2, features.val_y[4])
    features.train_x[2] = features.val_x[4] + 0.001  # the backbone sees them alike; the pixels differ
    pairs = duplicates.near_duplicates(features)
    assert pairs["kind"].tolist() == ["similar photo"] and pairs.loc[0, "where"] == "train-val"
    assert duplicates.leaked_paths(pairs) == [] and duplicates.leakage(features, pairs).inflation is None


def test_accuracy_without_leaks_leaves_the_leaked_images_out():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    numbers = duplicates.accuracy_without(["a", "b", "c"], np.array([0, 1, 1]), probabilities, ["a"])
    assert numbers["val_accuracy"] == pytest.approx(2 / 3)
    assert numbers["val_accuracy_without_leaks"] == pytest.approx(1 / 2)
    assert numbers["leaked"] == 1


# ----------------------------------------------------------------------------- learning curve


def test_power_law_fit_recovers_a_known_curve_and_projects_it():
    sizes = np.array([20, 40, 80, 160, 320])
    points = pd.DataFrame(
        {"train_images": sizes, "fraction": sizes / 320, "val_accuracy": 0.95 - 0.8 * sizes**-0.5, "sd": 0.0}
    )
    parameters = learning_curve.fit_power_law(points)
    assert parameters == pytest.approx((0.95, 0.8, 0.5), rel=1e-2)
    projection = learning_curve.project(points, parameters, num_classes=2)
    assert projection["train_images"].tolist() == [480, 640, 1280]
    assert projection["more_per_class"].tolist() == [80, 160, 480]
    assert projection["val_accuracy"].iloc[-1] == pytest.approx(0.95 - 0.8 * 1280**-0.5, abs=1e-3)


def test_learning_curve_on_features_measures_every_fraction():
    curve = learning_curve.learning_curve(blob_features(), fractions=(0.2, 0.5, 1.0), repeats=3)
    assert curve.points["fraction"].tolist() == [0.2, 0.5, 1.0]
    assert curve.points["train_images"].tolist() == [8, 20, 40]
    assert curve.points["val_accuracy"].between(0, 1).all()
    assert set(curve.to_dict()) >= {"points", "projection"}
    assert len(charts.learning_curve_figure(curve).data) >= 1
    with pytest.raises(ValueError, match="fractions"):
        learning_curve.learning_curve(blob_features(), fractions=(0, 1.5))


def test_learning_curve_gives_no_projection_when_the_accuracy_is_flat():
    curve = learning_curve.learning_curve(blob_features(), repeats=3)  # 100 % from the smallest subset on
    assert curve.projection.empty and not curve.reliable
    assert "No reliable projection" in curve.describe() and "expect" not in curve.describe()
    assert curve.to_dict()["reliable"] is False and curve.to_dict()["reason"]
    assert len(charts.learning_curve_figure(curve).data) == 1  # the measured points, no fitted line


def test_a_projection_is_never_below_the_current_accuracy():
    # A noisy last point above the fitted curve: "now 98.0 %; with more images expect 97.7 %" before.
    sizes = np.array([20, 40, 80, 160, 320])
    accuracy = 0.95 - 0.8 * sizes**-0.5
    accuracy[-1] += 0.02
    points = pd.DataFrame({"train_images": sizes, "fraction": sizes / 320, "val_accuracy": accuracy, "sd": 0.0})
    projection = learning_curve.project(points, (0.95, 0.8, 0.5), num_classes=2)  # the curve without the noise
    assert (projection["val_accuracy"] >= accuracy[-1]).all()


def test_learning_curve_projects_a_rising_curve_with_its_range():
    rng = np.random.default_rng(0)
    n, dims = 1600, 100
    y = np.repeat([0, 1], n // 2)
    x = (rng.normal(0, 1, (n, dims)) + 0.25 * y[:, None]).astype(np.float32)  # overlapping: more data helps
    order = rng.permutation(n)
    x, y = x[order], y[order]
    features = FeatureSet(x[:800], y[:800], x[800:], y[800:], ["a", "b"])  # 77 % at 40 images, 86 % at 800
    curve = learning_curve.learning_curve(features, fractions=(0.05, 0.1, 0.2, 0.5, 1.0), repeats=5)
    assert curve.reliable, curve.describe()
    now = curve.points["val_accuracy"].iloc[-1]
    assert (curve.projection["low"] <= curve.projection["val_accuracy"]).all()
    assert (curve.projection["val_accuracy"] <= curve.projection["high"]).all()
    assert (curve.projection["low"] > now).all() and "expect" in curve.describe()


# ----------------------------------------------------------------------------- calibration


def overconfident(n=400, seed=0):
    """True probability of class 1 is p; the model reports a sharpened version of it."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.95, n)
    labels = (rng.uniform(size=n) < p).astype(int)
    logit = np.log(p / (1 - p)) * 3  # 3x too confident
    reported = 1 / (1 + np.exp(-logit))
    return np.stack([1 - reported, reported], axis=1), labels


def test_temperature_scaling_fixes_an_overconfident_model_without_leaking():
    probabilities, labels = overconfident()
    report = calibration.calibration_report(probabilities, labels)
    assert report.temperature == pytest.approx(3.0, rel=0.25)
    assert report.ece_after < report.ece_before / 2
    assert report.nll_after < report.nll_before
    # Cross-fitted: the reported "after" is not the in-sample fit (that would be this):
    in_sample = calibration.apply_temperature(probabilities, report.temperature)
    assert report.ece_after != pytest.approx(calibration.expected_calibration_error(in_sample, labels))
    assert len(charts.reliability_figure(report).data) == 3


def well_calibrated(n=400, seed=0):
    """The model reports exactly the true probability: nothing for a temperature to fix."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.95, n)
    labels = (rng.uniform(size=n) < p).astype(int)
    return np.stack([1 - p, p], axis=1), labels


def test_temperature_scaling_is_not_offered_when_it_does_not_help():
    # Seed 0: cross-fitted ECE 0.043 → 0.028, by chance; the bootstrap says it cannot tell.
    assert not any(calibration.calibration_report(*well_calibrated(seed=seed)).helps for seed in range(5))
    report = calibration.calibration_report(*well_calibrated(seed=0))
    assert not report.helps and "would not help" in report.describe() and report.to_dict()["helps"] is False
    assert calibration.calibration_report(*overconfident()).helps


def test_calibration_basics(tmp_path):
    probabilities, labels = overconfident(50)
    assert np.allclose(calibration.apply_temperature(probabilities, 1.0), probabilities, atol=1e-9)
    table = calibration.reliability(probabilities, labels, bins=10)
    assert table["count"].sum() == 50
    perfect = np.eye(2)[[0, 1, 0, 1]]
    assert calibration.expected_calibration_error(perfect, np.array([0, 1, 0, 1])) == 0
    report = calibration.calibration_report(probabilities, labels)
    assert calibration.load_temperature(tmp_path) is None
    calibration.save_temperature(tmp_path, report)
    assert calibration.load_temperature(tmp_path) == pytest.approx(report.temperature)
    with pytest.raises(ValueError, match="at least 4"):
        calibration.calibration_report(probabilities[:2], labels[:2])


# ----------------------------------------------------------------------------- overlay


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("TLCORE_WORKSPACE", str(tmp_path / "workspace"))
    return tmp_path / "workspace"


def test_overlay_relabels_and_excludes_when_the_dataset_is_loaded_and_never_touches_files(
    workspace, colour_dataset, tmp_path
):
    from tlcore.config import DataConfig
    from tlcore.data.pipeline import load_dataset
    from tlcore.data.scan import scan_folder

    data = tmp_path / "colours"
    shutil.copytree(colour_dataset, data)
    before = {p: p.read_bytes() for p in data.rglob("*.png")}
    scan = scan_folder(data)
    red = [item for item in scan.items if item.label == "red"]
    overlay.record([str(data)], red[0].path, red[0].digest, "relabel", "blue")
    overlay.record([str(data)], red[1].path, red[1].digest, "exclude")
    dataset = load_dataset(DataConfig(str(data), val_split=0.25))
    labels = {Path(item.path).name: item.label for item in dataset.train + dataset.val}
    assert labels[Path(red[0].path).name] == "blue"
    assert Path(red[1].path).name not in labels
    assert len(labels) == len(scan.items) - 1
    assert {p: p.read_bytes() for p in data.rglob("*.png")} == before  # files untouched
    overlay.record([str(data)], red[1].path, red[1].digest, "undo")
    assert len(load_dataset(DataConfig(str(data), val_split=0.25)).train) + 0 > 0
    assert overlay.load_overlay(data).decision(red[1].path) is None


def test_overlay_ignores_a_decision_about_a_file_that_changed_since(workspace, tmp_path):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    found = [ImageItem(str(root / "a" / "x.png"), "a", "old-digest")]
    store = overlay.Overlay(str(root.resolve()))
    store.exclude(found[0].path, "old-digest")
    assert overlay.apply_overlay(found, store) == []
    changed = [ImageItem(found[0].path, "a", "new-digest")]
    assert overlay.apply_overlay(changed, store) == changed
    store.relabel(found[0].path, "new-digest", "unknown-class")
    assert overlay.apply_overlay(changed, store, classes=["a", "b"]) == changed  # unknown class: ignored
    with pytest.raises(Exception, match="Expected an image inside"):
        overlay.record([str(root)], "/elsewhere/y.png", "d", "exclude")
    with pytest.raises(Exception, match="Unknown action"):
        overlay.record([str(root)], found[0].path, "d", "move")


# ----------------------------------------------------------------------------- charts and CLI


def test_embedding_figure_colours_by_each_choice_and_carries_paths():
    frame = pd.DataFrame(
        {"x": [0.0, 1.0, 2.0], "y": [0.0, 1.0, 0.5], "path": ["/d/a/1.jpg", "/d/b/2.jpg", "/d/b/3.jpg"],
         "split": ["train", "train", "val"], "label": ["a", "b", "b"], "predicted": ["a", "a", "b"],
         "mistake": [False, True, False], "suspect": [False, True, False], "score": [0.1, 0.9, 0.2]}
    )  # fmt: skip
    for colour, traces in (("label", 2), ("mistake", 2), ("suspect", 2), ("split", 2)):
        figure = charts.embedding_figure(frame, colour)
        assert len(figure.data) == traces
        assert {row[0] for trace in figure.data for row in trace.customdata} == set(frame["path"])
    with pytest.raises(ValueError, match="colour_by"):
        charts.embedding_figure(frame, "size")


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "tlcore", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["label-issues", "--data", "/no/such/folder", "--backbone", "SmallCNN"], "Dataset not found"),
        (["near-duplicates", "--threshold", "3", "--backbone", "SmallCNN"], "--threshold between -1 and 1"),
        (["learning-curve", "--fractions", "0.5,2", "--backbone", "SmallCNN"], "--fractions in (0, 1]"),
        (["lr-find", "--phase", "middle", "--backbone", "SmallCNN"], "Unknown phase"),
        (["label-issues", "--folds", "1", "--backbone", "SmallCNN"], "--folds of at least 2"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(args, message, colour_dataset):
    if "--data" not in args:
        args = [*args, "--data", str(colour_dataset)]
    completed = run_cli(*args)
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr.count("\n") == 1 and message in completed.stderr


def test_cli_commands_on_a_small_dataset_print_the_promised_json(colour_dataset):
    common = ["--data", str(colour_dataset), "--backbone", "SmallCNN", "--weights", "none", "--image-size", "32"]
    outputs = {}
    for command in ("lr-find", "label-issues", "near-duplicates", "learning-curve"):
        completed = run_cli(command, *common)
        assert completed.returncode == 0, completed.stderr
        outputs[command] = json.loads(completed.stdout)
    assert outputs["lr-find"]["method"] == "valley" and outputs["lr-find"]["suggested_lr"] > 0
    assert all(len(point) == 2 for point in outputs["lr-find"]["points"])
    assert outputs["label-issues"]["checked"] == 36
    assert isinstance(outputs["label-issues"]["issues"], list)
    assert isinstance(outputs["near-duplicates"]["pairs"], list)
    assert {"train_images", "val_accuracy", "sd"} <= set(outputs["learning-curve"]["points"][0])
    assert all({"train_images", "val_accuracy"} <= set(row) for row in outputs["learning-curve"]["projection"])


def test_a_refusal_says_which_number_decided_it():
    """ECE 0.207 → 0.026 with a worse log-loss read as a contradiction: the message names the log-loss."""
    report = calibration.calibration_report(*well_calibrated(seed=0))
    worse_likelihood = dataclasses.replace(report, ece_gain_low=0.1, nll_after=report.nll_before + 0.05)
    assert not worse_likelihood.helps and "log-loss gets worse" in worse_likelihood.describe()
    assert "resampling" in dataclasses.replace(report, ece_gain_low=-0.01).describe()


# ----------------------------------------------------------------------------- what the sections show


def test_a_learning_rate_suggestion_goes_to_its_phases_setting_at_an_offered_value():
    from tlcore.config import FINE_TUNE_LEARNING_RATE_CHOICES, LEARNING_RATE_CHOICES

    assert lr_finder.LRFinderResult(2.4e-3, phase="head").setting() == ("learning_rate", 3e-3)
    assert 3e-3 in LEARNING_RATE_CHOICES
    fine = lr_finder.LRFinderResult(2.4e-5, phase="fine-tune").setting()
    assert fine == ("fine_tune_learning_rate", 3e-5) and fine[1] in FINE_TUNE_LEARNING_RATE_CHOICES
    assert lr_finder.LRFinderResult(None, phase="head", reason="too short").setting() is None


def test_calibration_says_which_way_the_model_is_wrong_about_its_confidence():
    def report(temperature):
        return calibration.CalibrationReport(temperature, 0.1, 0.05, 0.5, 0.4, pd.DataFrame(), pd.DataFrame(), 100)

    assert report(1.8).confidence == "over-confident"
    assert report(0.7).confidence == "under-confident"


def test_relabel_offers_the_suggested_class_or_another_when_the_heads_agree_with_the_label():
    from tlcore.insight.label_issues import LabelReview

    ranked = pd.DataFrame({"given": ["cat", "dog", "fox", "dog"]})
    review = LabelReview(ranked, np.zeros((4, 3)), folds=5)
    assert review.relabel_target("cat", "fox") == "fox"
    assert review.relabel_target("cat", "cat") == "dog"  # the first other class, never the label it has
    assert review.relabel_target("dog", "dog") == "cat"


def test_a_duplicate_pair_shows_the_score_that_decided_it_first_and_an_unreadable_file_in_words():
    assert duplicates.pair_scores(duplicates.SAME, 0.9912, 0.9987) == "pixels 0.999 · features 0.991"
    assert duplicates.pair_scores(duplicates.SIMILAR, 0.95, 0.41) == "features 0.950 · pixels 0.410"
    assert duplicates.pair_scores(duplicates.SIMILAR, 0.95, float("nan")) == "features 0.950 · pixels unreadable"


def test_the_evaluate_sentence_names_the_leaks_and_both_accuracies():
    paths = [f"v{i}.png" for i in range(4)]
    labels = np.array([0, 1, 0, 1])
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])  # right, right, wrong, wrong
    sentence = duplicates.measured_on(paths, labels, probabilities, ["v0.png"])
    assert sentence == "1 of 4 validation images are copies of training photos: 50.0% with them, 33.3% without."
    assert "never trained on" in duplicates.measured_on(paths, labels, probabilities, [])
    assert "never trained on" not in duplicates.measured_on(paths, labels, probabilities, None)  # not checked
