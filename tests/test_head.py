"""The head engine, the sweep and `train --config`: behaviour a user would notice."""

import json
import threading

import keras
import numpy as np
import pandas as pd
import pytest

from tests.test_cli import tlcore
from tests.test_training import colour_config
from tlcore.jobs import ProgressLog
from tlcore.training import head
from tlcore.training.sweep import SweepGrid, apply_best, run_sweep
from tlcore.training.trainer import run_training


def separable(seed=0, count=60, width=16):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(count, width)).astype("float32")
    return features, (features[:, 0] > 0).astype("int32")


def test_the_engine_is_compiled_once_and_reused_with_the_same_seeded_history():
    train, val = separable(0), separable(1, 30)
    settings = head.HeadSettings(epochs=6, patience=0, seed=3, batch_size=8, learning_rate=1e-2)
    first = head.train_head(train, val, 2, settings)
    engine = head.acquire_engine(16, 2, 0, "adam")
    traces = engine.epoch.experimental_get_tracing_count()
    again = head.fit_head(engine, train, val, settings)
    other_rate = head.fit_head(engine, train, val, head.HeadSettings(epochs=6, patience=0, seed=3, dropout_rate=0.5))
    head.release_engine(engine)
    assert engine.epoch.experimental_get_tracing_count() == traces  # new rates, no new graph
    assert [r["loss"] for r in again.history] == pytest.approx([r["loss"] for r in first.history], rel=1e-6)
    assert [r["loss"] for r in other_rate.history] != pytest.approx([r["loss"] for r in first.history])
    assert first.history[-1]["val_accuracy"] >= 0.8


def test_label_smoothing_keeps_confident_predictions_from_saturating_without_a_new_graph():
    train, val = separable(0), separable(1, 30)
    base = dict(epochs=60, patience=0, seed=3, learning_rate=5e-2, dropout_rate=0.0)
    sharp = head.train_head(train, val, 2, head.HeadSettings(**base))
    engine = head.acquire_engine(16, 2, 0, "adam")
    traces = engine.epoch.experimental_get_tracing_count()
    smoothed = head.fit_head(engine, train, val, head.HeadSettings(**base, label_smoothing=0.2))
    head.release_engine(engine)
    assert engine.epoch.experimental_get_tracing_count() == traces
    # targets 0.9/0.1 instead of 1/0: less confident on average (measured 0.96 vs 0.91 here)
    confidence = [fit.val_probabilities.max(axis=1).mean() for fit in (sharp, smoothed)]
    assert confidence[1] < confidence[0] - 0.03, confidence
    assert smoothed.history[-1]["val_accuracy"] >= 0.8


def test_the_engine_stops_early_and_keeps_the_best_epoch():
    train, val = separable(0), separable(1, 30)
    fit = head.train_head(train, val, 2, head.HeadSettings(epochs=40, patience=2, learning_rate=3.0, optimizer="sgd"))
    losses = [r["val_loss"] for r in fit.history]
    assert fit.best_epoch == int(np.argmin(losses)) + 1 and fit.best_val_loss == pytest.approx(min(losses))
    if len(losses) < 40:
        assert fit.early_stopped and len(losses) - fit.best_epoch == 2


def test_cached_path_logs_epochs_bar_progress_and_best_marks(colour_dataset):
    log = ProgressLog()
    result = run_training(colour_config(colour_dataset, epochs=5), log=log)
    epochs = log.records(kind="epoch")
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4, 5] and {r["phase"] for r in epochs} == {"head"}
    batches = log.records(kind="batch")
    assert [r["epoch"] for r in batches] == [1, 2, 3, 4, 5] and all(r["step"] == r["steps"] for r in batches)
    best = log.records(kind="best")
    assert best[-1]["epoch"] == result.metrics["best_epoch"]
    assert result.metrics["val_loss"] == pytest.approx(result.history["val_loss"].min(), rel=1e-4, abs=1e-5)


def test_a_stop_request_ends_the_cached_path_after_the_current_epoch(colour_dataset):
    log, stop = ProgressLog(), threading.Event()
    stop.set()
    result = run_training(colour_config(colour_dataset, epochs=50), log=log, stop=stop)
    assert result.stopped and len(result.history) == 1
    assert result.metrics["kept_reason"].startswith("Stopped by request in epoch 1.")


def test_a_warm_retrain_reuses_features_backbone_and_engine(colour_dataset):
    run_training(colour_config(colour_dataset, epochs=3))
    again = run_training(colour_config(colour_dataset, epochs=3, learning_rate=5e-2))
    assert again.metrics["features_from_cache"] is True
    assert again.metrics["train_seconds"] < 5  # generous: no extraction, no tracing


def engine_and_classifier_probabilities(result):
    """The engine's validation probabilities (the run's metrics) and the saved classifier's on the same images."""
    from tlcore.data.images import decode_image

    val = result.val_items
    images = np.stack([decode_image(item.path, result.model.input_shape[1]) for item in val])
    return result.val_probabilities, result.model.predict(images.astype("float32"), verbose=0)


