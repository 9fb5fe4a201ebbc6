"""The model settings a user chooses from, and what a choice means in words.

Plain data and string formatting, no TensorFlow at import: the dashboard shows the
choices and a one-line summary of the current model before TensorFlow has loaded.
The parameter counts behind a summary come from :func:`tlcore.model.classifier.phase_plan`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tlcore.config import FINE_TUNE_SCHEDULES, FreezePlan, ModelConfig, TrainConfig
from tlcore.model.backbones import MODEL_FILE_DEFAULT_SIZE, BackboneSpec, get_spec
from tlcore.model.files import is_model_file_name
from tlcore.model.hub import hub_source, is_hub_name
from tlcore.model.preprocessing import PREPROCESSING
from tlcore.words import about_seconds

# Sizes of the optional hidden dense layer in the head (0 = no hidden layer).
HIDDEN_UNITS_CHOICES = (0, 64, 128, 256, 512)
# Input sizes offered; a backbone also accepts its own default (see image_size_choices).
IMAGE_SIZE_CHOICES = (32, 64, 96, 128, 160, 192, 224, 299)
WEIGHTS_LABELS = {
    "imagenet": "ImageNet (pretrained; downloaded once)",
    "none": "none (random: trains from scratch)",
    "file": "a weights file (.h5) you downloaded",
}


def image_size_choices(spec: BackboneSpec) -> list[int]:
    """The input sizes a registry backbone accepts, with its default among them."""
    return sorted({size for size in IMAGE_SIZE_CHOICES if size >= spec.min_size} | {spec.default_size})


def image_size_value(spec: BackboneSpec, current: int | None) -> int:
    """The size a registry backbone's size control shows: ``current`` when the backbone
    accepts it, else the backbone's default (a value left by another backbone does not stay)."""
    return current if current in image_size_choices(spec) else spec.default_size


def model_file_size_choices(own_size: int | None, current: int | None) -> list[int | None]:
    """The input sizes offered for a model file; ``None`` is "the model's own".

    A model built for one size takes only that one; a model that takes any size
    is offered every size in :data:`IMAGE_SIZE_CHOICES` (``None``: 224, the default).
    A ``current`` value not among them stays listed, so it shows and can be changed.

    Args:
        own_size: the input size the model file declares, ``None`` when it takes any.
        current: the model setting's ``image_size``.
    """
    sizes = [None] + ([] if own_size else list(IMAGE_SIZE_CHOICES))
    return sizes + ([current] if current not in sizes else [])


def model_file_size_label(size: int | None, own_size: int | None) -> str:
    """How a model-file size choice reads: ``"the model's own (160 px)"``, ``"224 (default)"``, ``"96"``."""
    if size is None:
        return f"the model's own ({own_size} px)" if own_size else f"{MODEL_FILE_DEFAULT_SIZE} (default)"
    return str(size)


def preprocess_choices() -> list[str | None]:
    """The preprocessing a model file may expect: ``None`` (guessed from its layer names), then every named one."""
    return [None, *PREPROCESSING]


def preprocess_label(name: str | None) -> str:
    return "(guess from the layer names)" if name is None else name


def cut_layer_index(layers: list[str], cut_layer: str | None) -> int:
    """Where the cut-layer choice stands: at ``cut_layer``, else at the last layer (the whole model, no cut)."""
    return layers.index(cut_layer) if cut_layer in layers else len(layers) - 1


def cut_layer_setting(layers: list[str], chosen: str) -> str | None:
    """The ``cut_layer`` setting for a chosen layer: ``None`` for the last one (the whole model is the backbone)."""
    return None if chosen == layers[-1] else chosen


def weights_choice(weights: str) -> str:
    """Which of :func:`weights_choices` a ``weights`` setting is: ``"imagenet"``, ``"none"`` or ``"file"`` (a path)."""
    return weights if weights in ("imagenet", "none") else "file"


