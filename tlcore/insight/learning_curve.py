"""How many more images: validation accuracy against training-set size, fitted and projected.

Heads are trained on stratified fractions of the training features (several repeats
each), scored on the whole validation set, and an inverse power law
``accuracy(n) = a − b·n^(−c)`` (the usual shape of learning curves; ``a`` ≤ 1 is
where more data levels off) is fitted to the means, weighted by their spread.

A projection is offered only when it can be told from noise. Its spread comes from
bootstrapping the measurements (the validation images, resampled alike for every point,
and the repeats of every subset size), refitting each time: the projection is the
current accuracy plus the median gain of those fits from the current size (never below
now: the curve only rises), with the 10th–90th percentile range. When that range
reaches down to less than one more validation image right, the answer is "no reliable
projection", with the reason. (Seen before: "now 98.0 %; with 500 more images per class
expect ≈ 97.7 %" — a fit under a noisy last point, read as a forecast.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tlcore.insight.probes import fit_predict

FRACTIONS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
REPEATS = 5
PROJECTION_FACTORS = (1.5, 2.0, 4.0)
BOOTSTRAPS = 40  # refits on resampled measurements, for the projection's range


@dataclass
class LearningCurve:
    """Measured points, the fitted curve and, when it can be told from noise, its projection.

    Attributes:
        points: ``train_images``, ``fraction``, ``val_accuracy`` (mean over repeats), ``sd``
            (spread over repeats), ``repeats``.
        projection: ``train_images``, ``more_per_class``, ``val_accuracy`` expected
            with more images, ``low`` and ``high`` (10th and 90th percentile over bootstrapped
            refits); empty when there is no reliable projection.
        parameters: ``(a, b, c)`` of ``a − b·n^(−c)``, or ``None``.
        num_classes: classes in the training set.
        noise: standard error of the current accuracy from the validation set's size.
        reason: why there is no reliable projection ("" when there is one).
    """

    points: pd.DataFrame
    projection: pd.DataFrame
    parameters: tuple[float, float, float] | None
    num_classes: int
    noise: float = 0.0
    reason: str = ""

    @property
    def reliable(self) -> bool:
        return not self.projection.empty

    @property
    def current(self) -> float:
        return float(self.points["val_accuracy"].iloc[-1]) if not self.points.empty else float("nan")

    def predict(self, train_images) -> np.ndarray:
        a, b, c = self.parameters
        return np.clip(a - b * np.power(np.asarray(train_images, dtype=float), -c), 0.0, 1.0)

    def describe(self) -> str:
        """ "With N more images per class expect ≈ x" in words, or why no projection is given."""
        if self.points.empty:
            return "No point could be measured: every class needs training images."
        now = f"Now {self.current:.1%} (± {self.noise:.1%})"
        if not self.reliable:
            return f"{now}. No reliable projection: {self.reason}"
        parts = [
            f"with {row.more_per_class:.0f} more images per class expect ≈ {row.val_accuracy:.1%} "
            f"({row.low:.1%}–{row.high:.1%})"
            for row in self.projection.itertuples()
        ]
        return f"{now}; " + ", ".join(parts) + " (if the new images are like the current ones)."

    def to_dict(self) -> dict:
        return {
            "points": self.points[["train_images", "val_accuracy", "sd"]].to_dict("records"),
            "projection": self.projection[
                [c for c in ("train_images", "val_accuracy", "low", "high") if c in self.projection]
            ].to_dict("records"),
            "more_per_class": self.projection["more_per_class"].tolist(),
            "curve": None if self.parameters is None else dict(zip("abc", self.parameters)),
            "reliable": self.reliable,
            "noise": self.noise,
            "reason": self.reason,
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
        feature_set: a :class:`~tlcore.insight.feature_set.FeatureSet`.
        fractions: shares of each class's training images, in (0, 1].
        repeats: subsets drawn per fraction (the full set is measured once).
        seed: seeds the subsets.
    """
    if not fractions or not all(0 < fraction <= 1 for fraction in fractions):
        raise ValueError(f"Expected fractions in (0, 1]. Received: fractions={list(fractions)}.")
    rng = np.random.default_rng(seed)
    x, y, num_classes = feature_set.train_x, feature_set.train_y, len(feature_set.classes)
    rows, measured = [], []
    for fraction in sorted(set(fractions)):
        correct, size = [], 0
        for _ in range(1 if fraction == 1 else repeats):
            subset = stratified_subset(y, fraction, rng)
            if len(np.unique(y[subset])) < 2:
                continue
            predicted = fit_predict(x[subset], y[subset], feature_set.val_x, num_classes).argmax(axis=1)
            correct.append(predicted == feature_set.val_y)
            size = len(subset)
        if correct:
            scores = np.mean(correct, axis=1)
            rows.append((size, fraction, float(scores.mean()), float(scores.std()), len(scores)))
            measured.append(np.asarray(correct))
    points = pd.DataFrame(rows, columns=["train_images", "fraction", "val_accuracy", "sd", "repeats"])
    parameters = fit_power_law(points)
    noise = sampling_noise(points, len(feature_set.val_y))
    projection, reason = reliable_projection(points, parameters, num_classes, measured, rng)
    return LearningCurve(points, projection, parameters, num_classes, noise, reason)


