"""Which backbone for these images? A leaderboard measured on the user's own data.

ImageNet accuracy predicts transfer only on average (Kornblith et al., "Do Better
ImageNet Models Transfer Better?"), so each candidate is ranked here on the user's
photos: its features are extracted once, through the same on-disk cache training
uses (a later training or a second comparison reads them back), and the default head
is trained on them over K folds and/or S seeds. Speed is measured on this machine.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tlcore.config import FreezePlan, ModelConfig, RunConfig
from tlcore.errors import StudioError, first_line
from tlcore.insight.candidates import candidate_labels, current_candidate, current_settings
from tlcore.insight.paired_noise import paired_lead
from tlcore.jobs import ProgressLog

LEADERBOARD_COLUMNS = [
    "backbone",
    "accuracy_mean",
    "accuracy_sd",
    "loss_mean",
    "images_per_second",
    "latency_ms",
    "params",
    "size_mb",
    "input_size",
    "pareto",
    "error",
]
SPEED_BATCH = 16  # images per timed batch: enough to amortise a call, small enough for a CPU


@dataclass
class CandidateResult:
    """One leaderboard row (the CLI's JSON keys, plus the scores behind the mean).

    Attributes:
        backbone: the candidate as given (``"MobileNetV2:none"``, a model file path).
        accuracy_mean: validation accuracy of the default head, mean over folds × seeds.
        accuracy_sd: its sample standard deviation (0 with a single score).
        loss_mean: mean validation loss.
        images_per_second: preprocess + backbone throughput on a batch, this machine.
        latency_ms: one image through preprocess + backbone, median of a few calls.
        params: backbone parameters.
        size_mb: the model file's size, or float32 weights for a registry backbone.
        input_size: input height and width in pixels.
        error: why the candidate could not be measured (the other fields are then empty).
        scores: every fold/seed accuracy, fold by fold (the seeds of a fold together).
        settings: the ``ModelConfig`` fields "use this backbone" sets.
        pareto: on the accuracy/latency Pareto front.
        val_sizes: validation images of each fold.
        train_sizes: training images of each fold.
    """

    backbone: str
    accuracy_mean: float | None = None
    accuracy_sd: float | None = None
    loss_mean: float | None = None
    images_per_second: float | None = None
    latency_ms: float | None = None
    params: int | None = None
    size_mb: float | None = None
    input_size: int | None = None
    error: str | None = None
    scores: list[float] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    pareto: bool = False
    val_sizes: list[int] = field(default_factory=list)
    train_sizes: list[int] = field(default_factory=list)


@dataclass
class Leaderboard:
    """A finished comparison.

    Attributes:
        candidates: one row per candidate, best first; failed ones last with their reason.
        seconds: wall time of the whole comparison.
        folds: folds per seed (1 = the dataset's own train/validation split).
        seeds: head seeds per fold.
        stopped: a stop request ended it early (finished candidates are kept).
    """

    candidates: list[CandidateResult]
    seconds: float
    folds: int
    seeds: int
    stopped: bool = False

    @property
    def ranked(self) -> list[CandidateResult]:
        return [row for row in self.candidates if row.error is None]

    @property
    def best(self) -> str | None:
        return self.ranked[0].backbone if self.ranked else None

    def labels(self) -> dict[str, str]:
        """Each candidate's name as the user knows it (a model file by its own name)."""
        return candidate_labels([row.backbone for row in self.candidates])

    def table(self) -> pd.DataFrame:
        """One row per candidate (``LEADERBOARD_COLUMNS``), best first, each named by its label.

        A model file is named by its file name, never by the folder it was uploaded to.
        """
        labels = self.labels()
        rows = []
        for row in self.candidates:
            error = row.error.replace(row.backbone, labels[row.backbone]) if row.error else row.error
            rows.append(asdict(row) | {"backbone": labels[row.backbone], "error": error})
        return pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS)

    def verdict(self) -> str:
        """One sentence: does the leader lead beyond the noise of the folds and seeds?"""
        return ranking_verdict(self.ranked, self.seeds, self.labels())

    def to_dict(self) -> dict:
        """The CLI's JSON: ``{"candidates": [...], "best", "seconds", "folds", "seeds", "verdict"}``."""
        keys = LEADERBOARD_COLUMNS[:-2] + ["error"]
        rows = [{key: getattr(row, key) for key in keys} | {"pareto": row.pareto} for row in self.candidates]
        return {
            "candidates": rows,
            "best": self.best,
            "seconds": self.seconds,
            "folds": self.folds,
            "seeds": self.seeds,
            "verdict": self.verdict(),
        }


def ranking_verdict(ranked: list[CandidateResult], seeds: int = 1, labels: dict | None = None) -> str:
    """Says whether the first candidate's lead over the second is beyond noise.

    The two are paired fold by fold (same validation images, same head seeds), and the
    lead is judged by :func:`tlcore.insight.paired_noise.paired_lead`: the threshold comes
    from the per-fold differences and one validation image, never from a constant.
    With a single fold (the dataset's own split) the seeds are the paired units.
    """
    if not ranked:
        return "No candidate could be measured: see each one's reason."
    names = [(labels or {}).get(row.backbone, row.backbone) for row in ranked[:2]]
    if len(ranked) == 1:
        return f"Only {names[0]} could be measured."
    (first, second), leader, runner_up = names, ranked[0], ranked[1]
    if len(leader.scores) // max(seeds, 1) >= 2:  # folds: one unit per fold, their training sets overlap
        units, others, name = _paired_units(leader.scores, seeds), _paired_units(runner_up.scores, seeds), "folds"
        overlap = float(np.mean(leader.val_sizes) / np.mean(leader.train_sizes)) if leader.train_sizes else 0.0
    else:  # the dataset's own split: the seeds are the units
        units, others, name, overlap = leader.scores, runner_up.scores, "seeds", 0.0
    lead = paired_lead(units, others, min(leader.val_sizes or [1]), overlap)
    points, why = f"{lead.margin * 100:.1f}", lead.explained(name)
    if lead.outcome == "cannot tell":
        return (
            f"Cannot tell whether {first} leads {second} ({points} points apart): {why}. Use 3 or more folds or seeds."
        )
    if lead.outcome == "beyond":
        return f"{first} leads {second} by {points} accuracy points, beyond noise ({why})."
    return f"{first} and {second} are within noise: {points} points apart ({why}). Prefer the faster one."


def _paired_units(scores: list[float], seeds: int) -> list[float]:
    """One accuracy per fold: the mean over that fold's seeds (scores are fold by fold)."""
    seeds = max(seeds, 1)
    folds = len(scores) // seeds
    return np.asarray(scores[: folds * seeds], dtype=float).reshape(folds, seeds).mean(axis=1).tolist()


def candidate_settings(candidate: str) -> dict:
    """The ``ModelConfig`` fields of a candidate: ``NAME``, ``NAME:WEIGHTS`` or a model file.

    ``MobileNetV2:none`` is MobileNetV2 with random weights; a bare registry name gets
    its ImageNet weights when it has them (see
    :func:`tlcore.model.choices.backbone_settings`).

    Raises:
        StudioError: an unknown name, weights or a file name that is not a model file.
    """
    from tlcore.model.backbones import BACKBONES
    from tlcore.model.choices import backbone_settings
    from tlcore.model.hub import hub_source, is_hub_name

    if is_hub_name(candidate):  # a KerasHub preset: its own weights, size and image converter
        hub_source(candidate)
        fields = {"backbone": candidate, "weights": "none", "cut_layer": None, "preprocess": None, "image_size": None}
        return {**fields, "freeze": FreezePlan("all")}
    name, _, weights = candidate.partition(":")
    if name in BACKBONES and weights:
        if weights not in ("imagenet", "none") and not Path(weights).is_file():
            raise StudioError(
                f"Unknown weights for {name}. Expected imagenet, none or a weights file. Received: {candidate!r}."
            )
        return {**backbone_settings(name), "weights": weights, "freeze": FreezePlan("all")}
    return {**backbone_settings(candidate), "freeze": FreezePlan("all")}


def compare_backbones(
    config: RunConfig,
    candidates: list[str],
    *,
    folds: int = 5,
    seeds: int = 1,
    log: ProgressLog | None = None,
    stop: threading.Event | None = None,
    current: ModelConfig | None = None,
) -> Leaderboard:
    """Ranks ``candidates`` on ``config``'s data with the default head of ``config``.

    Args:
        config: data, head and training settings (its backbone is not used).
        candidates: registry names (``NAME`` or ``NAME:WEIGHTS``) or model files.
        folds: stratified folds over training + validation images; 1 keeps the
            dataset's own split.
        seeds: head seeds per fold.
        log: receives ``"extract"`` records and one ``"step"`` record per candidate
            (with ``eta_seconds``).
        stop: when set, the comparison ends after the current candidate.
        current: the Model page's setup: the candidate that is this setup
            (:func:`current_candidate`) is measured with its own input size, cut layer and
            preprocessing, not the defaults of its name.

    Returns:
        A :class:`Leaderboard`; candidates that failed are listed with their reason.

    Raises:
        ValueError: no candidate, a repeated one, or folds/seeds out of range.
    """
    _check_request(candidates, folds, seeds)
    from tlcore.data.pipeline import load_dataset

    log = log if log is not None else ProgressLog()
    started = time.perf_counter()
    dataset = load_dataset(config.data, seed=config.train.seed)
    rows: list[CandidateResult] = []
    for index, candidate in enumerate(candidates):
        if stop is not None and stop.is_set():
            break
        log.append(
            "step",
            step=index,
            steps=len(candidates),
            candidate=candidate,
            doing=candidate_labels(candidates)[candidate],  # its own name, never a server path
            eta_seconds=_eta(started, index, len(candidates)),
        )
        settings = current_settings(current) if current and candidate == current_candidate(current) else None
        rows.append(_measure(config, candidate, dataset, (folds, seeds), log, stop, settings))
    log.append("step", step=len(rows), steps=len(candidates), eta_seconds=0.0)
    stopped = stop is not None and stop.is_set()
    return Leaderboard(_ranked(rows), time.perf_counter() - started, folds, seeds, stopped)


def _check_request(candidates: list[str], folds: int, seeds: int) -> None:
    if not candidates:
        raise ValueError("Expected at least one backbone to compare. Received: none.")
    repeated = sorted({name for name in candidates if candidates.count(name) > 1})
    if repeated:
        raise ValueError(f"Expected each backbone once. Received twice: {repeated}.")
    if not 1 <= folds <= 20:
        raise ValueError(f"Expected folds between 1 and 20. Received: folds={folds}.")
    if not 1 <= seeds <= 20:
        raise ValueError(f"Expected seeds between 1 and 20. Received: seeds={seeds}.")


def _eta(started: float, done: int, total: int) -> float | None:
    """Seconds left, from the candidates measured so far (None before the first)."""
    if done == 0:
        return None
    return (time.perf_counter() - started) / done * (total - done)


def _measure(config: RunConfig, candidate: str, dataset, repeats, log, stop, settings=None) -> CandidateResult:
    """Loads, extracts, scores and times one candidate; any failure becomes its ``error``.

    ``repeats``: ``(folds, seeds)``; ``settings``: its ``ModelConfig`` fields when not the
    defaults of its name (the current setup)."""
    from tlcore.insight.feature_set import dataset_features
    from tlcore.model.backbones import load_backbone

    row = CandidateResult(candidate)
    try:
        row.settings = settings or candidate_settings(candidate)
        trial = RunConfig.from_dict(config.to_dict())
        for name, value in row.settings.items():
            setattr(trial.model, name, value)
        backbone = load_backbone(trial.model, seed=config.train.seed)
        features = dataset_features(trial, log, backbone=backbone, dataset=dataset)
        row.scores, losses, row.val_sizes, row.train_sizes = _head_scores(features, trial, *repeats, stop)
        row.accuracy_mean = float(np.mean(row.scores))
        row.accuracy_sd = float(np.std(row.scores, ddof=1)) if len(row.scores) > 1 else 0.0
        row.loss_mean = float(np.mean(losses))
        row.images_per_second, row.latency_ms = _speed(backbone)
        row.params, row.input_size = int(backbone.model.count_params()), int(backbone.image_size)
        row.size_mb = _size_mb(candidate, row.params)
    except (StudioError, ValueError, OSError) as error:
        row.error = first_line(error)
    except Exception as error:  # noqa: BLE001 - one candidate's failure must not lose the others
        row.error = f"{type(error).__name__}: {first_line(error)}"
    return row


def _head_scores(features, config: RunConfig, folds: int, seeds: int, stop) -> tuple[list, list, list, list]:
    """Validation accuracy and loss of the default head on every fold × seed (fold by fold),
    and the validation and training images of each fold."""
    from dataclasses import replace

    from tlcore.training.head import head_settings, train_head

    base = head_settings(config.model, config.train)
    accuracies, losses, val_sizes, train_sizes = [], [], [], []
    for train, val in _splits(features, folds, config.train.seed):
        val_sizes.append(len(val[1]))
        train_sizes.append(len(train[1]))
        for offset in range(seeds):
            fit = train_head(train, val, len(features.classes), replace(base, seed=base.seed + offset), stop=stop)
            best = fit.history[fit.best_epoch - 1] if fit.best_epoch else fit.history[-1]
            accuracies.append(float(best["val_accuracy"]))
            losses.append(float(best["val_loss"]))
    return accuracies, losses, val_sizes, train_sizes


def _splits(features, folds: int, seed: int):
    """``(train, val)`` pairs of ``(x, y)``: the dataset's split, or stratified folds over all images."""
    if folds == 1:
        return [((features.train_x, features.train_y), (features.val_x, features.val_y))]
    from sklearn.model_selection import StratifiedKFold

    from tlcore.insight.probes import fold_count

    x, y = features.all_x, features.all_y
    splitter = StratifiedKFold(fold_count(y, folds), shuffle=True, random_state=seed)
    return [((x[train], y[train]), (x[test], y[test])) for train, test in splitter.split(x, y)]


def _speed(backbone) -> tuple[float, float]:
    """``(images per second on a batch, milliseconds for one image)`` of preprocess + backbone."""
    import tensorflow as tf

    from tlcore.insight.feature_set import feature_extractor

    extractor = feature_extractor(backbone)
    size = backbone.image_size
    forward = tf.function(
        lambda images: extractor(images, training=False),
        input_signature=[tf.TensorSpec((None, size, size, 3), tf.uint8)],
    )
    batch = np.random.default_rng(0).integers(0, 256, (SPEED_BATCH, size, size, 3), dtype=np.uint8)
    forward(batch[:1])  # traces once for every batch size
    batch_seconds = min(_timed(forward, batch) for _ in range(2))
    single = sorted(_timed(forward, batch[:1]) for _ in range(5))[2]
    return SPEED_BATCH / batch_seconds, single * 1000


def _timed(forward, images) -> float:
    started = time.perf_counter()
    forward(images).numpy()
    return time.perf_counter() - started


def _size_mb(candidate: str, params: int) -> float:
    """A model file's size on disk; float32 weights (4 bytes each) for a registry backbone."""
    path = Path(candidate)
    if path.is_file():
        return path.stat().st_size / 1e6
    return params * 4 / 1e6


def _ranked(rows: list[CandidateResult]) -> list[CandidateResult]:
    """Measured rows by accuracy (faster first on a tie), Pareto front marked; failures last."""
    measured = sorted((r for r in rows if r.error is None), key=lambda r: (-r.accuracy_mean, r.latency_ms))
    for row in measured:
        row.pareto = not any(_dominates(other, row) for other in measured)
    return measured + [r for r in rows if r.error is not None]


def _dominates(a: CandidateResult, b: CandidateResult) -> bool:
    """``a`` is at least as accurate and as fast as ``b``, and better in one."""
    no_worse = a.accuracy_mean >= b.accuracy_mean and a.latency_ms <= b.latency_ms
    better = a.accuracy_mean > b.accuracy_mean or a.latency_ms < b.latency_ms
    return no_worse and better and not math.isnan(a.accuracy_mean)


def candidate_choices(model: ModelConfig | None = None) -> list[str]:
    """What the leaderboard offers: the current setup first (whatever it is: a model file, weights
    from a file, a KerasHub folder), then every registry backbone with ImageNet weights (when it
    has them) and with random weights, and the KerasHub presets."""
    from tlcore.model.backbones import BACKBONES
    from tlcore.model.hub import HUB_PRESETS

    choices = []
    for spec in BACKBONES.values():
        choices += [spec.name] if spec.imagenet_weights else []
        choices.append(f"{spec.name}:none")
    choices += [f"hub:{preset}" for preset in HUB_PRESETS]
    if model is None:
        return choices
    current = current_candidate(model)
    return [current] + [choice for choice in choices if choice != current]
