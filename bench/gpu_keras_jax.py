"""GPU figures with Keras 3 on any backend: frozen-backbone extraction and phase-2 fine-tune speed.

Made for a GPU machine that has JAX but no TensorFlow (Keras 3 runs on JAX there); it runs
the same on the TensorFlow backend. It imports no TensorFlow itself and uses only
tlcore's Keras-level modules (tlcore.model.classifier, tlcore.model.cut,
tlcore.model.backbones), so what it times is the studio's own classifier, cut and parts.

Two steps, so the GPU machine needs neither Pillow decoding time nor the photo folders:

1. prepare (here, once): the studio's own file scan and decoder (placeholders skipped,
   bilinear resize) into one uint8 .npz::

       .venv/bin/python bench/gpu_keras_jax.py prepare --out /tmp/hymenoptera160.npz

2. measure::

       KERAS_BACKEND=jax python bench/gpu_keras_jax.py measure --npz /tmp/hymenoptera160.npz \\
           --model ../shared/pretrained/dog_breed_mobilenetv2_160.h5 --out gpu.json

What is measured (one JSON line per figure on stdout, all of them in ``--out``):

- extraction: images/s of preprocess + the frozen backbone (``predict`` on uint8 images,
  host to device included), per batch size, ``--repeats`` warm runs (median, min, max).
- phase 2 from ``--unfreeze-from`` (default block_15), Adam 1e-5, batch 32, per seed,
  both from the same head (phase 1: the head alone on cached feature maps):
  plain = the whole classifier in ``fit``, layers below the block frozen, BatchNorm
  frozen (inference mode); cached = the block's input computed once per image
  (:func:`tlcore.model.cut.bottom_part`), then ``fit`` of :func:`tlcore.model.cut.top_part`.
  Seconds of each epoch (validation pass included; the first epoch of the first seed
  also compiles) and validation accuracy after each epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

FIGURES: list[dict] = []
OUT: list[Path] = []  # where every figure so far is rewritten, so a run killed at its limit keeps them
STARTED = time.perf_counter()


def emit(figure: str, **values) -> dict:
    """Prints one figure as a JSON line and rewrites ``--out`` with every figure so far."""
    row = {"figure": figure, **values}
    FIGURES.append(row)
    print(json.dumps(row, default=_plain), flush=True)
    for path in OUT:
        path.write_text(json.dumps(FIGURES, indent=1, default=_plain) + "\n")
    return row


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def summary(values: list[float]) -> dict:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "repeats": [round(v, 5) for v in values],
    }


# ---------------------------------------------------------------- prepare


def prepare(images_root: Path, size: int, out: Path) -> None:
    """Decodes train/ and val/ of ``images_root`` with the studio's scan and decoder into ``out``."""
    from tlcore.config import DataConfig
    from tlcore.data.images import decode_image
    from tlcore.data.pipeline import load_dataset

    dataset = load_dataset(DataConfig(str(images_root / "train"), val_dir=str(images_root / "val")))
    arrays = {}
    for split in ("train", "val"):
        items = getattr(dataset, split)
        arrays[f"x_{split}"] = np.stack([decode_image(item.path, size) for item in items])
        arrays[f"y_{split}"] = np.asarray([dataset.classes.index(item.label) for item in items], np.int32)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, classes=np.asarray(dataset.classes), **arrays)
    emit(
        "prepared",
        path=str(out),
        bytes=out.stat().st_size,
        train=len(arrays["y_train"]),
        val=len(arrays["y_val"]),
        classes=list(dataset.classes),
        skipped=[Path(s.path).name for s in dataset.skipped],
        image_size=size,
    )


# ---------------------------------------------------------------- environment


def environment() -> None:
    facts = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "cpu_count": os.cpu_count(),
    }
    if keras.backend.backend() == "jax":
        import jax
        import jaxlib

        facts.update(jax=jax.__version__, jaxlib=jaxlib.__version__, devices=[str(d) for d in jax.devices()])
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        facts.update(tensorflow=tf.__version__, devices=[d.name for d in tf.config.list_physical_devices()])
    if shutil.which("nvidia-smi"):
        query = "name,memory.total,driver_version,clocks.max.sm,power.limit"
        done = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True, text=True
        )
        facts["nvidia_smi"] = done.stdout.strip() or done.stderr.strip()
    emit("environment", **facts)


# ---------------------------------------------------------------- the studio's classifier


