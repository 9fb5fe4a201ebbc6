"""How deep to fine-tune? Each of the last N blocks tried on the same split, from the same head.

Every depth is one training run: the head phase on cached features (seeded, so each
depth starts from the identical trained head, in milliseconds), then a few fine-tune
epochs unfrozen from that block, which train only the layers above the block on their
cached input activations. A "head only" row is the baseline fine-tuning must beat.
With repeats (other training seeds, same split) each depth gets mean ± sd; whether
the best depth leads the runner-up beyond noise is judged from their paired
differences, repeat by repeat (:mod:`tlcore.insight.paired_noise`); under 3 repeats
the verdict says it cannot tell.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tlcore.config import FreezePlan, RunConfig
from tlcore.errors import StudioError
from tlcore.insight.paired_noise import PairedLead, paired_lead
from tlcore.jobs import ProgressLog

HEAD_ONLY = "head only"
DEPTH_COLUMNS = ["depth", "accuracy_mean", "accuracy_sd", "loss_mean", "seconds", "fine_tune_kept", "repeats"]


@dataclass
class DepthResult:
    """One depth: fine-tuning unfrozen from ``depth`` (a block label), or the head alone.

    Attributes:
        depth: the block fine-tuning starts from, or ``"head only"``.
        accuracies: validation accuracy of each repeat.
        losses: validation loss of each repeat.
        seconds: training time of each repeat (features from the cache).
        fine_tune_kept: repeats whose best epoch was a fine-tune epoch (else the head's
            weights were kept: fine-tuning did not help).
    """

    depth: str
    accuracies: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    fine_tune_kept: int = 0

    @property
    def accuracy_mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def accuracy_sd(self) -> float:
        return float(np.std(self.accuracies, ddof=1)) if len(self.accuracies) > 1 else 0.0

    def row(self) -> dict:
        return {
            "depth": self.depth,
            "accuracy_mean": self.accuracy_mean,
            "accuracy_sd": self.accuracy_sd,
            "loss_mean": float(np.mean(self.losses)),
            "seconds": float(np.mean(self.seconds)),
            "fine_tune_kept": self.fine_tune_kept,
            "repeats": len(self.accuracies),
        }


@dataclass
class DepthComparison:
    """A finished depth comparison.

    Attributes:
        depths: ``"head only"`` first, then the blocks from the shallowest fine-tune
            (last block) to the deepest.
        num_val: validation images each accuracy is measured on.
        fine_tune_epochs: fine-tune epochs per depth.
        seconds: wall time of the comparison.
        stopped: a stop request ended it early.
    """

    depths: list[DepthResult]
    num_val: int
    fine_tune_epochs: int
    seconds: float
    stopped: bool = False

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([depth.row() for depth in self.depths], columns=DEPTH_COLUMNS)

    @property
    def best(self) -> str | None:
        """The most accurate depth (lower loss on a tie); ``None`` before any finished."""
        if not self.depths:
            return None
        return min(self.depths, key=lambda d: (-d.accuracy_mean, float(np.mean(d.losses)))).depth

    @property
    def recommended(self) -> str | None:
        """The depth the verdict recommends, which "Use this depth" preselects: the best one when
        it leads beyond noise (or when the noise cannot be told), else the cheapest depth (fewest
        unfrozen blocks: the order depths are tried in) that the best one does not beat beyond noise."""
        best = self.best
        if best is None or len(self.depths) < 2 or self.lead().outcome != "within":
            return best
        top = next(depth for depth in self.depths if depth.depth == best)
        floor = max(self.num_val, 1)
        return next(
            depth.depth
            for depth in self.depths
            if depth is top or paired_lead(top.accuracies, depth.accuracies, floor).outcome != "beyond"
        )

    def lead(self) -> PairedLead:
        """The best depth's lead over the runner-up, paired repeat by repeat (the same seed and
        split for both): :func:`tlcore.insight.paired_noise.paired_lead`, floored at one of the
        ``num_val`` validation images."""
        first, second = sorted(self.depths, key=lambda d: -d.accuracy_mean)[:2]
        return paired_lead(first.accuracies, second.accuracies, max(self.num_val, 1))

    def verdict(self) -> str:
        """One plain sentence on what the comparison showed: a clear best depth, "within noise",
        or "cannot tell" (too few repeats to measure the noise)."""
        if len(self.depths) < 2:
            return "Too few depths finished to compare."
        first, second = (depth.depth for depth in sorted(self.depths, key=lambda d: -d.accuracy_mean)[:2])
        lead = self.lead()
        points, why = f"{lead.margin * 100:.1f}", lead.explained("repeats")
        if lead.outcome == "cannot tell":
            return (
                f"Cannot tell whether {first} is better than {second} ({points} accuracy points apart): {why}. "
                "Use 3 or more repeats."
            )
        if lead.outcome == "within":
            return (
                f"The depths are within noise: the best two ({first}, {second}) differ by {points} accuracy "
                f"points ({why}). Prefer the cheapest of them: {self.recommended}."
            )
        best = "The head alone (no fine-tuning)" if first == HEAD_ONLY else f"Fine-tuning from {first}"
        return f"{best} is best: {points} accuracy points ahead of {second}, beyond noise ({why})."

    def to_dict(self) -> dict:
        """The CLI's JSON: ``{"depths": [...], "best", "verdict", "seconds", ...}``."""
        return {
            "depths": [depth.row() for depth in self.depths],
            "best": self.best,
            "verdict": self.verdict(),
            "num_val": self.num_val,
            "fine_tune_epochs": self.fine_tune_epochs,
            "seconds": self.seconds,
        }


