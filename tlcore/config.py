"""Run settings as dataclasses, with validation and a JSON round-trip.

A run is fully described by its :class:`RunConfig`: the CLI and the dashboard build
the same object, it is saved as ``config.json`` in the run folder, and loading it
back gives an equal object.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

POOLING_CHOICES = ("avg", "max", "flatten")
OPTIMIZER_CHOICES = ("adam", "sgd", "rmsprop", "adamw")
FREEZE_MODES = ("all", "none", "from", "top", "layers")
BATCH_SIZE_CHOICES = (4, 8, 16, 32, 64, 128)
LEARNING_RATE_CHOICES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
FINE_TUNE_LEARNING_RATE_CHOICES = (1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3)
# How the fine-tune learning rate moves over phase 2: held, cosine down to 0, or fastai's
# one-cycle (a warm-up over the first 30 % from rate/25 to the rate, then cosine down).
FINE_TUNE_SCHEDULES = ("constant", "cosine", "one-cycle")
FINE_TUNE_RATE_DECAY_CHOICES = (0.3, 0.5, 0.7, 1.0)
# Augmentation of training images: none, a random horizontal flip only (an image's two
# versions can each be computed once, so cached paths still apply), or the full set of
# random flips, rotations, zooms and contrast (every epoch sees new images: the full path).
AUGMENT_CHOICES = ("off", "flip", "full")  # the Train page's steps; any value in [0.01, 1] is valid
# Folder names that say which split a folder is, not which dataset: named with their parent.
SPLIT_FOLDER_NAMES = ("train", "training", "val", "valid", "validation", "test", "images", "data")
# What determines a loaded backbone; the head and the freeze plan are applied on top.
BACKBONE_FIELDS = ("backbone", "weights", "cut_layer", "preprocess", "image_size")


def nearest_choice(value: float, choices: tuple) -> float:
    """The choice closest to ``value`` (a slider of fixed steps shows a saved value this way)."""
    return min(choices, key=lambda choice: abs(choice - value))


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` should be one of {list(choices)}. Received: {name}={value!r}.")


def _check_range(name: str, value: Any, low: float, high: float, kind: type = float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise ValueError(f"`{name}` should be a {kind.__name__}. Received: {name}={value!r}.")
    if not low <= value <= high:
        raise ValueError(f"`{name}` should be between {low} and {high}. Received: {name}={value!r}.")


@dataclass
class FreezePlan:
    """Which backbone layers are trainable.

    Attributes:
        mode: ``"all"`` freezes every backbone layer (fixed feature extractor),
            ``"none"`` trains every layer, ``"from"`` trains layers from ``value`` (a
            layer name or a block label) to the end, ``"top"`` trains the last
            ``value`` layers, ``"layers"`` trains exactly the layers named in ``value``.
        value: the argument of the mode (see above); ``None`` for ``"all"``/``"none"``.
    """

    mode: str = "all"
    value: Any = None

    def validate(self) -> None:
        _check_choice("freeze mode", self.mode, FREEZE_MODES)
        if self.mode == "from" and not (isinstance(self.value, str) and self.value):
            raise ValueError(f"A freeze plan 'from' needs a layer name or block label. Received: value={self.value!r}.")
        if self.mode == "top":
            _check_range("top N trainable layers", self.value, 0, 100_000, int)
        if self.mode == "layers" and not isinstance(self.value, (list, tuple)):
            raise ValueError(f"A freeze plan 'layers' needs a list of layer names. Received: value={self.value!r}.")

    @classmethod
    def parse(cls, text: str | None) -> FreezePlan:
        """Parses ``"all"``, ``"none"``, ``"top:N"`` or a layer/block name (→ ``"from"``)."""
        if text is None or text in ("", "all"):
            return cls("all")
        if text == "none":
            return cls("none")
        if text.startswith("top:"):
            try:
                return cls("top", int(text[4:]))
            except ValueError:
                raise ValueError(f"Expected 'top:N' with an integer N. Received: {text!r}.") from None
        return cls("from", text)


@dataclass
class DataConfig:
    """Where the images come from and how they are split.

    Attributes:
        data_dir: a folder of class sub-folders, or a .zip of one, or the name of the
            embedded demo dataset (``"demo:shapes"``).
        val_dir: an explicit validation folder/zip; when set, ``val_split`` is unused.
        val_split: fraction of each class held out for validation.
        min_images_per_class: classes with fewer images are reported as too small.
        skip_placeholders: skip blank or placeholder graphics ("image not found").
        owner: the dashboard visitor who chose the data (an owner id): their label
            decisions apply and the folders are read through the data-roots fence
            (``tlcore.paths``). ``None`` (the CLI): the workspace's shared decisions, no fence.
    """

    data_dir: str = "demo:shapes"
    val_dir: str | None = None
    val_split: float = 0.2
    min_images_per_class: int = 5
    skip_placeholders: bool = True
    owner: str | None = None

    def validate(self) -> None:
        if not self.data_dir:
            raise ValueError("`data_dir` is empty: give a folder of class sub-folders or a .zip.")
        if self.val_dir is None:
            _check_range("val_split", self.val_split, 0.01, 0.9)
        _check_range("min_images_per_class", self.min_images_per_class, 1, 10_000, int)
        if self.owner is not None and not re.fullmatch(r"[0-9a-f]{8,64}", str(self.owner)):
            raise ValueError(f"`owner` should be an owner id of hex digits or None. Received: owner={self.owner!r}.")

    def describe(self) -> str:
        """The dataset in words: "demo: shapes", or the folder name and how validation is made."""
        if self.data_dir == "demo:shapes":
            return "demo: shapes (generated offline)"
        path = Path(self.data_dir)
        name = path.name or str(self.data_dir)
        if name.lower() in SPLIT_FOLDER_NAMES and path.parent.name:  # "train" alone names no dataset
            name = f"{path.parent.name}/{name}"
        if self.val_dir:
            return f"{name} (validation folder: {Path(self.val_dir).name})"
        return f"{name} ({self.val_split:.0%} held out for validation)"


@dataclass
class ModelConfig:
    """The classifier: backbone, weights, input size, head and freeze plan.

    Attributes:
        backbone: a registry name (see ``tlcore.model.backbones.BACKBONES``) or the path of
            a Keras model file (.keras/.h5) to use as the backbone.
        weights: ``"imagenet"``, ``"none"`` (random init) or a local weights file;
            ignored when ``backbone`` is a model file.
        cut_layer: for a model file, the layer whose output is the feature map;
            ``None`` picks the last layer with a 4-D output.
        preprocess: the ``keras.applications`` preprocessing by name; ``None`` uses
            the backbone's own.
        image_size: input height and width; ``None`` uses the backbone's default.
        pooling: ``"avg"``, ``"max"`` or ``"flatten"`` on the feature map.
        hidden_units: size of an optional hidden dense layer in the head (0 = none).
        dropout_rate: dropout before the classification layer.
        freeze: which backbone layers train in the first phase.
    """

    backbone: str = "MobileNetV2"
    weights: str = "imagenet"
    cut_layer: str | None = None
    preprocess: str | None = None
    image_size: int | None = None
    pooling: str = "avg"
    hidden_units: int = 0
    dropout_rate: float = 0.2
    freeze: FreezePlan = field(default_factory=FreezePlan)

    def validate(self) -> None:
        if not self.backbone:
            raise ValueError("`backbone` is empty: give a registry name or a model file.")
        _check_choice("pooling", self.pooling, POOLING_CHOICES)
        _check_range("hidden_units", self.hidden_units, 0, 8192, int)
        _check_range("dropout_rate", self.dropout_rate, 0.0, 0.95)
        if self.image_size is not None:
            _check_range("image_size", self.image_size, 32, 1024, int)
        self.freeze.validate()

    @property
    def is_model_file(self) -> bool:
        """True when ``backbone`` is the path of the user's own Keras model file."""
        from tlcore.model.files import is_model_file_name

        return is_model_file_name(self.backbone)

    def backbone_key(self) -> str:
        """The settings that determine the loaded backbone, as JSON (head and freeze plan left out).

        Two configs with the same key load the same backbone, so a page can cache it by key.
        """
        return json.dumps({name: getattr(self, name) for name in BACKBONE_FIELDS}, sort_keys=True)

    @classmethod
    def from_backbone_key(cls, key: str) -> ModelConfig:
        return cls(**{name: value for name, value in json.loads(key).items() if name in BACKBONE_FIELDS})


