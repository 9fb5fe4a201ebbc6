import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from tlcore.config import DataConfig, FreezePlan, ModelConfig, RunConfig, TrainConfig
from tlcore.jobs import ProgressLog
from tlcore.training import HISTORY_COLUMNS, run_training


def colour_config(dataset, **train_options):
    """SmallCNN with frozen random weights: its features keep colour, enough to separate the classes."""
    train = {
        "epochs": 4,
        "batch_size": 8,
        "learning_rate": 1e-1,
        "early_stopping_patience": 0,
        "seed": 1,
        **train_options,
    }
    return RunConfig(
        DataConfig(str(dataset), val_split=0.25),
        ModelConfig("SmallCNN", weights="none", image_size=32),
        TrainConfig(**train),
    )


def test_progress_log_is_safe_to_append_from_many_threads():
    log = ProgressLog()

    def writer(worker):
        for step in range(500):
            log.append("batch", worker=worker, step=step)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    snapshots = [len(log.records()) for _ in range(50)]
    for thread in threads:
        thread.join()
    assert len(log) == 4000
    assert snapshots == sorted(snapshots)  # append-only: a reader never sees it shrink
    for worker in range(8):
        assert [r["step"] for r in log.records() if r["worker"] == worker] == list(range(500))


def test_frozen_training_uses_the_feature_cache_and_learns(colour_dataset):
    log = ProgressLog()
    result = run_training(colour_config(colour_dataset, epochs=10), log=log)
    assert result.metrics["val_accuracy"] >= 0.85
    assert result.metrics["features_from_cache"] is False
    assert result.metrics["feature_extraction_seconds"] > 0
    assert list(result.history.columns) == HISTORY_COLUMNS
    assert list(result.history["epoch"]) == list(range(1, 11))
    assert set(result.history["phase"]) == {"head"}
    assert log.records(kind="extract"), "extraction progress is reported"
    assert log.last("status")["status"] == "done"

    again = run_training(colour_config(colour_dataset, epochs=10, learning_rate=5e-2))
    assert again.metrics["features_from_cache"] is True  # a new learning rate reuses the features


def test_feature_cache_path_matches_the_ordinary_path(colour_dataset):
    fast = run_training(colour_config(colour_dataset, epochs=10))
    slow = run_training(colour_config(colour_dataset, epochs=10, feature_cache=False))
    assert slow.metrics["feature_extraction_seconds"] == 0
    assert abs(fast.metrics["val_accuracy"] - slow.metrics["val_accuracy"]) <= 0.15
    assert abs(fast.metrics["val_loss"] - slow.metrics["val_loss"]) <= 0.25


def test_feature_cache_is_invalidated_by_what_changes_the_features(colour_dataset, tmp_path):
    import shutil

    run_training(colour_config(colour_dataset, epochs=1))
    assert run_training(colour_config(colour_dataset, epochs=1)).metrics["features_from_cache"]
    # A different seed means different random backbone weights: new features.
    assert not run_training(colour_config(colour_dataset, epochs=1, seed=2)).metrics["features_from_cache"]
    bigger = colour_config(colour_dataset, epochs=1)
    bigger.model.image_size = 40
    assert not run_training(bigger).metrics["features_from_cache"]
    other_preprocess = colour_config(colour_dataset, epochs=1)
    other_preprocess.model.preprocess = "vgg16"
    assert not run_training(other_preprocess).metrics["features_from_cache"]
    # Same file names, one image's contents changed: the cache must not be reused.
    copy = tmp_path / "copy"
    shutil.copytree(colour_dataset, copy)
    run_training(colour_config(copy, epochs=1))
    assert run_training(colour_config(copy, epochs=1)).metrics["features_from_cache"]
    victim = sorted((copy / "red").iterdir())[0]
    victim.write_bytes((copy / "blue" / sorted(p.name for p in (copy / "blue").iterdir())[0]).read_bytes())
    assert not run_training(colour_config(copy, epochs=1)).metrics["features_from_cache"]


