"""Suspect labels: out-of-sample probabilities by k-fold, ranked by confident learning (cleanlab).

Every image gets class probabilities from a head that never saw it (k-fold on the
cached features). cleanlab's ``find_label_issues`` then flags the images whose given
label disagrees with what the rest of the data says, estimating per-class noise
rates (confident learning, Northcutt et al. 2021), and ranks them by self-confidence:
the out-of-sample probability of the given label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tlcore.insight.heads import out_of_fold_probabilities

COLUMNS = ["path", "split", "given", "suggested", "score", "flagged", "digest"]


@dataclass
class LabelReview:
    """Every image ranked by how suspicious its label is.

    Attributes:
        ranked: one row per image, most suspicious first: ``path``, ``split``
            (train/val), ``given``, ``suggested`` (the most likely class out of sample),
            ``score`` (1 − out-of-sample probability of the given label: 0 = surely
            right, 1 = surely wrong), ``flagged`` (cleanlab counts it as a label issue),
            ``digest``.
        probabilities: out-of-sample probabilities, rows in the feature set's order.
        folds: the number of folds used.
    """

    ranked: pd.DataFrame
    probabilities: np.ndarray
    folds: int

    @property
    def checked(self) -> int:
        return len(self.ranked)

    def issues(self) -> pd.DataFrame:
        """The flagged rows, most suspicious first."""
        return self.ranked[self.ranked["flagged"]]


def review_labels(feature_set, folds: int = 5, seed: int = 0) -> LabelReview:
    """Ranks every training and validation image of ``feature_set`` by label suspicion.

    Args:
        feature_set: a :class:`~tlcore.insight.features.FeatureSet`.
        folds: k of the k-fold (lowered for classes with fewer images).
        seed: seeds the fold split.

    Returns:
        A :class:`LabelReview`.

    Raises:
        ValueError: fewer than 2 images in some class, or ``folds`` < 2.
    """
    from cleanlab.filter import find_label_issues

    from tlcore.insight.heads import fold_count

    x, y, classes = feature_set.all_x, feature_set.all_y, feature_set.classes
    used = fold_count(y, folds)
    probabilities = out_of_fold_probabilities(x, y, len(classes), used, seed)
    flagged = np.zeros(len(y), dtype=bool)
    if len(np.unique(y)) == len(classes):  # cleanlab needs every class present
        # n_jobs=1: cleanlab's default process pool forks the caller, and a fork of the threaded
        # dashboard server can hang for ever (seen in the browser suite); on a few thousand rows
        # one process takes milliseconds.
        flagged[find_label_issues(y, probabilities, filter_by="prune_by_noise_rate", n_jobs=1)] = True
    given_probability = probabilities[np.arange(len(y)), y]
    items = feature_set.all_items
    frame = pd.DataFrame(
        {
            "path": [item.path for item in items],
            "split": feature_set.splits,
            "given": [classes[label] for label in y],
            "suggested": [classes[label] for label in probabilities.argmax(axis=1)],
            "score": 1.0 - given_probability,
            "flagged": flagged,
            "digest": [item.digest for item in items],
        },
        columns=COLUMNS,
    )
    ranked = frame.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    return LabelReview(ranked, probabilities, used)
