"""Exports of a run's classifier, each verified in its own runtime and profiled.

The formats are the rows of :data:`tlcore.runs.formats.FORMATS`. For each one
:func:`export_formats` writes the files under ``<run folder>/exports/``, opens them in
the format's runtime, compares its probabilities with the Keras model's on the run's
validation images (top-1 agreement, largest probability difference) and measures a
deployment profile (size, load time, single-image latency, batch throughput). The
report is kept in ``exports/report.json`` beside the files, and a format that fails
says why in one line while the others still export.
"""

from __future__ import annotations

import collections
import json
import random
import shutil
import statistics
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tlcore.errors import StudioError
from tlcore.runs.formats import FLOAT32_TOLERANCE, FORMATS, ExportFormat, export_format
from tlcore.words import plural

if TYPE_CHECKING:
    from tlcore.runs.store import Run

REPORT_FILE = "report.json"
# Bounds that keep an export job's memory flat whatever the dataset's size.
MAX_CHECKED_IMAGES = 256
CALIBRATION_IMAGES = 100
LATENCY_REPEATS = 20
THROUGHPUT_REPEATS = 3
THROUGHPUT_BATCH = 32


def export_report(run: Run) -> dict:
    """The verified exports of a run so far: ``{format: entry}`` as :func:`export_formats` returns."""
    path = run.path / "exports" / REPORT_FILE
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {name: report[name] for name in FORMATS if name in report}  # table order, unknown rows dropped


def profile_table(report: dict) -> pd.DataFrame:
    """The report as the Runs page shows it: one row per format, failed ones with their reason."""
    columns = ["format", "runtime", "size_mb", "top1_agreement", "max_prob_diff", "checked_images"]
    columns += ["load_seconds", "latency_ms", "images_per_second", "error"]
    rows = [{**entry, "format": FORMATS[name].label} for name, entry in report.items()]
    return pd.DataFrame(rows).reindex(columns=columns)


def export_formats(run: Run, names=None, job=None) -> dict:
    """Exports, verifies and profiles ``names`` (every format when ``None``).

    Args:
        run: a finished run the caller may change.
        names: format names (see :data:`tlcore.runs.formats.FORMATS`); ``"keras"``
            measures the run's own model as the reference.
        job: the registry job running it: a ``step`` record per format, and Stop
            ends it after the current format (what is done is kept).

    Returns:
        ``{format: entry}``: ``file``, ``size_mb``, ``top1_agreement``,
        ``max_prob_diff``, ``checked_images``, ``load_seconds``, ``latency_ms``,
        ``images_per_second``, ``runtime``; or ``error`` (one line) when that format
        could not be exported or run.

    Raises:
        StudioError: the run is read-only, has no model, or no validation image can be read.
    """
    run.check_writable()
    rows = [export_format(name) for name in (names or FORMATS)]
    model = run.load_model()
    size = int(model.input_shape[1])
    images = validation_batch(run, size)
    from tlcore.inference.predict import predict_probabilities

    reference = predict_probabilities(model, images)
    train = _training_items_or_reason(run)
    calibration = train if isinstance(train, str) else None
    report = {}
    for step, row in enumerate(rows):
        if job is not None:
            job.log.append("step", step=step, steps=len(rows))
            if job.stop.is_set():
                break
        if row.calibrated and calibration is None:
            calibration = calibration_batch(train, size, run.config.train.seed)
        report[row.name] = _one_format(run, row, model, images, reference, calibration)
        _save_report(run, report[row.name])
    counts = None if isinstance(train, str) else dict(collections.Counter(item.label for item in train))
    write_downloads(run, counts)
    return report


def _one_format(run: Run, row: ExportFormat, model, images, reference, calibration) -> dict:
    entry = {"format": row.name, "label": row.label, "runtime": row.runtime}
    try:
        if isinstance(calibration, str) and row.calibrated:
            raise StudioError(calibration)
        path = write_export(run, row, model, calibration)
        entry.update(
            file=str(path.relative_to(run.path)), size_mb=round(export_size(run, row) / 1e6, 3)
        )  # MB: 10^6 bytes
        entry.update(check_and_profile(row, path, images, reference))
        mismatch = float32_mismatch(row, entry)
        if mismatch:
            entry["error"] = mismatch
    except Exception as error:  # noqa: BLE001 — any converter or runtime failure: this format says why, others go on
        entry["error"] = one_line(error, row)
    return entry


