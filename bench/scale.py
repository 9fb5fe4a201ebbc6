"""Scaling out: feature extraction in-process vs Ray Data with 1 and 2 workers, and the fixed cost of a Ray job.

Run: `.venv/bin/python bench/scale.py [--shared ../shared] [--address auto|ray://host:10001]`.
Without --address a local Ray is started with this machine's CPUs. Every number comes
from this one run on this machine; the load average is printed (other work on the
machine slows everything).

- extraction: `tlcore.training.extraction.extract_to_cache` over the 396 real photos
  (hymenoptera train + val) with the real pretrained MobileNetV2 (160 px), an empty
  feature cache each time: the whole command as a user waits for it (model loading,
  Ray actors starting, decoding, the backbone, writing the cache file).
- fixed cost per Ray Data job: the same over 8 photos (one batch); the marginal rate
  is (397 - 8) / (t397 - t8) images/s. Each number is the best of --repeats runs.
- fixed cost per Ray training job: a tiny training (SmallCNN, 1 epoch, 36 images) as a
  thread job and as a Ray job, submit to finished.
- decode ceiling: JPEG decode + resize alone in this process, the rate no worker on
  this machine can beat whatever its accelerator.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402


def fresh_cache() -> None:
    os.environ["TLCORE_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-scale-cache-")


def extraction_seconds(config: RunConfig, engine: str, workers: int, address: str | None, repeats: int) -> float:
    """The best of ``repeats`` wall times of a whole extraction into an empty cache."""
    from tlcore.training.extraction import extract_to_cache

    times = []
    for _ in range(repeats):
        fresh_cache()
        started = time.perf_counter()
        assert not extract_to_cache(config, engine, workers, address).from_cache
        times.append(time.perf_counter() - started)
    return min(times)


def small_copy(train_dir: Path, root: Path, per_class: int = 4) -> Path:
    for label in ("ants", "bees"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for path in sorted((train_dir / label).glob("*.jpg"))[:per_class]:
            shutil.copy(path, root / label)
    return root


def decode_rate(config: RunConfig) -> float:
    from tlcore.data.pipeline import decode_all
    from tlcore.training.extraction import dataset_items

    paths = [item.path for item in dataset_items(config)]
    started = time.perf_counter()
    decode_all(paths, 160)
    return len(paths) / (time.perf_counter() - started)


def job_seconds(registry, config: RunConfig, store) -> float:
    from tlcore.training.launch import start_training

    started = time.perf_counter()
    job = start_training(registry, f"bench-{time.time()}", config, store)
    while job.active:
        time.sleep(0.05)
    assert job.status == "done", job.error
    return time.perf_counter() - started


def training_overhead() -> tuple[float, float]:
    from tests.helpers import make_colour_dataset
    from tlcore.jobs import JobRegistry
    from tlcore.runners.ray_registry import RayJobRegistry
    from tlcore.runs.store import RunStore

    folder = make_colour_dataset(Path(tempfile.mkdtemp(prefix="bench-colours-")))
    store = RunStore(tempfile.mkdtemp(prefix="bench-runs-"))
    config = RunConfig(
        DataConfig(str(folder), val_split=0.25),
        ModelConfig("SmallCNN", weights="none", image_size=32),
        TrainConfig(epochs=1, batch_size=8, seed=1),
    )
    job_seconds(JobRegistry(), config, store)  # warm: TensorFlow and the graph code are loaded once
    thread = min(job_seconds(JobRegistry(), config, store) for _ in range(2))
    ray = min(job_seconds(RayJobRegistry(poll_seconds=0.1), config, store) for _ in range(2))
    return thread, ray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_shared = os.environ.get("TL_SHARED_DIR", str(ROOT.parent / "shared"))
    parser.add_argument("--shared", default=default_shared)
    parser.add_argument("--address", help="a Ray cluster (default: a local Ray with this machine's CPUs)")
    parser.add_argument("--workers", default="1,2", help="Ray worker counts to measure (default 1,2)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per measurement; the best is kept")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    shared = Path(args.shared)
    photos = shared / "data" / "hymenoptera"
    model = ModelConfig(str(shared / "pretrained" / "dog_breed_mobilenetv2_160.h5"), cut_layer="mobilenetv2_1.00_160")
    config = RunConfig(DataConfig(str(photos / "train"), str(photos / "val")), model, TrainConfig(seed=1))
    tiny = RunConfig(DataConfig(str(small_copy(photos / "train", Path(tempfile.mkdtemp()))), val_split=0.25), model)
    from tlcore.cli.common import quiet_keras
    from tlcore.runners.cluster import connect_ray
    from tlcore.training.extraction import dataset_items

    quiet_keras()
    images = len(dataset_items(config))
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    extraction_seconds(tiny, "local", 1, None, 1)  # warm: TensorFlow loaded, as in a running studio
    started = time.perf_counter()
    connect_ray(args.address)
    print(f"Ray start/connect: {time.perf_counter() - started:.1f} s (once per process)")

    engines = [("local (in-process)", "local", 1)]
    engines += [(f"Ray Data, {n} worker{'s' * (n > 1)}", "ray", n) for n in map(int, args.workers.split(","))]
    rows = []
    for name, engine, workers in engines:
        few = extraction_seconds(tiny, engine, workers, args.address, args.repeats)
        rows.append((name, few, extraction_seconds(config, engine, workers, args.address, args.repeats)))
    print(f"\nfeature extraction, {images} photos, MobileNetV2 160 px, empty cache, best of {args.repeats}")
    print(f"{'engine':24} {'total s':>8} {'images/s':>9} {'8 photos s':>11} {'marginal img/s':>15}")
    for name, few, total in rows:
        marginal = (images - 8) / max(total - few, 1e-9)
        print(f"{name:24} {total:8.1f} {images / total:9.1f} {few:11.1f} {marginal:15.1f}")
    print(f"\ndecode + resize alone (this process, threads): {decode_rate(config):.0f} images/s")
    thread, ray = training_overhead()
    print(f"tiny training job (1 epoch, 36 images): thread {thread:.1f} s, Ray {ray:.1f} s")
    print(f"fixed cost per Ray training job: {ray - thread:.1f} s")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
