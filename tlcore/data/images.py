"""Decoding one image, and deciding whether a file is a usable photo.

Every image is decoded by Pillow: EXIF orientation applied, converted to RGB whatever
the mode (palette, RGBA, CMYK, 16-bit, grayscale), big JPEGs decoded at a reduced scale
(draft mode, at least twice the target size) instead of full size. Sizes are checked from
the header, before decoding.

Resizing samples bilinearly at the output pixels' centres without antialiasing, which is
what ``tf.image.resize`` (and so ``keras.utils.image_dataset_from_directory``) does and
what pretrained Keras models were fed. Measured in bench/accuracy_study.py (5 seeds, two
sets): Pillow's antialiased resize cost 1.5-2 points of validation accuracy against it.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from tlcore.data.common import DEFAULT_LIMITS, IMAGE_FORMATS, Limits, short_reason
from tlcore.errors import StudioError
from tlcore.words import plural

# Bump when decoding changes: it is part of the feature-cache key.
DECODE_VERSION = "pillow-draft2x-bilinear-sampled-v2"
DRAFT_FACTOR = 2
ImageFile.LOAD_TRUNCATED_IMAGES = False
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def open_image(source: str | Path | bytes, limits: Limits = DEFAULT_LIMITS) -> Image.Image:
    """Opens an image (path or bytes) lazily, after checking its size against ``limits``.

    Raises:
        StudioError: not an image, or too large; the message says which.
    """
    try:
        if isinstance(source, (bytes, bytearray)):
            if len(source) == 0:
                raise StudioError("the file is empty (0 bytes)")
            image = Image.open(io.BytesIO(source))
        else:
            size = os.path.getsize(source)
            if size == 0:
                raise StudioError("the file is empty (0 bytes)")
            if size > limits.max_file_bytes:
                raise StudioError(
                    f"the file is {size / 2**20:.0f} MB, over the {limits.max_file_bytes / 2**20:.0f} MB limit"
                )
            image = Image.open(source)
    except StudioError:
        raise
    except Image.DecompressionBombError:
        raise StudioError(
            f"the image is larger than {limits.max_pixels:,} pixels, too large to open safely: "
            "resize it (a few thousand pixels a side is plenty) and try again"
        ) from None
    except (OSError, ValueError, SyntaxError) as error:
        raise StudioError(_decode_reason(error, "not a readable image")) from None
    width, height = image.size
    if width * height > limits.max_pixels:
        raise StudioError(
            f"the image is {width}x{height} = {width * height:,} pixels, over the {limits.max_pixels:,}-pixel limit: "
            "resize it (a few thousand pixels a side is plenty) and try again"
        )
    if width < 1 or height < 1:
        raise StudioError("the image has no pixels")
    return image


def decode_image(
    source: str | Path | bytes | Image.Image, size: int | None = None, limits: Limits = DEFAULT_LIMITS
) -> np.ndarray:
    """Decodes an image to an RGB ``uint8`` array, upright, optionally resized.

    Args:
        source: a path, the file's bytes, or a PIL image.
        size: resize to ``size x size`` (see :func:`resize`); ``None`` keeps the size.
        limits: pixel and file-size bounds.

    Returns:
        An array of shape ``(height, width, 3)``.

    Raises:
        StudioError: the image cannot be decoded; the message says why.
    """
    image = source if isinstance(source, Image.Image) else open_image(source, limits)
    try:
        if size and image.format == "JPEG":
            # Decode at the smallest 1/2, 1/4 or 1/8 scale still >= twice the target: most of the
            # cost of a big JPEG is avoided. At >= 1x the DCT scaling smooths like an antialiased
            # resize and cost 1 point of accuracy (bench/accuracy_study.py); at >= 2x, none.
            image.draft("RGB", (DRAFT_FACTOR * size, DRAFT_FACTOR * size))
        image = ImageOps.exif_transpose(image)
        image = to_rgb(image)
        if size:
            image = resize(image, size)
        return np.asarray(image, dtype=np.uint8)
    except StudioError:
        raise
    except _DECODE_ERRORS as error:
        raise StudioError(_decode_reason(error, "the image could not be decoded")) from None


def resize(image: Image.Image, size: int) -> Image.Image:
    """``size x size``, sampled bilinearly at the output pixels' centres, without antialiasing.

    Equal to ``tf.image.resize(..., "bilinear", antialias=False)`` to within rounding to
    8 bits (``Image.resize`` would widen its filter when shrinking, i.e. antialias).
    """
    scale = (image.width / size, 0, 0, 0, image.height / size, 0)
    return image.transform((size, size), Image.AFFINE, scale, resample=Image.BILINEAR)


def _decode_reason(error: BaseException, prefix: str) -> str:
    if isinstance(error, UnidentifiedImageError):  # its message only names a Python object
        return (
            f"{prefix}: its contents are not {IMAGE_FORMATS}, whatever its name says (a text or other file "
            "renamed?). Open it in an image viewer, save it as JPEG or PNG and add that file instead"
        )
    if "truncated" in str(error).lower():
        return f"the file is truncated, an incomplete download or copy? ({short_reason(error)})"
    return f"{prefix} ({short_reason(error)})"


def thumbnail(source: str | Path | bytes, max_side: int = 160) -> np.ndarray:
    """A small upright RGB preview (for galleries), decoded exactly like training images."""
    image = open_image(source)
    if image.format == "JPEG":
        image.draft("RGB", (max_side, max_side))
    image = to_rgb(ImageOps.exif_transpose(image))
    image.thumbnail((max_side, max_side))
    return np.asarray(image, dtype=np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Converts any Pillow mode to RGB: alpha composited on white, 16-bit scaled to 8-bit."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        high = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        gray = np.clip(values / high * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def check_image_file(path: str | Path, limits: Limits = DEFAULT_LIMITS, skip_placeholders: bool = True) -> str:
    """Fully decodes an image file cheaply (JPEG at 1/8 scale) and returns its sha256.

    Args:
        path: the image file.
        limits: size bounds.
        skip_placeholders: refuse blank or placeholder graphics ("image not found"
            pictures that scraped photo sets are full of): few colours, one dominant.

    Raises:
        StudioError: the file is not a usable image; the message says why.
    """
    data = Path(path).read_bytes() if os.path.getsize(path) <= limits.max_file_bytes else None
    if data is None:
        open_image(path, limits)  # raises the size message
    image = open_image(data, limits)
    if min(image.size) < limits.min_side:
        raise StudioError(f"the image is only {image.size[0]}x{image.size[1]} pixels, too small to classify")
    _load_small(image)
    if skip_placeholders and (reason := placeholder_reason(image)):
        raise StudioError(
            f"{reason}; to keep it, untick 'Skip blank or placeholder images' under Options on the Data page (CLI: --keep-placeholders)"
        )
    return hashlib.sha256(data).hexdigest()


def _load_small(image: Image.Image) -> Image.Image:
    # JPEG at 1/8 scale: every block is still decoded (so corruption shows), at a
    # fraction of the cost.
    try:
        if image.format == "JPEG":
            image.draft("RGB", (1, 1))
        image.load()
    except _DECODE_ERRORS as error:
        raise StudioError(_decode_reason(error, "the image could not be decoded")) from None
    return image


def placeholder_reason(image: str | Path | bytes | Image.Image, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """Why an image looks like a blank or placeholder graphic, or ``None`` for a photo.

    The detector the dataset scan uses: a photo, even on a white background, has
    thousands of colours (sensor and JPEG noise); a blank or "image not found" graphic
    has at most 256, one of them covering 80 % or more of it.

    Args:
        image: a PIL image, an image file's bytes (an upload), or a path.
        limits: size bounds for bytes and paths.

    Returns:
        e.g. ``"looks like a blank or placeholder graphic, not a photo (2 colours, 93% one colour)"``,
        or ``None``.

    Raises:
        StudioError: bytes or a path that are not a usable image.
    """
    if not isinstance(image, Image.Image):
        image = _load_small(open_image(image, limits))
    try:
        colours = image.getcolors(256)
    except ValueError:  # modes Pillow cannot count (16-bit, float): not a palette graphic
        return None
    if colours is None:
        return None
    dominant = max(count for count, _ in colours) / (image.size[0] * image.size[1])
    if dominant < 0.8:
        return None
    return f"looks like a blank or placeholder graphic, not a photo ({plural(len(colours), 'colour')}, {dominant:.0%} one colour)"


def graphic_reason(image: str | Path | bytes | Image.Image, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """Why an image looks like a drawing, flat graphic or placeholder rather than a photo; ``None`` for a photo.

    :func:`placeholder_reason` (the dataset scan's detector) first; then the same colour
    count with a wider net: a photo has thousands of colours, a flat graphic (a logo, a
    clip-art disk on a transparent background) at most 256, a few of which cover 80 % or
    more of it. A palette photo (a GIF) spreads its 256 colours and is not flagged.

    Raises:
        StudioError: bytes or a path that are not a usable image.
    """
    if not isinstance(image, Image.Image):
        image = _load_small(open_image(image, limits))
    reason = placeholder_reason(image, limits)
    if reason:
        return reason
    try:
        colours = image.getcolors(256)
    except ValueError:
        return None
    if colours is None:
        return None
    top = sum(count for count, _ in sorted(colours, reverse=True)[:_FLAT_COLOURS]) / (image.size[0] * image.size[1])
    if top < 0.8:
        return None
    return (
        f"looks like a drawing or flat graphic, not a photo ({plural(len(colours), 'colour')}, "
        f"{top:.0%} in {plural(min(len(colours), _FLAT_COLOURS), 'colour')})"
    )


# A flat graphic's few main colours (shape, outline, background, shadow) cover most of it.
_FLAT_COLOURS = 4


def is_placeholder(image: str | Path | bytes | Image.Image, limits: Limits = DEFAULT_LIMITS) -> bool:
    """Whether an image looks like a blank or placeholder graphic (see ``placeholder_reason``)."""
    return placeholder_reason(image, limits) is not None