def weights_choices(spec: BackboneSpec, local_file: bool = False) -> list[str]:
    """``["imagenet", "none"]``, or ``["none"]`` for an architecture without ImageNet weights.

    Args:
        spec: the registry entry.
        local_file: also offer ``"file"`` (a downloaded copy of the ImageNet weights)
            where ImageNet weights exist.
    """
    if not spec.imagenet_weights:
        return ["none"]
    return ["imagenet", "none", "file"] if local_file else ["imagenet", "none"]


def backbone_settings(backbone: str) -> dict:
    """The model settings that follow from a backbone: set whenever the backbone changes.

    Input size, preprocessing, weights, cut layer and the first freeze plan depend on the
    model, so a value chosen for the previous one (VGG16's 224 px) must not stay for the
    next (a 160 px model file). A registry backbone gets its default input size and its
    ImageNet weights when it has them; a model file its own input size
    (``image_size=None``), the weights inside it and a preprocessing guessed from its
    layer names (``preprocess=None``).

    Returns:
        ``ModelConfig`` field values: ``backbone``, ``weights``, ``cut_layer``,
        ``preprocess``, ``image_size`` and ``freeze``.

    Raises:
        StudioError: ``backbone`` is neither a registry name nor a model file.
    """
    settings = {"backbone": backbone, "cut_layer": None, "preprocess": None}
    if is_hub_name(backbone):  # a KerasHub preset: its own weights, input size and image converter
        hub_source(backbone)
        return {**settings, "weights": "none", "image_size": None, "freeze": default_freeze_plan(True)}
    if is_model_file_name(backbone):
        return {**settings, "weights": "none", "image_size": None, "freeze": default_freeze_plan(True)}
    spec = get_spec(backbone)
    weights = weights_choices(spec)[0]
    return {
        **settings,
        "weights": weights,
        "image_size": spec.default_size,
        "freeze": default_freeze_plan(weights != "none"),
    }


def default_freeze_plan(pretrained: bool) -> FreezePlan:
    """Where a new backbone starts: pretrained → freeze all, random → train all.

    Pretrained features are worth keeping, so the first phase trains only the new head
    (a fixed feature extractor, and the fast cached-features path). Random features
    carry almost no information, so every layer has to train.
    """
    return FreezePlan("all" if pretrained else "none")


def describe_backbone(model_config: ModelConfig) -> str:
    """What the backbone is, in words.

    Examples: ``"MobileNetV2, ImageNet weights"``, ``"SmallCNN, random weights (trains
    from scratch)"``, ``"your model file dog_breed_mobilenetv2_160.h5 (pretrained
    weights inside)"``.
    """
    if model_config.is_model_file:
        cut = f", cut at {model_config.cut_layer}" if model_config.cut_layer else ""
        return f"your model file {Path(model_config.backbone).name} (pretrained weights inside{cut})"
    if is_hub_name(model_config.backbone):
        return f"KerasHub {model_config.backbone[4:]} (its own pretrained weights and image converter)"
    if model_config.weights == "imagenet":
        return f"{model_config.backbone}, ImageNet weights"
    if model_config.weights in ("none", "", None):
        return f"{model_config.backbone}, random weights (trains from scratch)"
    return f"{model_config.backbone}, weights from {Path(model_config.weights).name}"


def describe_freeze_plan(plan: FreezePlan) -> str:
    """What a freeze plan trains, as a sentence (``"unfrozen from block_16: …"``)."""
    if plan.mode == "all" or (plan.mode == "top" and not plan.value):
        return "all backbone layers frozen: only the new head trains"
    if plan.mode == "none":
        return "every backbone layer trains, with the new head"
    if plan.mode == "from":
        return f"unfrozen from {plan.value}: the backbone trains from there to its top, with the new head"
    if plan.mode == "top":
        return f"the top {plan.value} backbone layers with weights train, with the new head"
    return f"{_layer_list(plan.value)} train, with the new head"


def phase_one_title(plan: FreezePlan) -> str:
    """The Train page's heading of phase 1 (``"**Phase 1 · train the new head** (all backbone layers frozen…)"``)."""
    what = "train the new head" if plan.mode == "all" else "train"
    return f"**Phase 1 · {what}** ({describe_freeze_plan(plan)}; set on the Model page)"


