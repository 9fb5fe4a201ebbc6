"""Calibration: is a 90 % confident prediction right 90 % of the time?

A reliability diagram and the expected calibration error (ECE: the confidence-weighted
gap between confidence and accuracy over equal-width bins) on validation predictions.
Temperature scaling (Guo et al. 2017) divides the logits by one number T fitted by
likelihood; here ``log p`` stands in for the logits (softmax is shift-invariant), so
it works on any saved probabilities. Fitting T on the very images whose calibration
is then reported would flatter it, so the "after" numbers are cross-fitted: each fold
is scaled with a T fitted on the other folds. The T to apply later is fitted on all.
Temperature scaling is offered only when those cross-fitted numbers improve beyond
noise: no worse likelihood, and a lower ECE in at least 90 % of ``BOOTSTRAPS`` paired
resamples of the validation images (ECE on a few hundred images moves by a few
hundredths by chance alone). Seen before: offered when it took ECE from 0.011 to 0.019.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

BINS = 10
FOLDS = 5
EPSILON = 1e-12
CALIBRATION_FILE = "calibration.json"
BOOTSTRAPS = 200


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)``: T > 1 softens over-confident predictions, T < 1 sharpens."""
    logits = np.log(np.clip(probabilities, EPSILON, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(labels)), labels], EPSILON, 1.0))))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.05, 20] that minimises the negative log-likelihood of ``labels``."""
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(apply_temperature(probabilities, np.exp(log_t)), labels),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
    )
    return float(np.exp(result.x))


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> pd.DataFrame:
    """Per confidence bin: ``low``, ``high``, mean ``confidence``, ``accuracy``, ``count``."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for index in range(bins):
        members = which == index
        count = int(members.sum())
        rows.append(
            (
                edges[index],
                edges[index + 1],
                float(confidence[members].mean()) if count else np.nan,
                float(correct[members].mean()) if count else np.nan,
                count,
            )
        )
    return pd.DataFrame(rows, columns=["low", "high", "confidence", "accuracy", "count"])


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """ECE: Σ over bins of (share of images) × |accuracy − confidence|."""
    table = reliability(probabilities, labels, bins)
    filled = table[table["count"] > 0]
    if filled.empty:
        return 0.0
    gaps = (filled["accuracy"] - filled["confidence"]).abs()
    return float((gaps * filled["count"]).sum() / filled["count"].sum())


