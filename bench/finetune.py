"""Fine-tuning: ours (phase 2 on cached activations below the cut) vs the plain Keras way.

Run: `.venv/bin/python bench/finetune.py [--seeds 5] [--sets hymenoptera,flowers12]
[--depths block_15,block_13] [--variants defaults,...]` (`make bench` runs the defaults).
Every number comes from this one run on this machine.

Both sides read a copy of exactly the files the studio trains on (bench/frozen_training.py's
`same_files`), with the shared MobileNetV2 (160 px) and the same schedule: the head for 5
epochs, then unfreeze from a block (`block_15` or `block_13`) for 5 more.

- plain: the keras-io transfer-learning guide's way (the seeds' pipeline of
  bench/frozen_training.py: `image_dataset_from_directory`, backbone called with
  `training=False`, GAP, Dropout 0.2, Dense, Adam 1e-3), then the backbone unfrozen from the
  block with every BatchNormalization kept frozen, recompiled with Adam 1e-5, `fit` 5 more
  epochs; accuracy of the last epoch. Its phase 1 runs once per seed and both depths
  fine-tune from a copy of it.
- ours: `tlcore.training.trainer.Trainer` with `TrainConfig` defaults (a variant overrides some),
  epochs=5, fine_tune_epochs=5; accuracy of the kept weights (lowest val_loss over both
  phases). "head" is the kept head after phase 1; "ft-best" the fine-tune epoch of lowest
  val_loss, "last" the last epoch (does the kept-weights rule throw a better one away?).
- phase-2 seconds: wall time of phase 2 (ours: `Trainer.fine_tune`, reading the cut's
  activations included; plain: recompile + `fit`). Sides alternate per seed and depth.
- cache: bytes of the cut's activations per image (float32) and for the whole set.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from frozen_training import plain_classifier, plain_datasets, same_files, spread  # noqa: E402  (the seeds' pipeline)

from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tlcore.data.pipeline import load_dataset  # noqa: E402
from tlcore.jobs import ProgressLog  # noqa: E402
from tlcore.model.backbones import load_backbone  # noqa: E402
from tlcore.training.trainer import Trainer  # noqa: E402

HEAD_EPOCHS, FINE_TUNE_EPOCHS = 5, 5
PLAIN_FINE_TUNE_RATE = 1e-5
SETS = {"hymenoptera": ("hymenoptera/train", "hymenoptera/val"), "flowers12": ("flowers12/train", "flowers12/test")}
# TrainConfig overrides studied; "defaults" is TrainConfig as shipped.
VARIANTS = {
    "defaults": {},
    **{
        f"lr{rate:.0e}".replace("e-0", "e-")
        + f"{'' if schedule == 'constant' else '-' + schedule}{'' if decay == 1 else f'-decay{decay:g}'}": {
            "fine_tune_learning_rate": rate,
            "fine_tune_schedule": schedule,
            "fine_tune_rate_decay": decay,
        }
        for rate, schedule, decay in [
            (1e-5, "constant", 1.0),
            (3e-5, "constant", 1.0),
            (5e-5, "constant", 1.0),
            (1e-4, "constant", 1.0),
            (3e-4, "constant", 1.0),
            (1e-4, "cosine", 1.0),
            (3e-4, "cosine", 1.0),
            (1e-4, "one-cycle", 1.0),
            (3e-4, "one-cycle", 1.0),
            (1e-4, "constant", 0.5),
            (3e-4, "cosine", 0.5),
        ]
    },
    # Longer phase 2 (10 epochs instead of 5; patience 10 never stops it): does more help?
    "lr1e-4-ft10": {"fine_tune_learning_rate": 1e-4, "fine_tune_rate_decay": 1.0, "fine_tune_epochs": 10},
    "lr3e-5-ft10": {"fine_tune_learning_rate": 3e-5, "fine_tune_rate_decay": 1.0, "fine_tune_epochs": 10},
    # Flip-only augmentation: phase 1 on images, phase 2 on cached activations and their mirrors.
    "flip": {"augment": "flip"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shared", default=os.environ.get("TL_SHARED_DIR", str(Path(__file__).resolve().parents[2] / "shared"))
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=1, help="seeds first..first+N-1 (split a long run)")
    parser.add_argument("--sets", default="hymenoptera,flowers12")
    parser.add_argument("--depths", default="block_15,block_13")
    parser.add_argument("--variants", default="defaults", help=f"comma-separated from: {', '.join(VARIANTS)}")
    parser.add_argument("--no-plain", action="store_true", help="ours only (variant studies)")
    args = parser.parse_args()
    shared = Path(args.shared)
    keras.config.disable_interactive_logging()
    os.environ["TLCORE_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-finetune-cache-")
    model_file = shared / "pretrained/dog_breed_mobilenetv2_160.h5"
    model_config = ModelConfig(str(model_file), cut_layer="mobilenetv2_1.00_160", preprocess="mobilenet_v2")
    backbone = load_backbone(model_config)
    initial = backbone.model.get_weights()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    depths, variants = args.depths.split(","), args.variants.split(",")
    print(
        f"seeds {seeds[0]}-{seeds[-1]}, {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} (a shared machine), "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}",
        flush=True,
    )
    results = {}
    for name in args.sets.split(","):
        train_dir, val_dir = (shared / "data" / part for part in SETS[name])
        dataset = load_dataset(DataConfig(str(train_dir), val_dir=str(val_dir)))
        root = same_files(dataset, Path(tempfile.mkdtemp(prefix=f"bench-finetune-{name}-")))
        data_config = DataConfig(str(root / "train"), val_dir=str(root / "val"))
        print(
            f"\n## {name}: {len(dataset.train)} train + {len(dataset.val)} val, {len(dataset.classes)} classes",
            flush=True,
        )
        for seed in seeds:
            plain_head = None if args.no_plain else plain_phase_one(backbone, initial, root, seed)
            for depth in depths:
                for variant in variants:  # ours first, then the plain way: the sides alternate
                    config = RunConfig(data_config, model_config, ours_train_config(variant, depth, seed))
                    row = ours(config, backbone, initial)
                    results.setdefault((name, depth, variant), []).append(row)
                    print(f"  seed {seed} {depth} ours {variant}: {fmt(row)}", flush=True)
                if plain_head is not None:
                    row = plain_fine_tune(backbone, plain_head, depth)
                    results.setdefault((name, depth, "plain"), []).append(row)
                    print(f"  seed {seed} {depth} plain: {fmt(row)}", flush=True)
    report(results, depths, variants, args.no_plain)


def ours_train_config(variant: str, depth: str, seed: int) -> TrainConfig:
    settings = TrainConfig(epochs=HEAD_EPOCHS, fine_tune_epochs=FINE_TUNE_EPOCHS, unfreeze_from=depth, seed=seed)
    for key, value in VARIANTS[variant].items():
        setattr(settings, key, value)
    return settings


def ours(config: RunConfig, backbone, initial: list) -> dict:
    """One run of ours, step by step so phase 2 is timed on its own."""
    backbone.model.set_weights(initial)  # the previous run fine-tuned this backbone
    started = time.perf_counter()
    trainer = Trainer(config, log=ProgressLog())
    trainer.prepare(backbone)
    trainer.train_head()
    head_probabilities = trainer.predict_validation()  # the head engine's, or the fitted head's (augmentation)
    head = float((head_probabilities.argmax(1) == np.asarray(trainer.labels["val"])).mean())
    phase_two = time.perf_counter()
    trainer.fine_tune()
    phase_two = time.perf_counter() - phase_two
    result = trainer.finish()
    history = result.history
    tuned = history[history["phase"] == "fine-tune"]
    per_image = trainer.timings.get("activation_bytes_per_image", 0)
    return {
        "accuracy": result.metrics["val_accuracy"],
        "head": head,
        "ft_best": float(tuned.loc[tuned["val_loss"].idxmin(), "val_accuracy"]) if len(tuned) else float("nan"),
        "last": float(history["val_accuracy"].iloc[-1]),
        "kept": result.metrics["best_phase"],
        "phase2_seconds": phase_two,
        "total_seconds": time.perf_counter() - started,
        "cache_bytes_per_image": per_image,
        "cache_bytes": per_image * (len(trainer.dataset.train) + len(trainer.dataset.val)),
        "cached": trainer.top is not None,
    }


def plain_phase_one(backbone, initial: list, root: Path, seed: int) -> dict:
    """The plain way's phase 1 (the head on the frozen backbone), shared by both depths of a seed."""
    backbone.model.set_weights(initial)
    keras.utils.set_random_seed(seed)
    size = backbone.image_size
    train, val, classes = plain_datasets(root / "train", root / "val", size, seed)
    model = plain_classifier(backbone, size, len(classes))
    started = time.perf_counter()
    history = model.fit(train, validation_data=val, epochs=HEAD_EPOCHS, verbose=0)
    return {
        "model": model,
        "backbone": backbone,
        "weights": model.get_weights(),
        "data": (train, val),
        "head": float(history.history["val_accuracy"][-1]),
        "seconds": time.perf_counter() - started,
    }