def studio_parts(model_file: Path, unfreeze_from: str, fine_tune_epochs: int, batch_size: int, rate: float):
    """The backbone, classifier (2 classes), phase-2 settings and the activation cut, by tlcore's rules.

    The model file is loaded directly (``load_model(compile=False)``) rather than through
    tlcore's sandboxed trial in a child process, which is a safety check, not a speed one.
    """
    from tlcore.config import ModelConfig, TrainConfig
    from tlcore.model.backbones import Backbone, cut_model, guess_family
    from tlcore.model.classifier import build_classifier
    from tlcore.model.cut import activation_cut

    full = keras.models.load_model(model_file, compile=False)
    network = cut_model(full, "mobilenetv2_1.00_160")
    family = guess_family([layer.name for layer in network.layers])
    backbone = Backbone(
        model=network,
        name=model_file.name,
        preprocess="mobilenet_v2",
        image_size=network.input_shape[1],
        block_pattern=family.block_pattern if family else None,
        weights_id=f"bench:{model_file.name}",
    )
    model_config = ModelConfig(str(model_file), cut_layer=network.name, preprocess="mobilenet_v2")
    train_config = TrainConfig(
        epochs=5,
        fine_tune_epochs=fine_tune_epochs,
        batch_size=batch_size,
        fine_tune_learning_rate=rate,
        unfreeze_from=unfreeze_from,
        augment=False,
        feature_cache=True,
    )
    classifier = build_classifier(backbone, 2, model_config)
    cut = activation_cut(backbone, model_config, train_config)
    return backbone, classifier, model_config, train_config, cut


def image_network(classifier, network, name: str):
    """uint8 images → the classifier's preprocess → ``network`` (a part on the shared layers)."""
    from tlcore.model.classifier import preprocess_part

    size = classifier.input_shape[1]
    images = keras.Input((size, size, 3), dtype="uint8", name="images")
    return keras.Model(images, network(preprocess_part(classifier)(images)), name=name)


# ---------------------------------------------------------------- (a) extraction


def measure_extraction(classifier, images: np.ndarray, batch_sizes: list[int], count: int, repeats: int) -> None:
    from tlcore.model.classifier import backbone_part

    extractor = image_network(classifier, backbone_part(classifier), "extractor")
    tiled = np.resize(images, (count, *images.shape[1:]))  # the set repeated to ``count`` images
    for batch in batch_sizes:
        started = time.perf_counter()
        extractor.predict(tiled, batch_size=batch, verbose=0)
        cold = time.perf_counter() - started
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            extractor.predict(tiled, batch_size=batch, verbose=0)
            seconds.append(time.perf_counter() - started)
        emit(
            "extract_images_per_s",
            batch=batch,
            images=count,
            cold_seconds_incl_compile=round(cold, 3),
            **summary([count / s for s in seconds]),
        )


# ---------------------------------------------------------------- (b) phase 2