def depth_choices(config: RunConfig, blocks: int) -> list[str]:
    """The last ``blocks`` block labels of the config's backbone, shallowest fine-tune first.

    Raises:
        StudioError: the backbone has no known blocks (a model file of an unknown family).
        ValueError: ``blocks`` out of range.
    """
    from tlcore.insight.candidates import candidate_label
    from tlcore.model.backbones import block_names
    from tlcore.training.trainer import shared_backbone

    if not 1 <= blocks <= 20:
        raise ValueError(f"Expected blocks between 1 and 20. Received: blocks={blocks}.")
    names = [name for name in block_names(shared_backbone(config.model, config.train.seed)) if name != "stem"]
    if not names:
        raise StudioError(
            f"{candidate_label(config.model.backbone)} has no known blocks to fine-tune from. Choose a registry "
            "backbone, or a model file built from one (its layer names tell its blocks)."
        )
    return names[::-1][:blocks]


def compare_depths(
    config: RunConfig,
    blocks: int = 3,
    repeats: int = 1,
    *,
    log: ProgressLog | None = None,
    stop: threading.Event | None = None,
) -> DepthComparison:
    """Fine-tunes from each of the last ``blocks`` blocks on the same split and compares.

    Args:
        config: data, backbone, head and training settings; the head trains
            ``train.epochs`` epochs on frozen features, then each depth
            ``train.fine_tune_epochs`` (3 when 0).
        blocks: how many of the last blocks to try.
        repeats: training seeds per depth (the split stays the same).
        log: receives ``"step"`` records (one per run, with ``eta_seconds``) and the runs' records.
        stop: when set, the comparison ends after the current run.

    Returns:
        A :class:`DepthComparison` (``"head only"`` first).
    """
    from tlcore.data.pipeline import load_dataset

    if not 1 <= repeats <= 10:
        raise ValueError(f"Expected repeats between 1 and 10. Received: repeats={repeats}.")
    config = RunConfig.from_dict(config.to_dict())
    config.model.freeze = FreezePlan("all")
    config.train.fine_tune_epochs = config.train.fine_tune_epochs or 3
    config.validate()
    depths = [HEAD_ONLY] + depth_choices(config, blocks)
    log = log if log is not None else ProgressLog()
    started = time.perf_counter()
    dataset = load_dataset(config.data, seed=config.train.seed)  # one split for every depth
    results = _run_depths(config, depths, repeats, dataset, log, stop)
    stopped = stop is not None and stop.is_set()
    return DepthComparison(
        results, len(dataset.val), config.train.fine_tune_epochs, time.perf_counter() - started, stopped
    )


def _run_depths(config: RunConfig, depths: list[str], repeats: int, dataset, log, stop) -> list[DepthResult]:
    runs = [(depth, repeat) for repeat in range(repeats) for depth in depths]  # a full pass first, then repeats
    results = {depth: DepthResult(depth) for depth in depths}
    started = time.perf_counter()
    for index, (depth, repeat) in enumerate(runs):
        if stop is not None and stop.is_set():
            break
        eta = (time.perf_counter() - started) / index * (len(runs) - index) if index else None
        log.append("step", step=index, steps=len(runs), depth=depth, doing=f"from {depth}", eta_seconds=eta)
        _train_depth(_depth_config(config, depth, repeat), dataset, results[depth], log, stop)
    log.append("step", step=len(runs), steps=len(runs), eta_seconds=0.0)
    return [results[depth] for depth in depths if results[depth].accuracies]


def _depth_config(config: RunConfig, depth: str, repeat: int) -> RunConfig:
    trial = RunConfig.from_dict(config.to_dict())
    trial.train.seed = config.train.seed + repeat
    if depth == HEAD_ONLY:
        trial.train.fine_tune_epochs = 0
    else:
        trial.train.unfreeze_from = depth
    return trial


def _train_depth(config: RunConfig, dataset, result: DepthResult, log, stop) -> None:
    from tlcore.training.trainer import run_training

    started = time.perf_counter()
    trained = run_training(config, dataset=dataset, log=log, stop=stop)
    if trained.stopped:
        return  # a run cut short would bias its depth
    result.accuracies.append(float(trained.metrics["val_accuracy"]))
    result.losses.append(float(trained.metrics["val_loss"]))
    result.seconds.append(time.perf_counter() - started)
    result.fine_tune_kept += trained.metrics.get("best_phase") == "fine-tune"


def apply_depth(train_config, comparison: DepthComparison, depth: str) -> None:
    """What "use this depth" does: phase 2 unfreezes from ``depth`` (none for "head only")."""
    if depth == HEAD_ONLY:
        train_config.fine_tune_epochs = 0
        return
    train_config.unfreeze_from = depth
    train_config.fine_tune_epochs = train_config.fine_tune_epochs or comparison.fine_tune_epochs
