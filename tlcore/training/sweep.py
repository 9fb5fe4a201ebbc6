"""A grid of head settings trained on the same cached features, ranked by validation loss.

The backbone runs once (or not at all, with a warm feature cache); every setting of
the grid is then a :mod:`tlcore.training.head` run on the pooled features, in this process, on
engines compiled once per shape (hidden units × optimizer). Learning rate and dropout
are variables of those engines, so a grid of them costs no new tracing.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

import pandas as pd

from tlcore.config import OPTIMIZER_CHOICES, RunConfig
from tlcore.data.pipeline import load_dataset
from tlcore.errors import StudioError
from tlcore.jobs import ProgressLog
from tlcore.model import classifier as model_lib
from tlcore.training.features import pooled_features
from tlcore.training.head import HeadSettings, head_settings, train_head

SWEEP_COLUMNS = [
    "rank",
    "learning_rate",
    "dropout_rate",
    "hidden_units",
    "optimizer",
    "val_loss",
    "val_accuracy",
    "best_epoch",
    "epochs_run",
    "seconds",
]
SETTING_FIELDS = ("learning_rate", "dropout_rate", "hidden_units", "optimizer")
# The values offered for each list of a :class:`SweepGrid` (the Train page's sweep); its defaults are among them.
GRID_OPTIONS = {
    "learning_rates": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
    "dropout_rates": (0.0, 0.2, 0.5),
    "hidden_units": (0, 128, 256, 512),
    "optimizers": ("adam", "adamw", "sgd", "rmsprop"),
}


@dataclass
class SweepGrid:
    """The values to try; every combination is one run."""

    learning_rates: list[float] = field(default_factory=lambda: [1e-4, 1e-3, 1e-2])
    dropout_rates: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.5])
    hidden_units: list[int] = field(default_factory=lambda: [0, 256])
    optimizers: list[str] = field(default_factory=lambda: ["adam"])

    def validate(self) -> SweepGrid:
        """Raises ``ValueError`` naming the first bad value."""
        for name, values in vars(self).items():
            if not values:
                raise ValueError(f"The sweep needs at least one value for `{name}`. Received: {name}=[].")
        for rate in self.learning_rates:
            if not 1e-8 <= rate <= 10:
                raise ValueError(f"Learning rates should be between 1e-08 and 10. Received: {rate}.")
        for rate in self.dropout_rates:
            if not 0 <= rate <= 0.95:
                raise ValueError(f"Dropout rates should be between 0 and 0.95. Received: {rate}.")
        for units in self.hidden_units:
            if not 0 <= units <= 8192:
                raise ValueError(f"Hidden units should be between 0 and 8192. Received: {units}.")
        unknown = [name for name in self.optimizers if name not in OPTIMIZER_CHOICES]
        if unknown:
            raise ValueError(f"Optimizers should be among {list(OPTIMIZER_CHOICES)}. Received: {unknown}.")
        return self

    def settings(self, base: HeadSettings) -> list[HeadSettings]:
        """One :class:`HeadSettings` per combination, grouped by engine shape (hidden units, optimizer)."""
        combos = itertools.product(self.hidden_units, self.optimizers, self.learning_rates, self.dropout_rates)
        return [
            HeadSettings(units, optimizer, rate, dropout, base.batch_size, base.epochs, base.patience, base.seed)
            for units, optimizer, rate, dropout in combos
        ]


@dataclass
class SweepResult:
    """A finished sweep.

    Attributes:
        table: one row per setting, best (lowest validation loss) first (``SWEEP_COLUMNS``).
        seconds: time spent training the grid (after the features were ready).
        extraction_seconds: time to get the features (scan, backbone or cache).
        stopped: a stop request ended it early (the table has the finished settings).
    """

    table: pd.DataFrame
    seconds: float
    extraction_seconds: float
    stopped: bool = False

    @property
    def best(self) -> dict:
        """The best setting and its validation numbers (empty when nothing finished)."""
        if self.table.empty:
            return {}
        row = self.table.iloc[0]
        best = {name: row[name].item() if hasattr(row[name], "item") else row[name] for name in SETTING_FIELDS}
        return {**best, "val_accuracy": float(row["val_accuracy"]), "val_loss": float(row["val_loss"])}

    def to_dict(self) -> dict:
        """The CLI's JSON: ``{"configs", "seconds", "extraction_seconds", "best"}``."""
        return {
            "configs": len(self.table),
            "seconds": self.seconds,
            "extraction_seconds": self.extraction_seconds,
            "best": self.best,
        }


