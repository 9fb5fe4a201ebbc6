"""Accuracy study: which decoding, head settings and test-time augmentation make the defaults.

Run: `.venv/bin/python bench/accuracy_study.py [--seeds 5] [--shared ../shared]`
(`make accuracy-study`). Two real sets: the shared ants/bees photos and the Open Clip Art
drawings built by bench/clipart_set.py. The shared MobileNetV2 (160 px) is the backbone.

For each set, every decoding below turns all images into pooled backbone features once
(and once more mirrored, for flip TTA); heads are then trained on those features by the
studio's own head engine (`tlcore.training.head.train_head`) for seeds 1..N, and each variant's
validation accuracy is printed as mean ± sd. The reference is the seeds' pipeline,
written the plain way: `keras.utils.image_dataset_from_directory`, the same frozen
backbone inside `model.fit`, GAP → Dropout 0.2 → Dense, Adam 1e-3, 20 epochs, last epoch.

Decodings:
- pillow-draft: the studio's decoder before this study (JPEG draft mode: decoded at the
  smallest 1/2..1/8 scale still >= the target, then Pillow's antialiased bilinear resize).
- pillow-full: the same without draft mode (full-size decode, antialiased resize).
- tf: `tf.io.decode_image` + `tf.image.resize` bilinear without antialiasing, float
  pixels: what `image_dataset_from_directory` does (EXIF orientation ignored).
- tf-antialias: the same with `antialias=True`.
- pillow-draft-sharp / -draft2x- / -draft4x- / pillow-full-sharp: Pillow's decoding (EXIF,
  any mode to RGB), JPEGs at the smallest DCT scale >= 1x, 2x, 4x the target or at full
  size, then bilinear sampling without antialiasing (`Image.transform`, equal to
  `tf.image.resize(antialias=False)` within rounding to 8 bits).

Head variants (all on the engine; "best" = the weights of the lowest val_loss, which is
what a studio run keeps; "last" = the last epoch, as the seeds' pipeline reports):
- e10-p5-best: the old defaults (10 epochs, patience 5).
- e20-p5-best, e20-p0-best, e20-last, e40-p10-best: longer runs.
- +ls0.1: label smoothing 0.1; adamw: AdamW (weight decay 0.004).
- +tta: the same weights, probabilities averaged over the image and its mirror.
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
from frozen_training import same_files, seed_style  # noqa: E402  (bench/: the seeds' pipeline, written once)
from PIL import Image, ImageOps  # noqa: E402

from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tlcore.data.images import open_image, resize, to_rgb  # noqa: E402
from tlcore.data.pipeline import load_dataset  # noqa: E402
from tlcore.model.backbones import load_backbone  # noqa: E402
from tlcore.training.head import HeadSettings, train_head  # noqa: E402
from tlcore.training.trainer import run_training  # noqa: E402

EPOCHS = 20
DEFAULT_DECODING = "pillow-draft2x-sharp"  # what tlcore.data.images.decode_image does: every head variant runs on it
HEADS = {
    "e10-p5-best": dict(epochs=10, patience=5),
    "e20-p5-best": dict(epochs=20, patience=5),
    "e20-p0-best": dict(epochs=20, patience=0),
    "e20-last": dict(epochs=20, patience=0, last=True),
    "e40-p10-best": dict(epochs=40, patience=10),
    "e20-p5-best+ls0.1": dict(epochs=20, patience=5, label_smoothing=0.1),
    "e20-p5-best adamw": dict(epochs=20, patience=5, optimizer="adamw"),
}


# ----------------------------------------------------------------------------- decodings


def pillow(path: str, size: int, draft: int, antialias: bool = True) -> np.ndarray:
    """Pillow's decoding; ``draft``: 0 = full-size JPEG decoding, k = at the smallest DCT scale >= k x size."""
    image = open_image(path)
    if draft and image.format == "JPEG":
        image.draft("RGB", (draft * size, draft * size))
    image = to_rgb(ImageOps.exif_transpose(image))
    # the studio's resize samples without antialiasing (tf.image.resize within rounding); Image.resize antialiases
    image = image.resize((size, size), Image.BILINEAR) if antialias else resize(image, size)
    return np.asarray(image, dtype=np.float32)


