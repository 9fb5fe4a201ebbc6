import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tlcore.config import DataConfig, FreezePlan, ModelConfig, RunConfig, TrainConfig
from tlcore.data.pipeline import image_dataset, load_dataset
from tlcore.jobs import HISTORY_COLUMNS, ProgressLog
from tlcore.model import classifier as model_lib
from tlcore.model.backbones import load_backbone
from tlcore.training.features import cached_features
from tlcore.training.strategy import even_batches
from tlcore.training.trainer import run_training


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
    config = colour_config(colour_dataset, epochs=10)
    fast = run_training(config)
    slow = run_training(colour_config(colour_dataset, epochs=10, feature_cache=False))
    assert slow.metrics["feature_extraction_seconds"] == 0
    assert fast.metrics["val_accuracy"] >= 0.85 and slow.metrics["val_accuracy"] >= 0.85
    # The features the fast path trained on (read back from its cache) are the ones the
    # image path computes: same decoding, preprocessing and backbone, to float precision.
    dataset = load_dataset(config.data, seed=config.train.seed)
    backbone = load_backbone(config.model, seed=config.train.seed)
    classifier = model_lib.build_classifier(backbone, len(dataset.classes), config.model)
    cached, from_cache = cached_features(classifier, backbone, dataset.train + dataset.val)
    assert from_cache
    images = image_dataset(dataset.train + dataset.val, np.zeros(len(cached)), backbone.image_size, 16)
    part, preprocess = model_lib.backbone_part(classifier), model_lib.preprocess_part(classifier)
    through_images = np.concatenate([part(preprocess(x), training=False).numpy() for x, _ in images])
    np.testing.assert_allclose(cached, through_images, atol=1e-5)


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
    best_epoch = int(result.history["epoch"][result.history["val_loss"].idxmin()])
    assert result.metrics["best_epoch"] == best_epoch and result.metrics["best_phase"] == "head"
    if len(result.history) < 8:  # early stopping ended it: the reason says so
        assert "Early stopping ended the head phase" in result.metrics["kept_reason"]


def kept_records(log):
    return [(record["epoch"], record["phase"], record["val_loss"]) for record in log.records(kind="best")]


def test_a_fine_tuning_that_worsens_validation_is_dropped_and_the_report_says_so(colour_dataset):
    # A huge fine-tune learning rate on the whole backbone wrecks validation.
    config = colour_config(
        colour_dataset, epochs=4, fine_tune_epochs=2, unfreeze_from="block1", fine_tune_learning_rate=10.0
    )
    log = ProgressLog()
    result = run_training(config, log=log)
    history, metrics = result.history, result.metrics
    head = history[history["phase"] == "head"]
    best_epoch = int(head["epoch"][head["val_loss"].idxmin()])
    assert history[history["phase"] == "fine-tune"]["val_loss"].min() > head["val_loss"].min()
    assert (metrics["best_epoch"], metrics["best_phase"]) == (best_epoch, "head")
    # The head's weights came back, backbone included: the final loss is that epoch's.
    assert metrics["val_loss"] == pytest.approx(head["val_loss"].min(), rel=1e-3, abs=1e-4)
    assert metrics["kept_reason"].startswith(f"Kept head epoch {best_epoch} (lowest validation loss ")
    assert "fine-tuning never beat it" in metrics["kept_reason"] and "dropped" in metrics["kept_reason"]
    # Live charts get a mark at every new best, and never one for the fine-tune phase here.
    assert [epoch for epoch, _, _ in kept_records(log)][-1] == best_epoch
    assert {phase for _, phase, _ in kept_records(log)} == {"head"}
    assert json.loads(json.dumps(metrics))["best_phase"] == "head"  # metrics.json can hold it


