"""The dataset's pooled backbone features: where every analysis starts.

The training job keeps the frozen backbone's feature maps on disk
(:func:`tlcore.training.features.cached_features`); this reads them (or computes them once)
and pools them the way the head would (average, max or flatten), so an analysis is a
matter of small NumPy arrays.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from tlcore.caches import BoundedCache


@dataclass
class FeatureSet:
    """Pooled features of a dataset's training and validation images.

    Attributes:
        train_x: ``(n_train, d)`` float32 features.
        train_y: ``(n_train,)`` label ids.
        val_x: ``(n_val, d)`` features.
        val_y: ``(n_val,)`` label ids.
        classes: class names; index = label id.
        train_items: the training images (``path``, ``label``, ``digest``), in row order.
        val_items: the validation images, in row order.
        seconds: how long getting the features took.
        from_cache: True when they came from the on-disk cache.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    classes: list[str]
    train_items: list = field(default_factory=list)
    val_items: list = field(default_factory=list)
    seconds: float = 0.0
    from_cache: bool = False

    @property
    def all_x(self) -> np.ndarray:
        return np.concatenate([self.train_x, self.val_x])

    @property
    def all_y(self) -> np.ndarray:
        return np.concatenate([self.train_y, self.val_y])

    @property
    def all_items(self) -> list:
        return list(self.train_items) + list(self.val_items)

    @property
    def splits(self) -> list[str]:
        """``"train"`` or ``"val"`` for every row of :attr:`all_x`."""
        return ["train"] * len(self.train_items) + ["val"] * len(self.val_items)


def pool(feature_maps: np.ndarray, pooling: str = "avg") -> np.ndarray:
    """Pools ``(n, h, w, c)`` feature maps to ``(n, d)`` vectors as the head's first layer does.

    Already pooled ``(n, d)`` features are returned as they are.
    """
    if feature_maps.ndim == 2:
        return feature_maps.astype(np.float32, copy=False)
    if pooling == "avg":
        return feature_maps.mean(axis=(1, 2)).astype(np.float32)
    if pooling == "max":
        return feature_maps.max(axis=(1, 2)).astype(np.float32)
    if pooling == "flatten":
        return feature_maps.reshape(len(feature_maps), -1).astype(np.float32)
    raise ValueError(f"Unknown `pooling`. Expected one of ['avg', 'max', 'flatten']. Received: pooling={pooling!r}.")


def dataset_features(config, log=None, *, backbone=None, dataset=None) -> FeatureSet:
    """Features of the dataset ``config`` describes, through the frozen backbone it names.

    Args:
        config: a :class:`~tlcore.config.RunConfig` (data, model; ``train.seed`` picks the split).
        log: a :class:`~tlcore.jobs.ProgressLog` for extraction progress, or ``None``.
        backbone: a loaded :class:`~tlcore.model.backbones.Backbone` (the dashboard caches one);
            loaded from ``config.model`` otherwise.
        dataset: a loaded :class:`~tlcore.data.pipeline.Dataset`; loaded from ``config.data`` otherwise
            (with the user's relabel/exclude overlay applied).

    Returns:
        A :class:`FeatureSet`, rows in the dataset's item order.
    """
    from tlcore.data.pipeline import load_dataset
    from tlcore.model.backbones import load_backbone
    from tlcore.training.features import cached_features

    started = time.perf_counter()
    dataset = dataset or load_dataset(config.data, seed=config.train.seed)
    backbone = backbone or load_backbone(config.model, seed=config.train.seed)
    extractor = feature_extractor(backbone)
    feature_maps, from_cache = cached_features(extractor, backbone, dataset.train + dataset.val, log)
    pooled = pool(feature_maps, config.model.pooling)
    split = len(dataset.train)
    return FeatureSet(
        pooled[:split],
        dataset.label_ids(dataset.train),
        pooled[split:],
        dataset.label_ids(dataset.val),
        list(dataset.classes),
        list(dataset.train),
        list(dataset.val),
        time.perf_counter() - started,
        from_cache,
    )


def feature_extractor(backbone):
    """input → preprocess → backbone, the part of a classifier that ``cached_features`` runs.

    Unlike ``build_classifier`` this applies no freeze plan, so a backbone the dashboard
    shares between pages and sessions keeps its ``trainable`` flags.
    """
    import keras

    from tlcore.model.classifier import PREPROCESS_NAME
    from tlcore.model.saved_layer import Preprocess

    size = backbone.image_size
    inputs = keras.Input((size, size, 3), name="image")
    outputs = backbone.model(Preprocess(backbone.preprocess, name=PREPROCESS_NAME)(inputs))
    return keras.Model(inputs, outputs, name="feature_extractor")


# Under an error that stops the features (a dataset that does not load, a backbone that does not build).
FIX_HINT = "Fix the dataset on the Data page or the backbone on the Model page."
# The dataset's pooled features per setup, folders and label decisions: one bounded cache, so an
# analysis job's thread uses what the page computed before, and one copy is kept.
_FEATURE_SETS = BoundedCache(
    "analysis features", max_items=4, max_bytes=1 << 30, sizer=lambda found: found.train_x.nbytes + found.val_x.nbytes
)


def features_key(config) -> str:
    """What the features of a :class:`~tlcore.config.RunConfig` depend on, as JSON: the data and model
    settings and the split's seed (a new learning rate keeps them)."""
    return json.dumps({"data": asdict(config.data), "model": asdict(config.model), "seed": config.train.seed})


def features_for(config, folders: list, backbone, log=None) -> FeatureSet:
    """:func:`dataset_features`, kept per :func:`features_key`, the dataset ``folders``' stamps and the
    owner's label decisions about them (a changed folder or a new decision computes them again)."""
    from tlcore.data.scan import folder_stamp
    from tlcore.insight.overlay import stamp

    stamps = (tuple(folder_stamp(root) for root in filter(None, folders)), stamp(folders, config.data.owner))
    return _FEATURE_SETS.get_or_create(
        (features_key(config), stamps), lambda: dataset_features(config, log, backbone=backbone)
    )