def freeze_plan_label(plan: FreezePlan) -> str:
    """A few words for what trains: ``"head"``, ``"from block_16"``, ``"everything"``."""
    if plan.mode == "all" or (plan.mode == "top" and not plan.value):
        return "head"
    if plan.mode == "none":
        return "everything"
    if plan.mode == "from":
        return f"from {plan.value}"
    if plan.mode == "top":
        return f"top {plan.value} layers"
    return f"head + {len(plan.value)} chosen layers"


def _layer_list(names) -> str:
    names = list(names)
    if not names:
        return "no backbone layer (only the new head)"
    if len(names) <= 3:
        return f"backbone layers {', '.join(names)}"
    return f"{len(names)} chosen backbone layers ({', '.join(names[:2])}, …)"


@dataclass(frozen=True)
class PhasePlan:
    """What one training phase trains (see :func:`tlcore.model.classifier.phase_plan`).

    Attributes:
        number: 1 (the new head, with the Model page's freeze plan) or 2 (fine-tune).
        phase: its name in the progress log, ``"head"`` or ``"fine-tune"``.
        epochs: planned epochs; 0 means the phase is skipped.
        learning_rate: the phase's learning rate.
        freeze: the backbone freeze plan during the phase.
        trains: a few words for what trains (``"head"``, ``"from block_16"``).
        trainable_parameters: parameters the phase updates (head included).
    """

    number: int
    phase: str
    epochs: int
    learning_rate: float
    freeze: FreezePlan
    trains: str
    trainable_parameters: int

    @property
    def skipped(self) -> bool:
        return self.epochs == 0


def describe_phases(phases: list[PhasePlan]) -> str:
    """``"phase 1: head, 2,562 parameters · phase 2: from block_16, 881,602 parameters"``."""
    parts = []
    for plan in phases:
        if plan.skipped:
            parts.append(f"phase {plan.number}: skipped (0 epochs)")
        else:
            parts.append(f"phase {plan.number}: {plan.trains}, {plan.trainable_parameters:,} parameters")
    return " · ".join(parts)


def epoch_timing(measured: dict) -> dict:
    """What the phase table needs of :func:`tlcore.model.cut.phase_two_epoch_seconds`, as plain values.

    Returns:
        ``{"cached": seconds on cached activations or None, "full": seconds through the
        whole backbone, "reason": why the full path is used, "cut": the layer activations
        would be cached below, "uses_cut": whether these settings use the cache}``.
    """
    return {
        "cached": measured["cached"],
        "full": measured["full"],
        "reason": measured["cut"].reason,
        "cut": measured["possible_cut"].name,
        "uses_cut": measured["cut"].cached,
    }


def phase_rows(
    phases: list[PhasePlan], train_config: TrainConfig, timing: dict | None = None, head_seconds: float | None = None
) -> list[dict]:
    """The Train page's phase table: one row per phase, in words.

    Args:
        phases: the plan (:func:`tlcore.model.classifier.phase_plan`).
        train_config: the training settings (the fine-tune schedule and per-block rate decay).
        timing: a fine-tune epoch's estimate (:func:`epoch_timing`), or ``None`` for none.
        head_seconds: a phase-1 epoch as measured in an earlier run of the same setup
            (:func:`head_epoch_seconds`), or ``None``: the row then says when it will be known.
    """
    return [
        {
            "phase": f"{plan.number} · {plan.phase}" + ("" if plan.epochs else " (skipped: 0 epochs)"),
            "trains": plan.trains,
            "trainable parameters": f"{plan.trainable_parameters:,}",
            "epochs": plan.epochs,
            "learning rate": _rate_text(plan, train_config),
            "time per epoch": _time_text(plan, timing, head_seconds),
        }
        for plan in phases
    ]


