"""Near-duplicates and leakage: feature cosine similarity within and across the splits.

Identical bytes are easy (same digest); re-encoded, resized or slightly edited copies
are not. Their backbone features stay nearly parallel, so the cosine similarity of the
pooled features, after subtracting the dataset's mean feature (every ReLU feature is
positive, which puts unrelated photos at 0.5–0.7 without centring), finds them.

On the real ants/bees photos with the shared MobileNetV2 backbone (measured here):
planted copies (JPEG quality 70 or PNG, half of them resized to 2/3) scored 0.79–1.00
(median 0.96), the most similar pair of distinct photos 0.63. The default threshold
sits between. (With the antialiased resize used before, copies scored 0.85–1.00: resizing
without antialiasing, as the pretrained models were fed, moves a shrunk copy a little more.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DEFAULT_THRESHOLD = 0.72
BLOCK_ROWS = 1024  # similarity rows computed at a time: memory stays O(block x n)
COLUMNS = ["a", "b", "similarity", "where", "a_label", "b_label"]


def normalized(features: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Centred, unit-length rows (cosine similarity is then a dot product)."""
    centred = features - mean
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return centred / np.where(norms == 0, 1.0, norms)


def _pairs_above(left: np.ndarray, right: np.ndarray, threshold: float, same: bool) -> list[tuple[int, int, float]]:
    found = []
    for start in range(0, len(left), BLOCK_ROWS):
        block = left[start : start + BLOCK_ROWS] @ right.T
        rows, cols = np.nonzero(block >= threshold)
        for row, col in zip(rows + start, cols):
            if not same or row < col:  # within one set: each pair once, no self-pairs
                found.append((int(row), int(col), float(block[row - start, col])))
    return found


def near_duplicates(feature_set, threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """Pairs of images whose features are at least ``threshold`` cosine-similar.

    Args:
        feature_set: a :class:`~tlcore.insight.features.FeatureSet`.
        threshold: between -1 and 1; see the module docstring for measured values.

    Returns:
        One row per pair, most similar first: ``a``, ``b`` (paths; for ``train-val``
        ``a`` is the training image), ``similarity``, ``where`` (``"train-val"``,
        ``"train-train"`` or ``"val-val"``), ``a_label``, ``b_label``.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"Expected a similarity threshold between -1 and 1. Received: threshold={threshold}.")
    mean = feature_set.all_x.mean(axis=0) if len(feature_set.all_x) else 0.0
    train, val = normalized(feature_set.train_x, mean), normalized(feature_set.val_x, mean)
    rows = []
    for where, left, right, left_items, right_items in (
        ("train-val", train, val, feature_set.train_items, feature_set.val_items),
        ("train-train", train, train, feature_set.train_items, feature_set.train_items),
        ("val-val", val, val, feature_set.val_items, feature_set.val_items),
    ):
        for i, j, similarity in _pairs_above(left, right, threshold, same=left is right):
            a, b = left_items[i], right_items[j]
            rows.append((a.path, b.path, min(similarity, 1.0), where, a.label, b.label))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.sort_values("similarity", ascending=False, kind="stable").reset_index(drop=True)


@dataclass
class Leakage:
    """Validation images that also appear (as near-duplicates) in the training set.

    Attributes:
        leaked: validation paths with a training near-duplicate.
        val_accuracy: validation accuracy of a head trained on the training features.
        val_accuracy_without_leaks: the same head, leaked validation images left out.
        num_val: validation images in all.
    """

    leaked: list[str]
    val_accuracy: float
    val_accuracy_without_leaks: float | None
    num_val: int

    @property
    def inflation(self) -> float | None:
        """How many accuracy points the leaked images add (positive = inflated)."""
        if self.val_accuracy_without_leaks is None:
            return None
        return self.val_accuracy - self.val_accuracy_without_leaks

    def describe(self) -> str:
        if not self.leaked:
            return f"No validation image leaks from training; validation accuracy {self.val_accuracy:.1%}."
        without = (
            f"{self.val_accuracy_without_leaks:.1%} without them"
            if self.val_accuracy_without_leaks is not None
            else "nothing left without them"
        )
        return (
            f"{len(self.leaked)} of {self.num_val} validation images have a near-copy in training: validation "
            f"accuracy {self.val_accuracy:.1%} counts them, {without}."
        )


def leakage(feature_set, pairs: pd.DataFrame) -> Leakage:
    """Which validation images leak from training, and the accuracy they inflate."""
    from tlcore.insight.heads import fit_predict

    leaked = sorted(set(pairs.loc[pairs["where"] == "train-val", "b"]))
    predictions = fit_predict(
        feature_set.train_x, feature_set.train_y, feature_set.val_x, len(feature_set.classes)
    ).argmax(axis=1)
    correct = predictions == feature_set.val_y
    leaked_paths = set(leaked)
    clean = np.array([item.path not in leaked_paths for item in feature_set.val_items], dtype=bool)
    without = float(correct[clean].mean()) if clean.any() else None
    return Leakage(leaked, float(correct.mean()) if len(correct) else 0.0, without, len(correct))


def accuracy_without(paths: list[str], labels: np.ndarray, probabilities: np.ndarray, leaked: list[str]) -> dict:
    """A run's validation accuracy with and without the leaked images (the number they inflate).

    Args:
        paths: the run's validation images, in the order of ``probabilities``.
        labels: their true label ids.
        probabilities: the run's predicted class probabilities.
        leaked: validation paths that have a near-copy in training.

    Returns:
        ``{"val_accuracy", "val_accuracy_without_leaks" (None if nothing is left), "leaked"}``.
    """
    correct = np.argmax(probabilities, axis=1) == np.asarray(labels)
    leaked_paths = set(leaked)
    clean = np.array([path not in leaked_paths for path in paths], dtype=bool)
    return {
        "val_accuracy": float(correct.mean()) if len(correct) else 0.0,
        "val_accuracy_without_leaks": float(correct[clean].mean()) if clean.any() else None,
        "leaked": int((~clean).sum()),
    }
