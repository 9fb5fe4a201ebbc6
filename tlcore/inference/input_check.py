"""Is a new image like the ones the model was trained on? The not-a-photo check for Predict.

A classifier answers with a confident class whatever it is shown: an orange disk drawn
on a transparent background comes out "cats 91 %". Two checks, each measured against the
run's own training images, say so instead:

- pixels: a drawing, flat graphic or placeholder (the dataset scan's detector,
  :func:`tlcore.data.images.graphic_reason`) when the training images were photos; an image
  smaller than every training image.
- features: the image's distance to its nearest training image in the backbone's
  feature space (cosine distance of the spatially averaged feature map), against the
  training images' own nearest-neighbour distances. An image farther from every
  training image than 99 % of training images are from their nearest neighbour is
  "unlike anything the model was trained on": one training-like image in a hundred is
  flagged by construction, whatever the dataset.

At training time :func:`write_reference` keeps what the checks need in the run folder
(``input_reference.npz``: a sample of at most 256 training features in float16, under
1 MB for 2,048 channels); :func:`input_warnings` reads it at prediction time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tlcore.data.images import graphic_reason, open_image
from tlcore.errors import StudioError
from tlcore.words import plural

REFERENCE_FILE = "input_reference.npz"
SAMPLE_SIZE = 256  # training features kept: nearest-neighbour distances need a few hundred
PIXEL_SAMPLE = 32  # training images whose colours are counted (decoding costs ~3 ms each)
QUANTILE = 0.99  # the share of training images within the "familiar" distance
EMBED_BATCH = 32


@dataclass(frozen=True)
class InputReference:
    """What the checks compare a new image with, measured on the training images.

    Attributes:
        features: L2-normalised features of a sample of training images ``(n, channels)``.
        threshold: the :data:`QUANTILE` of their leave-one-out nearest-neighbour distances.
        min_side: the smallest side, in pixels, of the sampled training images.
        flat_fraction: the share of sampled training images that look like flat graphics.
    """

    features: np.ndarray
    threshold: float
    min_side: int
    flat_fraction: float


def reference_from_features(features: np.ndarray, min_side: int, flat_fraction: float) -> InputReference:
    """An :class:`InputReference` from training features (one row per image, at least 2)."""
    if len(features) < 2:
        raise StudioError(f"Expected at least 2 training images to compare with. Received: {len(features)}.")
    unit = _normalise(features)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)  # leave one out: an image is not its own neighbour
    nearest = 1.0 - similarity.max(axis=1)
    return InputReference(unit, float(np.quantile(nearest, QUANTILE)), int(min_side), float(flat_fraction))


def write_reference(trainer) -> Path | None:
    """Measures the training images for the input checks and saves them in the run folder.

    Called by the training's finish step. Features already extracted for the head are
    reused when they still describe the backbone (head trained on cached features, no
    fine-tuning, average pooling); otherwise a sample of training images goes through the
    final model once.

    Args:
        trainer: a :class:`tlcore.training.trainer.Trainer` after training.

    Returns:
        The file written, or ``None`` without a run folder or with fewer than 2 training images.
    """
    items = trainer.dataset.train
    if trainer.run_dir is None or len(items) < 2:
        return None
    try:
        return _write_reference(trainer, items)
    except (StudioError, OSError, ValueError):
        return None  # Predict then checks pixels only: never fail a finished training for it


def _write_reference(trainer, items: list) -> Path:
    rng = np.random.default_rng(trainer.settings.seed)
    chosen = np.sort(rng.choice(len(items), min(SAMPLE_SIZE, len(items)), replace=False))
    features = _training_features(trainer, chosen)
    sample = [items[i].path for i in chosen]
    sides = [min(open_image(path).size) for path in sample]
    flat = [_is_flat(path) for path in sample[:PIXEL_SAMPLE]]
    reference = reference_from_features(features, min(sides), float(np.mean(flat)))
    path = Path(trainer.run_dir) / REFERENCE_FILE
    temporary = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(
        temporary,
        features=reference.features.astype(np.float16),
        threshold=reference.threshold,
        min_side=reference.min_side,
        flat_fraction=reference.flat_fraction,
    )
    temporary.replace(path)
    return path


def _training_features(trainer, chosen: np.ndarray) -> np.ndarray:
    from tlcore.model import classifier as model_lib

    pool = model_lib.head_part(trainer.classifier).get_layer("pool")
    if trainer.head_probabilities is not None and type(pool).__name__ == "GlobalAveragePooling2D":
        from tlcore.training.features import pooled_features

        # The same items as the head's training call: its in-memory result, no extraction.
        items = trainer.dataset.train + trainer.dataset.val
        pooled, _ = pooled_features(trainer.classifier, trainer.backbone, items)
        return np.asarray(pooled)[chosen]
    return embed(trainer.classifier, [trainer.dataset.train[i].path for i in chosen])


def _is_flat(path) -> bool:
    try:
        return graphic_reason(path) is not None
    except StudioError:
        return False


def load_reference(run_dir: str | Path) -> InputReference | None:
    """The run's input reference; ``None`` for a run trained before it was kept (or unreadable)."""
    try:
        with np.load(Path(run_dir) / REFERENCE_FILE) as stored:
            return InputReference(
                stored["features"].astype(np.float32),
                float(stored["threshold"]),
                int(stored["min_side"]),
                float(stored["flat_fraction"]),
            )
    except (OSError, KeyError, ValueError):
        return None