def _rate_text(plan: PhasePlan, train_config: TrainConfig) -> str:
    text = f"{plan.learning_rate:g}"
    if plan.number == 1:
        return text
    if train_config.fine_tune_schedule != "constant":
        text += f", {train_config.fine_tune_schedule}"
    if train_config.fine_tune_rate_decay < 1:
        text += f"; each lower block ×{train_config.fine_tune_rate_decay:g}"
    return text


# The Train page's names and help for its settings.
AUGMENT_LABELS = {"off": "off", "flip": "flip only", "full": "full (flip, rotation, zoom, contrast)"}
TRAIN_HELP = {
    "augment": "Flip only: a random horizontal flip (fine-tuning stays on cached activations). Full: flip, "
    "rotation, zoom and contrast (slower: every image through the whole backbone every epoch).",
    "schedule": "How the fine-tune rate moves: held, cosine down to 0, or a warm-up then cosine (one-cycle).",
    "decay": "Discriminative rates: each unfrozen block trains at this times the rate of the block above it.",
    "start": "Set the options and press **Start training**. The chart updates live; you can leave this page and come back.",
}


def schedule_index(schedule: str) -> int:
    """Where the Train page's schedule box starts: the setup's schedule, "constant" for one it does not know."""
    return FINE_TUNE_SCHEDULES.index(schedule if schedule in FINE_TUNE_SCHEDULES else "constant")


def rate_decay_label(decay: float) -> str:
    """A per-block rate factor in words: "same rate" or "×0.5"."""
    return "same rate" if decay == 1 else f"×{decay:g}"


def full_augment_note(timing: dict | None, augment: str) -> str | None:
    """Why full augmentation makes fine-tuning slower, with this server's two epoch times (``None``: nothing to say).

    Args:
        timing: a fine-tune epoch's estimate (:func:`epoch_timing`), or ``None``.
        augment: the augmentation setting (``"full"`` is the one that changes every image).
    """
    if timing is None or augment != "full" or timing["cached"] is None:
        return None
    return (
        "Full augmentation (random flips, rotations, zooms, contrast) changes every image every epoch, so fine-tuning "
        f"pushes the images through the whole backbone: {about_seconds(timing['full'])} an epoch here instead of "
        f"{about_seconds(timing['cached'])} from activations cached below {timing['cut']} (measured on this server)."
    )


def head_epoch_seconds(runs: list, config) -> float | None:
    """A phase-1 epoch's seconds, measured in the latest of ``runs`` trained like ``config``.

    Like: same backbone setting, dataset, batch size, augmentation and freeze plan (what
    decides whether phase 1 runs on cached features). The median of its timed head epochs
    after the first (which also traces the model).

    Args:
        runs: finished runs, newest first (:class:`~tlcore.runs.store.Run`).
        config: the :class:`~tlcore.config.RunConfig` about to be trained.
    """

    def like(run) -> bool:
        other = run.config
        return other is not None and (
            other.model.backbone_key(),
            other.model.freeze,
            other.data.data_dir,
            other.train.batch_size,
            other.train.augment,
        ) == (config.model.backbone_key(), config.model.freeze, config.data.data_dir, config.train.batch_size,
              config.train.augment)  # fmt: skip

    for run in filter(like, runs):
        history = run.history
        if "seconds" not in history or "phase" not in history:
            continue
        timed = sorted(history.loc[history["phase"] == "head", "seconds"].dropna().tolist()[1:])
        if timed:
            return float(timed[len(timed) // 2])
    return None


def _time_text(plan: PhasePlan, timing: dict | None, head_seconds: float | None = None) -> str:
    if plan.skipped:
        return ""
    if plan.number == 1:
        return (
            f"{about_seconds(head_seconds)} (your last run like this)"
            if head_seconds is not None
            else "after the first run"
        )
    if timing is None:
        return ""
    if timing["uses_cut"]:
        cached, full = about_seconds(timing["cached"]), about_seconds(timing["full"], digits=0)
        return f"{cached} (cached below {timing['cut']}; full path {full})"
    return f"{about_seconds(timing['full'])} (full path: {timing['reason']})"
