"""Batch prediction over many images: in this process, or with Ray Data.

Both engines compute the same rows. ``local`` runs in this process (decoding in
threads overlapped with the model). ``ray`` spreads the images over a pool of Ray Data
actors (``map_batches`` with a callable class, see :mod:`tlcore.runners.ray_data`):
each actor loads the run's model once, takes one GPU when the cluster has them,
decodes and predicts its batches; this process gathers the rows in order. Ray pays a
fixed cost per job (worker processes, TensorFlow import, one model load per worker):
it is for folders too big for one machine, not for a few hundred images.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tlcore.data.common import IMAGE_SUFFIXES, is_ignored
from tlcore.data.images import decode_image
from tlcore.errors import StudioError
from tlcore.runners.cluster import connect_ray, worker_environment
from tlcore.runners.ray_data import actor_pool, check_engine, quiet_ray_data, ray_batches, ray_dataset
from tlcore.runs.store import require_run_model

BATCH_SIZE = 64  # images per model call


@dataclass
class Predictions:
    """Batch predictions: one row per image, and every file that was skipped with its reason.

    Attributes:
        rows: ``{"path", "label", "probability"}`` in input order.
        skipped: ``{"path", "reason"}``.
        seconds: wall time.
        engine: ``"local"`` or ``"ray"``.
        workers: parallel model copies.
    """

    rows: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    engine: str = "local"
    workers: int = 1

    def write_csv(self, path: str | Path) -> Path:
        """Writes ``path,label,probability`` rows (probabilities with full float precision)."""
        import pandas as pd

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(self.rows, columns=["path", "label", "probability"]).to_csv(path, index=False)
        return path


def collect_images(sources: list[str]) -> tuple[list[str], list[dict]]:
    """Image files named or found (recursively) in ``sources``, and the other files with reasons."""
    paths, skipped = [], []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            for root, directories, files in os.walk(path):
                directories[:] = sorted(d for d in directories if not is_ignored(d))
                for name in sorted(files):
                    _sort_file(Path(root) / name, paths, skipped)
        elif path.is_file():
            _sort_file(path, paths, skipped, named=True)
        else:
            skipped.append({"path": str(path), "reason": "not found"})
    return paths, skipped


def _sort_file(path: Path, paths: list, skipped: list, named: bool = False) -> None:
    if is_ignored(path.name) or (path.name.startswith(".") and not named):
        return
    if path.suffix.lower() in IMAGE_SUFFIXES or named:
        paths.append(str(path))
    else:
        skipped.append({"path": str(path), "reason": f"not an image file ({path.suffix or 'no extension'})"})


def predict_batch(model, labels: list[str], paths: list[str]) -> list[dict]:
    """Top-1 of each path, in order: ``{"path", "label", "probability"}``, or ``{"path", "reason"}`` if unreadable."""
    size = int(model.input_shape[1])
    with ThreadPoolExecutor(min(8, os.cpu_count() or 2)) as pool:
        decoded = list(pool.map(lambda path: _decode_or_reason(path, size), paths))
    rows = [{"path": path, "reason": image} if isinstance(image, str) else None for path, image in zip(paths, decoded)]
    good = [index for index, row in enumerate(rows) if row is None]
    if good:
        probabilities = model.predict(np.stack([decoded[i] for i in good]).astype("float32"), verbose=0)
        for index, row in zip(good, probabilities):
            best = int(np.argmax(row))
            rows[index] = {"path": paths[index], "label": labels[best], "probability": float(row[best])}
    return rows


def _decode_or_reason(path: str, size: int):
    try:
        return decode_image(path, size)
    except (StudioError, OSError) as error:
        return str(error)


def load_run_model(run_dir: str | Path):
    """``(model, labels)`` of a finished run folder.

    Raises:
        StudioError: the folder has no saved model.
    """
    from tlcore.runs.store import read_run

    run = read_run(require_run_model(run_dir))
    return run.load_model(), run.labels


def predict_images(
    run_dir: str | Path, sources: list[str], engine: str = "local", workers: int = 1, address: str | None = None
) -> Predictions:
    """Top-1 predictions of a run for every image in ``sources`` (files, folders walked recursively).

    Raises:
        StudioError: no run model, no image found, an unknown engine, or Ray cannot be reached.
    """
    check_engine(engine, workers)
    started = time.perf_counter()
    paths, skipped = collect_images(sources)
    if not paths:
        raise StudioError(f"No image files found in {sources}. Expected image files or folders of them.")
    if engine == "local":
        model, labels = load_run_model(run_dir)
        rows = [row for start in range(0, len(paths), BATCH_SIZE) for row in predict_batch(model, labels, paths[start : start + BATCH_SIZE])]  # fmt: skip
    else:
        require_run_model(run_dir)
        rows = predict_rows_ray(run_dir, paths, workers, address)
    good = [row for row in rows if "reason" not in row]
    skipped += [{"path": row["path"], "reason": row["reason"]} for row in rows if "reason" in row]
    seconds = round(time.perf_counter() - started, 3)
    return Predictions(good, skipped, seconds, engine, workers if engine == "ray" else 1)


class Predictor:
    """A Ray Data actor: a run's model, loaded once, predicting batches of paths."""

    def __init__(self, run_dir: str, environment: dict):
        os.environ.update(environment)
        self.model, self.labels = load_run_model(run_dir)

    def __call__(self, batch: dict) -> dict:
        rows = predict_batch(self.model, self.labels, [str(p) for p in batch["path"]])
        return {
            "index": batch["index"],
            "label": np.array([row.get("label", "") for row in rows], dtype=object),
            "probability": np.array([row.get("probability", np.nan) for row in rows], dtype=np.float64),
            "reason": np.array([row.get("reason", "") for row in rows], dtype=object),
        }


def predict_rows_ray(run_dir: str | Path, paths: list[str], workers: int = 2, address: str | None = None) -> list:
    """:func:`predict_batch` rows for ``paths`` from ``workers`` Ray Data actors, in input order."""
    connect_ray(address, num_cpus=max(os.cpu_count() or 1, workers))
    quiet_ray_data()
    dataset = ray_dataset(paths, BATCH_SIZE).map_batches(
        Predictor,
        fn_constructor_args=(str(Path(run_dir).resolve()), worker_environment()),
        batch_size=BATCH_SIZE,
        batch_format="numpy",
        **actor_pool(workers),
    )
    rows: list = [None] * len(paths)
    for batch in ray_batches(dataset):
        for index, label, probability, reason in zip(
            batch["index"], batch["label"], batch["probability"], batch["reason"]
        ):
            path = paths[int(index)]
            rows[int(index)] = (
                {"path": path, "reason": str(reason)}
                if reason
                else {"path": path, "label": str(label), "probability": float(probability)}
            )
    return rows