def embed(model, images: list) -> np.ndarray:
    """Spatially averaged backbone features of a classifier for images (paths, bytes or PIL)."""
    from tlcore.inference.predict import compiled, load_batch

    forward = compiled(model, "average_features", _average_features)
    size = int(model.input_shape[1])
    parts = [
        np.asarray(forward(load_batch(images[start : start + EMBED_BATCH], size)))
        for start in range(0, len(images), EMBED_BATCH)
    ]
    return np.concatenate(parts)


def _average_features(model):
    import tensorflow as tf

    from tlcore.model import classifier as model_lib

    preprocess, backbone = model_lib.preprocess_part(model), model_lib.backbone_part(model)
    size = int(model.input_shape[1])
    signature = [tf.TensorSpec((None, size, size, 3), tf.float32)]
    return tf.function(
        lambda images: tf.reduce_mean(backbone(preprocess(images), training=False), axis=(1, 2)),
        input_signature=signature,
    )


def input_warnings(model, reference: InputReference | None, images: list) -> list[str | None]:
    """For each image, why its prediction means little, or ``None`` when it looks like the training images.

    Args:
        model: the run's classifier.
        reference: the run's :func:`load_reference`; ``None`` (an older run) checks pixels only.
        images: bytes, paths or PIL images, as predicted.

    Returns:
        One sentence or ``None`` per image.

    Raises:
        StudioError: an image cannot be decoded.
    """
    reasons = [pixel_reason(image, reference) for image in images]
    if reference is None:
        return reasons
    distances = nearest_distances(reference, embed(model, images))
    for index, distance in enumerate(distances):
        if reasons[index] is None and distance > reference.threshold:
            reasons[index] = (
                f"is unlike every training image (distance {distance:.2f} to the nearest; {QUANTILE:.0%} of "
                f"training images are within {reference.threshold:.2f} of theirs): the model has not seen "
                "anything like it"
            )
    return reasons


def warning_sentence(name: str, reason: str) -> str:
    """Predict's warning for an input unlike the training images (``reason`` from :func:`input_warnings`).

    The note that the Data page skips blank and placeholder files belongs only to a
    placeholder: after "unlike every training image" it was an unrelated sentence.
    """
    sentence = f"{name} {reason}: its class below is a guess, not an answer."
    if "placeholder" in reason:
        sentence += " The Data page skips blank and placeholder files when training."
    return sentence


def nearest_distances(reference: InputReference, features: np.ndarray) -> np.ndarray:
    """Cosine distance from each feature row to its nearest training feature."""
    return 1.0 - (_normalise(features) @ reference.features.T).max(axis=1)


def pixel_reason(image, reference: InputReference | None) -> str | None:
    """Why an image is no photo of what the run was trained on, from its pixels alone (no model):
    smaller than every training image, or a blank/placeholder (or, for a run trained on photos, a
    drawing). ``None`` when its pixels look like a photo. The check Predict and the audience page share.

    Raises:
        StudioError: an image that cannot be decoded.
    """
    opened = open_image(image) if not hasattr(image, "size") else image
    side = min(opened.size)
    if reference is not None and side < reference.min_side:
        return (
            f"is only {plural(side, 'pixel')} on its short side, smaller than every training image "
            f"(the smallest had {reference.min_side})"
        )
    reason = graphic_reason(image)
    if reason and (reference is None or reference.flat_fraction == 0 or "placeholder" in reason):
        return reason  # a drawing is only odd when the training images were photos
    return None


def _normalise(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