def plain_fine_tune(backbone, phase_one: dict, depth: str) -> dict:
    """The guide's phase 2: unfreeze from ``depth`` (BatchNorm kept frozen), Adam 1e-5, 5 epochs."""
    model, (train, val) = phase_one["model"], phase_one["data"]
    model.set_weights(phase_one["weights"])
    layers = backbone.model.layers
    start = [layer.name for layer in layers].index(depth + "_expand")
    backbone.model.trainable = True
    for index, layer in enumerate(layers):
        layer.trainable = index >= start and not isinstance(layer, keras.layers.BatchNormalization)
    started = time.perf_counter()
    model.compile(
        optimizer=keras.optimizers.Adam(PLAIN_FINE_TUNE_RATE),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(
        train, validation_data=val, epochs=HEAD_EPOCHS + FINE_TUNE_EPOCHS, initial_epoch=HEAD_EPOCHS, verbose=0
    )
    seconds = time.perf_counter() - started
    accuracy = float(history.history["val_accuracy"][-1])
    return {
        "accuracy": accuracy,
        "head": phase_one["head"],
        "last": accuracy,
        "phase2_seconds": seconds,
        "total_seconds": phase_one["seconds"] + seconds,
    }


def fmt(row: dict) -> str:
    parts = [f"acc {row['accuracy']:.3f}", f"head {row['head']:.3f}", f"phase 2 {row['phase2_seconds']:.1f} s"]
    if "ft_best" in row:
        parts += [f"ft-best {row['ft_best']:.3f}", f"last {row['last']:.3f}", f"kept {row['kept']}"]
    return ", ".join(parts)


def mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.pstdev(values):.4f}"


