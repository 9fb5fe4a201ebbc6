"""Frozen-backbone training speed: ours vs the compute floor vs the seed-style pipeline.

Run: `make bench` (or `.venv/bin/python bench/frozen_training.py [--shared ../shared]`).
Prints one table; every number comes from this one run on this machine.

- floor: the backbone's bare `predict` over all train+val images, already decoded and
  resized in memory (first call, and warm).
- ours, 1st run: `tlcore.training.run_training` for 20 epochs from the image files with
  an empty feature cache: scan + decode + backbone once + head on the features + final
  evaluation. (Saving the run folder — model.keras, TensorBoard — is not included.)
- ours, 2nd run: the same call again; the on-disk feature cache is warm.
- seed-style: `image_dataset_from_directory` + `model.fit` of input → preprocess →
  frozen backbone → head for the same 20 epochs (the backbone runs on every batch of
  every epoch, as in the notebooks this project grew from).
- callback overhead: a fine-tune fit with and without our progress callback.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tlcore import data as data_lib  # noqa: E402
from tlcore import model as model_lib  # noqa: E402
from tlcore.backbones import load_backbone  # noqa: E402
from tlcore.callbacks import ProgressCallback  # noqa: E402
from tlcore.config import DataConfig, FreezePlan, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tlcore.jobs import ProgressLog  # noqa: E402
from tlcore.training import run_training  # noqa: E402

EPOCHS = 20


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shared", default=os.environ.get("TL_SHARED_DIR", str(Path(__file__).resolve().parents[2] / "shared"))
    )
    args = parser.parse_args()
    shared = Path(args.shared)
    train_dir, val_dir = shared / "data/hymenoptera/train", shared / "data/hymenoptera/val"
    model_file = shared / "pretrained/dog_breed_mobilenetv2_160.h5"
    os.environ["TLCORE_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-cache-")
    keras.config.disable_interactive_logging()

    model_config = ModelConfig(str(model_file), cut_layer="mobilenetv2_1.00_160", preprocess="mobilenet_v2")
    backbone = load_backbone(model_config)
    size = backbone.image_size
    config = RunConfig(
        DataConfig(str(train_dir), val_dir=str(val_dir)),
        model_config,
        TrainConfig(epochs=EPOCHS, early_stopping_patience=0, seed=42),
    )

    # Compute floor: decoded and resized in memory beforehand (not timed).
    dataset = data_lib.load_dataset(config.data)
    paths = [item.path for item in dataset.train + dataset.val]
    images = keras.applications.mobilenet_v2.preprocess_input(data_lib.decode_all(paths, size).astype("float32"))
    floor_cold, _ = timed(lambda: backbone.model.predict(images, batch_size=64, verbose=0))
    floor_warm, _ = timed(lambda: backbone.model.predict(images, batch_size=64, verbose=0))

    first_seconds, first = timed(lambda: run_training(config, backbone=backbone))
    second_seconds, second = timed(lambda: run_training(config, backbone=backbone))
    assert first.metrics["features_from_cache"] is False and second.metrics["features_from_cache"] is True

    seed_seconds, seed_accuracy = timed(lambda: seed_style(backbone, train_dir, val_dir, size))
    overhead = callback_overhead(backbone, dataset, size)

    rows = [
        ("compute floor: bare predict, first call", floor_cold, ""),
        ("compute floor: bare predict, warm", floor_warm, ""),
        ("ours, 1st run (empty feature cache)", first_seconds, f"val acc {first.metrics['val_accuracy']:.3f}"),
        ("  of which backbone features", first.metrics["feature_extraction_seconds"], ""),
        ("ours, 2nd run (feature cache warm)", second_seconds, f"val acc {second.metrics['val_accuracy']:.3f}"),
        ("seed-style model.fit, backbone every batch", seed_seconds, f"val acc {seed_accuracy:.3f}"),
    ]
    print(
        f"\nhymenoptera: {len(dataset.train)} train + {len(dataset.val)} val images, {size} px, {EPOCHS} epochs, "
        f"{os.cpu_count()} CPU cores, TensorFlow {tf.__version__}, Keras {keras.__version__}\n"
    )
    print(f"{'measurement':46s} {'seconds':>8s}  note")
    for name, seconds, note in rows:
        print(f"{name:46s} {seconds:8.2f}  {note}")
    ratios = [
        ("ours 1st / floor (first call)", first_seconds / floor_cold, "<= 1.3"),
        ("ours 1st / floor (warm)", first_seconds / floor_warm, "<= 1.3"),
        ("ours 2nd / ours 1st", second_seconds / first_seconds, "<= 0.1"),
        ("seed-style / ours 1st", seed_seconds / first_seconds, ">= 10"),
        ("accuracy gap, points (ours - seed-style)", 100 * (first.metrics["val_accuracy"] - seed_accuracy), "within 1"),
        ("progress-callback overhead on a fine-tune fit, %", 100 * overhead, "<= 3"),
    ]
    print(f"\n{'ratio':46s} {'value':>8s}  target")
    for name, value, target in ratios:
        print(f"{name:46s} {value:8.2f}  {target}")


def seed_style(backbone, train_dir: Path, val_dir: Path, size: int) -> float:
    """The notebooks' way: a frozen backbone inside model.fit, images decoded by tf.data."""
    keras.utils.set_random_seed(42)
    train = keras.utils.image_dataset_from_directory(
        train_dir, image_size=(size, size), batch_size=32, seed=42, verbose=False
    )
    val = keras.utils.image_dataset_from_directory(
        val_dir, image_size=(size, size), batch_size=32, shuffle=False, verbose=False
    )
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)  # mobilenet_v2.preprocess_input
    backbone.model.trainable = False
    x = backbone.model(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(
        train.prefetch(tf.data.AUTOTUNE), validation_data=val.prefetch(tf.data.AUTOTUNE), epochs=EPOCHS, verbose=0
    )
    return float(history.history["val_accuracy"][-1])


def callback_overhead(backbone, dataset, size: int, epochs: int = 2) -> float:
    """Relative cost of ProgressCallback on a fine-tune fit (best of alternating runs)."""
    classifier = model_lib.build_classifier(
        backbone, len(dataset.classes), ModelConfig(freeze=FreezePlan("from", "block_16"))
    )
    labels = dataset.label_ids(dataset.train)
    images = data_lib.image_dataset(dataset.train, labels, size, 32, shuffle=True, seed=1)
    model_lib.compile_classifier(classifier, "adam", 1e-4)
    classifier.fit(images, epochs=1, verbose=0)  # warm up: decode cache and tracing
    plain, with_callback = [], []
    for _ in range(3):
        plain.append(timed(lambda: classifier.fit(images, epochs=epochs, verbose=0))[0])
        callbacks = [ProgressCallback(ProgressLog(), "fine-tune")]
        with_callback.append(
            timed(lambda c=callbacks: classifier.fit(images, epochs=epochs, verbose=0, callbacks=c))[0]
        )
    return min(with_callback) / min(plain) - 1


if __name__ == "__main__":
    main()
