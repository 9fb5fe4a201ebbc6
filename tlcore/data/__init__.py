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

Nothing is imported here: each name is imported from the module that owns it
(``from tlcore.data.scan import scan_folder``), and importing the package does not
import TensorFlow.
"""
