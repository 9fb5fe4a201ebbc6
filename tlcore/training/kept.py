"""Which weights a training job kept, and why, in words the Train and Runs pages show.

The job keeps the epoch with the lowest validation loss over both phases (head, then
fine-tune); :func:`kept_reason` says which one that was, what the other phase did, and
whether early stopping or a stop request ended a phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class KeptWeights:
    """The job's epoch with the lowest validation loss so far, over both phases."""

    val_loss: float = math.inf
    epoch: int | None = None
    phase: str | None = None
    weights: list | None = None  # the whole classifier's, taken at the end of its phase


@dataclass
class PhaseOutcome:
    """How one phase went: its last epoch, its own best epoch, whether early stopping ended it."""

    phase: str
    last_epoch: int
    best_val_loss: float
    best_epoch: int | None
    early_stopped: bool = False


def kept_reason(kept: KeptWeights, phases: list[PhaseOutcome], stopped: bool) -> str:
    """Which epoch and phase were kept and why, in a plain sentence or two."""
    prefix = f"Stopped by request in epoch {phases[-1].last_epoch}. " if stopped and phases else ""
    if kept.epoch is None:
        return prefix + "No epoch reached a validation loss, so the model keeps the weights it ended with."
    head = next((phase for phase in phases if phase.phase == "head"), None)
    if kept.phase == "fine-tune" and head is not None and kept.epoch > head.last_epoch:
        # Epochs are counted over the whole run (the chart's x axis): say both, or "fine-tune
        # epoch 7" reads as the seventh fine-tuning epoch of a 4-epoch phase.
        where = f"fine-tune epoch {kept.epoch - head.last_epoch} (epoch {kept.epoch} of the run; "
        reason = f"Kept {where}lowest validation loss {kept.val_loss:.3f})"
    else:
        reason = f"Kept {kept.phase} epoch {kept.epoch} (lowest validation loss {kept.val_loss:.3f})"
    for other in (phase for phase in phases if phase.phase != kept.phase):
        if other.best_epoch is None:
            reason += f"; the {other.phase} phase finished no epoch with a validation loss"
        elif other.phase == "fine-tune":
            reason += f"; fine-tuning never beat it (best {other.best_val_loss:.3f}), so its weights were dropped"
        else:
            reason += f", better than the head's best ({other.best_val_loss:.3f} at epoch {other.best_epoch})"
    reason += "."
    for phase in phases:
        if phase.early_stopped and phase.best_epoch is not None:
            reason += (
                f" Early stopping ended the {phase.phase} phase after epoch {phase.last_epoch}: "
                f"no lower validation loss for {phase.last_epoch - phase.best_epoch} epochs."
            )
    return prefix + reason