def export_outcome(report: dict) -> tuple[str, list[str]]:
    """What an export job did, in words: how many formats were checked, and each failure's reason."""
    failed = [entry["error"] for entry in report.values() if "error" in entry]
    done = (
        f"{len(report) - len(failed)} of {plural(len(report), 'format')} exported and checked against the Keras model."
    )
    if failed:
        done += f" {len(failed)} not offered: {'its' if len(failed) == 1 else 'their'} reason below."
    return done, failed


def float32_mismatch(row: ExportFormat, entry: dict) -> str | None:
    """Why a float32 export is not offered: its probabilities are not the Keras model's; else None."""
    if row.quantized or row.export is None or entry["max_prob_diff"] <= FLOAT32_TOLERANCE:
        return None
    return (
        f"{row.label} does not compute what the Keras model computes: top-1 agreement "
        f"{entry['top1_agreement']:.0%}, probabilities up to {entry['max_prob_diff']:.2f} apart (float32 rounding "
        f"stays under {FLOAT32_TOLERANCE:g}), so this file is not offered. Use a format whose check matched."
    )


def write_export(run: Run, row: ExportFormat, model, calibration=None) -> Path:
    """Writes one format's files (replacing older ones) and returns the path its runtime opens."""
    target = run.path / row.files[0]
    if row.export is None:
        return target  # the run's own model.keras
    for name in row.files:
        old = run.path / name
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    row.export(model, target, calibration)
    return target


def check_and_profile(row: ExportFormat, path: Path, images: np.ndarray, reference: np.ndarray) -> dict:
    """Opens an export in its runtime, compares it with the Keras probabilities and times it.

    Returns:
        ``top1_agreement`` (fraction of images with the Keras top-1), ``max_prob_diff``,
        ``checked_images``, ``load_seconds``, ``latency_ms`` (median of warm single-image
        calls) and ``images_per_second`` (median of 3 warm batches of up to 32 images).
    """
    started = time.perf_counter()
    predict = row.load(path)
    load_seconds = time.perf_counter() - started
    probabilities = np.concatenate(
        [predict(images[start : start + THROUGHPUT_BATCH]) for start in range(0, len(images), THROUGHPUT_BATCH)]
    )
    latencies = []
    for _ in range(LATENCY_REPEATS):
        started = time.perf_counter()
        predict(images[:1])
        latencies.append(time.perf_counter() - started)
    batch = images[:THROUGHPUT_BATCH]
    batch_times = []
    for _ in range(THROUGHPUT_REPEATS):  # one batch alone was noise on a busy server (slower than single calls)
        started = time.perf_counter()
        predict(batch)
        batch_times.append(time.perf_counter() - started)
    batch_seconds = statistics.median(batch_times)
    return {
        "top1_agreement": float(np.mean(probabilities.argmax(axis=1) == reference.argmax(axis=1))),
        "max_prob_diff": float(np.abs(probabilities - reference).max()),
        "checked_images": len(images),
        "load_seconds": round(load_seconds, 3),
        "latency_ms": round(1000 * statistics.median(latencies), 3),
        "images_per_second": round(len(batch) / batch_seconds, 1),
    }


def validation_batch(run: Run, size: int) -> np.ndarray:
    """The run's validation images decoded as training decoded them (at most 256, evenly spread)."""
    from tlcore.inference.predict import load_batch

    paths = [path for path in run.val_probabilities()[0] if Path(path).is_file()]
    if not paths:
        raise StudioError(
            f"Run {run.run_id} has no readable validation image to check its exports on. "
            "Expected the files listed in its val_predictions.csv; put the dataset back where it was trained."
        )
    picked = np.linspace(0, len(paths) - 1, min(len(paths), MAX_CHECKED_IMAGES)).round().astype(int)
    return load_batch([paths[index] for index in sorted(set(picked))], size)


