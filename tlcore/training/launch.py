"""Launchers: a training (or an A/B pair) as a background job that records a run folder.

The job registry (tlcore.jobs) knows threads, the run store (tlcore.runs.store) knows
folders, training (tlcore.training.trainer) knows Keras; this module is where the three meet,
so none of them has to import the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tlcore.config import FreezePlan, RunConfig
from tlcore.errors import first_line
from tlcore.jobs import ProgressLog
from tlcore.runs.store import RunStore, save_result, set_status, start_run


def train_run(config: RunConfig, run_dir: str | Path, **job_options):
    """Runs :func:`tlcore.training.trainer.run_training` and records it in ``run_dir``.

    A failure is recorded as ``status: failed`` with its message, then re-raised.
    """
    from tlcore.training.trainer import run_training

    run_dir = start_run(Path(run_dir), config)
    try:
        result = run_training(config, run_dir=run_dir, **job_options)
        save_result(run_dir, result)
    except BaseException as error:
        set_status(run_dir, "failed", error=first_line(error))
        raise
    return result


def job_title(config: RunConfig) -> str:
    return f"{Path(config.model.backbone).name} on {Path(config.data.data_dir).name}"


def start_training(registry, owner: str, config: RunConfig, store: RunStore, name: str | None = None):
    """Starts a training run as a background job of ``registry``; returns the job.

    Raises:
        JobBusyError: this session already trains, or the studio is at its job cap.
        ValueError: the config is invalid (checked before any thread starts).
    """
    config.validate()

    def target(job):
        run_dir = store.create(config, name=name)
        job.run_dir = str(run_dir)
        return train_run(config, run_dir, log=job.log, stop=job.stop)

    return registry.start(owner, "train", job_title(config), target, epochs=config.train.total_epochs)


def ab_configs(config: RunConfig) -> tuple[RunConfig, RunConfig]:
    """The A/B pair on the same data and split: fixed feature extractor vs fine-tuned."""
    fixed = RunConfig.from_dict(config.to_dict())
    fixed.model.freeze = FreezePlan("all")  # A: a fixed feature extractor, whatever the Model page says
    fixed.train.fine_tune_epochs = 0
    tuned = RunConfig.from_dict(fixed.to_dict())
    tuned.train.fine_tune_epochs = config.train.fine_tune_epochs or max(2, config.train.epochs // 2)
    return fixed, tuned


@dataclass
class ABResult:
    """What an A/B job produced.

    Attributes:
        runs: ``[(label, run_id, metrics), ...]`` in the order they trained (A, then B).
        verdict: one plain sentence on what the pair showed.
    """

    runs: list = field(default_factory=list)
    verdict: str = ""

    @property
    def metrics(self) -> dict:
        """The last finished half's metrics (what a single-run panel would show)."""
        return self.runs[-1][2] if self.runs else {}


def ab_verdict(fixed: dict, tuned: dict) -> str:
    """Says in words what an A/B pair showed, including when B simply kept A's weights."""
    if not fixed or not tuned:
        return "The pair was stopped before both halves finished: compare what there is below."
    a_acc, b_acc = fixed.get("val_accuracy", 0.0), tuned.get("val_accuracy", 0.0)
    a_loss, b_loss = fixed.get("val_loss", 0.0), tuned.get("val_loss", 0.0)
    kept_head = tuned.get("best_phase") == "head" or abs(a_loss - b_loss) < 1e-9
    if kept_head:
        return (
            f"Fine-tuning never beat the head's best epoch on validation loss, so B kept the head's weights: "
            f"A and B are the same model here ({a_acc:.1%}). Try a lower fine-tune learning rate, more fine-tune "
            f"epochs, or unfreezing fewer blocks."
        )
    better = "B (fine-tuned)" if b_loss < a_loss else "A (fixed features)"
    return (
        f"{better} is better on validation loss: A {a_loss:.3f} / {a_acc:.1%} accuracy, "
        f"B {b_loss:.3f} / {b_acc:.1%} accuracy "
        f"({abs(b_acc - a_acc) * 100:.1f} points {'more' if b_acc >= a_acc else 'less'} accuracy with fine-tuning)."
    )


def start_ab(registry, owner: str, config: RunConfig, store: RunStore):
    """Trains the A/B pair one after the other as one job; ``job.result`` is an :class:`ABResult`."""
    fixed, tuned = ab_configs(config)
    fixed.validate()
    tuned.validate()

    def target(job):
        result = ABResult()
        for label, variant in (("A-fixed-features", fixed), ("B-fine-tune", tuned)):
            if job.stop.is_set():
                break
            if result.runs:
                job.log = ProgressLog()  # the page follows the current half of the pair
                job.epochs = variant.train.total_epochs
            run_dir = store.create(variant, name=label)
            job.run_dir = str(run_dir)
            trained = train_run(variant, run_dir, log=job.log, stop=job.stop)
            result.runs.append((label, run_dir.name, trained.metrics))
        halves = [metrics for _, _, metrics in result.runs]
        result.verdict = ab_verdict(*(halves + [{}, {}])[:2])
        return result

    title = f"A/B on {Path(config.data.data_dir).name}"
    return registry.start(owner, "ab", title, target, epochs=fixed.train.total_epochs)
