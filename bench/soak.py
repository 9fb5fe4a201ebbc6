"""Soak: does the server's memory stay flat while visitors train and predict for a long time?

Run: `.venv/bin/python bench/soak.py [--visitors 5] [--trainings 50] [--predictions 500]`.

One process, the way `streamlit run app.py` serves a room: one job registry
(`TLCORE_MAX_JOBS`, default 2) and a thread per simulated visitor. Each visitor, in
turn: starts a training as a job (waits and retries while the studio is busy), waits
for it, then makes predictions with one of its runs' models, loaded through a
four-model cache as the Predict page does (Grad-CAM every fifth time). Trainings
alternate between the two paths the studio has: SmallCNN trained end to end, and a
frozen MobileNetV2 (random weights, offline) trained on cached features. The data is
the offline demo set, small.

Prints the process's resident memory (RSS, after a garbage collection) after each
visitor step. The first ``--warm-up`` trainings (default 10: every visitor has trained
both recipes and the caches have filled) are not measured; then come ``--trainings``
trainings and ``--predictions`` predictions, and the growth over them is the number
that counts, with the least-squares slope in MB per training (a leak shows as a slope;
allocator noise does not). Target (issue 21): at most 100 MB over 50 trainings and
500 predictions after warm-up.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS_KEPT = 4  # ui/cache.py run_model: st.cache_resource(max_entries=4)


def rss_mb() -> float:
    """Resident memory of this process in MB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class ModelCache:
    """What the Predict page's run-model cache does: the last four models by (run, file time)."""

    def __init__(self):
        self._models: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def load(self, run_dir: Path):
        from tlcore.runs.store import read_run

        key = (str(run_dir), (run_dir / "model.keras").stat().st_mtime)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        model = read_run(run_dir).load_model()
        with self._lock:
            self._models[key] = model
            while len(self._models) > MODELS_KEPT:
                self._models.popitem(last=False)
        return model


def configs(data_dir: Path, epochs: int):
    from tlcore.config import DataConfig, FreezePlan, ModelConfig, RunConfig, TrainConfig

    data = DataConfig(str(data_dir), val_split=0.25)
    train = TrainConfig(epochs=epochs, batch_size=16, learning_rate=1e-2, early_stopping_patience=0)
    small = RunConfig(data, ModelConfig("SmallCNN", weights="none", image_size=64), train)
    frozen_model = ModelConfig("MobileNetV2", weights="none", image_size=96, freeze=FreezePlan("all"))
    return [small, RunConfig(data, frozen_model, train)]