def test_two_phases_give_one_history_with_a_lower_fine_tune_rate(colour_dataset):
    config = colour_config(colour_dataset, epochs=2, fine_tune_epochs=2, unfreeze_from="block4")
    log = ProgressLog()
    result = run_training(config, log=log)
    history = result.history
    # Batch records carry the same running epoch number as the epoch records.
    assert sorted({r["epoch"] for r in log.records(kind="batch")}) == [1, 2, 3, 4]
    assert list(history["phase"]) == ["head", "head", "fine-tune", "fine-tune"]
    assert list(history["epoch"]) == [1, 2, 3, 4]
    head_lr, fine_lr = history.groupby("phase", sort=False)["learning_rate"].first()
    assert fine_lr == pytest.approx(head_lr / 10)
    assert not history[["loss", "val_loss", "accuracy", "val_accuracy", "seconds"]].isna().any().any()


def test_augmentation_and_partial_unfreezing_take_the_ordinary_path(colour_dataset):
    config = colour_config(colour_dataset, epochs=2, augment=True)
    assert run_training(config).metrics["feature_extraction_seconds"] == 0
    config = colour_config(colour_dataset, epochs=2)
    config.model.freeze = FreezePlan("from", "block4")
    assert run_training(config).metrics["feature_extraction_seconds"] == 0


def test_same_seed_same_history(colour_dataset):
    first = run_training(colour_config(colour_dataset, epochs=3)).history
    second = run_training(colour_config(colour_dataset, epochs=3)).history
    np.testing.assert_allclose(
        first[["loss", "val_loss"]].to_numpy(), second[["loss", "val_loss"]].to_numpy(), rtol=1e-5
    )


def test_early_stopping_restores_the_best_epoch(colour_dataset):
    # A huge learning rate makes validation loss jump around; the kept model is the best one.
    config = colour_config(colour_dataset, epochs=8, learning_rate=3.0, optimizer="sgd", early_stopping_patience=2)
    result = run_training(config)
    best = result.history["val_loss"].min()
    assert result.metrics["val_loss"] == pytest.approx(best, rel=1e-3, abs=1e-4)


def test_stop_request_ends_training_within_a_batch_and_keeps_a_model(colour_dataset):
    log = ProgressLog()
    stop = threading.Event()
    config = colour_config(colour_dataset, epochs=200, batch_size=2, feature_cache=False)
    outcome = {}

    def job():
        outcome["result"] = run_training(config, log=log, stop=stop)

    thread = threading.Thread(target=job)
    thread.start()
    while not log.records(kind="epoch") and thread.is_alive():
        threading.Event().wait(0.05)
    stop.set()
    batches_at_stop = len(log.records(kind="batch"))
    thread.join(timeout=120)
    result = outcome["result"]
    assert result.stopped and result.metrics["stopped_early_by_user"]
    assert len(result.history) < 200
    assert len(log.records(kind="batch")) <= batches_at_stop + 2
    assert result.val_probabilities is not None and result.metrics["val_accuracy"] > 0
    assert log.last("status")["status"] == "stopped"


def test_fit_runs_under_mirrored_strategy_on_two_logical_cpus(colour_dataset, tmp_path):
    script = textwrap.dedent(
        f"""
        import json, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig
        from tlcore.training import run_training
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        config = RunConfig(DataConfig({str(colour_dataset)!r}, val_split=0.25),
                           ModelConfig("SmallCNN", weights="none", image_size=32),
                           TrainConfig(epochs=2, fine_tune_epochs=1, unfreeze_from="block4", batch_size=8,
                                       learning_rate=1e-2, early_stopping_patience=0))
        result = run_training(config, strategy=strategy)
        print(json.dumps({{"replicas": strategy.num_replicas_in_sync, "epochs": len(result.history),
                          "val_accuracy": result.metrics["val_accuracy"]}}))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(tmp_path),
        env={**__import__("os").environ, "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[1])},
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    import json

    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2 and report["epochs"] == 3
    assert report["val_accuracy"] > 0.5
