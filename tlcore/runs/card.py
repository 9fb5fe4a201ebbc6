"""A run's model card (Markdown): what the model is for, how it was made, how sure its numbers are.

Written into every export zip and shown on the Runs page. Every number comes from the
run's own files; what the run did not record is written "unknown", never guessed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tlcore.paths import sessions_dir
from tlcore.runs.formats import FORMATS

if TYPE_CHECKING:
    from tlcore.runs.store import Run

UNKNOWN = "unknown"
FREEZE_WORDS = {"all": "every layer frozen (a fixed feature extractor)", "none": "every layer trained"}


def model_card(run: Run, report: dict | None = None, train_counts: dict | None = None) -> str:
    """The model card of a run.

    Args:
        run: a finished image run.
        report: its export report (:func:`tlcore.runs.exports.export_report`); the
            profile section says "not exported yet" without one.
        train_counts: training images per class, when the dataset could be read.

    Returns:
        Markdown text.
    """
    sections = [
        f"# Model card: {run.run_id}",
        _purpose(run),
        _data(run, train_counts),
        _training(run),
        _validation(run),
        _limits(run),
        _how_to_run(),
        _profile(report or {}),
    ]
    return "\n\n".join(sections) + "\n"


def _purpose(run: Run) -> str:
    return (
        "## What it is for\n\n"
        f"Sorts one photo into one of {len(run.labels)} classes ({', '.join(run.labels)}), "
        "the classes of the folders it was trained on. Made with the transfer-learning studio."
    )


def _data(run: Run, train_counts: dict | None) -> str:
    _, truth, _ = run.val_probabilities()
    val_counts = {label: int(np.sum(truth == index)) for index, label in enumerate(run.labels)}
    rows = ["| class | training images | validation images |", "| --- | --- | --- |"]
    for label in run.labels:
        trained = (train_counts or {}).get(label, UNKNOWN if train_counts is None else 0)
        rows.append(f"| {label} | {trained} | {val_counts[label] if len(truth) else UNKNOWN} |")
    data = run.config.data if run.config is not None else None
    # The dataset by its own name, never the server's path: the card travels in every export zip,
    # and a visitor's upload lives under the server's per-owner session folder.
    if data is None:
        source = UNKNOWN
    else:
        uploaded = Path(data.data_dir).resolve().is_relative_to(sessions_dir().resolve())
        source = data.describe() + (", uploaded" if uploaded else "") + ("" if data.val_dir else ", seeded split")
    skipped = run.metrics.get("skipped_files", UNKNOWN)
    words = f"Source: {source}. Files skipped (unreadable, or blank/placeholder images): {skipped}."
    return "## Data\n\n" + words + "\n\n" + "\n".join(rows)


def _training(run: Run) -> str:
    lines = [f"Backbone: {run.backbone_label}."]
    if run.config is not None:
        model, train = run.config.model, run.config.train
        head = f"a new head (dropout {model.dropout_rate}, hidden units {model.hidden_units or 'none'})"
        plan = FREEZE_WORDS.get(model.freeze.mode) or f"{model.freeze.mode} {model.freeze.value}"
        tuned = f", then fine-tuned from {train.unfreeze_from}" if train.fine_tune_epochs else ""
        lines.append(f"Trained: {head}; backbone: {plan}{tuned}.")
        ran = run.metrics.get("epochs_run", UNKNOWN)
        lines.append(
            f"Epochs: up to {train.epochs} head, {train.fine_tune_epochs} fine-tuning; {ran} run; seed {train.seed}."
        )
    parameters = run.metrics.get("parameters")
    if isinstance(parameters, dict):
        lines.append("Parameters: " + ", ".join(f"{key} {value:,}" for key, value in parameters.items()) + ".")
    epoch = run.kept_epoch
    why = run.kept_weights.rstrip(".") or UNKNOWN
    lines.append(f"Kept epoch: {epoch if epoch is not None else UNKNOWN}. Why: {why}.")
    return "## Backbone and training\n\n" + "\n".join(f"- {line}" for line in lines)


def _validation(run: Run) -> str:
    accuracy, count = run.metrics.get("val_accuracy"), run.metrics.get("num_val")
    if accuracy is None or not count:
        return f"## Validation\n\nAccuracy: {UNKNOWN} (the run has no metrics)."
    low, high = wilson_interval(float(accuracy), int(count))
    lines = [
        f"Accuracy {accuracy:.3f} on {count} held-out images (95 % interval {low:.3f}–{high:.3f}, "
        "from the number of images alone); loss "
        f"{run.metrics.get('val_loss', float('nan')):.3f}.",
        "The same images chose the kept epoch, so the accuracy is slightly optimistic: "
        "keep a separate test folder for an unbiased number.",
        _calibration(run),
    ]
    return "## Validation\n\n" + "\n".join(f"- {line}" for line in lines)


def _calibration(run: Run) -> str:
    from tlcore.insight.calibration import expected_calibration_error, load_temperature

    _, truth, probabilities = run.val_probabilities()
    if not len(truth):
        return f"Calibration: {UNKNOWN}."
    error = expected_calibration_error(probabilities, truth)
    temperature = load_temperature(run.path)
    applied = (
        f"temperature scaling T = {temperature:.2f} is applied in the studio, NOT inside the exported files"
        if temperature is not None
        else "no temperature scaling applied"
    )
    return f"Calibration: expected calibration error {error:.3f} on the validation images; {applied}."


def _limits(run: Run) -> str:
    return (
        "## Known limits\n\n"
        "- It always answers one of its classes, even for a photo of something else: it cannot say "
        '"none of these". The studio\'s not-a-photo check (images unlike the training set) is not '
        "inside the exported files.\n"
        "- Photos unlike the training photos (other cameras, lighting, framing) may be classified worse "
        "than the validation accuracy says.\n"
        f"- Numbers come from {run.metrics.get('num_val', UNKNOWN)} validation images: see the interval above."
    )


def _how_to_run() -> str:
    return (
        "## How to run it\n\n"
        "Unzip the download, install the runtime its `predict.py` imports (e.g. `pip install onnxruntime`), "
        "then `python predict.py photo.jpg`: it prints the class and its probability. The script "
        "decodes the photo exactly as the studio does (upright by EXIF, RGB, resized without antialiasing); "
        "the model scales the pixels itself."
    )


def _profile(report: dict) -> str:
    if not report:
        return "## Export profile\n\nNot exported yet."
    rows = [
        "| format | runtime | size (MB) | top-1 agreement | largest prob. difference | load (s) "
        "| latency (ms, 1 image) | images/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in report.items():
        label = FORMATS[name].label
        if "error" in entry:
            rows.append(f"| {label} | {entry.get('runtime', '')} | failed: {entry['error']} | | | | | |")
            continue
        rows.append(
            f"| {label} | {entry['runtime']} | {entry['size_mb']:.2f} | {entry['top1_agreement']:.1%} "
            f"({entry['checked_images']} images) | {entry['max_prob_diff']:.4f} | {entry['load_seconds']:.2f} "
            f"| {entry['latency_ms']:.1f} | {entry['images_per_second']:.0f} |"
        )
    return (
        "## Export profile\n\n"
        f"Each export run in its own runtime on the validation images and compared with the Keras model; "
        f"timed on the machine that exported it ({os.cpu_count()} CPU cores), latency the median of warm "
        "single-image calls, images/s the median of 3 warm batches of up to 32. Timings on a server that "
        "was doing other work vary from run to run: time it again on the device you deploy to.\n\n" + "\n".join(rows)
    )


def wilson_interval(accuracy: float, count: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of an accuracy measured on ``count`` images."""
    centre = (accuracy + z * z / (2 * count)) / (1 + z * z / count)
    half = z * math.sqrt(accuracy * (1 - accuracy) / count + z * z / (4 * count * count)) / (1 + z * z / count)
    return max(0.0, centre - half), min(1.0, centre + half)


def run_card(run: Run) -> str:
    """The card written with the run's last export (it has the training counts), else one made now."""
    path = Path(run.path) / "exports" / "MODEL_CARD.md"
    return path.read_text() if path.is_file() else model_card(run)