def test_a_fine_tuning_that_improves_validation_is_kept_and_the_report_says_so(colour_dataset):
    # A slow head (low rate, two epochs) leaves room for fine-tuning to do better.
    config = colour_config(
        colour_dataset,
        epochs=2,
        learning_rate=1e-2,
        fine_tune_epochs=3,
        unfreeze_from="block3",
        fine_tune_learning_rate=1e-2,
    )
    log = ProgressLog()
    result = run_training(config, log=log)
    history, metrics = result.history, result.metrics
    best_epoch = int(history["epoch"][history["val_loss"].idxmin()])
    assert best_epoch > 2 and (metrics["best_epoch"], metrics["best_phase"]) == (best_epoch, "fine-tune")
    assert metrics["val_loss"] == pytest.approx(history["val_loss"].min(), rel=1e-3, abs=1e-4)
    head_best = history[history["phase"] == "head"]["val_loss"].min()
    assert metrics["kept_reason"] == (
        f"Kept fine-tune epoch {best_epoch - int(history[history['phase'] == 'head']['epoch'].max())} "
        f"(epoch {best_epoch} of the run; lowest validation loss {history['val_loss'].min():.3f}), "
        f"better than the head's best ({head_best:.3f} at epoch "
        f"{int(history['epoch'][history['val_loss'][history['phase'] == 'head'].idxmin()])})."
    )
    records = kept_records(log)
    assert records[-1][:2] == (best_epoch, "fine-tune")
    assert [loss for _, _, loss in records] == sorted((loss for _, _, loss in records), reverse=True)


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
    stopped_in = log.last("epoch")
    # An epoch cut short is named in the report but not plotted as a full one.
    assert len(result.history) == stopped_in["epoch"] - stopped_in["partial"]
    assert result.metrics["kept_reason"].startswith(f"Stopped by request in epoch {stopped_in['epoch']}. Kept head")


# One subprocess (logical devices must be set before TensorFlow starts) runs every case.
# oneDNN is forced on: it is what turns a replica's empty batch into a crash (it is
# TensorFlow's default only on CPUs with AVX512-VNNI and the like, which is why this
# passed on one machine and failed on another).
MIRRORED_SCRIPT = """
import json, sys
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tests.helpers import make_colour_dataset
from tlcore.data.pipeline import decode_all, load_dataset
from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tlcore.metrics import evaluate_probabilities
from tlcore.training.trainer import run_training

root, batch_size = sys.argv[1], int(sys.argv[2])
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def folder(name, count):
    # Classes alternate so that every class has images whenever count >= 2.
    for index, colour in enumerate(("red", "blue")):
        share = (count + 1 - index) // 2
        if share:
            make_colour_dataset(f"{root}/{name}", per_class=share, size=32, classes=(colour,), seed=count + index)
    return f"{root}/{name}"


cases = []
for num_val in [batch_size + remainder for remainder in range(batch_size)] + [1]:
    num_train = 2 * batch_size + num_val % batch_size
    train_dir, val_dir = folder(f"train{num_val}", num_train), folder(f"val{num_val}", num_val)
    # With fine-tuning: head fit on cached features, fine-tune fit on images, final
    # prediction on images. Without: final prediction on cached features (one batch,
    # so only an odd count and a count below the replicas differ; each run costs ~5 s).
    for fine_tune_epochs in (1, 0) if num_val in (1, batch_size + 1) else (1,):
        config = RunConfig(
            DataConfig(train_dir, val_dir=val_dir),
            ModelConfig("SmallCNN", weights="none", image_size=32),
            TrainConfig(epochs=2, fine_tune_epochs=fine_tune_epochs, unfreeze_from="block4", batch_size=batch_size,
                        learning_rate=1e-2, early_stopping_patience=0, seed=1),
        )
        result = run_training(config, strategy=strategy)
        # Single-device reference: the kept model called eagerly outside the strategy.
        dataset = load_dataset(config.data, seed=1)
        images = decode_all([item.path for item in dataset.val], 32).astype("float32")
        reference = result.model(images, training=False).numpy()
        labels = dataset.label_ids(dataset.val)
        cases.append({
            "num_val": num_val, "num_train": num_train, "fine_tune_epochs": fine_tune_epochs,
            "metrics": {key: result.metrics[key] for key in ("val_loss", "val_accuracy", "num_val", "num_train")},
            "history": result.history[["phase", "val_loss"]].to_dict("list"),
            "probabilities": result.val_probabilities.tolist(),
            "reference": reference.tolist(),
            "reference_metrics": evaluate_probabilities(reference, labels),
        })
try:
    run_training(RunConfig(DataConfig(train_dir, val_dir=val_dir), ModelConfig("SmallCNN", weights="none", image_size=32),
                           TrainConfig(epochs=1, batch_size=batch_size + 1)), strategy=strategy)
    odd_batch_error = None
except ValueError as error:
    odd_batch_error = str(error)
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "cases": cases, "odd_batch_error": odd_batch_error}))
"""


