"""How many more images: validation accuracy against training-set size, fitted and projected.

Heads are trained on stratified fractions of the training features (several repeats
each), scored on the whole validation set, and an inverse power law
``accuracy(n) = a − b·n^(−c)`` (the usual shape of learning curves; ``a`` ≤ 1 is
where more data levels off) is fitted to the means, weighted by their spread. The fit
projects the accuracy with more images of the same kind.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tlcore.insight.heads import fit_predict

FRACTIONS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
REPEATS = 5
PROJECTION_FACTORS = (1.5, 2.0, 4.0)


@dataclass
class LearningCurve:
    """Measured points, the fitted curve and its projection.

    Attributes:
        points: ``train_images``, ``fraction``, ``val_accuracy`` (mean over repeats), ``sd``.
        projection: ``train_images``, ``more_per_class``, ``val_accuracy`` expected
            with more images (empty when the fit failed).
        parameters: ``(a, b, c)`` of ``a − b·n^(−c)``, or ``None``.
        num_classes: classes in the training set.
    """

    points: pd.DataFrame
    projection: pd.DataFrame
    parameters: tuple[float, float, float] | None
    num_classes: int

    def predict(self, train_images) -> np.ndarray:
        a, b, c = self.parameters
        return np.clip(a - b * np.power(np.asarray(train_images, dtype=float), -c), 0.0, 1.0)

    def describe(self) -> str:
        """ "With N more images per class expect ≈ x" in words."""
        if self.projection.empty:
            return "Too few points to fit a curve: the projection needs a larger dataset."
        current = self.points["val_accuracy"].iloc[-1]
        parts = [
            f"with {row.more_per_class:.0f} more images per class expect ≈ {row.val_accuracy:.1%}"
            for row in self.projection.itertuples()
        ]
        return f"Now {current:.1%}; " + ", ".join(parts) + " (if the new images are like the current ones)."

    def to_dict(self) -> dict:
        return {
            "points": self.points[["train_images", "val_accuracy", "sd"]].to_dict("records"),
            "projection": self.projection[["train_images", "val_accuracy"]].to_dict("records"),
            "more_per_class": self.projection["more_per_class"].tolist(),
            "curve": None if self.parameters is None else dict(zip("abc", self.parameters)),
        }


def stratified_subset(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Row indices: ``fraction`` of every class (at least one image each)."""
    rows = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        keep = max(1, round(fraction * len(members)))
        rows.append(rng.choice(members, keep, replace=False))
    return np.sort(np.concatenate(rows))


def learning_curve(feature_set, fractions=FRACTIONS, repeats: int = REPEATS, seed: int = 0) -> LearningCurve:
    """Validation accuracy of heads trained on growing fractions of the training features.

    Args:
        feature_set: a :class:`~tlcore.insight.features.FeatureSet`.
        fractions: shares of each class's training images, in (0, 1].
        repeats: subsets drawn per fraction (the full set is measured once).
        seed: seeds the subsets.
    """
    if not fractions or not all(0 < fraction <= 1 for fraction in fractions):
        raise ValueError(f"Expected fractions in (0, 1]. Received: fractions={list(fractions)}.")
    rng = np.random.default_rng(seed)
    x, y, num_classes = feature_set.train_x, feature_set.train_y, len(feature_set.classes)
    rows = []
    for fraction in sorted(set(fractions)):
        scores, size = [], 0
        for _ in range(1 if fraction == 1 else repeats):
            subset = stratified_subset(y, fraction, rng)
            if len(np.unique(y[subset])) < 2:
                continue
            predicted = fit_predict(x[subset], y[subset], feature_set.val_x, num_classes).argmax(axis=1)
            scores.append(float(np.mean(predicted == feature_set.val_y)))
            size = len(subset)
        if scores:
            rows.append((size, fraction, float(np.mean(scores)), float(np.std(scores))))
    points = pd.DataFrame(rows, columns=["train_images", "fraction", "val_accuracy", "sd"])
    parameters = fit_power_law(points)
    return LearningCurve(points, project(points, parameters, num_classes), parameters, num_classes)


def fit_power_law(points: pd.DataFrame) -> tuple[float, float, float] | None:
    """``(a, b, c)`` of ``a − b·n^(−c)`` fitted to the points, or ``None`` with fewer than 3."""
    from scipy.optimize import curve_fit

    if len(points) < 3:
        return None
    sizes, accuracy = points["train_images"].to_numpy(float), points["val_accuracy"].to_numpy(float)
    sigma = np.maximum(points["sd"].to_numpy(float), 0.01)
    try:
        parameters, _ = curve_fit(
            lambda n, a, b, c: a - b * np.power(n, -c),
            sizes,
            accuracy,
            p0=(min(accuracy.max() + 0.02, 1.0), 1.0, 0.5),
            bounds=([0.0, 0.0, 0.01], [1.0, 100.0, 2.0]),
            sigma=sigma,
            maxfev=20_000,
        )
    except (RuntimeError, ValueError):
        return None
    return tuple(float(value) for value in parameters)


def project(points: pd.DataFrame, parameters, num_classes: int, factors=PROJECTION_FACTORS) -> pd.DataFrame:
    """Expected accuracy at ``factors`` x the current training-set size."""
    columns = ["train_images", "more_per_class", "val_accuracy"]
    if parameters is None or points.empty:
        return pd.DataFrame(columns=columns)
    a, b, c = parameters
    current = int(points["train_images"].max())
    rows = []
    for factor in factors:
        size = int(round(current * factor))
        rows.append((size, (size - current) / num_classes, float(min(max(a - b * size ** (-c), 0.0), 1.0))))
    return pd.DataFrame(rows, columns=columns)