class EpochClock(keras.callbacks.Callback):
    """Keeps each epoch's wall seconds (its validation pass included)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started)


def compiled_with_state(model, rate: float):
    """Compiles ``model`` once (Adam) and builds its optimizer, so seeds reuse the compiled step.

    Returns the optimizer's fresh state; :func:`reset` puts it back before each seed, which
    restarts Adam without recompiling (a recompile would retrace and compile every seed).
    """
    model.compile(optimizer=keras.optimizers.Adam(rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.optimizer.build(model.trainable_variables)
    return [v.numpy() for v in model.optimizer.variables]


def reset(model, optimizer_state: list, weights: list, weight_owner) -> None:
    weight_owner.set_weights(weights)
    for variable, value in zip(model.optimizer.variables, optimizer_state):
        variable.assign(value)


def fit_epochs(model, x, y, validation, epochs: int, batch_size: int) -> tuple[list[float], list[float]]:
    clock = EpochClock()
    history = model.fit(
        x, y, batch_size=batch_size, epochs=epochs, validation_data=validation, callbacks=[clock], verbose=0
    )
    return clock.seconds, [float(a) for a in history.history["val_accuracy"]]


def measure_fine_tune(parts, data: dict, args) -> None:
    from tlcore.model.classifier import apply_freeze_plan, backbone_part, head_part, phase_freeze_plans
    from tlcore.model.cut import bottom_part, top_part

    backbone, classifier, model_config, train_config, cut = parts
    emit("activation_cut", cached=cut.cached, layer=cut.name, reason=cut.reason)
    if not cut.cached:
        return
    x_train, y_train, x_val, y_val = data["x_train"], data["y_train"], data["x_val"], data["y_val"]
    both = np.concatenate([x_train, x_val])

    # The cached way's one-off step: the cut's activations (and the feature map, for phase 1).
    bottom = image_network(classifier, bottom_part(classifier, cut), "bottom")
    timings = []
    for _ in range(2):  # the first includes compiling
        started = time.perf_counter()
        activations, feature_maps = bottom.predict(both, batch_size=args.extract_batch, verbose=0)
        timings.append(time.perf_counter() - started)
    count = len(x_train)
    emit(
        "cache_activations_seconds",
        images=len(both),
        layer=cut.name,
        shape=list(activations.shape[1:]),
        bytes_per_image=int(activations[0].nbytes),
        cold_seconds_incl_compile=round(timings[0], 3),
        warm_seconds=round(timings[1], 3),
    )

    head = head_part(classifier)
    head.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    head.optimizer.build(head.trainable_variables)
    head_optimizer = [v.numpy() for v in head.optimizer.variables]

    apply_freeze_plan(
        backbone_part(classifier),
        phase_freeze_plans(backbone, model_config, train_config)[1],
        backbone.block_pattern,
        True,
    )
    top = top_part(classifier, cut)
    # Inputs as the classifier's float32 Input takes them; the cast is outside the timed fits.
    x_train_f, x_val_f = x_train.astype("float32"), x_val.astype("float32")
    plain_state = compiled_with_state(classifier, args.rate)
    top_state = compiled_with_state(top, args.rate)
    emit(
        "fine_tune_setup",
        unfreeze_from=args.unfreeze_from,
        trainable_parameters_full=int(sum(np.prod(v.shape) for v in classifier.trainable_variables)),
        trainable_parameters_top=int(sum(np.prod(v.shape) for v in top.trainable_variables)),
        train=count,
        val=len(x_val),
        batch=args.batch,
        epochs=args.epochs,
        learning_rate=args.rate,
    )
    batchnorm = next(
        layer
        for layer in backbone_part(classifier).layers
        if isinstance(layer, keras.layers.BatchNormalization) and layer.name.startswith(args.unfreeze_from)
    )

    for index, seed in enumerate(range(args.first_seed, args.first_seed + args.seeds)):
        if index and time.perf_counter() - STARTED > args.no_new_seed_after:
            emit("seeds_skipped", reason=f"--no-new-seed-after {args.no_new_seed_after:g} s passed", from_seed=seed)
            break
        keras.utils.set_random_seed(seed)
        reset(head, head_optimizer, _fresh_head_weights(head), head)
        head.fit(feature_maps[:count], y_train, batch_size=args.batch, epochs=args.head_epochs, verbose=0)
        head_accuracy = float(np.mean(np.argmax(head.predict(feature_maps[count:], verbose=0), 1) == y_val))
        after_head = classifier.get_weights()

        # Both ways give the same probabilities before phase 2 (the cut is exact).
        full_probabilities = classifier.predict(x_val_f, batch_size=args.batch, verbose=0)
        top_probabilities = top.predict(activations[count:], batch_size=args.batch, verbose=0)
        cut_difference = float(np.max(np.abs(full_probabilities - top_probabilities)))

        moving_mean = batchnorm.moving_mean.numpy().copy()
        reset(classifier, plain_state, after_head, classifier)
        keras.utils.set_random_seed(seed)
        plain_seconds, plain_accuracy = fit_epochs(
            classifier, x_train_f, y_train, (x_val_f, y_val), args.epochs, args.batch
        )
        batchnorm_moved = float(np.max(np.abs(batchnorm.moving_mean.numpy() - moving_mean)))

        reset(top, top_state, after_head, classifier)
        keras.utils.set_random_seed(seed)
        top_seconds, top_accuracy = fit_epochs(
            top, activations[:count], y_train, (activations[count:], y_val), args.epochs, args.batch
        )
        emit(
            "fine_tune_seed",
            seed=seed,
            head_val_accuracy=round(head_accuracy, 4),
            cut_max_probability_difference=cut_difference,
            plain_epoch_seconds=[round(s, 4) for s in plain_seconds],
            plain_val_accuracy=[round(a, 4) for a in plain_accuracy],
            plain_batchnorm_moving_mean_change=batchnorm_moved,
            cached_epoch_seconds=[round(s, 4) for s in top_seconds],
            cached_val_accuracy=[round(a, 4) for a in top_accuracy],
            first_epoch_includes_compile=index == 0,
        )
    fine_tune_summary()


def _fresh_head_weights(head) -> list:
    """A new initialisation of the head's weights (same shapes, Keras' initialisers, the global seed)."""
    from tlcore.model.classifier import build_head

    dense = head.get_layer("predictions")
    fresh = build_head(tuple(head.input_shape[1:]), dense.units, "avg", 0, 0.2)
    return fresh.get_weights()


def fine_tune_summary() -> None:
    seeds = [row for row in FIGURES if row["figure"] == "fine_tune_seed"]
    if not seeds:
        return
    cache = next(row for row in FIGURES if row["figure"] == "cache_activations_seconds")
    for way in ("plain", "cached"):
        warm = [s for row in seeds for s in row[f"{way}_epoch_seconds"][1:]]
        later_seeds_first = [row[f"{way}_epoch_seconds"][0] for row in seeds[1:]]
        values = {
            "cold_first_epoch_seconds_incl_compile": seeds[0][f"{way}_epoch_seconds"][0],
            "first_epoch_seconds_later_seeds": later_seeds_first,
            "warm_epoch_seconds": summary(warm) if warm else None,
            "final_val_accuracy": summary([row[f"{way}_val_accuracy"][-1] for row in seeds]),
        }
        if way == "cached":
            values["plus_one_off_activation_seconds_warm"] = cache["warm_seconds"]
        emit(f"fine_tune_{way}", seeds=[row["seed"] for row in seeds], **values)


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    shared = Path(os.environ.get("TL_SHARED_DIR", str(Path(__file__).resolve().parents[2] / "shared")))
    prep = sub.add_parser("prepare", help="decode the photos into one uint8 .npz")
    prep.add_argument("--images", type=Path, default=shared / "data/hymenoptera")
    prep.add_argument("--size", type=int, default=160)
    prep.add_argument("--out", type=Path, required=True)
    run = sub.add_parser("measure", help="time extraction and phase 2")
    run.add_argument("--npz", type=Path, required=True)
    run.add_argument("--model", type=Path, default=shared / "pretrained/dog_breed_mobilenetv2_160.h5")
    run.add_argument("--out", type=Path)
    run.add_argument("--extract-batches", default="32,128")
    run.add_argument("--extract-images", type=int, default=2048, help="the set repeated to this many images")
    run.add_argument("--extract-batch", type=int, default=128, help="batch of the one-off activation pass")
    run.add_argument("--repeats", type=int, default=5)
    run.add_argument("--unfreeze-from", default="block_15")
    run.add_argument("--epochs", type=int, default=3)
    run.add_argument("--head-epochs", type=int, default=5)
    run.add_argument("--batch", type=int, default=32)
    run.add_argument("--rate", type=float, default=1e-5)
    run.add_argument("--seeds", type=int, default=3)
    run.add_argument("--first-seed", type=int, default=1)
    run.add_argument(
        "--no-new-seed-after", type=float, default=1e9, help="seconds since the start after which no seed starts"
    )
    run.add_argument("--limit", type=int, default=0, help="use only the first N train and val images (a smoke test)")
    run.add_argument("--skip-extraction", action="store_true")
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(args.images, args.size, args.out)
        return
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        OUT.append(args.out)
    measure(args)


def measure(args) -> None:
    keras.config.disable_interactive_logging()
    environment()
    with np.load(args.npz) as stored:
        data = {name: stored[name] for name in ("x_train", "y_train", "x_val", "y_val")}
    if args.limit:
        data = {name: values[: args.limit] for name, values in data.items()}
    parts = studio_parts(args.model, args.unfreeze_from, args.epochs, args.batch, args.rate)
    emit("loaded", seconds=round(time.perf_counter() - STARTED, 3), train=len(data["y_train"]), val=len(data["y_val"]))
    if not args.skip_extraction:
        batches = [int(b) for b in args.extract_batches.split(",")]
        measure_extraction(
            parts[1], np.concatenate([data["x_train"], data["x_val"]]), batches, args.extract_images, args.repeats
        )
    measure_fine_tune(parts, data, args)
    emit("total_seconds", seconds=round(time.perf_counter() - STARTED, 3))


if __name__ == "__main__":
    main()
