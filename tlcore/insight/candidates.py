"""How the leaderboard names its candidates, and which one is the Model page's setup.

A candidate is a string (the CLI's ``--backbone``): ``NAME`` (ImageNet weights),
``NAME:none``, ``NAME:WEIGHTS_FILE``, a model file or ``hub:SOURCE``. Files uploaded in
the studio live under the visitor's own folder (``sessions/<owner>/models/<digest>/``),
so a candidate is shown by its label: the file's own name, as the user uploaded it.
"""

from __future__ import annotations

from pathlib import Path

from tlcore.config import BACKBONE_FIELDS, FreezePlan, ModelConfig


def candidate_label(candidate: str) -> str:
    """What the user calls a candidate: a model file by its file name (not the folder it was
    uploaded to), weights from a file as ``NAME:FILE``, a local KerasHub folder by its name."""
    from tlcore.model.backbones import BACKBONES
    from tlcore.model.hub import is_hub_name

    if is_hub_name(candidate):
        source = candidate.split(":", 1)[1]
        return candidate if "://" in source or "/" not in source else f"hub:{Path(source).name}"
    name, _, weights = candidate.partition(":")
    if name in BACKBONES:
        return f"{name}:{Path(weights).name}" if weights not in ("", "imagenet", "none") else candidate
    return Path(candidate).name  # a model file's own name; a plain name stays as it is


def candidate_labels(candidates: list[str]) -> dict[str, str]:
    """``candidate → label`` (:func:`candidate_label`); two files with the same name get their
    folder's name (the first 8 characters) beside it, so the labels stay apart."""
    labels = {candidate: candidate_label(candidate) for candidate in candidates}
    repeated = {label for label in labels.values() if list(labels.values()).count(label) > 1}
    return {
        candidate: f"{label} ({Path(candidate).parent.name[:8]})" if label in repeated and label != candidate else label
        for candidate, label in labels.items()
    }


def current_candidate(model: ModelConfig) -> str:
    """The Model page's setup as a candidate name: ``NAME`` (ImageNet weights), ``NAME:none``,
    ``NAME:WEIGHTS_FILE``, a model file or a ``hub:`` source."""
    from tlcore.model.hub import is_hub_name

    if model.is_model_file or is_hub_name(model.backbone) or model.weights == "imagenet":
        return model.backbone
    return f"{model.backbone}:{model.weights or 'none'}"


def current_settings(model: ModelConfig) -> dict:
    """The ``ModelConfig`` fields the current setup is measured with (its own size, cut, preprocessing)."""
    return {name: getattr(model, name) for name in BACKBONE_FIELDS} | {"freeze": FreezePlan("all")}
