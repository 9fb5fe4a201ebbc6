"""Frozen-backbone training: cold run vs the compute floor, warm retrain, sweep, predict, accuracy.

Run: `make bench` (or `.venv/bin/python bench/frozen_training.py [--shared ../shared] [--seeds N]`).
Prints one table; every number comes from this one run on this machine.

- floor: the backbone's bare `predict` over all train+val images, already decoded (first call).
- cold run: `run_training` for 20 epochs with an empty feature cache (scan memo warm).
  Each of the two is measured in a fresh Python process of its own (backbone loaded, data
  scanned, nothing else run), alternating floor/cold `--cold-repeats` times, medians compared:
  both first calls then pay the same process-level start-up, and one slow first call (seen
  from 3.4 to 5.6 s for the floor on this machine) does not decide the ratio.
- warm retrain: the same call again, best of 5 (features, backbone and head engine reused).
- head epochs: the warm run's history `seconds`, summed.
- sweep: 18 head settings x 20 epochs on the cached features (`tlcore.training.sweep.run_sweep`).
- predict: `predict_top_k` on one image vs a compiled bare forward pass plus the same decoding.
- accuracy: ours (default settings) vs the seeds' pipeline (`image_dataset_from_directory` +
  frozen backbone in `model.fit`, GAP, Dropout 0.2, Dense, Adam 1e-3, 20 epochs, last epoch),
  seeds 1..N, both on a copy of exactly the files the studio trains on (the seeds' pipeline
  would also read the placeholder GIF the studio skips); bench/accuracy_study.py adds a
  second set and the decode/head variants.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tlcore.config import DataConfig, FreezePlan, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tlcore.data.pipeline import decode_all, image_dataset, load_dataset  # noqa: E402
from tlcore.inference.predict import load_batch, predict_top_k  # noqa: E402
from tlcore.jobs import ProgressLog  # noqa: E402
from tlcore.model import classifier as model_lib  # noqa: E402
from tlcore.model.backbones import load_backbone  # noqa: E402
from tlcore.training.callbacks import ProgressCallback  # noqa: E402
from tlcore.training.sweep import SweepGrid, run_sweep  # noqa: E402
from tlcore.training.trainer import run_training  # noqa: E402

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
    parser.add_argument("--seeds", type=int, default=5, help="seeds for the accuracy comparison")
    parser.add_argument("--cold-repeats", type=int, default=3, help="fresh processes per first-call measurement")
    parser.add_argument("--first-call", choices=["floor", "cold"], help=argparse.SUPPRESS)  # one child process
    args = parser.parse_args()
    shared = Path(args.shared)
    if args.first_call:
        print(json.dumps({"seconds": first_call(shared, args.first_call)}))
        return
    floors, colds = [], []
    for _ in range(args.cold_repeats):  # alternating, each in a fresh process
        floors.append(child_first_call(shared, "floor"))
        colds.append(child_first_call(shared, "cold"))
    floor_cold, cold_seconds = statistics.median(floors), statistics.median(colds)
    backbone, config = setup(shared)
    model_config, size = config.model, backbone.image_size
    dataset = load_dataset(config.data)
    paths = [item.path for item in dataset.train + dataset.val]
    cold = run_training(config, backbone=backbone)  # fills the feature cache for the warm runs
    warm = [timed(lambda: run_training(config, backbone=backbone)) for _ in range(5)]
    warm_seconds, warm_result = min(warm, key=lambda pair: pair[0])
    assert cold.metrics["features_from_cache"] is False and warm_result.metrics["features_from_cache"] is True
    head_seconds = float(warm_result.history["seconds"].sum())
    sweep = run_sweep(config, SweepGrid([1e-4, 1e-3, 1e-2], [0.0, 0.2, 0.5], [0, 256], ["adam"]), backbone=backbone)
    latency = predict_latency(cold.model, paths[:1], size)

    # Accuracy on identical files: the seeds' pipeline reads whole folders (the placeholder GIF
    # the studio skips included), so both sides read a copy of exactly the studio's files.
    root = same_files(dataset, Path(tempfile.mkdtemp(prefix="bench-same-files-")))
    train_dir, val_dir = root / "train", root / "val"
    same = DataConfig(str(train_dir), val_dir=str(val_dir))
    defaults = RunConfig(same, model_config, TrainConfig())  # the default head settings, not 20 epochs
    ours = [
        run_training(seeded(defaults, seed), backbone=backbone).metrics["val_accuracy"]
        for seed in range(1, args.seeds + 1)
    ]
    seeds = [seed_style(backbone, train_dir, val_dir, size, seed) for seed in range(1, args.seeds + 1)]
    print(
        f"\nhymenoptera: {len(dataset.train)} train + {len(dataset.val)} val images, {size} px, {EPOCHS} epochs, "
        f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}, TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}\n"
    )
    rows = [
        ("compute floor: bare predict, first call (s, median)", floor_cold, spread(floors)),
        ("cold run: run_training, empty cache (s, median)", cold_seconds, spread(colds)),
        ("cold run / floor (medians)", cold_seconds / floor_cold, "<= 1.15"),
        ("warm retrain, end to end in-process (s, best of 5)", warm_seconds, "<= 0.5"),
        ("20 head epochs on a warm cache, summed (s)", head_seconds, "<= 0.3"),
        ("sweep: 18 configs x 20 epochs after extraction (s)", sweep.seconds, "<= 10"),
        ("predict 1 image / (compiled bare forward + decode)", latency, "<= 1.2"),
        (
            f"ours, default settings: val accuracy, seeds 1-{args.seeds}",
            statistics.mean(ours),
            f"sd {statistics.pstdev(ours):.3f}",
        ),
        (
            f"seeds' pipeline: mean over seeds 1-{args.seeds}",
            statistics.mean(seeds),
            f"sd {statistics.pstdev(seeds):.3f}",
        ),
    ]
    print(f"{'measurement':52s} {'value':>8s}  target")
    for name, value, target in rows:
        print(f"{name:52s} {value:8.3f}  {target}")


def setup(shared: Path):
    """The bench's backbone and run config: the shared MobileNetV2 on the ants/bees photos."""
    train_dir, val_dir = shared / "data/hymenoptera/train", shared / "data/hymenoptera/val"
    model_file = shared / "pretrained/dog_breed_mobilenetv2_160.h5"
    os.environ["TLCORE_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-cache-")
    keras.config.disable_interactive_logging()
    model_config = ModelConfig(str(model_file), cut_layer="mobilenetv2_1.00_160", preprocess="mobilenet_v2")
    config = RunConfig(DataConfig(str(train_dir), val_dir=str(val_dir)), model_config, TrainConfig(epochs=EPOCHS))
    return load_backbone(model_config), config


