"""Suspect labels: out-of-sample probabilities by k-fold, ranked by confident learning (cleanlab).

Every image gets class probabilities from heads that never saw it: k-fold on the
cached features, repeated over ``SPLITS`` different fold splits and averaged, so that
no verdict hangs on one unlucky split. The averaged probabilities are then
temperature-scaled, cross-fitted (:func:`tlcore.insight.calibration.cross_fitted`), so a
probability means what it says on this data: a logistic head on thousands of backbone
features can be far more sure than it is right (softened), or, on a few weak features,
far less (sharpened).

An image is flagged only when the evidence is clearly against its label: cleanlab's
``find_label_issues`` counts it as an issue (confident learning, Northcutt et al. 2021:
per-class noise rates), *and* the heads of every split predict another class, *and*
the (calibrated) probability of the given label is at most 1 − ``CLEAR`` (10 %): heads
that barely beat chance (too few images, or features that do not separate the classes)
then flag nothing instead of a third of the labels. The score shown and sorted by is
``1 − p(given label)``.

What a flag can and cannot say: the heads are also wrong on some correctly labelled
images (a backbone that cannot tell two classes apart on this photo), so a flag means
"a wrong label, or a photo this backbone confuses" — look before relabelling. Measured
here with the shared dog-breed MobileNetV2: on ants/bees with 10 planted flips, all 10
flagged and in the top 10; the top unplanted suspects were a dandelion with no ant
filed as ants and a wasp filed as ants (real label problems). On flowers12 (no planted
flips, 97.3 % out-of-fold accuracy) the top suspects included a plain iris the heads
call a pansy: correct labels the backbone confuses, which is why the out-of-fold error
rate is reported next to the list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tlcore.insight.probes import out_of_fold_probabilities

COLUMNS = ["path", "split", "given", "suggested", "score", "agreement", "flagged", "digest"]
# What the Data page says of the method, and of the order of its list.
HOW_SUSPECTS_ARE_FOUND = (
    "Every image is predicted by heads that never saw it (5-fold on the backbone features, 3 different splits); an "
    "image is flagged when every split's heads and confident learning (cleanlab) disagree with its label. Your files "
    "are never moved: decisions are kept in the workspace and apply from the next training on."
)
SUSPECTS_ORDER = (
    "Most doubtful first: sorted by suspicion = 1 − the probability heads that never saw the image give its label."
)
SPLITS = 3  # k-fold repeated with this many different splits
CLEAR = 0.9  # flagged only when the (calibrated) heads give the given label at most 1 − CLEAR


def suspicion_words(score: float, agreement: float) -> str:
    """A suspect's numbers under its photo: "suspicion 0.950 (p(given) 5.0%; 100% of splits disagree)"."""
    return f"suspicion {score:.3f} (p(given) {1 - score:.1%}; {agreement:.0%} of splits disagree)"


@dataclass
class LabelReview:
    """Every image ranked by how doubtful its label is.

    Attributes:
        ranked: one row per image, most doubtful first: ``path``, ``split``
            (train/val), ``given``, ``suggested`` (the most likely class out of sample),
            ``score`` (1 − calibrated out-of-sample probability of the given label: 0 =
            surely right, 1 = surely wrong), ``agreement`` (share of the fold splits whose
            heads predict another class than the given one), ``flagged`` (cleanlab counts it
            as a label issue, every split disagrees with the label and the score is at least
            ``CLEAR``), ``digest``.
        probabilities: calibrated out-of-sample probabilities, rows in the feature set's order.
        folds: the number of folds used.
        splits: how many different fold splits were averaged.
        accuracy: out-of-sample accuracy of the heads against the given labels.
    """

    ranked: pd.DataFrame
    probabilities: np.ndarray
    folds: int
    splits: int = 1
    accuracy: float = float("nan")

    @property
    def checked(self) -> int:
        return len(self.ranked)

    def issues(self) -> pd.DataFrame:
        """The flagged rows, most doubtful (highest ``score``) first."""
        return self.ranked[self.ranked["flagged"]]

    def relabel_target(self, given: str, suggested: str) -> str:
        """The class "relabel" offers for an image: the suggested one, or another class when that is the given one."""
        if suggested != given:
            return suggested
        return next(label for label in sorted(set(self.ranked["given"])) if label != given)

    def describe(self) -> str:
        """How many were flagged, and how sure that can be, in words."""
        found = len(self.issues())
        chance = float(self.ranked["given"].value_counts(normalize=True).max()) if self.checked else 0.0
        context = (
            f"Heads that never saw an image agree with {self.accuracy:.1%} of the given labels (always guessing "
            f"the largest class: {chance:.1%}; {self.folds}-fold, {self.splits} different splits averaged)."
        )
        if not found:
            return f"0 suspect labels among {self.checked} images: no label is clearly contradicted. {context}"
        return (
            f"{found} suspect labels among {self.checked} images: contradicted by every split's heads and by "
            f"confident learning. {context} A flagged image is a wrong label or a photo this backbone confuses: "
            "look before relabelling."
        )


