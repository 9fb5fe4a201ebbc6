"""Predictions on new images with exactly the training preprocessing; Grad-CAM."""

from __future__ import annotations

import collections
import weakref

import numpy as np
from PIL import Image

from tlcore.caches import BoundedCache
from tlcore.data.images import decode_image
from tlcore.errors import StudioError, WeightsUnavailableError


def _input_size(model) -> int:
    return int(model.input_shape[1])


def load_batch(images: list, size: int) -> np.ndarray:
    """Decodes paths, bytes or PIL images exactly as training did (RGB, upright, resized)."""
    return np.stack([decode_image(image, size) for image in images]).astype("float32")


TTA_CHOICES = ("none", "flip")
# Compiled functions by (model id, name). A function never holds its model strongly (the
# forward pass reaches it through a weak reference), so a model dropped by its owner (the
# Predict page's model cache) is freed, and its functions leave the cache at the next call;
# the bound caps what models kept alive elsewhere can pin through their traced weights.
_COMPILED = BoundedCache("compiled predict functions", max_items=8)
# Ids of freed models. A finalizer only appends here: it may run inside the garbage
# collector while this thread holds the cache's lock, so it must not take it.
_FREED: collections.deque = collections.deque()


def compiled(model, name: str, build):
    """``build(model)`` once per model and name, kept while the model lives (within the cache's bound)."""
    _forget_freed()
    key = (id(model), name)
    entry = _COMPILED.get(key)
    if entry is not None and entry[0]() is model:
        return entry[1]
    weakref.finalize(model, _FREED.append, id(model))
    return _COMPILED.put(key, (weakref.ref(model), build(model)))[1]


def _forget_freed() -> None:
    freed = set()
    try:
        while True:
            freed.add(_FREED.popleft())
    except IndexError:  # empty (another thread may have taken the last one)
        pass
    if freed:
        _COMPILED.discard_where(lambda cached: cached[0] in freed)


def _forward(model):
    import tensorflow as tf

    size = _input_size(model)
    # Any batch size, one trace: a batch of uploads is one call.
    signature = [tf.TensorSpec((None, size, size, 3), tf.float32)]
    reference = weakref.ref(model)  # the cached function must not keep the model alive
    return tf.function(lambda images: reference()(images, training=False), input_signature=signature)


def predict_probabilities(model, batch: np.ndarray, tta: str = "none") -> np.ndarray:
    """Class probabilities of decoded images through the model's compiled forward pass.

    Args:
        model: a classifier (preprocessing inside).
        batch: float32 images ``(n, size, size, 3)`` as :func:`load_batch` makes them.
        tta: ``"flip"`` averages each image's probabilities with its mirror image's.
    """
    if tta not in TTA_CHOICES:
        raise StudioError(f"`tta` should be one of {list(TTA_CHOICES)}. Received: tta={tta!r}.")
    forward = compiled(model, "forward", _forward)
    if tta == "flip":  # one call for both views
        both = np.asarray(forward(np.concatenate([batch, batch[:, :, ::-1]])))
        return (both[: len(batch)] + both[len(batch) :]) / 2
    return np.asarray(forward(batch))


def predict_paths(model, paths: list[str], tta: str = "none", batch_size: int = 32) -> np.ndarray:
    """Class probabilities of image files, a batch at a time (e.g. a run's validation images again, with TTA).

    Raises:
        StudioError: a file cannot be decoded (the message names it), or a bad ``tta``.
    """
    size = _input_size(model)
    parts = [
        predict_probabilities(model, load_batch(paths[start : start + batch_size], size), tta)
        for start in range(0, len(paths), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, int(model.output_shape[-1])), np.float32)