def run_sweep(
    config: RunConfig,
    grid: SweepGrid,
    *,
    log: ProgressLog | None = None,
    stop: threading.Event | None = None,
    backbone=None,
) -> SweepResult:
    """Trains every setting of ``grid`` on the cached features of ``config``'s data and backbone.

    Args:
        config: data, backbone and the settings the grid leaves alone (epochs, batch
            size, patience, seed, pooling); its freeze plan must freeze the whole backbone.
        grid: the values to combine.
        log: receives ``"extract"`` records and one ``"sweep"`` record per finished setting.
        stop: when set, the sweep ends after the current setting.
        backbone: a prebuilt backbone; the process's shared one otherwise.

    Raises:
        ValueError: invalid settings or grid.
        StudioError: a backbone that is not fully frozen (no cached features to share).
    """
    from tlcore.training.trainer import shared_backbone

    config.validate()
    grid.validate()
    if config.model.freeze.mode != "all":
        raise StudioError(
            "A sweep trains heads on cached features, so the whole backbone must be frozen. "
            f"Received: freeze={config.model.freeze.mode!r}. Use --freeze all."
        )
    log = log if log is not None else ProgressLog()
    started = time.perf_counter()
    dataset = load_dataset(config.data, seed=config.train.seed)
    backbone = backbone or shared_backbone(config.model, config.train.seed)
    classifier = model_lib.build_classifier(backbone, len(dataset.classes), config.model)
    pooled, _ = pooled_features(classifier, backbone, dataset.train + dataset.val, log)
    count = len(dataset.train)
    train = (pooled[:count], dataset.label_ids(dataset.train))
    val = (pooled[count:], dataset.label_ids(dataset.val))
    extraction_seconds, started = time.perf_counter() - started, time.perf_counter()
    rows = _train_grid(grid.settings(head_settings(config.model, config.train)), train, val, dataset, log, stop)
    table = pd.DataFrame(rows, columns=SWEEP_COLUMNS[1:]).sort_values("val_loss", kind="stable", ignore_index=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    stopped = stop is not None and stop.is_set()
    return SweepResult(table, time.perf_counter() - started, extraction_seconds, stopped)


def _train_grid(settings: list[HeadSettings], train, val, dataset, log: ProgressLog, stop) -> list[dict]:
    rows = []
    for index, setting in enumerate(settings):
        if stop is not None and stop.is_set():
            break
        started = time.perf_counter()
        fit = train_head(train, val, len(dataset.classes), setting)
        best = fit.history[fit.best_epoch - 1] if fit.best_epoch else fit.history[-1]
        row = {name: getattr(setting, name) for name in SETTING_FIELDS}
        row.update(
            val_loss=best["val_loss"],
            val_accuracy=best["val_accuracy"],
            best_epoch=fit.best_epoch,
            epochs_run=len(fit.history),
            seconds=time.perf_counter() - started,
        )
        rows.append(row)
        log.append("sweep", step=index + 1, steps=len(settings), **row)
    return rows


# Where each swept setting lives in the dashboard: "use the best" says which page it changes.
SETTING_PLACES = {
    "learning_rate": ("learning rate", "Train page", "train"),
    "dropout_rate": ("dropout", "Model page, head", "model"),
    "hidden_units": ("hidden units", "Model page, head", "model"),
    "optimizer": ("optimizer", "Train page", "train"),
}


def best_changes(config: RunConfig, best: dict) -> list[dict]:
    """What "use the best" would change in ``config``: one row per setting that differs.

    Returns:
        Rows ``{"setting", "where", "now", "best", "field"}``, in ``SETTING_FIELDS`` order;
        empty when the form already holds the best settings (or there is no best).
    """
    rows = []
    for name in SETTING_FIELDS if best else ():
        label, where, part = SETTING_PLACES[name]
        now = getattr(getattr(config, part), name)
        if now != best[name]:
            rows.append({"setting": label, "where": where, "now": now, "best": best[name], "field": name})
    return rows


def describe_changes(changes: list[dict]) -> str:
    """The changes in words: "Changed hidden units 0 → 256 (Model page, head), …"."""
    if not changes:
        return "Nothing changed: the settings already are the sweep's best."
    parts = [f"{row['setting']} {shown(row['now'])} → {shown(row['best'])} ({row['where']})" for row in changes]
    return "Changed " + ", ".join(parts) + "."


def shown(value) -> str:
    """A setting as the page shows it: numbers in ``g`` format (0.001, 256), names as they are."""
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def apply_best(config: RunConfig, best: dict) -> RunConfig:
    """``config`` with the sweep's best head settings filled in (what "use the best" does).

    Pages show :func:`best_changes` first and apply only on the user's click: the head's
    dropout and hidden units are the Model page's settings.
    """
    if not best:
        raise StudioError("The sweep finished no setting: there is no best to use.")
    config.train.learning_rate = float(best["learning_rate"])
    config.model.dropout_rate = float(best["dropout_rate"])
    config.model.hidden_units = int(best["hidden_units"])
    config.train.optimizer = str(best["optimizer"])
    return config
