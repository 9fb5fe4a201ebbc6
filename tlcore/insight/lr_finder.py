"""Learning-rate finder with fastai's ``lr_find`` semantics.

The learning rate grows exponentially from ``start_lr`` to ``end_lr`` over ``num_it``
training steps; the loss is smoothed (exponential moving average, beta 0.98, debiased);
the sweep stops when the smoothed loss exceeds 4x the best so far (divergence); the
model's weights and optimizer state are restored afterwards. The suggestion is
fastai's "valley": the longest stretch over which the loss keeps falling (longest
decreasing subsequence), at half-way down it (fastai's index: start + 1/3 + 1/6 of
its length) — steep enough to learn fast, far enough from the cliff. As in fastai
the first tenth and the last 5 points are left out of the suggestion.

A suggestion is made only when the sweep can support one, otherwise none, with the
reason (seen before: "3e-06" from 15 noisy fine-tuning steps, where 1e-4 worked):

- **Enough steps**: at least ``MIN_STEPS`` = 1 / (1 − smoothing) = 50 recorded steps. The
  smoothed loss is an average over about that many steps; over fewer it is the average of
  the whole sweep so far, not the loss at a learning rate.
- **A clear fall**: over the points the valley is read from, the smoothed loss must fall
  by more than ``NOISE_MULTIPLE`` standard errors of a smoothed point: the raw loss's
  step-to-step noise (robust standard deviation of its differences / √2) over the square
  root of the number of steps the smoothing averages at the first kept point (its
  effective sample size). A sweep whose loss only wanders has no valley.

On cached features a sweep costs about a second. Fine-tuning needs images through the
backbone at every step, so that sweep is capped in steps (``FINE_TUNE_STEPS``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from tlcore.config import FINE_TUNE_LEARNING_RATE_CHOICES, LEARNING_RATE_CHOICES, nearest_choice

START_LR, END_LR, NUM_IT = 1e-7, 10.0, 100
FINE_TUNE_STEPS = 75
# Fine-tuning rates live between 1e-6 and 1e-3: a sweep over 1e-6..1e-1 spends its steps there
# (15 a decade), and reaches the 50 steps a suggestion needs before the loss diverges (near 1e-2).
FINE_TUNE_START_LR, FINE_TUNE_END_LR = 1e-6, 1e-1
SMOOTHING = 0.98
DIVERGENCE = 4.0
MIN_STEPS = round(1 / (1 - SMOOTHING))  # the smoothing's window: 50 steps
NOISE_MULTIPLE = 2.0
# The setting a sweep's suggestion is for, per phase, and the values that setting offers.
PHASE_SETTINGS = {
    "head": ("learning_rate", LEARNING_RATE_CHOICES),
    "fine-tune": ("fine_tune_learning_rate", FINE_TUNE_LEARNING_RATE_CHOICES),
}


@dataclass
class LRFinderResult:
    """A learning-rate sweep and its suggestion (or why there is none).

    Attributes:
        suggested_lr: the "valley" learning rate, or ``None`` when the sweep cannot support one.
        method: how it was picked (``"valley"``).
        points: ``(learning rate, smoothed loss)`` per step.
        diverged: True when the sweep stopped because the loss blew up.
        phase: ``"head"`` (cached features) or ``"fine-tune"`` (images).
        seconds: wall time of the sweep.
        reason: why there is no suggestion ("" when there is one).
    """

    suggested_lr: float | None
    method: str = "valley"
    points: list[tuple[float, float]] = field(default_factory=list)
    diverged: bool = False
    phase: str = "head"
    seconds: float = 0.0
    reason: str = ""

    def setting(self) -> tuple[str, float] | None:
        """``(TrainConfig field, the offered value nearest the suggestion)`` for its phase; ``None`` without one."""
        if self.suggested_lr is None:
            return None
        field_name, choices = PHASE_SETTINGS[self.phase]
        return field_name, nearest_choice(self.suggested_lr, choices)

    def to_dict(self) -> dict:
        return {
            "suggested_lr": self.suggested_lr,
            "method": self.method,
            "points": [[lr, loss] for lr, loss in self.points],
            "diverged": self.diverged,
            "phase": self.phase,
            "steps": len(self.points),
            "seconds": round(self.seconds, 3),
            "reason": self.reason,
        }


def valley(lrs: np.ndarray, losses: np.ndarray) -> int:
    """fastai's "valley": the index half-way down the longest decreasing run of the loss curve (as fastai computes it)."""
    count = len(losses)
    run_length = [1] * count
    max_start, max_end = 0, 0
    for i in range(1, count):
        for j in range(i):
            if losses[i] < losses[j] and run_length[i] < run_length[j] + 1:
                run_length[i] = run_length[j] + 1
            if run_length[max_end] < run_length[i]:
                max_end = i
                max_start = max_end - run_length[max_end]
    sections = (max_end - max_start) / 3
    return max_start + int(sections) + int(sections / 2)


