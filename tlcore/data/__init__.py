"""Datasets: folders, zips, per-class uploads, the offline demo set, and tf.data pipelines.

A dataset is a folder with one sub-folder per class. Zips and uploads are turned into
such a folder first (zips with a safe extractor), so everything downstream sees one
shape. Files that cannot be used are skipped and listed with the reason; nothing is
dropped silently.

Modules, one role each:

- ``images``: decode one image (EXIF, any mode to RGB, draft JPEGs), the size checks,
  the placeholder-graphic test.
- ``scan``: scan a folder of class sub-folders; counts, warnings, skipped files.
- ``archives``: the zip guards, alone.
- ``sources``: folder, uploads, downloads, and ``resolve_source`` that turns any of
  them into a dataset folder.
- ``demo``: the generated offline demo dataset.
- ``pipeline``: split, ``load_dataset``, tf.data and augmentation (the only part that
  imports TensorFlow, lazily).
- ``common``: limits, ignored names, ``build_once``.

Importing this package does not import TensorFlow.
"""

from tlcore.data.archives import extract_zip
from tlcore.data.common import DEFAULT_LIMITS, IGNORED_NAMES, IMAGE_SUFFIXES, Limits, build_once, is_ignored
from tlcore.data.demo import DEMO_CLASSES, DEMO_DATASET, draw_shape, make_demo_dataset
from tlcore.data.images import (
    DECODE_VERSION,
    check_image_file,
    decode_image,
    graphic_reason,
    is_placeholder,
    open_image,
    placeholder_reason,
    thumbnail,
    to_rgb,
)
from tlcore.data.pipeline import (
    Dataset,
    activation_dataset,
    augmentation_layers,
    decode_all,
    image_dataset,
    iter_decoded,
    load_dataset,
    split_items,
)
from tlcore.data.scan import DatasetScan, ImageItem, Skipped, dataset_warnings, find_dataset_root, scan_folder
from tlcore.data.sources import (
    DOWNLOADABLE,
    DownloadableDataset,
    download_dataset,
    resolve_source,
    safe_name,
    save_class_images,
    save_upload,
)
from tlcore.paths import cache_dir, workspace_dir

_is_ignored = is_ignored  # the name before the split into a package

__all__ = [
    "DECODE_VERSION",
    "DEFAULT_LIMITS",
    "DEMO_CLASSES",
    "DEMO_DATASET",
    "DOWNLOADABLE",
    "IGNORED_NAMES",
    "IMAGE_SUFFIXES",
    "Dataset",
    "DatasetScan",
    "DownloadableDataset",
    "ImageItem",
    "Limits",
    "Skipped",
    "activation_dataset",
    "augmentation_layers",
    "build_once",
    "cache_dir",
    "check_image_file",
    "dataset_warnings",
    "decode_all",
    "decode_image",
    "download_dataset",
    "draw_shape",
    "extract_zip",
    "find_dataset_root",
    "image_dataset",
    "is_ignored",
    "graphic_reason",
    "is_placeholder",
    "iter_decoded",
    "load_dataset",
    "make_demo_dataset",
    "open_image",
    "placeholder_reason",
    "resolve_source",
    "safe_name",
    "save_class_images",
    "save_upload",
    "scan_folder",
    "split_items",
    "thumbnail",
    "to_rgb",
    "workspace_dir",
]
