"""Which backbone, how deep: the leaderboard and the depth comparison against their targets.

Run: `.venv/bin/python bench/compare_backbones.py [--folds 5] [--blocks 3] [--epochs 3]`.
Every number comes from this one run on this machine (print the load average beside it:
on a shared CPU the times move, the ratios less).

On the real ants/bees photos (245 train / 153 val):

- leaderboard: candidates {the shared dog-breed MobileNetV2 file (160 px), MobileNetV2
  with random weights (224 px), SmallCNN (64 px)}, the default head over K folds. Target:
  the pretrained file ranked first by a lead beyond noise (paired over the folds, see
  tlcore/insight/paired_noise.py); the whole comparison
  (cold: an empty feature cache) within 3x one cold extraction of the largest candidate
  (MobileNetV2 at 224 px: load + features of every image).
- depths: the pretrained file, fine-tuned from each of its last 3 blocks for a few epochs
  (plus the head-only baseline), cold. Target: within 4x one cold fine-tune run from the
  deepest of the three.
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

from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402

SHARED = Path(os.environ.get("TL_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
DOG = SHARED / "pretrained" / "dog_breed_mobilenetv2_160.h5"
DATA = DataConfig(str(SHARED / "data/hymenoptera/train"), str(SHARED / "data/hymenoptera/val"))
CANDIDATES = [str(DOG), "MobileNetV2:none", "SmallCNN:none"]


def fresh_cache() -> None:
    """An empty feature cache: every measurement below starts cold."""
    os.environ["TLCORE_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-compare-")
    from tlcore.training import features

    features._POOLED.clear()
    features._ACTIVATIONS.clear()


def cold_extraction(candidate: str) -> float:
    """Seconds to load ``candidate`` and extract the features of every image, cache empty."""
    from tlcore.insight.backbone_compare import candidate_settings
    from tlcore.insight.feature_set import dataset_features
    from tlcore.model.backbones import load_backbone

    fresh_cache()
    config = RunConfig(DATA, ModelConfig(**candidate_settings(candidate)))
    started = time.perf_counter()
    dataset_features(config, backbone=load_backbone(config.model))
    return time.perf_counter() - started


def leaderboard(folds: int) -> None:
    from tlcore.insight.backbone_compare import compare_backbones

    cold_extraction("SmallCNN:none")  # warm-up: TensorFlow's first graphs are not the reference's cost
    reference = cold_extraction("MobileNetV2:none")
    fresh_cache()
    board = compare_backbones(RunConfig(DATA), CANDIDATES, folds=folds)
    print(f"\nleaderboard ({folds} folds, cold cache), {board.seconds:.1f} s")
    print("| backbone | accuracy (mean ± sd) | loss | images/s | latency ms | params | size MB | input |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    labels = board.labels()
    for row in board.candidates:
        name = labels[row.backbone]
        if row.error:
            print(f"| {name} | error: {row.error} | | | | | | |")
            continue
        print(
            f"| {name} | {row.accuracy_mean:.3f} ± {row.accuracy_sd:.3f} | {row.loss_mean:.3f} | "
            f"{row.images_per_second:.0f} | {row.latency_ms:.1f} | {row.params:,} | {row.size_mb:.1f} | "
            f"{row.input_size} |"
        )
    first = board.ranked[0]
    verdict = board.verdict()
    print(f"verdict: {verdict}")
    print(f"first is the pretrained file: {first.backbone == str(DOG)}; lead beyond noise: {'beyond noise' in verdict}")
    ratio = board.seconds / reference
    print(f"time: {board.seconds:.1f} s vs one cold extraction of MobileNetV2 224 px {reference:.1f} s = {ratio:.2f}x")
    print(f"target <= 3x: {'met' if ratio <= 3 else 'MISSED'}")


def depths(blocks: int, epochs: int) -> None:
    from tlcore.insight.depth_compare import compare_depths, depth_choices
    from tlcore.training.trainer import run_training

    config = RunConfig(DATA, ModelConfig(str(DOG), weights="none"), TrainConfig(epochs=5, fine_tune_epochs=epochs))
    deepest = depth_choices(config, blocks)[-1]
    fresh_cache()
    single = RunConfig.from_dict(config.to_dict())
    single.train.unfreeze_from = deepest
    started = time.perf_counter()
    reference = run_training(single).metrics
    reference_seconds = time.perf_counter() - started
    fresh_cache()
    comparison = compare_depths(config, blocks)
    print(f"\ndepths (head 5 epochs, then {epochs} fine-tune epochs each, cold cache), {comparison.seconds:.1f} s")
    print("| depth | accuracy | loss | seconds | fine-tune kept |")
    print("| --- | --- | --- | --- | --- |")
    for row in comparison.table().itertuples():
        print(
            f"| {row.depth} | {row.accuracy_mean:.3f} | {row.loss_mean:.3f} | {row.seconds:.1f} | {row.fine_tune_kept} |"
        )
    print(f"verdict: {comparison.verdict()}")
    ratio = comparison.seconds / reference_seconds
    print(
        f"time: {comparison.seconds:.1f} s vs one fine-tune run from {deepest} {reference_seconds:.1f} s "
        f"(accuracy {reference['val_accuracy']:.3f}) = {ratio:.2f}x; target <= 4x: {'met' if ratio <= 4 else 'MISSED'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="fine-tune epochs per depth")
    parser.add_argument("--only", choices=("leaderboard", "depths"))
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    from tlcore.cli.common import quiet_keras

    quiet_keras()
    if args.only in (None, "leaderboard"):
        leaderboard(args.folds)
    if args.only in (None, "depths"):
        depths(args.blocks, args.epochs)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