def suggest(lrs: list[float], losses: list[float], num_it: int, raw: list[float] | None = None):
    """The valley learning rate of a sweep, on the points fastai uses (first tenth and last 5 left out).

    Args:
        lrs: the sweep's learning rates.
        losses: its smoothed losses.
        num_it: the steps the sweep was planned for.
        raw: its unsmoothed losses (for the noise); ``None`` skips the clear-fall check.

    Returns:
        ``(learning rate, "")``, or ``(None, reason)`` when the sweep cannot support a
        suggestion (see the module docstring).
    """
    if len(lrs) < MIN_STEPS:
        return None, (
            f"the sweep recorded {len(lrs)} steps"
            + (" before the loss diverged" if len(lrs) < num_it else "")
            + f"; a suggestion needs at least {MIN_STEPS} (the loss is smoothed over about {MIN_STEPS} steps, so "
            "fewer only show its running average). Run more steps, or start from a lower learning rate."
        )
    lrs_kept, losses_kept = np.asarray(lrs[num_it // 10 : -5]), np.asarray(losses[num_it // 10 : -5])
    finite = np.isfinite(losses_kept)
    if not finite.all():
        first_bad = int(np.argmin(finite))
        lrs_kept, losses_kept = lrs_kept[:first_bad], losses_kept[:first_bad]
    if len(lrs_kept) < 2:
        return None, f"the loss diverged after {len(lrs)} steps: nothing is left to read a valley from."
    if raw is not None:
        lowest = int(np.argmin(losses_kept))
        fall = float(losses_kept[: lowest + 1].max() - losses_kept[lowest])
        noise = step_noise(np.asarray(raw, dtype=float)) / np.sqrt(averaged_steps(num_it // 10 + 1))
        if not fall > NOISE_MULTIPLE * noise:
            return None, (
                f"the smoothed loss falls by {fall:.3g} at most, within its noise ({NOISE_MULTIPLE:g} x {noise:.3g}): "
                "no clear valley. Keep the current learning rate, or sweep with larger batches."
            )
    return float(lrs_kept[valley(lrs_kept, losses_kept)]), ""


def averaged_steps(step: int, smoothing: float = SMOOTHING) -> float:
    """Effective number of raw losses in the debiased moving average after ``step`` steps: (Σw)² / Σw²."""
    weights = smoothing ** np.arange(step)
    return float(weights.sum() ** 2 / (weights**2).sum())


def step_noise(raw: np.ndarray) -> float:
    """Robust standard deviation of the raw loss around its trend: MAD of step-to-step differences x 1.4826 / √2."""
    finite = raw[np.isfinite(raw)]
    if len(finite) < 3:
        return 0.0
    differences = np.diff(finite)
    return float(1.4826 * np.median(np.abs(differences - np.median(differences))) / np.sqrt(2))


def sweep(model, batches: Iterator, start_lr=START_LR, end_lr=END_LR, num_it=NUM_IT, stop_div=True):
    """Trains ``model`` (compiled) on ``batches`` with an exponentially growing learning rate.

    Weights and optimizer state are put back afterwards, whatever happens.

    Returns:
        ``(learning rates, smoothed losses, diverged, raw losses)``.
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(f"Expected 0 < start_lr < end_lr. Received: start_lr={start_lr}, end_lr={end_lr}.")
    weights = model.get_weights()
    optimizer_state = [variable.numpy() for variable in model.optimizer.variables]
    lrs, losses, raw, diverged = [], [], [], False
    average, best = 0.0, np.inf
    try:
        for step, (x, y) in zip(range(num_it), batches):
            lr = start_lr * (end_lr / start_lr) ** (step / num_it)
            model.optimizer.learning_rate = lr
            model.reset_metrics()  # Keras reports a running mean otherwise
            loss = float(model.train_on_batch(x, y, return_dict=True)["loss"])
            average = SMOOTHING * average + (1 - SMOOTHING) * loss
            smoothed = average / (1 - SMOOTHING ** (step + 1))
            lrs.append(lr)
            losses.append(smoothed)
            raw.append(loss)
            best = min(best, smoothed)
            if not np.isfinite(smoothed) or (stop_div and smoothed > DIVERGENCE * best):
                diverged = True
                break
    finally:
        model.set_weights(weights)
        _restore_optimizer(model.optimizer, optimizer_state)
    return lrs, losses, diverged, raw


def _restore_optimizer(optimizer, state: list) -> None:
    # Variables created by the sweep (an optimizer builds its slots at the first step)
    # go back to zero: the state of an optimizer that never stepped.
    for index, variable in enumerate(optimizer.variables):
        variable.assign(state[index] if index < len(state) else np.zeros(variable.shape, variable.dtype))


def feature_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> Iterator:
    """Shuffled mini-batches of features, epoch after epoch (a new order every epoch)."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch_size):
            rows = order[start : start + batch_size]
            yield x[rows], y[rows]


def find_head_lr(feature_set, config, num_it: int = NUM_IT, start_lr=START_LR, end_lr=END_LR) -> LRFinderResult:
    """Sweeps the learning rate of the head ``config`` describes, on cached features.

    The head is the training job's own (``tlcore.model.classifier.build_head``: hidden units,
    dropout, the optimizer of ``config.train``); it runs on pooled features shaped as a
    1x1 feature map, where its pooling is the identity.
    """
    import keras

    from tlcore.model import classifier as model_lib

    started = time.perf_counter()
    keras.utils.set_random_seed(config.train.seed)
    dims = feature_set.train_x.shape[1]
    head = model_lib.build_head(
        (1, 1, dims),
        len(feature_set.classes),
        config.model.pooling,
        config.model.hidden_units,
        config.model.dropout_rate,
    )
    model_lib.compile_classifier(head, config.train.optimizer, start_lr)
    x = _as_maps(feature_set.train_x)
    batches = feature_batches(x, feature_set.train_y, config.train.batch_size, config.train.seed)
    lrs, losses, diverged, raw = sweep(head, batches, start_lr, end_lr, num_it)
    suggested, reason = suggest(lrs, losses, num_it, raw)
    points = list(zip(lrs, losses))
    return LRFinderResult(suggested, "valley", points, diverged, "head", time.perf_counter() - started, reason)


def find_fine_tune_lr(config, num_it: int = FINE_TUNE_STEPS, head_epochs: int = 10, log=None) -> LRFinderResult:
    """Sweeps the fine-tuning learning rate on images, capped at ``num_it`` steps.

    As fastai does before fine-tuning, the new head is trained first (on cached
    features, up to ``head_epochs`` epochs at ``config.train.learning_rate``), then the
    backbone is unfrozen as the fine-tune phase would (``unfreeze_from`` or the last
    block, BatchNorm kept frozen) and the sweep runs on image batches (with
    augmentation when ``config.train.augment``), from ``FINE_TUNE_START_LR`` to
    ``FINE_TUNE_END_LR``. A fresh backbone is loaded: a shared one keeps its
    ``trainable`` flags.
    """
    import keras

    from tlcore.data.pipeline import image_dataset, load_dataset
    from tlcore.model import classifier as model_lib
    from tlcore.model.backbones import load_backbone
    from tlcore.training.features import cached_features

    started = time.perf_counter()
    train = config.train
    dataset = load_dataset(config.data, seed=train.seed)
    backbone = load_backbone(config.model, seed=train.seed)
    keras.utils.set_random_seed(train.seed)
    classifier = model_lib.build_classifier(backbone, len(dataset.classes), config.model)
    # The whole dataset's feature maps: the cache file the training job and the analyses share.
    maps, _ = cached_features(classifier, backbone, dataset.train + dataset.val, log)
    head = model_lib.head_part(classifier)
    model_lib.compile_classifier(head, train.optimizer, train.learning_rate)
    labels = dataset.label_ids(dataset.train)
    head.fit(maps[: len(labels)], labels, batch_size=train.batch_size, epochs=head_epochs, verbose=0)
    model_lib.apply_freeze_plan(
        model_lib.backbone_part(classifier),
        model_lib.phase_freeze_plans(backbone, config.model, train)[1],
        backbone.block_pattern,
        backbone.pretrained,
    )
    model_lib.compile_classifier(classifier, train.optimizer, FINE_TUNE_START_LR)  # recompile: trainable changed
    images = image_dataset(
        dataset.train, dataset.label_ids(dataset.train), backbone.image_size, train.batch_size,
        shuffle=True, augment=train.augment, seed=train.seed,
    ).repeat()  # fmt: skip
    lrs, losses, diverged, raw = sweep(classifier, iter(images), FINE_TUNE_START_LR, FINE_TUNE_END_LR, num_it)
    suggested, reason = suggest(lrs, losses, num_it, raw)
    points = list(zip(lrs, losses))
    return LRFinderResult(suggested, "valley", points, diverged, "fine-tune", time.perf_counter() - started, reason)


def _as_maps(features: np.ndarray) -> np.ndarray:
    """Pooled ``(n, d)`` features as ``(n, 1, 1, d)`` maps: the head's pooling is then the identity."""
    return features.reshape(len(features), 1, 1, features.shape[1])