class Soak:
    def __init__(self, args, data_dir: Path, store):
        from tlcore.jobs import JobRegistry, max_jobs_from_env

        self.args = args
        self.registry = JobRegistry(max_concurrent=max_jobs_from_env())
        self.store = store
        self.recipes = configs(data_dir, args.epochs)
        self.images = sorted(str(path) for path in data_dir.rglob("*.png"))
        self.models = ModelCache()
        self.lock = threading.Lock()
        self.trainings = self.predictions = 0
        self.samples: list[tuple[int, int, float]] = []  # (trainings, predictions, rss MB)
        self.failures: list[str] = []
        self.started = time.time()

    def train(self, owner: str, round_index: int) -> Path | None:
        from tlcore.errors import JobBusyError
        from tlcore.training.launch import start_training

        config = self.recipes[round_index % len(self.recipes)]
        while True:
            try:
                job = start_training(self.registry, owner, config, self.store)
                break
            except JobBusyError:
                time.sleep(0.2)  # the studio is busy: a visitor clicks again a moment later
        job.wait(3600)
        if job.status != "done":
            self.failures.append(f"{owner}: {job.status} {job.error}")
            return None
        return Path(job.run_dir)

    def predict(self, run_dir: Path, count: int, rng: random.Random) -> None:
        from tlcore.inference.predict import grad_cam, load_batch, predict_probabilities

        for index in range(count):
            model = self.models.load(run_dir)
            paths = rng.sample(self.images, 8)
            predict_probabilities(model, load_batch(paths, int(model.input_shape[1])), "flip" if index % 2 else "none")
            if index % 5 == 0:
                grad_cam(model, paths[0])
            del model

    def visitor(self, number: int, rounds: int, predictions_per_round: int) -> None:
        rng = random.Random(number)
        owner = f"visitor-{number}"
        runs: list[Path] = []
        for round_index in range(rounds):
            run_dir = self.train(owner, round_index + number)
            if run_dir is not None:
                runs.append(run_dir)
            if runs:  # the latest run mostly; sometimes an older one, as visitors compare
                chosen = runs[-1] if rng.random() < 0.7 else rng.choice(runs)
                self.predict(chosen, predictions_per_round, rng)
            self.step(trained=1, predicted=predictions_per_round if runs else 0, owner=owner)

    def step(self, trained: int, predicted: int, owner: str) -> None:
        with self.lock:
            gc.collect()
            self.trainings += trained
            self.predictions += predicted
            rss = rss_mb()
            self.samples.append((self.trainings, self.predictions, rss))
            elapsed = time.time() - self.started
            print(
                f"{elapsed:7.1f} s  {owner:10s}  trainings {self.trainings:3d}  predictions {self.predictions:4d}  "
                f"RSS {rss:7.1f} MB",
                flush=True,
            )

    def run(self) -> None:
        visitors = self.args.visitors
        measured_rounds = -(-self.args.trainings // visitors)
        rounds = measured_rounds + -(-self.args.warm_up // visitors)
        per_round = max(1, self.args.predictions // (measured_rounds * visitors))
        threads = [
            threading.Thread(target=self.visitor, args=(number, rounds, per_round), name=f"visitor-{number}")
            for number in range(visitors)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def report(self) -> None:
        warm_up = -(-self.args.warm_up // self.args.visitors) * self.args.visitors
        warm = self.samples[warm_up - 1] if warm_up else (0, 0, self.samples[0][2])
        measured = [sample for sample in self.samples if sample[0] > warm[0]]
        last = self.samples[-1]
        trainings = np.array([sample[0] for sample in measured], float)
        rss = np.array([sample[2] for sample in measured])
        slope = float(np.polyfit(trainings, rss, 1)[0]) if len(measured) > 2 else float("nan")
        growth = last[2] - warm[2]
        print()
        print(f"visitors {self.args.visitors}, failed jobs {len(self.failures)}")
        print(f"RSS after warm-up ({warm[0]} trainings, {warm[1]} predictions): {warm[2]:.1f} MB")
        print(
            f"RSS after {last[0] - warm[0]} more trainings and {last[1] - warm[1]} more predictions: {last[2]:.1f} MB "
            f"(measured range {rss.min():.1f}-{rss.max():.1f} MB)"
        )
        print(f"growth after warm-up: {growth:+.1f} MB; least-squares slope {slope:+.2f} MB per training")
        print(f"target <= 100 MB: {'met' if growth <= 100 else 'NOT met'}")
        print(f"jobs the registry still keeps: {len(self.registry._jobs)}")
        for failure in self.failures[:5]:
            print("failed:", failure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=5)
    parser.add_argument("--trainings", type=int, default=50)
    parser.add_argument("--predictions", type=int, default=500)
    parser.add_argument("--warm-up", type=int, default=10, help="trainings before the measurement starts")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tlcore-soak-") as folder:
        os.environ.setdefault("TLCORE_CACHE_DIR", str(Path(folder) / "cache"))
        from tlcore.data.demo import make_demo_dataset
        from tlcore.runs.store import RunStore

        data_dir = make_demo_dataset(per_class=24, image_size=64)
        soak = Soak(args, data_dir, RunStore(Path(folder) / "runs"))
        print(f"RSS after imports and the demo set: {rss_mb():.1f} MB", flush=True)
        soak.run()
        soak.report()


if __name__ == "__main__":
    main()