def tf_decode(path: str, size: int, antialias: bool) -> np.ndarray:
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return tf.image.resize(image, (size, size), method="bilinear", antialias=antialias).numpy()


DECODINGS = {
    "pillow-draft": lambda path, size: pillow(path, size, draft=1),
    "pillow-full": lambda path, size: pillow(path, size, draft=0),
    "pillow-draft-sharp": lambda path, size: pillow(path, size, draft=1, antialias=False),
    "pillow-draft2x-sharp": lambda path, size: pillow(path, size, draft=2, antialias=False),
    "pillow-draft4x-sharp": lambda path, size: pillow(path, size, draft=4, antialias=False),
    "pillow-full-sharp": lambda path, size: pillow(path, size, draft=0, antialias=False),
    "tf": lambda path, size: tf_decode(path, size, antialias=False),
    "tf-antialias": lambda path, size: tf_decode(path, size, antialias=True),
}


def pooled(backbone, images: np.ndarray) -> np.ndarray:
    x = keras.applications.mobilenet_v2.preprocess_input(images.copy())
    maps = backbone.model.predict(x, batch_size=64, verbose=0)
    return maps.mean(axis=(1, 2)).astype(np.float32)


# ----------------------------------------------------------------------------- heads


def probabilities(weights: dict, features: np.ndarray) -> np.ndarray:
    """The head's softmax from its weights by layer name (``hidden`` is ReLU, ``predictions`` last)."""
    x = features
    for name, (kernel, bias) in weights.items():
        x = x @ kernel + bias
        if name != "predictions":
            x = np.maximum(x, 0)
    x = np.exp(x - x.max(axis=1, keepdims=True))
    return x / x.sum(axis=1, keepdims=True)


def head_accuracies(features: dict, labels: dict, classes: int, variant: dict, seed: int) -> tuple[float, float]:
    """(accuracy, accuracy with flip TTA) of one head variant and seed."""
    options = dict(variant)
    last = options.pop("last", False)
    settings = HeadSettings(seed=seed, **options)
    fit = train_head((features["train"], labels["train"]), (features["val"], labels["val"]), classes, settings)
    if last:
        return fit.history[-1]["val_accuracy"], float("nan")
    plain = probabilities(fit.weights, features["val"])
    flipped = probabilities(fit.weights, features["val_flip"])
    y = labels["val"]
    return float((plain.argmax(1) == y).mean()), float((((plain + flipped) / 2).argmax(1) == y).mean())


# ----------------------------------------------------------------------------- one set


def studio_run(root: Path, model_config: ModelConfig, seed: int) -> float:
    """The product path with default settings: ``run_training`` (features cached after the first seed)."""
    config = RunConfig(DataConfig(str(root / "train"), val_dir=str(root / "val")), model_config, TrainConfig(seed=seed))
    return float(run_training(config).metrics["val_accuracy"])


