"""Predictions on new images with exactly the training preprocessing; Grad-CAM."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tlcore import data as data_lib
from tlcore.errors import StudioError, WeightsUnavailableError


def _input_size(model) -> int:
    return int(model.input_shape[1])


def load_batch(images: list, size: int) -> np.ndarray:
    """Decodes paths, bytes or PIL images exactly as training did (RGB, upright, resized)."""
    return np.stack([data_lib.decode_image(image, size) for image in images]).astype("float32")


def predict_top_k(model, classes: list[str], images: list, top_k: int = 3) -> list[list[dict]]:
    """Top-k classes for each image.

    Args:
        model: a classifier from a run (preprocessing is inside it).
        classes: its class labels.
        images: paths, bytes or PIL images.
        top_k: how many classes per image (capped at the number of classes).

    Returns:
        For each image, ``[{"label", "probability"}, ...]``, most likely first.

    Raises:
        StudioError: an image cannot be decoded; the message names it.
    """
    if top_k < 1:
        raise StudioError(f"`top_k` should be at least 1. Received: top_k={top_k}.")
    batch = load_batch(images, _input_size(model))
    probabilities = model.predict(batch, verbose=0)
    k = min(top_k, len(classes))
    results = []
    for row in probabilities:
        order = np.argsort(-row)[:k]
        results.append([{"label": classes[i], "probability": float(row[i])} for i in order])
    return results


def imagenet_top5(backbone_name: str, images: list) -> list[list[dict]]:
    """ImageNet top-5 from a registry backbone's ``include_top`` variant (before any training).

    Raises:
        StudioError: the backbone has no ImageNet top.
        WeightsUnavailableError: the ImageNet weights or class index cannot be downloaded.
    """
    from tlcore.backbones import load_imagenet_classifier

    classifier = load_imagenet_classifier(backbone_name)
    batch = classifier.preprocess_input(load_batch(images, _input_size(classifier.model)))
    probabilities = classifier.model.predict(batch, verbose=0)
    try:
        decoded = classifier.decode_predictions(probabilities, top=5)
    except Exception as error:  # the class index is a download too
        raise WeightsUnavailableError(
            f"Could not download the ImageNet class index ({error}). Put imagenet_class_index.json in "
            "the Keras models cache, or connect to the internet."
        ) from None
    return [[{"label": name, "probability": float(p)} for _, name, p in row] for row in decoded]


def grad_cam(model, image, class_index: int | None = None) -> tuple[np.ndarray, int]:
    """Grad-CAM heatmap of a classifier built by ``tlcore.model`` for one image.

    The gradient of the class score with respect to the backbone's output feature map,
    averaged over space, weights the feature channels; their positive sum is the map.

    Returns:
        ``(heatmap of shape (h, w) in 0..1 at feature-map resolution, class index used)``.
    """
    import tensorflow as tf

    from tlcore.model import backbone_part, head_part, preprocess_part

    batch = tf.constant(load_batch([image], _input_size(model)))
    features = backbone_part(model)(preprocess_part(model)(batch), training=False)
    with tf.GradientTape() as tape:
        tape.watch(features)
        probabilities = head_part(model)(features, training=False)
        if class_index is None:
            class_index = int(tf.argmax(probabilities[0]))
        score = probabilities[:, class_index]
    gradients = tape.gradient(score, features)
    weights = tf.reduce_mean(gradients, axis=(1, 2))
    cam = tf.nn.relu(tf.reduce_sum(features * weights[:, None, None, :], axis=-1))[0].numpy()
    peak = cam.max()
    return (cam / peak if peak > 0 else cam), class_index


def overlay_heatmap(image, heatmap: np.ndarray, size: int | None = None, alpha: float = 0.45) -> Image.Image:
    """The heatmap (red = important) blended over the upright RGB image.

    Args:
        image: a path, bytes or PIL image.
        heatmap: a map in 0..1 from :func:`grad_cam` (any resolution).
        size: the longest side of the result in pixels; ``None`` keeps the image's size.
            The image keeps its aspect ratio: the map, computed on the square model
            input, is stretched back to the image's shape.
        alpha: weight of the heatmap colours.
    """
    base = Image.fromarray(data_lib.decode_image(image))
    if size:
        scale = size / max(base.size)
        base = base.resize((max(1, round(base.width * scale)), max(1, round(base.height * scale))), Image.BILINEAR)
    heat = Image.fromarray(np.uint8(255 * heatmap)).resize(base.size, Image.BILINEAR)
    value = np.asarray(heat, dtype=np.float32) / 255.0
    colour = np.stack([value, np.zeros_like(value), 1.0 - value], axis=-1) * 255
    coloured = Image.fromarray(colour.astype(np.uint8))
    return Image.blend(base, coloured, alpha)