def first_call(shared: Path, which: str) -> float:
    """In this (fresh) process: the floor's or the cold run's first call, in seconds."""
    backbone, config = setup(shared)
    dataset = load_dataset(config.data)  # the scan memo is warm for the cold run
    if which == "cold":
        return timed(lambda: run_training(config, backbone=backbone))[0]
    paths = [item.path for item in dataset.train + dataset.val]  # decoded beforehand, not timed
    images = decode_all(paths, backbone.image_size).astype("float32")
    images = keras.applications.mobilenet_v2.preprocess_input(images)
    return timed(lambda: backbone.model.predict(images, batch_size=64, verbose=0))[0]


def child_first_call(shared: Path, which: str) -> float:
    command = [sys.executable, __file__, "--shared", str(shared), "--first-call", which]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def spread(values: list[float]) -> str:
    return "runs " + ", ".join(f"{value:.2f}" for value in values)


def same_files(dataset, out: Path) -> Path:
    """A copy of exactly the files the studio trains on (unusable ones left out), so the seeds'
    pipeline, which reads whole folders, sees the same images (copies: the scan refuses symlinks)."""
    for split in ("train", "val"):
        for item in getattr(dataset, split):
            copy = out / split / item.label / Path(item.path).name
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item.path, copy)
    return out


def seeded(config, seed: int):
    copy = RunConfig.from_dict(config.to_dict())
    copy.train.seed = seed
    return copy


def predict_latency(model, paths: list, size: int, repeats: int = 20) -> float:
    """predict_top_k on one image vs a compiled bare forward pass plus the same decoding (best of repeats)."""
    forward = tf.function(lambda x: model(x, training=False))
    forward(load_batch(paths, size))
    predict_top_k(model, ["a", "b"], paths)  # compile both before timing
    ours, bare = [], []
    for _ in range(repeats):
        ours.append(timed(lambda: predict_top_k(model, ["a", "b"], paths))[0])
        bare.append(timed(lambda: forward(load_batch(paths, size)).numpy())[0])
    return min(ours) / min(bare)


def seed_style(backbone, train_dir: Path, val_dir: Path, size: int, seed: int = 42) -> float:
    """The notebooks' way: a frozen backbone inside model.fit, images decoded by tf.data (last epoch)."""
    keras.utils.set_random_seed(seed)
    train, val, classes = plain_datasets(train_dir, val_dir, size, seed)
    model = plain_classifier(backbone, size, len(classes))
    history = model.fit(train, validation_data=val, epochs=EPOCHS, verbose=0)
    return float(history.history["val_accuracy"][-1])


def plain_datasets(train_dir: Path, val_dir: Path, size: int, seed: int) -> tuple:
    """The seeds' data, `image_dataset_from_directory` (batches of 32): (train, val, class names)."""
    train = keras.utils.image_dataset_from_directory(
        train_dir, image_size=(size, size), batch_size=32, seed=seed, verbose=False
    )
    val = keras.utils.image_dataset_from_directory(
        val_dir, image_size=(size, size), batch_size=32, shuffle=False, verbose=False
    )
    return train.prefetch(tf.data.AUTOTUNE), val.prefetch(tf.data.AUTOTUNE), train.class_names


def plain_classifier(backbone, size: int, num_classes: int):
    """The seeds' model: frozen backbone (training=False), GAP, Dropout 0.2, Dense; Adam 1e-3."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)  # mobilenet_v2.preprocess_input
    backbone.model.trainable = False
    x = backbone.model(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def callback_overhead(backbone, dataset, size: int, epochs: int = 2) -> float:
    """Relative cost of ProgressCallback on a fine-tune fit (best of alternating runs)."""
    classifier = model_lib.build_classifier(
        backbone, len(dataset.classes), ModelConfig(freeze=FreezePlan("from", "block_16"))
    )
    labels = dataset.label_ids(dataset.train)
    images = image_dataset(dataset.train, labels, size, 32, shuffle=True, seed=1)
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