def study(name: str, root: Path, model_config: ModelConfig, seeds: list[int], skip_baseline: bool) -> list:
    backbone = load_backbone(model_config)
    size = backbone.image_size
    dataset = load_dataset(DataConfig(str(root / "train"), val_dir=str(root / "val")))
    skipped = sum(len(scan.skipped) for scan in dataset.scans)
    root = same_files(dataset, Path(tempfile.mkdtemp(prefix=f"study-{name}-")))
    dataset = load_dataset(DataConfig(str(root / "train"), val_dir=str(root / "val")))
    classes = len(dataset.classes)
    paths = {split: [item.path for item in getattr(dataset, split)] for split in ("train", "val")}
    labels = {split: np.array(dataset.label_ids(getattr(dataset, split)), np.int32) for split in ("train", "val")}
    print(
        f"\n## {name}: {len(paths['train'])} train + {len(paths['val'])} val, classes {dataset.classes} "
        f"(files the studio skips, e.g. placeholder graphics, are left out for both sides: {skipped})",
        flush=True,
    )
    rows: list[tuple[str, list[float]]] = []
    for decoding, decode in DECODINGS.items():
        started, decode_seconds = time.perf_counter(), 0.0
        features = {}
        for split in ("train", "val"):
            decode_started = time.perf_counter()
            images = np.stack([decode(path, size) for path in paths[split]])
            decode_seconds += time.perf_counter() - decode_started
            features[split] = pooled(backbone, images)
            if split == "val":
                features["val_flip"] = pooled(backbone, images[:, :, ::-1])
        first = len(rows)
        for head, variant in HEADS.items():
            if decoding != DEFAULT_DECODING and head not in ("e10-p5-best", "e20-p5-best", "e20-last"):
                continue
            results = [head_accuracies(features, labels, classes, variant, seed) for seed in seeds]
            rows.append((f"{decoding} {head}", [plain for plain, _ in results]))
            if not variant.get("last"):
                rows.append((f"{decoding} {head} +tta", [flip for _, flip in results]))
        print(
            f"  {decoding}: decoding {decode_seconds:.1f} s (one thread), all {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        for label, values in rows[first:]:
            print(f"    {label:40s} {format_row(values)}", flush=True)
    studio = [studio_run(root, model_config, seed) for seed in seeds]
    rows.append(("studio defaults, end to end (run_training)", studio))
    print(f"    {rows[-1][0]:40s} {format_row(studio)}", flush=True)
    if not skip_baseline:
        baseline = [seed_style(backbone, root / "train", root / "val", size, seed) for seed in seeds]
        rows.append(("seeds' pipeline (image_dataset_from_directory, fit, last)", baseline))
        print(f"    {rows[-1][0]:40s} {format_row(baseline)}", flush=True)
    return rows


def format_row(values: list[float]) -> str:
    sd = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}  ({', '.join(f'{v:.3f}' for v in values)})"


def main() -> None:
    import clipart_set

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shared", default=os.environ.get("TL_SHARED_DIR", str(Path(__file__).resolve().parents[2] / "shared"))
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--skip-baseline", action="store_true", help="leave out the seeds' pipeline (slow)")
    parser.add_argument("--only", choices=["hymenoptera", "clipart"], help="one set only")
    parser.add_argument("--decodings", help=f"comma-separated subset of {', '.join(DECODINGS)}")
    args = parser.parse_args()
    shared = Path(args.shared)
    keras.config.disable_interactive_logging()
    model_file = shared / "pretrained/dog_breed_mobilenetv2_160.h5"
    model_config = ModelConfig(str(model_file), cut_layer="mobilenetv2_1.00_160", preprocess="mobilenet_v2")
    os.environ["TLCORE_CACHE_DIR"] = tempfile.mkdtemp(prefix="study-cache-")
    seeds = list(range(1, args.seeds + 1))
    if args.decodings:
        for name in set(DECODINGS) - set(args.decodings.split(",")):
            del DECODINGS[name]
    sets = {"hymenoptera": shared / "data/hymenoptera", "clipart": None}
    print(f"seeds {seeds}, {os.cpu_count()} cores, TensorFlow {tf.__version__}, Keras {keras.__version__}")
    all_rows = {}
    for name, root in sets.items():
        if args.only and name != args.only:
            continue
        all_rows[name] = study(name, root or clipart_set.build(), model_config, seeds, args.skip_baseline)
    print("\n## summary: validation accuracy, mean ± sd over seeds")
    for name, rows in all_rows.items():
        print(f"\n{name}")
        for label, values in rows:
            print(f"  {label:58s} {format_row(values)}")


if __name__ == "__main__":
    main()