@dataclass
class TrainConfig:
    """How the two training phases run.

    Attributes:
        epochs: epochs of the first phase (head, with the freeze plan).
        batch_size: images per step.
        learning_rate: learning rate of the first phase.
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` (momentum 0.9) or ``"rmsprop"``.
        augment: ``"off"``, ``"flip"`` (a random horizontal flip per image and epoch:
            fine-tuning still trains on activations cached below the cut, one entry per
            image and flip) or ``"full"`` (random flip, rotation, zoom and contrast: every
            phase pushes the images through the backbone). ``True``/``False`` (configs
            saved before the choice existed) read as ``"full"``/``"off"``.
        early_stopping_patience: epochs without a better ``val_loss`` before stopping;
            40 epochs with patience 10 were the most accurate head defaults over two
            real sets and 5 seeds (bench/accuracy_study.py; 10 epochs cost 0.4-1.3 points);
            0 disables early stopping (best weights are restored either way).
        fine_tune_epochs: epochs of the second phase; 0 skips fine-tuning.
        fine_tune_learning_rate: its learning rate (of the head and the top unfrozen
            block, see ``fine_tune_rate_decay``); ``None`` = ``learning_rate / 10``
            (1e-4 for Adam's 1e-3). 1e-5 (the keras-io guide's rate), 3e-5, 5e-5 and a
            cosine schedule did not beat it (bench/finetune.py, README "Fine-tuning").
        fine_tune_schedule: ``"constant"``, ``"cosine"`` or ``"one-cycle"`` (see
            ``FINE_TUNE_SCHEDULES``).
        fine_tune_rate_decay: discriminative learning rates: each unfrozen block gets
            this times the rate of the block above it (the head and the top block get
            the full rate); 1.0 = one rate for every unfrozen layer. Default 0.5: over
            5 seeds on two real sets from two depths, the only setting measured at least
            as accurate as the plain Keras fine-tune in all four (one rate: 3 of 4).
        unfreeze_from: layer name or block label from which the backbone trains in the
            fine-tune phase; ``None`` unfreezes the last block.
        feature_cache: allow the frozen-backbone fast path (features computed once
            and kept on disk).
        seed: seeds the split, the weights initialisation, shuffling and augmentation.
    """

    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    augment: str = "off"
    early_stopping_patience: int = 10
    fine_tune_epochs: int = 0
    fine_tune_learning_rate: float | None = None
    fine_tune_schedule: str = "constant"
    fine_tune_rate_decay: float = 0.5
    unfreeze_from: str | None = None
    feature_cache: bool = True
    seed: int = 42

    def __post_init__(self) -> None:
        if isinstance(self.augment, bool):  # configs saved when augmentation was a switch
            self.augment = "full" if self.augment else "off"

    def validate(self) -> None:
        _check_range("epochs", self.epochs, 0, 10_000, int)
        _check_range("fine_tune_epochs", self.fine_tune_epochs, 0, 10_000, int)
        if self.epochs + self.fine_tune_epochs == 0:
            raise ValueError("Nothing to train: `epochs` and `fine_tune_epochs` are both 0.")
        _check_range("batch_size", self.batch_size, 1, 4096, int)
        _check_range("learning_rate", self.learning_rate, 1e-8, 10.0)
        if self.fine_tune_learning_rate is not None:
            _check_range("fine_tune_learning_rate", self.fine_tune_learning_rate, 1e-10, 10.0)
        _check_choice("optimizer", self.optimizer, OPTIMIZER_CHOICES)
        _check_choice("augment", self.augment, AUGMENT_CHOICES)
        _check_choice("fine_tune_schedule", self.fine_tune_schedule, FINE_TUNE_SCHEDULES)
        _check_range("fine_tune_rate_decay", self.fine_tune_rate_decay, 0.01, 1.0)
        _check_range("early_stopping_patience", self.early_stopping_patience, 0, 10_000, int)
        _check_range("seed", self.seed, 0, 2**31 - 1, int)

    @property
    def total_epochs(self) -> int:
        """Epochs planned over both phases (early stopping may end sooner)."""
        return self.epochs + self.fine_tune_epochs

    @property
    def augmented(self) -> bool:
        """True when training images change from epoch to epoch (flip only or full)."""
        return self.augment != "off"

    @property
    def effective_fine_tune_learning_rate(self) -> float:
        """The fine-tune learning rate: explicit, or 10x lower than the head's."""
        if self.fine_tune_learning_rate is not None:
            return self.fine_tune_learning_rate
        return self.learning_rate / 10


@dataclass
class RunConfig:
    """Everything that determines a training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> RunConfig:
        """Checks every setting; raises ``ValueError`` naming the first bad one."""
        self.data.validate()
        self.model.validate()
        self.train.validate()
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict) -> RunConfig:
        model = dict(raw.get("model", {}))
        model["freeze"] = _build(FreezePlan, model.get("freeze", {}))
        return cls(
            data=_build(DataConfig, raw.get("data", {})),
            model=_build(ModelConfig, model),
            train=_build(TrainConfig, raw.get("train", {})),
        )

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        return cls.from_json(Path(path).read_text())


def _build(kind: type, raw: Any) -> Any:
    if isinstance(raw, kind):
        return raw
    if not isinstance(raw, dict):
        raise ValueError(f"Expected a JSON object for {kind.__name__}. Received: {raw!r}.")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"Unknown {kind.__name__} settings {unknown}. Known settings: {sorted(known)}.")
    return kind(**raw)