def sampling_noise(points: pd.DataFrame, num_val: int) -> float:
    """Standard error of the current accuracy from the validation set's size (binomial)."""
    if points.empty or num_val == 0:
        return 0.0
    accuracy = float(points["val_accuracy"].iloc[-1])
    return float(np.sqrt(max(accuracy * (1 - accuracy), 1.0 / num_val) / num_val))  # never 0 at 100 %


def bootstrap_gains(points: pd.DataFrame, measured: list, factors, rng, rounds: int = BOOTSTRAPS) -> np.ndarray:
    """``(rounds, len(factors))`` gains from the current size, each from a fit on resampled measurements.

    Args:
        points: the measured points (their sizes).
        measured: per point, a ``(repeats, num_val)`` array of correct predictions.
        factors: multiples of the current training-set size.
        rng: a NumPy generator.
        rounds: refits.
    """
    sizes = points["train_images"].to_numpy(float)
    current, num_val = sizes[-1], measured[-1].shape[1]
    gains = np.zeros((rounds, len(factors)))
    for round_index in range(rounds):
        columns = rng.integers(0, num_val, num_val)  # the same validation resample for every point
        resampled = [grid[rng.integers(0, len(grid), len(grid))][:, columns].mean(axis=1) for grid in measured]
        frame = pd.DataFrame(
            {"train_images": sizes, "val_accuracy": [r.mean() for r in resampled], "sd": [r.std() for r in resampled]}
        )
        fitted = fit_power_law(frame)
        if fitted is not None:
            _, b, c = fitted
            gains[round_index] = [max(b * (current ** (-c) - (current * f) ** (-c)), 0.0) for f in factors]
    return gains


def reliable_projection(points: pd.DataFrame, parameters, num_classes: int, measured: list, rng):
    """``(projection, reason)``: the projection with its range when it stands out of the noise, else empty and why."""
    empty = pd.DataFrame(columns=["train_images", "more_per_class", "val_accuracy", "low", "high"])
    if parameters is None:
        return empty, "too few measured points to fit a curve (at least 3 subset sizes are needed)."
    gains = bootstrap_gains(points, measured, PROJECTION_FACTORS, rng)
    low, middle, high = np.percentile(gains, [10, 50, 90], axis=0)
    one_image = 1.0 / measured[-1].shape[1]
    projection = project(points, parameters, num_classes)
    if low[-1] < one_image:
        return empty, (
            f"with {projection['more_per_class'].iloc[-1]:.0f} more images per class the fitted curves gain "
            f"{low[-1] * 100:.1f} to {high[-1] * 100:.1f} points (10th–90th percentile over resampled "
            f"measurements): that cannot be told from no gain (one validation image is {one_image * 100:.1f} points)."
        )
    now = float(points["val_accuracy"].iloc[-1])
    projection["val_accuracy"] = np.minimum(now + middle, 1.0)
    projection["low"], projection["high"] = np.minimum(now + low, 1.0), np.minimum(now + high, 1.0)
    return projection, ""


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
    """Expected accuracy at ``factors`` x the current training-set size.

    The current measured accuracy plus what the fitted curve gains from the current size
    (an increasing curve: the projection is never below now).
    """
    columns = ["train_images", "more_per_class", "val_accuracy"]
    if parameters is None or points.empty:
        return pd.DataFrame(columns=columns)
    a, b, c = parameters
    current = int(points["train_images"].max())
    now = float(points["val_accuracy"].iloc[-1])
    rows = []
    for factor in factors:
        size = int(round(current * factor))
        gain = max(b * (current ** (-c) - size ** (-c)), 0.0)
        rows.append((size, (size - current) / num_classes, float(min(now + gain, 1.0))))
    return pd.DataFrame(rows, columns=columns)