def cross_fitted(probabilities: np.ndarray, labels: np.ndarray, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Temperature-scaled probabilities where no image's T was fitted on that image."""
    from sklearn.model_selection import KFold

    folds = max(2, min(folds, len(labels)))
    scaled = np.empty_like(probabilities, dtype=float)
    for fit_rows, held_rows in KFold(folds, shuffle=True, random_state=seed).split(probabilities):
        temperature = fit_temperature(probabilities[fit_rows], labels[fit_rows])
        scaled[held_rows] = apply_temperature(probabilities[held_rows], temperature)
    return scaled


@dataclass
class CalibrationReport:
    """Calibration before and after temperature scaling.

    Attributes:
        temperature: T fitted on all validation images (to apply to new predictions).
        ece_before / ece_after: expected calibration error; ``after`` is cross-fitted.
        nll_before / nll_after: mean negative log-likelihood; ``after`` cross-fitted.
        before / after: reliability tables (see :func:`reliability`).
        count: validation images.
        ece_gain_low: 10th percentile of the ECE improvement over paired bootstrap resamples.
    """

    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    before: pd.DataFrame
    after: pd.DataFrame
    count: int
    ece_gain_low: float = float("nan")

    @property
    def helps(self) -> bool:
        """True when cross-fitted scaling lowers the ECE beyond noise without worsening the likelihood."""
        return self.ece_gain_low > 0 and self.nll_after <= self.nll_before

    @property
    def confidence(self) -> str:
        """``"over-confident"`` (T > 1: dividing the logits by T softens them) or ``"under-confident"``."""
        return "over-confident" if self.temperature > 1 else "under-confident"

    def metrics(self) -> dict[str, str]:
        """Evaluate's three numbers, label → value: the error before, after (cross-fitted), and T."""
        return {
            "Calibration error (ECE)": f"{self.ece_before:.3f}",
            "With temperature scaling (cross-fitted)": f"{self.ece_after:.3f}",
            "Temperature": f"{self.temperature:.2f}",
        }

    def temperature_note(self) -> str:
        """What the fitted temperature says of the model, and what dividing by it does."""
        return (
            f"A temperature of {self.temperature:.2f} means the model is {self.confidence}: dividing its logits by T "
            "makes a 90 % confident prediction right about 90 % of the time."
        )

    def describe(self) -> str:
        """Whether temperature scaling helps, in words, with the cross-fitted numbers."""
        numbers = (
            f"cross-fitted on {FOLDS} folds of the {self.count} validation images, calibration error (ECE) "
            f"{self.ece_before:.3f} → {self.ece_after:.3f}, log-loss {self.nll_before:.3f} → {self.nll_after:.3f}"
        )
        if self.helps:
            return f"Temperature scaling helps: {numbers}."
        if self.nll_after > self.nll_before:
            why = (
                "the log-loss gets worse, so the scaled probabilities would be further from the truth on the images "
                "that matter most (the confident mistakes), whatever the calibration error says"
            )
        else:
            why = "the calibration error does not go down by more than resampling the images moves it"
        return (
            f"Temperature scaling would not help this model: {numbers}. It is not offered because {why}. "
            "Keep its predictions as they are."
        )

    def to_dict(self) -> dict:
        names = ("temperature", "ece_before", "ece_after", "nll_before", "nll_after", "count", "ece_gain_low")
        return {**{name: getattr(self, name) for name in names}, "helps": self.helps}


def calibration_report(probabilities, labels, bins: int = BINS, folds: int = FOLDS, seed: int = 0):
    """Reliability, ECE and temperature scaling of validation predictions (see the module docstring).

    Raises:
        ValueError: fewer than 4 predictions, or shapes that do not match.
    """
    probabilities, labels = np.asarray(probabilities, dtype=float), np.asarray(labels, dtype=int)
    if probabilities.ndim != 2 or len(probabilities) != len(labels):
        raise ValueError(
            f"Expected (n, classes) probabilities and n labels. Received: {probabilities.shape} and {labels.shape}."
        )
    if len(labels) < 4:
        raise ValueError(f"Expected at least 4 validation predictions to calibrate. Received: {len(labels)}.")
    scaled = cross_fitted(probabilities, labels, folds, seed)
    return CalibrationReport(
        fit_temperature(probabilities, labels),
        expected_calibration_error(probabilities, labels, bins),
        expected_calibration_error(scaled, labels, bins),
        negative_log_likelihood(probabilities, labels),
        negative_log_likelihood(scaled, labels),
        reliability(probabilities, labels, bins),
        reliability(scaled, labels, bins),
        len(labels),
        ece_gain_low(probabilities, scaled, labels, bins, seed),
    )


def ece_gain_low(before: np.ndarray, after: np.ndarray, labels: np.ndarray, bins: int = BINS, seed: int = 0):
    """10th percentile of ``ECE(before) − ECE(after)`` over paired bootstrap resamples of the images."""
    rng = np.random.default_rng(seed)
    resamples = rng.integers(0, len(labels), (BOOTSTRAPS, len(labels)))
    gains = _ece_many(before, labels, resamples, bins) - _ece_many(after, labels, resamples, bins)
    return float(np.percentile(gains, 10))


def _ece_many(probabilities: np.ndarray, labels: np.ndarray, resamples: np.ndarray, bins: int) -> np.ndarray:
    """The ECE of every resample (rows of ``resamples`` index the images), as :func:`expected_calibration_error`."""
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(float)
    which = np.clip(np.digitize(confidence, np.linspace(0.0, 1.0, bins + 1)[1:-1], right=True), 0, bins - 1)
    one_hot = np.eye(bins)[which]  # (images, bins)
    counts = np.stack([np.bincount(rows, minlength=len(labels)) for rows in resamples])  # (resamples, images)
    per_bin = counts @ one_hot
    gap = np.abs(counts @ (one_hot * correct[:, None]) - counts @ (one_hot * confidence[:, None]))
    return gap.sum(axis=1) / np.maximum(per_bin.sum(axis=1), 1)


def _run_folder(run) -> Path:
    # A Run read by a visitor's store carries what that visitor may do: only its owner
    # changes its calibration. A plain path is the operator's (CLI, tests).
    if hasattr(run, "check_writable"):
        run.check_writable()
        return Path(run.path)
    return Path(run)


def save_temperature(run, report: CalibrationReport) -> Path:
    """Writes ``calibration.json`` into a run folder: the predictor can then scale with T.

    Args:
        run: a ``tlcore.runs.store.Run`` (as a visitor's store read it) or a run folder.
        report: the calibration to keep.

    Raises:
        StudioError: the run is read-only for the visitor (another's, or published).
    """
    path = _run_folder(run) / CALIBRATION_FILE
    path.write_text(json.dumps({"method": "temperature", **report.to_dict()}, indent=2))
    return path


def clear_temperature(run) -> None:
    """Removes a run's calibration (predictions are then used as they are).

    Raises:
        StudioError: the run is read-only for the visitor (another's, or published).
    """
    (_run_folder(run) / CALIBRATION_FILE).unlink(missing_ok=True)


def set_applied(run, report: CalibrationReport, apply: bool) -> None:
    """Saves or removes the run's temperature so that it is applied exactly when ``apply`` says;
    nothing is written when that is already so (an unchanged tick on every rerun).

    Raises:
        StudioError: the run is read-only for the visitor and would change.
    """
    saved = load_temperature(Path(getattr(run, "path", run)))
    if apply and (saved is None or abs(saved - report.temperature) > 1e-9):
        save_temperature(run, report)
    elif not apply and saved is not None:
        clear_temperature(run)


READ_ONLY_HELP = "Read-only: only the run's owner can change its calibration."


def load_temperature(run_dir: str | Path) -> float | None:
    """The temperature saved for a run, or ``None`` (then predictions are used as they are)."""
    try:
        return float(json.loads((Path(run_dir) / CALIBRATION_FILE).read_text())["temperature"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