def test_the_head_the_engine_trained_is_the_head_the_classifier_predicts_with(colour_dataset):
    config = colour_config(colour_dataset, epochs=6, learning_rate=5e-2)
    config.model.hidden_units, config.model.dropout_rate = 8, 0.3  # two Dense layers and the dropout between
    result = run_training(config)
    engine, classifier = engine_and_classifier_probabilities(result)
    assert engine.shape == classifier.shape == (len(result.val_items), 3)
    np.testing.assert_allclose(classifier, engine, atol=1e-5)
    assert 0 < result.metrics["best_epoch"] <= 6  # the kept epoch's weights, not the last one's


def test_a_change_in_the_head_definition_reaches_both_the_engine_and_the_classifier(colour_dataset, monkeypatch):
    from tlcore.model import classifier as model_lib

    defined = model_lib.head_layers

    def tanh_hidden(num_classes, hidden_units=0, dropout_rate=0.2):
        layers = defined(num_classes, hidden_units, dropout_rate)
        for layer in layers:
            if layer.name == "hidden":
                layer.activation = keras.activations.tanh
        return layers

    monkeypatch.setattr(model_lib, "head_layers", tanh_hidden)
    head._FREE.clear()  # an engine pooled by an earlier test was built from the old definition
    config = colour_config(colour_dataset, epochs=4, learning_rate=5e-2)
    config.model.hidden_units = 5
    result = run_training(config)
    head._FREE.clear()
    hidden = model_lib.head_part(result.model).get_layer("hidden")
    assert hidden.activation is keras.activations.tanh
    engine, classifier = engine_and_classifier_probabilities(result)
    np.testing.assert_allclose(classifier, engine, atol=1e-5)


def test_sweep_ranks_the_grid_by_validation_loss_and_fills_the_best(colour_dataset):
    grid = SweepGrid([1e-2, 1e-1], [0.0, 0.5], [0, 8], ["adam"])
    result = run_sweep(colour_config(colour_dataset, epochs=4), grid)
    table = result.table
    assert len(table) == 8 and list(table["rank"]) == list(range(1, 9))
    assert list(table["val_loss"]) == sorted(table["val_loss"])
    config = apply_best(colour_config(colour_dataset), result.best)
    assert config.train.learning_rate == result.best["learning_rate"]
    assert config.model.hidden_units == result.best["hidden_units"]
    with pytest.raises(ValueError, match="Dropout rates"):
        SweepGrid(dropout_rates=[1.5]).validate()


def test_cli_sweep_and_train_from_a_saved_config(colour_dataset, tmp_path):
    flags = ["--data", colour_dataset, "--val-split", "0.25", "--backbone", "SmallCNN", "--weights", "none"]
    flags += ["--image-size", "32", "--batch-size", "8", "--seed", "1", "--epochs", "4"]
    sweep = tlcore(
        "sweep", *flags, "--lr", "1e-2,1e-1", "--dropout", "0,0.2", "--hidden-units", "0", "--out", tmp_path / "s"
    )
    assert sweep.returncode == 0, sweep.stderr
    report = json.loads(sweep.stdout)
    assert report["configs"] == 4 and {"learning_rate", "val_loss", "val_accuracy"} <= set(report["best"])
    assert len(pd.read_csv(tmp_path / "s" / "sweep.csv")) == 4
    first = tlcore("train", *flags, "--lr", "0.1", "--out", tmp_path / "a")
    assert first.returncode == 0, first.stderr
    again = tlcore("train", "--config", tmp_path / "a" / "config.json", "--out", tmp_path / "b")
    assert again.returncode == 0, again.stderr
    columns = ["epoch", "loss", "val_loss", "val_accuracy"]
    a, b = (pd.read_csv(tmp_path / name / "history.csv")[columns] for name in ("a", "b"))
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-5)
    override = tlcore("train", "--config", tmp_path / "a", "--epochs", "2", "--out", tmp_path / "c")
    assert override.returncode == 0 and json.loads(override.stdout)["epochs_run"] == 2
    saved = json.loads((tmp_path / "c" / "config.json").read_text())
    assert saved["train"]["learning_rate"] == 0.1 and saved["train"]["epochs"] == 2
    missing = tlcore("train", "--out", tmp_path / "d")
    assert missing.returncode == 2 and "--config" in missing.stderr


def test_the_sweep_offers_its_default_grid_and_only_optimizers_the_trainer_knows():
    from tlcore.config import OPTIMIZER_CHOICES
    from tlcore.training.sweep import GRID_OPTIONS, SweepGrid

    default = SweepGrid()
    for name, values in vars(default).items():
        assert set(values) <= set(GRID_OPTIONS[name]), name  # a default the page does not offer breaks its multiselect
    assert set(GRID_OPTIONS["optimizers"]) == set(OPTIMIZER_CHOICES)
    SweepGrid(*(list(GRID_OPTIONS[name]) for name in vars(default))).validate()  # every offered value is valid