def report(results: dict, depths: list[str], variants: list[str], no_plain: bool) -> None:
    print("\n## accuracy, mean ± sd over seeds (ours: kept weights; plain: last epoch)")
    print(
        f"{'set':12s} {'depth':9s} {'side':20s} {'after fine-tune':>17s} {'head only':>17s} {'ft-best':>17s} {'last':>17s}"
    )
    for (name, depth, side), rows in results.items():
        cells = [
            mean_sd([row[key] for row in rows]) if key in rows[0] else ""
            for key in ("accuracy", "head", "ft_best", "last")
        ]
        print(f"{name:12s} {depth:9s} {side:20s} " + " ".join(f"{cell:>17s}" for cell in cells))
    print("\n## phase-2 seconds (median, all runs) and the cache")
    sets = list(dict.fromkeys(name for name, _, _ in results))
    for name in sets:
        for depth in depths:
            ours_rows = results[(name, depth, variants[0])]
            ours_seconds = [row["phase2_seconds"] for row in ours_rows]
            line = f"{name:12s} {depth:9s} ours {statistics.median(ours_seconds):6.2f} s ({spread(ours_seconds)})"
            if not no_plain:
                plain_seconds = [row["phase2_seconds"] for row in results[(name, depth, "plain")]]
                ratio = statistics.median(plain_seconds) / statistics.median(ours_seconds)
                line += f"; plain {statistics.median(plain_seconds):6.2f} s ({spread(plain_seconds)}); plain/ours {ratio:.2f}"
                ours_total = statistics.median(row["total_seconds"] for row in ours_rows)
                plain_total = statistics.median(row["total_seconds"] for row in results[(name, depth, "plain")])
                line += f"; whole run plain/ours {plain_total / ours_total:.2f}"
            row = ours_rows[0]
            line += (
                f"; cache {row['cache_bytes_per_image'] / 1024:.1f} KiB/image, {row['cache_bytes'] / 2**20:.1f} MiB "
                f"for the set (cached path: {all(r['cached'] for r in ours_rows)})"
            )
            print(line)


if __name__ == "__main__":
    main()