@pytest.fixture(scope="module")
def mirrored_report(tmp_path_factory):
    """Trains under MirroredStrategy on two logical CPUs for every remainder of the validation size."""
    root = tmp_path_factory.mktemp("mirrored")
    completed = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, str(root), "4"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=str(Path(__file__).parents[1]),
        env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1", "TLCORE_CACHE_DIR": str(root / "cache")},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_mirrored_training_counts_every_validation_image_once_for_every_remainder(mirrored_report):
    assert mirrored_report["replicas"] == 2
    # Global batch 4: validation sizes 4..7 cover every remainder, 1 is fewer images than devices.
    assert sorted({case["num_val"] for case in mirrored_report["cases"]}) == [1, 4, 5, 6, 7]
    assert {case["fine_tune_epochs"] for case in mirrored_report["cases"]} == {0, 1}
    for case in mirrored_report["cases"]:
        where = f"num_val={case['num_val']}, fine_tune_epochs={case['fine_tune_epochs']}"
        metrics = case["metrics"]
        assert metrics["num_val"] == case["num_val"] and metrics["num_train"] == case["num_train"], where
        assert len(case["probabilities"]) == case["num_val"], where
        np.testing.assert_allclose(case["probabilities"], case["reference"], atol=1e-4, err_msg=where)
        assert metrics["val_accuracy"] == pytest.approx(case["reference_metrics"]["val_accuracy"]), where
        assert metrics["val_loss"] == pytest.approx(case["reference_metrics"]["val_loss"], rel=1e-4, abs=1e-5), where
        # fit's own validation under the strategy saw the same images: the kept epoch's
        # val_loss is the single-device loss of the kept weights.
        assert min(case["history"]["val_loss"]) == pytest.approx(metrics["val_loss"], rel=1e-4, abs=1e-5), where
        expected_phases = ["head", "head"] + ["fine-tune"] * case["fine_tune_epochs"]
        assert case["history"]["phase"] == expected_phases, where


def test_mirrored_training_refuses_a_batch_that_devices_cannot_share(mirrored_report):
    assert "Expected a batch size that is a multiple of the number of devices (2)" in mirrored_report["odd_batch_error"]
    assert "Received: batch_size=5" in mirrored_report["odd_batch_error"]


@pytest.mark.parametrize("replicas", [1, 2, 3])
def test_even_batches_give_every_replica_a_share_and_every_image_equally_often(replicas):
    import tensorflow as tf

    batch_size = 2 * replicas
    for count in range(1, 3 * batch_size + 1):
        batches = [b.numpy().tolist() for b in even_batches(tf.data.Dataset.range(count), count, batch_size, replicas)]
        sizes = [len(batch) for batch in batches]
        flat = [value for batch in batches for value in batch]
        assert min(sizes) >= replicas and sizes[0] % replicas == 0, (count, sizes)
        copies = len(flat) // count
        assert sorted(flat) == sorted(list(range(count)) * copies), (count, batches)
        assert flat[:count] == list(range(count)), "order is kept: the first `count` predictions are the images"
        if replicas == 1:
            assert sizes == [batch_size] * (count // batch_size) + ([count % batch_size] if count % batch_size else [])