def review_labels(feature_set, folds: int = 5, seed: int = 0, splits: int = SPLITS) -> LabelReview:
    """Ranks every training and validation image of ``feature_set`` by label doubt (see the module docstring).

    Args:
        feature_set: a :class:`~tlcore.insight.feature_set.FeatureSet`.
        folds: k of the k-fold (lowered for classes with fewer images).
        seed: seeds the fold splits.
        splits: how many different fold splits to average (at least 1).

    Returns:
        A :class:`LabelReview`.

    Raises:
        ValueError: fewer than 2 images in some class, ``folds`` < 2 or ``splits`` < 1.
    """
    from tlcore.insight.calibration import cross_fitted
    from tlcore.insight.probes import fold_count

    if splits < 1:
        raise ValueError(f"Expected at least 1 fold split. Received: splits={splits}.")
    x, y, classes = feature_set.all_x, feature_set.all_y, feature_set.classes
    used = fold_count(y, folds)
    runs = [out_of_fold_probabilities(x, y, len(classes), used, seed + index) for index in range(splits)]
    averaged = np.mean(runs, axis=0)
    probabilities = cross_fitted(averaged, y, seed=seed) if len(y) >= 10 else averaged
    agreement = np.mean([run.argmax(axis=1) != y for run in runs], axis=0)
    given_probability = probabilities[np.arange(len(y)), y]
    clear = (agreement == 1.0) & (given_probability <= 1.0 - CLEAR)
    flagged = _confident_learning(y, probabilities, len(classes)) & clear
    items = feature_set.all_items
    frame = pd.DataFrame(
        {
            "path": [item.path for item in items],
            "split": feature_set.splits,
            "given": [classes[label] for label in y],
            "suggested": [classes[label] for label in probabilities.argmax(axis=1)],
            "score": 1.0 - given_probability,
            "agreement": agreement,
            "flagged": flagged,
            "digest": [item.digest for item in items],
        },
        columns=COLUMNS,
    )
    ranked = frame.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    accuracy = float(np.mean(averaged.argmax(axis=1) == y)) if len(y) else float("nan")
    return LabelReview(ranked, probabilities, used, splits, accuracy)


def _confident_learning(labels: np.ndarray, probabilities: np.ndarray, num_classes: int) -> np.ndarray:
    """cleanlab's label-issue mask (all False when a class is missing: cleanlab needs every class)."""
    from cleanlab.filter import find_label_issues

    flagged = np.zeros(len(labels), dtype=bool)
    if len(np.unique(labels)) == num_classes:
        # n_jobs=1: cleanlab's default process pool forks the caller, and a fork of the threaded
        # dashboard server can hang for ever (seen in the browser suite); on a few thousand rows
        # one process takes milliseconds.
        flagged[find_label_issues(labels, probabilities, filter_by="prune_by_noise_rate", n_jobs=1)] = True
    return flagged
