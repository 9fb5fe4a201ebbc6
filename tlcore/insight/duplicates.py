"""Near-duplicates and leakage: the same photo twice, told apart from photos that merely look alike.

Two steps, each with its own evidence:

1. **Features say "unusually alike".** The cosine similarity of the pooled backbone
   features (after subtracting the dataset's mean feature: every ReLU feature is
   positive, which puts unrelated photos at 0.5–0.7 without centring). What counts as
   unusual comes from the data: every image's nearest neighbour *in its own class* gives
   the distribution of "as alike as two different photos of one class get"; on the
   scale ``log(1 − similarity)`` (where copies, at similarity → 1, are far out) a pair
   is "similar" beyond ``median − FENCE_SPREAD × robust sd`` (median absolute deviation
   × 1.4826) of that distribution. A backbone that sees every dog of a breed as alike
   moves the fence up with it; no constant tuned on one dataset decides.
2. **Pixels say "same photo".** A pair's 32×32 grey thumbnails, centred and
   normalised, correlate at ≥ ``SAME_PHOTO_PIXELS`` when one is the other re-encoded,
   resized or slightly recoloured; two different photos, even of one flower from one
   viewpoint, or a crop of one photo, do not. Every pair more alike than a typical
   same-class neighbour (the distribution's median) is checked.

Only a "same photo" pair across training and validation is a leak.

Measured here with the shared MobileNetV2 (``dog_breed_mobilenetv2_160.h5``):

- ants/bees (397 photos): same-class nearest-neighbour similarity median 0.39; the
  fence at 0.68; the most alike distinct photos 0.63: no pair, no leak. Planted copies
  (JPEG quality 70 or PNG, half of them resized to 2/3) scored 0.79–1.00 in features
  and ≥ 0.99 in pixels: all 10 found as the same photo, all 10 leaks.
- flowers12 (960 photos): median 0.61, fence 0.92. Its 60 pairs of identical photos
  (pixel correlation ≥ 0.996; 23 of them across train/test) scored 0.91–1.00 in
  features: all found as the same photo. Look-alikes reach 0.97 in features but at most
  0.95 in pixels (a crop of one photo; different photos ≤ 0.88): none is called the
  same photo; 3 are listed as similar photos. With 10 copies planted as above, one
  shrunk copy scored only 0.70 in features, below the fence: the pixel check of every
  pair above the median found it (70 of 70 identical pairs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tlcore.caches import BoundedCache
from tlcore.words import plural

FENCE_SPREAD = 4.0  # robust standard deviations below the median of log(1 − NN similarity)
SAME_PHOTO_PIXELS = 0.98  # correlation of 32x32 grey thumbnails from which two files are one photo
PIXEL_SIDE = 32
MAX_CANDIDATES = 20_000  # pairs pixel-checked at most (the most similar first): time and memory bounded
BLOCK_ROWS = 1024  # similarity rows computed at a time: memory stays O(block x n)
SIGNATURE_CACHE = 8192  # pixel signatures kept between calls (4 KB each: 32 MB at most)
COLUMNS = ["a", "b", "similarity", "pixels", "kind", "where", "a_label", "b_label"]
SAME, SIMILAR = "same photo", "similar photo"
_SIGNATURES = BoundedCache("pixel signatures", max_items=SIGNATURE_CACHE, max_bytes=SIGNATURE_CACHE * PIXEL_SIDE**2 * 4)


def normalized(features: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Centred, unit-length rows (cosine similarity is then a dot product)."""
    centred = features - mean
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return centred / np.where(norms == 0, 1.0, norms)


@dataclass
class Thresholds:
    """What "unusually alike" means for one dataset, derived from its own similarities.

    Attributes:
        median: median same-class nearest-neighbour similarity (the pixel check starts here).
        similar: the fence: pairs at least this similar are "similar photos".
        images: images whose same-class nearest neighbour was measured.
        derived: False when ``similar`` was given by the caller instead.
    """

    median: float
    similar: float
    images: int
    derived: bool = True

    def describe(self) -> str:
        source = "derived from this dataset" if self.derived else "set by hand"
        return (
            f"Two different photos of one class are typically {self.median:.2f} similar (median over "
            f"{self.images} images); pairs above {self.similar:.2f} ({source}) are unusually alike."
        )