def calibration_batch(train: list, size: int, seed: int) -> np.ndarray:
    """Up to 100 of the run's own training images (seeded), for full-integer quantization ranges."""
    from tlcore.inference.predict import load_batch

    chosen = random.Random(seed).sample([item.path for item in train], min(len(train), CALIBRATION_IMAGES))
    return load_batch(chosen, size)


def _training_items_or_reason(run: Run):
    """The run's training images as it split them, or why they cannot be had (one line)."""
    from tlcore.data.pipeline import load_dataset

    if run.config is None:
        return f"Run {run.run_id} has no config.json: its training images are unknown."
    try:
        return load_dataset(run.config.data, seed=run.config.train.seed).train
    except StudioError as error:
        return f"Full int8 measures ranges on the run's training images, which cannot be read now: {error}"


def export_size(run: Run, row: ExportFormat) -> int:
    """Bytes of a format's files (folders counted whole)."""
    total = 0
    for name in row.files:
        path = run.path / name
        files = path.rglob("*") if path.is_dir() else [path]
        total += sum(file.stat().st_size for file in files if file.is_file())
    return total


def one_line(error: Exception, row: ExportFormat) -> str:
    """Why a format failed, in one line; a missing package is named with how to install it."""
    if isinstance(error, ImportError) and getattr(error, "name", None):
        package = error.name.split(".")[0].replace("_", "-")
        return f"{row.label} needs the Python package {package!r}: pip install {package} (then export again)."
    text = str(error).strip().splitlines()
    first = text[0] if text else type(error).__name__
    return f"{row.label} could not be exported or run: {first[:300]}"


def _save_report(run: Run, entry: dict) -> None:
    """Adds one format's entry to ``exports/report.json`` as soon as it is known (a stop keeps it)."""
    path = run.path / "exports" / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    report = export_report(run)
    report[entry["format"]] = entry
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(report, indent=2))
    temporary.replace(path)


def write_downloads(run: Run, train_counts: dict | None = None) -> dict[str, Path]:
    """Writes ``exports/MODEL_CARD.md`` and one zip per verified format (and the Keras model).

    Each zip holds the model file(s), ``labels.txt``, ``predict.py`` (its snippet) and
    ``MODEL_CARD.md``: unzip, ``python predict.py photo.jpg``.

    Returns:
        ``{format: zip path}``.
    """
    from tlcore.runs.card import model_card
    from tlcore.runs.snippets import snippet

    report = export_report(run)
    card = model_card(run, report, train_counts)
    folder = run.path / "exports" / "downloads"
    folder.mkdir(parents=True, exist_ok=True)
    (run.path / "exports" / "MODEL_CARD.md").write_text(card)
    written = {}
    for name, row in FORMATS.items():
        target = folder / row.download_name(run.run_id)
        if row.export is not None and (name not in report or "error" in report[name]):
            target.unlink(missing_ok=True)  # a format that failed this time offers no older file
            continue
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in row.files:
                _add(archive, run.path / file, row.model_file(run.run_id) if file == row.files[0] else Path(file).name)
            archive.writestr("labels.txt", "\n".join(run.labels) + "\n")
            archive.writestr("predict.py", snippet(row, run.run_id, run.image_size or 224))
            archive.writestr("MODEL_CARD.md", card)
        written[name] = target
    return written


def _add(archive: zipfile.ZipFile, path: Path, name: str) -> None:
    if path.is_dir():
        for file in sorted(path.rglob("*")):
            if file.is_file():
                archive.write(file, f"{name}/{file.relative_to(path).as_posix()}")
    else:
        archive.write(path, name)


def export_downloads(run: Run) -> dict[str, tuple[str, Path]]:
    """The zips made so far, in table order: ``{label: (download name, path)}``."""
    folder = run.path / "exports" / "downloads"
    downloads = {}
    for row in FORMATS.values():
        path = folder / row.download_name(run.run_id)
        if path.is_file():
            downloads[f"{row.label} (.zip)"] = (path.name, path)
    return downloads
