"""What the Data page reports about a scanned dataset: the numbers training will use, the
skipped files, a few samples per class, and whether the validation folder's classes match.

Plain arithmetic on :class:`~tlcore.data.scan.DatasetScan` results, no TensorFlow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd

from tlcore.data.scan import MIN_CLASSES, DatasetScan, ImageItem


@dataclass(frozen=True)
class DatasetSummary:
    """The dataset as training will see it, label decisions applied.

    Attributes:
        images: usable images, training and validation folders together.
        classes: classes of the training folder that have images.
        excluded: images on disk that the visitor's label decisions set aside.
    """

    images: int
    classes: int
    excluded: int

    @property
    def trainable(self) -> bool:
        """Whether a classifier can be trained: at least two classes have images."""
        return self.classes >= MIN_CLASSES

    def describe(self) -> str:
        """``"398 images · 2 classes (3 excluded by your label decisions)"``."""
        aside = f" ({self.excluded} excluded by your label decisions)" if self.excluded else ""
        return f"{self.images} images · {self.classes} classes{aside}"


def class_count(scan: DatasetScan) -> int:
    """Classes of ``scan`` that have at least one usable image."""
    return sum(1 for count in scan.counts.values() if count)


def summarize(found: list[DatasetScan], kept: list[DatasetScan]) -> DatasetSummary:
    """The summary of a dataset before and after label decisions.

    Args:
        found: the scans as on disk, training folder first (then the validation folder, if any).
        kept: the same scans with the visitor's label decisions applied, in the same order.
    """
    images = sum(len(scan.items) for scan in kept)
    return DatasetSummary(images, class_count(kept[0]), sum(len(scan.items) for scan in found) - images)


def summarize_for_training(scan: DatasetScan, val_scan: DatasetScan | None, owner: str | None):
    """The Data page's numbers as training will use them: the visitor's label decisions applied.

    Returns:
        ``(summary, (scan, val_scan))``: :func:`summarize` of the scans, and the scans with the
        decisions applied (``val_scan`` stays ``None`` without a validation folder).
    """
    from tlcore.insight.overlay import apply_stored_overlay

    found = [scan] + ([val_scan] if val_scan else [])
    kept = [apply_stored_overlay(part, owner) for part in found]
    return summarize(found, kept), (kept[0], kept[1] if val_scan else None)


def skipped_table(scan: DatasetScan) -> pd.DataFrame:
    """The skipped files (``file`` relative to the scanned folder) and the reason for each."""
    return pd.DataFrame(
        {"file": [os.path.relpath(s.path, scan.root) for s in scan.skipped], "reason": [s.reason for s in scan.skipped]}
    )


def samples(scan: DatasetScan, per_class: int) -> dict[str, list[ImageItem]]:
    """Up to ``per_class`` images of each class that has any, in scan order."""
    picked = {label: [] for label in scan.classes}
    for item in scan.items:
        if len(picked[item.label]) < per_class:
            picked[item.label].append(item)
    return {label: items for label, items in picked.items() if items}


def class_mismatch(train: DatasetScan, val: DatasetScan | None) -> str | None:
    """A warning when the validation folder's classes are not the training folder's, else ``None``."""
    if val is None or set(val.classes) == set(train.classes):
        return None
    return f"The validation folder's classes {val.classes} differ from the training classes {train.classes}."


def split_sizes(images: int, val_images: int | None, val_split: float) -> tuple[int, int]:
    """``(training, validation)`` images a run will use: a validation folder's own count, else
    ``val_split`` of the images set aside (about what the per-class split takes)."""
    if val_images is not None:
        return images, val_images
    held_out = round(images * val_split)
    return images - held_out, held_out


def run_image_counts(data, scan) -> tuple[int, int]:
    """:func:`split_sizes` of a :class:`~tlcore.config.DataConfig`: its folders' images as ``scan(source,
    skip_placeholders)`` finds them (a cached scan on a page), split as configured."""

    def count(source: str) -> int:
        return sum(scan(source, data.skip_placeholders).counts.values())

    return split_sizes(count(data.data_dir), count(data.val_dir) if data.val_dir else None, data.val_split)