def nearest_same_class(unit: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Every row's highest cosine similarity to another row of its class (``nan`` if it has none)."""
    best = np.full(len(labels), np.nan)
    for start in range(0, len(unit), BLOCK_ROWS):
        block = unit[start : start + BLOCK_ROWS] @ unit.T
        rows = np.arange(start, min(start + BLOCK_ROWS, len(unit)))
        block[rows - start, rows] = -np.inf
        block[labels[rows][:, None] != labels[None, :]] = -np.inf
        top = block.max(axis=1)
        best[rows] = np.where(np.isfinite(top), top, np.nan)
    return best


def similarity_thresholds(unit: np.ndarray, labels: np.ndarray, spread: float = FENCE_SPREAD) -> Thresholds:
    """The fence far outside the same-class nearest-neighbour similarities (see the module docstring).

    Args:
        unit: centred unit-length features (:func:`normalized`).
        labels: their label ids.
        spread: robust standard deviations beyond the median.

    Returns:
        :class:`Thresholds`; with fewer than 3 measurable images the fence is 1.0 (only
        exact feature copies count).
    """
    nearest = nearest_same_class(unit, np.asarray(labels))
    nearest = nearest[np.isfinite(nearest)]
    if len(nearest) < 3:
        return Thresholds(1.0, 1.0, len(nearest))
    distance = np.log(np.clip(1.0 - nearest, 1e-6, None))  # copies (similarity → 1) are far out on this scale
    middle = float(np.median(distance))
    robust_sd = 1.4826 * float(np.median(np.abs(distance - middle)))
    fence = 1.0 - float(np.exp(middle - spread * robust_sd))
    return Thresholds(float(np.median(nearest)), min(max(fence, -1.0), 1.0), len(nearest))


def pixel_signature(path: str, side: int = PIXEL_SIDE) -> np.ndarray | None:
    """A photo's ``side x side`` grey thumbnail, centred and unit-length; ``None`` if unreadable or flat."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    key = (path, stat.st_mtime_ns, stat.st_size, side)  # a file changed since is read again
    return _SIGNATURES.get_or_create(key, lambda: _read_signature(path, side))


def _read_signature(path: str, side: int) -> np.ndarray | None:
    from PIL import Image, ImageOps

    from tlcore.data.images import open_image, to_rgb
    from tlcore.errors import StudioError

    try:
        image = open_image(path)
        if image.format == "JPEG":
            image.draft("RGB", (4 * side, 4 * side))
        grey = to_rgb(ImageOps.exif_transpose(image)).convert("L").resize((side, side), Image.BOX)
        values = np.asarray(grey, dtype=np.float32).ravel()
    except (StudioError, OSError, ValueError):
        return None
    values = values - values.mean()
    norm = float(np.linalg.norm(values))
    return None if norm < 1e-3 * len(values) else values / norm  # a flat image has no pattern to compare


def pixel_correlation(path_a: str, path_b: str) -> float:
    """Correlation of two photos' grey thumbnails (1 = the same picture); ``nan`` when one cannot be read."""
    a, b = pixel_signature(path_a), pixel_signature(path_b)
    return float("nan") if a is None or b is None else float(a @ b)


def _pairs_above(left: np.ndarray, right: np.ndarray, threshold: float, same: bool) -> list[tuple[int, int, float]]:
    found = []
    for start in range(0, len(left), BLOCK_ROWS):
        block = left[start : start + BLOCK_ROWS] @ right.T
        rows, cols = np.nonzero(block >= threshold)
        for row, col in zip(rows + start, cols):
            if not same or row < col:  # within one set: each pair once, no self-pairs
                found.append((int(row), int(col), float(block[row - start, col])))
    return found


def near_duplicates(feature_set, threshold: float | None = None) -> pd.DataFrame:
    """Pairs of images that are the same photo, or unusually alike (see the module docstring).

    Args:
        feature_set: a :class:`~tlcore.insight.feature_set.FeatureSet`.
        threshold: the feature similarity from which a pair is "similar"; ``None`` (the
            default) derives it from the data (:func:`similarity_thresholds`).

    Returns:
        One row per pair, same photos first (highest ``pixels`` first), then similar
        photos (highest ``similarity`` first): ``a``, ``b``
        (paths; for ``train-val`` ``a`` is the training image), ``similarity`` (features),
        ``pixels`` (grey-thumbnail correlation, ``nan`` if unreadable), ``kind``
        (``"same photo"`` or ``"similar photo"``), ``where`` (``"train-val"``,
        ``"train-train"`` or ``"val-val"``), ``a_label``, ``b_label``. The frame's
        ``attrs["thresholds"]`` holds the :class:`Thresholds` used.
    """
    pairs, thresholds = _candidates(feature_set, threshold)
    rows = []
    for where, a, b, similarity in pairs:
        pixels = pixel_correlation(a.path, b.path)
        kind = SAME if pixels >= SAME_PHOTO_PIXELS else SIMILAR if similarity >= thresholds.similar else None
        if kind is not None:
            rows.append((a.path, b.path, min(similarity, 1.0), pixels, kind, where, a.label, b.label))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    # Each kind sorted by the score that decided it: same photos by pixels, similar ones by features.
    order = pd.DataFrame({"same": frame["kind"] == SAME})
    order["score"] = np.where(order["same"], frame["pixels"], frame["similarity"])
    frame = frame.loc[order.sort_values(["same", "score"], ascending=False, kind="stable").index]
    frame = frame.reset_index(drop=True)
    frame.attrs["thresholds"] = thresholds
    return frame


def _candidates(feature_set, threshold: float | None):
    """``(where, item a, item b, similarity)`` for every pair worth a pixel check, and the thresholds."""
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise ValueError(f"Expected a similarity threshold between -1 and 1. Received: threshold={threshold}.")
    mean = feature_set.all_x.mean(axis=0) if len(feature_set.all_x) else 0.0
    train, val = normalized(feature_set.train_x, mean), normalized(feature_set.val_x, mean)
    thresholds = similarity_thresholds(np.concatenate([train, val]), feature_set.all_y)
    if threshold is not None:
        thresholds = Thresholds(thresholds.median, float(threshold), thresholds.images, derived=False)
    start = min(thresholds.median, thresholds.similar)
    found = []
    for where, left, right, left_items, right_items in (
        ("train-val", train, val, feature_set.train_items, feature_set.val_items),
        ("train-train", train, train, feature_set.train_items, feature_set.train_items),
        ("val-val", val, val, feature_set.val_items, feature_set.val_items),
    ):
        for i, j, similarity in _pairs_above(left, right, start, same=left is right):
            found.append((where, left_items[i], right_items[j], similarity))
    found.sort(key=lambda pair: -pair[3])
    return found[:MAX_CANDIDATES], thresholds


def leaked_paths(pairs: pd.DataFrame) -> list[str]:
    """Validation images that are the same photo as a training image (``"train-val"`` same-photo pairs)."""
    same = pairs[(pairs["where"] == "train-val") & (pairs["kind"] == SAME)]
    return sorted(set(same["b"]))


HOW_PAIRS_ARE_FOUND = (
    "Pairs the backbone finds unusually alike for this dataset (far outside how alike two photos of one class usually "
    "are), then checked pixel by pixel: the **same photo** (re-encoded, resized or recoloured) or a **similar photo** "
    "(a different picture that looks alike). A validation image that is the same photo as a training image makes "
    "validation look better than it is."
)


@dataclass
class Leakage:
    """Validation images that are also in the training set (the same photo).

    Attributes:
        leaked: validation paths whose photo is also a training image.
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
        """How many accuracy points the leaked images add (positive = inflated); ``None`` without leaks."""
        if not self.leaked or self.val_accuracy_without_leaks is None:
            return None
        return self.val_accuracy - self.val_accuracy_without_leaks

    @property
    def accuracy_change(self) -> str | None:
        """Validation accuracy with the leaked images, then without them ("95.0% → 90.0%"); ``None`` without leaks."""
        if self.inflation is None:
            return None
        return f"{self.val_accuracy:.1%} → {self.val_accuracy_without_leaks:.1%}"

    def describe(self) -> str:
        if not self.leaked:
            return (
                f"No validation image is a copy of a training image: validation accuracy "
                f"({self.val_accuracy:.1%} for a head on these features) is not inflated by leaks."
            )
        without = (
            f"{self.val_accuracy_without_leaks:.1%} without them"
            if self.val_accuracy_without_leaks is not None
            else "nothing left without them"
        )
        return (
            f"{len(self.leaked)} of {self.num_val} validation images are the same photo as a training image: "
            f"validation accuracy {self.val_accuracy:.1%} counts them, {without}."
        )


def leakage(feature_set, pairs: pd.DataFrame) -> Leakage:
    """Which validation images leak from training (same photo), and the accuracy they inflate."""
    from tlcore.insight.probes import fit_predict

    leaked = leaked_paths(pairs)
    predictions = fit_predict(
        feature_set.train_x, feature_set.train_y, feature_set.val_x, len(feature_set.classes)
    ).argmax(axis=1)
    correct = predictions == feature_set.val_y
    leaked_set = set(leaked)
    clean = np.array([item.path not in leaked_set for item in feature_set.val_items], dtype=bool)
    without = float(correct[clean].mean()) if clean.any() else None
    return Leakage(leaked, float(correct.mean()) if len(correct) else 0.0, without, len(correct))


def accuracy_without(paths: list[str], labels: np.ndarray, probabilities: np.ndarray, leaked: list[str]) -> dict:
    """A run's validation accuracy with and without the leaked images (the number they inflate).

    Args:
        paths: the run's validation images, in the order of ``probabilities``.
        labels: their true label ids.
        probabilities: the run's predicted class probabilities.
        leaked: validation paths that are the same photo as a training image.

    Returns:
        ``{"val_accuracy", "val_accuracy_without_leaks" (None if nothing is left), "leaked"}``.
    """
    correct = np.argmax(probabilities, axis=1) == np.asarray(labels)
    leaked_set = set(leaked)
    clean = np.array([path not in leaked_set for path in paths], dtype=bool)
    return {
        "val_accuracy": float(correct.mean()) if len(correct) else 0.0,
        "val_accuracy_without_leaks": float(correct[clean].mean()) if clean.any() else None,
        "leaked": int((~clean).sum()),
    }


NO_LEAKS = (
    "No validation image is the same photo as a training image: the validation accuracy is not inflated by leaks."
)


def leak_warning(numbers: dict, leaked: int) -> str:
    """Evaluate's warning about ``leaked`` validation images that are training photos (``numbers``:
    :func:`accuracy_without`): the accuracy with them, and without."""
    without = numbers["val_accuracy_without_leaks"]
    return (
        f"{plural(leaked, 'validation image')} {'is' if leaked == 1 else 'are'} the same photo as a training image. "
        f"Validation accuracy "
        f"{numbers['val_accuracy']:.1%} counts them; without them it is "
        + (f"{without:.1%}." if without is not None else "undefined (nothing left).")
    )


def measured_on(paths: list[str], labels: np.ndarray, probabilities: np.ndarray, leaked: list[str] | None) -> str:
    """What Evaluate's validation accuracy was measured on, in one sentence that is true.

    Args:
        paths: the run's validation images, in the order of ``probabilities``.
        labels: their true label ids.
        probabilities: the predictions the page shows (with test-time augmentation or not).
        leaked: validation paths found to be the same photo as a training image; ``None``
            while the leakage check has not run (then the sentence cannot promise "never
            trained on", only that the images were kept out of training).

    Returns:
        ``"5 of 80 validation images are copies of training photos: 93.8 % with them, 93.3 % without."``
        when leaks are known, else what the images are.
    """
    if leaked is None:
        return (
            "Measured on validation images kept out of training (whether some are copies of training photos: "
            "run the leakage check below)."
        )
    if not leaked:
        return "Measured on validation images the model never trained on (the leakage check found no copies)."
    numbers = accuracy_without(paths, labels, probabilities, leaked)
    without = numbers["val_accuracy_without_leaks"]
    return (
        f"{numbers['leaked']} of {len(paths)} validation images are copies of training photos: "
        f"{numbers['val_accuracy']:.1%} with them, "
        + (f"{without:.1%} without." if without is not None else "none left without them.")
    )


def pair_scores(kind: str, similarity: float, pixels: float) -> str:
    """A pair's two scores in words, the one that decided its kind first (pixels for the same photo).

    A pixel score of ``nan`` (a file could not be read again) reads "unreadable".
    """
    pixel_text = "unreadable" if np.isnan(pixels) else f"{pixels:.3f}"
    if kind == SAME:
        return f"pixels {pixel_text} · features {similarity:.3f}"
    return f"features {similarity:.3f} · pixels {pixel_text}"
