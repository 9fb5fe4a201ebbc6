"""Is one accuracy's lead over another beyond noise? Judged from paired scores.

The leaderboard and the depth comparison measure their two leaders on the same folds
(or seeds, or repeats): fold ``i`` of both saw the same validation images and the same
head seed. So the question is asked of the per-unit differences, whose mean is the lead
and whose standard error says how much of it the folds alone could produce:

- the lead counts as beyond noise when it exceeds the 95% two-sided bound of a paired
  t-test, ``t(0.975, n - 1) × noise``;
- ``noise`` is the standard error of the mean difference, never below one validation
  image per fold (``1 / n_val``): accuracy moves in steps of one image, so identical
  scores on every fold (a standard deviation of 0) never make a one-image lead "beyond
  noise";
- with K cross-validation folds the training sets overlap, so the folds' differences are
  not independent; the standard error is corrected as Nadeau and Bengio propose
  ("Inference for the Generalization Error", 2003): variance × ``(1/K + n_val/n_train)``;
- under ``MIN_UNITS`` paired scores the spread cannot be measured: "cannot tell",
  unless the two are less than one validation image apart (no lead at all).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_UNITS = 3  # paired scores needed before a spread means anything
CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedLead:
    """The first candidate's lead over the second, over paired units (folds, seeds, repeats).

    Attributes:
        margin: the mean of the per-unit differences (first minus second), in accuracy.
        units: how many paired scores there are.
        resolution: one validation image, ``1 / n_val``: the smallest accuracy step.
        standard_error: of ``margin``, corrected for overlapping folds; ``None`` under
            ``MIN_UNITS`` units.
        bound: the lead beyond which it is not noise; ``None`` under ``MIN_UNITS`` units.
    """

    margin: float
    units: int
    resolution: float
    standard_error: float | None = None
    bound: float | None = None

    @property
    def outcome(self) -> str:
        """``"beyond"`` (a real lead), ``"within"`` (noise) or ``"cannot tell"`` (too few units).

        Less than one validation image apart is within noise however few the units: there is
        no lead to tell apart from noise.
        """
        if self.margin < self.resolution:
            return "within"
        if self.bound is None:
            return "cannot tell"
        return "beyond" if self.margin > self.bound else "within"

    def explained(self, units_name: str) -> str:
        """How the bound was found, in a few words: ``"the 95% bound over the same 5 folds: …"``."""
        if self.bound is None and self.margin < self.resolution:
            return f"less than one validation image apart, {self.resolution * 100:.1f} points"
        if self.bound is None:
            return f"too few paired {units_name} to measure the noise: {self.units}, {MIN_UNITS} needed"
        return (
            f"the 95% bound over the same {self.units} {units_name}: {self.bound * 100:.1f} points, from the larger "
            f"of the paired differences' standard error ({self.standard_error * 100:.1f} points) and one "
            f"validation image ({self.resolution * 100:.1f} points)"
        )


def paired_lead(first, second, num_val: int, overlap: float = 0.0) -> PairedLead:
    """The lead of ``first`` over ``second``, paired unit by unit.

    Args:
        first: accuracy per unit (fold, seed or repeat) of the leader.
        second: accuracy per unit of the runner-up, in the same order; the shorter of the
            two decides how many units are paired (a stopped run).
        num_val: validation images per unit (the smallest fold's count).
        overlap: ``n_val / n_train`` for cross-validation folds (their training sets
            overlap), 0 for seeds or repeats on one split.

    Raises:
        ValueError: ``num_val`` below 1.
    """
    if num_val < 1:
        raise ValueError(f"Expected at least one validation image. Received: num_val={num_val}.")
    count = min(len(first), len(second))
    differences = np.asarray(first[:count], dtype=float) - np.asarray(second[:count], dtype=float)
    margin = float(differences.mean()) if count else 0.0
    resolution = 1.0 / num_val
    if count < MIN_UNITS:
        return PairedLead(margin, count, resolution)
    from scipy.stats import t

    error = float(differences.std(ddof=1)) * math.sqrt(1.0 / count + overlap)
    bound = float(t.ppf((1 + CONFIDENCE) / 2, count - 1)) * max(error, resolution)
    return PairedLead(margin, count, resolution, error, bound)