def predict_top_k(
    model, classes: list[str], images: list, top_k: int = 3, *, tta: str = "none", temperature: float | None = None
) -> list[list[dict]]:
    """Top-k classes for each image.

    Args:
        model: a classifier from a run (preprocessing is inside it).
        classes: its class labels.
        images: paths, bytes or PIL images (all predicted in one call).
        top_k: how many classes per image (capped at the number of classes).
        tta: ``"flip"`` averages over the image and its horizontal mirror.
        temperature: a calibration temperature fitted on validation (see
            :mod:`tlcore.insight.calibration`); ``None`` keeps the model's probabilities.

    Returns:
        For each image, ``[{"label", "probability"}, ...]``, most likely first.

    Raises:
        StudioError: an image cannot be decoded (the message names it), or a bad ``top_k``/``tta``.
    """
    if top_k < 1:
        raise StudioError(f"`top_k` should be at least 1. Received: top_k={top_k}.")
    batch = load_batch(images, _input_size(model))
    probabilities = predict_probabilities(model, batch, tta)
    if temperature is not None:
        from tlcore.insight.calibration import apply_temperature

        probabilities = apply_temperature(probabilities, temperature)
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
    from tlcore.model.backbones import load_imagenet_classifier

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


def _grad_cam_function(model):
    import tensorflow as tf

    from tlcore.model.classifier import backbone_part, head_part, preprocess_part

    size = _input_size(model)
    backbone, head, preprocess = backbone_part(model), head_part(model), preprocess_part(model)
    signature = [tf.TensorSpec((1, size, size, 3), tf.float32), tf.TensorSpec((), tf.int32)]

    @tf.function(input_signature=signature)
    def heatmap(image, class_index):
        features = backbone(preprocess(image), training=False)
        with tf.GradientTape() as tape:
            tape.watch(features)
            probabilities = head(features, training=False)
            # class_index -1: the predicted class
            chosen = tf.where(class_index < 0, tf.argmax(probabilities[0], output_type=tf.int32), class_index)
            score = probabilities[:, chosen]
        gradients = tape.gradient(score, features)
        weights = tf.reduce_mean(gradients, axis=(1, 2))
        return tf.nn.relu(tf.reduce_sum(features * weights[:, None, None, :], axis=-1))[0], chosen

    return heatmap


def grad_cam(model, image, class_index: int | None = None) -> tuple[np.ndarray, int]:
    """Grad-CAM heatmap of a classifier built by ``tlcore.model.classifier`` for one image.

    The gradient of the class score with respect to the backbone's output feature map,
    averaged over space, weights the feature channels; their positive sum is the map.
    The computation is compiled once per model.

    Returns:
        ``(heatmap of shape (h, w) in 0..1 at feature-map resolution, class index used)``.

    Raises:
        StudioError: the backbone's output is one vector (a transformer's class token),
            so there is no spatial map to weight.
    """
    from tlcore.model.classifier import backbone_part

    height, width = tuple(backbone_part(model).output.shape[1:3])
    if (height, width) == (1, 1):
        raise StudioError(
            "Grad-CAM is not available for this model: its backbone gives one feature vector per image (a "
            "transformer's class token or pooled output, or a 1x1 feature map), not a map of where in the photo "
            "it looked. The prediction itself is unaffected."
        )
    heatmap = compiled(model, "grad_cam", _grad_cam_function)
    cam, chosen = heatmap(load_batch([image], _input_size(model)), -1 if class_index is None else int(class_index))
    cam = np.asarray(cam)
    peak = cam.max()
    return (cam / peak if peak > 0 else cam), int(chosen)


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
    base = Image.fromarray(decode_image(image))
    if size:
        scale = size / max(base.size)
        base = base.resize((max(1, round(base.width * scale)), max(1, round(base.height * scale))), Image.BILINEAR)
    heat = Image.fromarray(np.uint8(255 * heatmap)).resize(base.size, Image.BILINEAR)
    value = np.asarray(heat, dtype=np.float32) / 255.0
    colour = np.stack([value, np.zeros_like(value), 1.0 - value], axis=-1) * 255
    coloured = Image.fromarray(colour.astype(np.uint8))
    return Image.blend(base, coloured, alpha)
