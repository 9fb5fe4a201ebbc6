"""A 2-D map of the features: similar images close together (t-SNE, scikit-learn).

UMAP (umap-learn 0.5.12) was measured here and left out: 5–31 s to import and a
30–50 s first run (numba compiling) for 400 images, where t-SNE takes seconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PCA_DIMENSIONS = 50
COLUMNS = ["x", "y", "path", "split", "label", "predicted", "mistake", "suspect", "score"]


def project_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """``(n, 2)`` t-SNE coordinates (after PCA to at most 50 dimensions, as t-SNE's authors advise)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from tlcore.insight.probes import one_thread

    count = len(features)
    if count < 3:
        return np.zeros((count, 2))
    perplexity = float(min(30.0, (count - 1) / 3))
    with one_thread():
        reduced = PCA(min(PCA_DIMENSIONS, count, features.shape[1]), random_state=seed).fit_transform(features)
        return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(reduced)


def embedding_map(feature_set, review=None, predictions: dict | None = None, seed: int = 0) -> pd.DataFrame:
    """One row per image: map position, class, prediction, mistake and suspect-label flags.

    Args:
        feature_set: a :class:`~tlcore.insight.feature_set.FeatureSet`.
        review: a :class:`~tlcore.insight.label_issues.LabelReview` of the same feature
            set; its out-of-sample predictions and flags colour the map. Computed when omitted.
        predictions: path → predicted class, e.g. a trained run's validation
            predictions; they replace the out-of-sample ones for those paths.
        seed: seeds PCA and t-SNE.

    Returns:
        A DataFrame with ``x``, ``y``, ``path``, ``split``, ``label``, ``predicted``,
        ``mistake``, ``suspect`` and ``score`` (label suspicion, 0–1).
    """
    from tlcore.insight.label_issues import review_labels

    review = review if review is not None else review_labels(feature_set, seed=seed)
    coordinates = project_2d(feature_set.all_x, seed)
    by_path = review.ranked.set_index("path")
    items = feature_set.all_items
    paths = [item.path for item in items]
    predicted = [(predictions or {}).get(path, by_path.at[path, "suggested"]) for path in paths]
    labels = [item.label for item in items]
    return pd.DataFrame(
        {
            "x": coordinates[:, 0],
            "y": coordinates[:, 1],
            "path": paths,
            "split": feature_set.splits,
            "label": labels,
            "predicted": predicted,
            "mistake": [guess != label for guess, label in zip(predicted, labels)],
            "suspect": [bool(by_path.at[path, "flagged"]) for path in paths],
            "score": [float(by_path.at[path, "score"]) for path in paths],
        },
        columns=COLUMNS,
    )
