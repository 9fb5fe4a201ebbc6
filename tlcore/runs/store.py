"""The run store: one folder per training run, readable even when a run died midway.

Layout of ``runs/<run_id>/``: ``access.json`` (who owns it, its share token), ``config.json`` and
``status.json`` (written first), then ``history.csv``, ``labels.txt``, ``model.keras``, ``val_predictions.csv``,
``tensorboard/`` and, last, ``metrics.json``. A run whose process died before the end keeps ``status.json`` at
"running" with a dead pid, and is listed as incomplete.

Who may do what: a store acts for an identity (``RunStore(root)``: the operator, every
run; ``RunStore(root, owner=…)``: a dashboard visitor); the rule is ``tlcore.runs.access``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import socket
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tlcore.config import RunConfig
from tlcore.errors import StudioError
from tlcore.model.choices import describe_backbone
from tlcore.runs.access import ACCESS_FILE, SHARE_TOKEN, RunAccess, run_owner, write_json_atomic

STATUS_FILE = "status.json"
PROBABILITY_COLUMN = "p:{label}"
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# The metrics.json fields the CLI contract promises (ARCHITECTURE.md).
REQUIRED_METRICS = (
    "val_accuracy",
    "val_loss",
    "train_seconds",
    "feature_extraction_seconds",
    "epochs_run",
    "num_train",
    "num_val",
    "skipped_files",
)


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Run:
    """A run folder read back.

    Attributes:
        run_id: the folder name.
        path: the folder.
        status: ``"running"``, ``"done"``, ``"stopped"``, ``"failed"`` or ``"incomplete"``.
        config: its settings (``None`` if config.json is unreadable).
        metrics: contents of metrics.json (empty until the run finished).
        labels: class labels.
        error: the failure message of a failed run.
        owner: the owner id of the visitor who made it; ``None``: the operator's (published).
        access: what its reader may do: ``"owner"``, ``"operator"`` (read, change), ``"published"``, ``"shared"`` (read).
        kind: ``"image"`` (a classifier) or ``"text"`` (a GPT-2 fine-tune: settings in ``metrics.json``, no config.json).
    """

    run_id: str
    path: Path
    status: str
    config: RunConfig | None
    metrics: dict = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    error: str = ""
    owner: str | None = None
    access: str = "operator"

    @property
    def choice_label(self) -> str:
        """The run in a run picker: its id, and "(shared with you, read-only)" or "(published, read-only)"."""
        words = {"shared": "shared with you, read-only", "published": "published, read-only"}.get(self.access)
        return f"{self.run_id} ({words})" if words else self.run_id

    @property
    def read_only(self) -> bool:
        """True when the identity that read this run may look but not change it (calibration, exports)."""
        return self.access not in ("owner", "operator")

    def check_writable(self) -> None:
        """Raises:
        StudioError: the run is read-only for the identity that read it."""
        if self.read_only:
            whose = "another visitor's run, shared with you" if self.access == "shared" else "published by the operator"
            raise StudioError(
                f"Run {self.run_id} is read-only for you ({whose}): only its owner can change it. "
                "Train your own run to change its calibration or exports."
            )

    kind: str = "image"

    @property
    def history(self) -> pd.DataFrame:
        path = self.path / "history.csv"
        return pd.read_csv(path) if path.is_file() else pd.DataFrame()

    @property
    def has_model(self) -> bool:
        return (self.path / "model.keras").is_file()

    @property
    def finished(self) -> bool:  # ended with a model to use (a stopped run kept its best weights so far)
        return self.status in ("done", "stopped") and self.has_model

    def load_model(self):
        """The trained classifier, loaded with ``safe_mode=True``."""
        if not self.has_model:
            raise StudioError(f"Run {self.run_id} has no saved model (status: {self.status}).")
        from tlcore.model.file_trial import load_saved_model

        return load_saved_model(self.path / "model.keras")

    def val_predictions(self) -> pd.DataFrame:
        path = self.path / "val_predictions.csv"
        return pd.read_csv(path) if path.is_file() else pd.DataFrame()

    def val_probabilities(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The saved validation predictions as arrays.

        Returns:
            ``(paths, true label ids, class probabilities)``; probabilities have one
            column per label in ``labels`` order (read back from the ``p:<label>``
            columns :func:`save_result` writes). Empty arrays when there are none.
        """
        frame = self.val_predictions()
        if frame.empty:
            return [], np.zeros((0,), int), np.zeros((0, len(self.labels)))
        probabilities = frame[[PROBABILITY_COLUMN.format(label=label) for label in self.labels]].to_numpy()
        return frame["path"].tolist(), frame["true_index"].to_numpy(), probabilities

    @property
    def kept_weights(self) -> str:
        """Which epoch's weights the run kept and why, in words ("" for older runs)."""
        return self.metrics.get("kept_reason", "")

    @property
    def kept_epoch(self) -> int | None:
        return self.metrics.get("best_epoch")

    @property
    def image_size(self) -> int | None:
        """The input size (pixels) the run's model takes: its setting, else (a model file left at its own
        size) the saved classifier's input layer, read from ``model.keras`` without Keras."""
        if self.config is not None and self.config.model.image_size:
            return int(self.config.model.image_size)
        try:
            with zipfile.ZipFile(self.path / "model.keras") as archive:
                layers = json.loads(archive.read("config.json"))["config"]["layers"]
            shape = next(layer["config"]["batch_shape"] for layer in layers if layer["class_name"] == "InputLayer")
            return int(shape[1])
        except (OSError, KeyError, ValueError, TypeError, StopIteration, zipfile.BadZipFile):
            return None

    @property
    def backbone_label(self) -> str:
        """The backbone and its weights in words (the Model page's words), as the Runs table shows them."""
        if self.kind == "text":
            return f"{Path(str(self.metrics.get('config', {}).get('model') or 'GPT-2')).name} (text)"
        if self.config is None:
            return "?"
        return describe_backbone(self.config.model)


class RunStore(RunAccess):
    """The runs under one folder (default ``runs/``) that one identity may see (see the module docstring).

    Args:
        root: the folder.
        owner: the dashboard visitor's owner id; ``None`` for the operator (CLI, benches).
        operator: the visitor is the one person of a local server: every run is theirs to see and change.
        shared: share tokens the visitor opened (``?run=<token>``): those runs, read only.
    """

    def __init__(self, root: str | Path = "runs", owner: str | None = None, operator: bool = False, shared=()):
        self.root = Path(root)
        self.owner = owner
        self.operator = operator
        self.shared = tuple(token for token in shared if isinstance(token, str) and SHARE_TOKEN.fullmatch(token))

    def create(self, config: RunConfig | None = None, name: str | None = None, kind: str = "image") -> Path:
        """Makes a new run folder named ``<time>-<name>-<random>``, owned by this store's visitor.

        With a :class:`RunConfig` the folder also starts with config.json; without one
        (text fine-tuning writes its own files) the status records the run's ``kind``.
        """
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        default = Path(config.model.backbone).stem if config is not None else "run"
        slug = re.sub(r"[^A-Za-z0-9]+", "-", name or default).strip("-")[:40] or "run"
        path = self.root / f"{stamp}-{slug}-{secrets.token_hex(2)}"
        if self.owner is None:
            path.mkdir(parents=True)
        else:
            # Made hidden, owned, then renamed: a listing never sees it without its owner (as published).
            hidden = self.root / f".{path.name}"
            hidden.mkdir(parents=True)
            write_json_atomic(hidden / ACCESS_FILE, {"owner": self.owner})
            hidden.rename(path)
        if config is None:
            set_status(path, "running", kind=kind)
            return path
        return start_run(path, config)

    def list(self, shared: bool = True) -> list[Run]:
        """The runs this identity may see, newest first; unreadable folders appear as incomplete, never raise.

        Args:
            shared: include runs of other visitors opened through a share link (Evaluate
                and Predict show them; the Runs page lists only one's own and published runs).
        """
        if not self.root.is_dir():
            return []
        runs = []
        for path in self.root.iterdir():
            if path.is_dir() and not path.name.startswith("."):
                run = self._visible(read_run(path))
                if run is not None and (shared or run.access != "shared"):
                    runs.append(run)
        return sorted(runs, key=lambda r: r.run_id, reverse=True)

    def open_shared(self, token: str) -> Run | None:
        """The run a share token opens (any owner's), or ``None`` when no run has it."""
        folder = self.shared_folder(token)
        return read_run(folder) if folder is not None else None

    def first_choice(self, runs: list[Run], link: str | None, last: str | None) -> int:
        """Which of ``runs`` a run picker shows first: the run of the share link the page was opened
        with, else the visitor's last run (``last``: its id), else the newest (0)."""
        opened = self.open_shared(link) if link else None
        preferred = opened.run_id if opened is not None else last
        ids = [run.run_id for run in runs]
        return ids.index(preferred) if preferred in ids else 0

    def table(self, kind: str = "image") -> pd.DataFrame:
        """One row per run of ``kind`` ("image" or "text") this identity owns or that is published."""
        rows = [
            {
                "run_id": run.run_id,
                "status": run.status,
                "backbone": run.backbone_label,
                "val_accuracy": _rounded(run.metrics.get("val_accuracy"), 3),
                "val_loss": _rounded(run.metrics.get("val_loss"), 3),
                "kept_epoch": run.metrics.get("best_epoch"),
                "epochs_run": run.metrics.get("epochs_run"),
                "train_seconds": _rounded(run.metrics.get("train_seconds"), 1),
                "classes": len(run.labels),
            }
            for run in self.list(shared=False)
            if run.kind == kind
        ]
        return pd.DataFrame(rows, columns=TABLE_COLUMNS)

    def get(self, run_id: str) -> Run:
        """The run folder named ``run_id``: a direct child of the store, nothing else.

        Raises:
            StudioError: ``run_id`` is not a plain folder name (``..``, ``.``, separators),
                or names no run folder, or is a link that leads outside the store, or
                is a run this identity may not see (said the same way: nothing is revealed).
        """
        run = self._visible(read_run(self.path_of(run_id)))
        if run is None:
            raise StudioError(f"No run named {run_id!r} in {self.root}.")
        return run

    def path_of(self, run_id: str) -> Path:
        """The folder of ``run_id``, checked as :meth:`get` explains."""
        if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id) or run_id.strip(".") == "":
            raise StudioError(
                f"No run named {run_id!r} in {self.root}: a run id is a folder name such as 20260101-120000-x."
            )
        path = self.root / run_id
        root = self.root.resolve()
        if not path.is_dir() or path.resolve().parent != root:
            raise StudioError(f"No run named {run_id!r} in {self.root}.")
        return path

    def histories(self, run_ids: list[str]) -> pd.DataFrame:
        """The histories of several runs stacked, with a ``run_id`` column (for overlays)."""
        frames = [self.get(r).history.assign(run_id=r) for r in run_ids]
        frames = [f for f in frames if not f.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def compare(self, run_ids: list[str]) -> pd.DataFrame:
        """Metrics of several runs side by side (one column per run), numbers rounded for reading."""
        data = {}
        for run_id in run_ids:
            run = self.get(run_id)
            flat = {k: _rounded(v, 4) for k, v in run.metrics.items() if not isinstance(v, dict)}
            if run.config:
                flat.update(
                    backbone=run.backbone_label,
                    epochs=run.config.train.epochs,
                    fine_tune_epochs=run.config.train.fine_tune_epochs,
                    learning_rate=run.config.train.learning_rate,
                    augment=run.config.train.augment,
                )
            data[run_id] = flat
        return pd.DataFrame(data)


def kept_epochs(store: RunStore, run_ids: list[str]) -> dict:
    """``{run_id: epoch whose weights the run kept}`` for the runs that say (for the curves)."""
    runs = [store.get(run_id) for run_id in run_ids]
    return {run.run_id: run.kept_epoch for run in runs if run.kept_epoch}


def _rounded(value, digits: int):
    return round(value, digits) if isinstance(value, float) else value


TABLE_COLUMNS = [
    "run_id",
    "status",
    "backbone",
    "val_accuracy",
    "val_loss",
    "kept_epoch",
    "epochs_run",
    "train_seconds",
    "classes",
]


def start_run(path: Path, config: RunConfig) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _write_atomic(path / "config.json", config.to_json())
    set_status(path, "running")
    return path


def set_status(path: Path, status: str, **extra) -> None:
    record = _read_json(Path(path) / STATUS_FILE)
    now = dt.datetime.now().isoformat(timespec="seconds")
    record.update(status=status, pid=os.getpid(), host=socket.gethostname(), updated=now, **extra)
    record.setdefault("started", record["updated"])
    _write_atomic(Path(path) / STATUS_FILE, json.dumps(record, indent=2))


def require_run_model(run_dir: str | Path) -> Path:
    """``run_dir`` as a path, if it holds a saved model.

    Raises:
        StudioError: it does not.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "model.keras").is_file():
        raise StudioError(
            f"{run_dir} is not a finished run folder (no model.keras). Train one with `python -m tlcore train`."
        )
    return run_dir


def read_run(path: Path) -> Run:
    """Reads a run folder; anything missing or damaged makes it "incomplete", never an error."""
    path = Path(path)
    status = _read_json(path / STATUS_FILE)
    state = status.get("status", "incomplete")
    # A pid can only be checked on its own machine: a run a Ray worker on another node is
    # writing stays "running" (that runner marks it failed if the worker dies).
    local = status.get("host", socket.gethostname()) == socket.gethostname()
    if state == "running" and local and not _pid_alive(status.get("pid")):
        state = "incomplete"
    kind = status.get("kind", "image")
    try:
        config = RunConfig.load(path / "config.json")
    except (OSError, ValueError, TypeError):
        config = None
        if kind == "image":  # a text run keeps its settings in metrics.json
            state = "incomplete" if state in ("done", "running") else state
    metrics = _read_json(path / "metrics.json")
    if state == "done" and not metrics:
        state = "incomplete"
    labels_path = path / "labels.txt"
    labels = labels_path.read_text().splitlines() if labels_path.is_file() else []
    return Run(
        path.name, path, state, config, metrics, labels, status.get("error", ""), owner=run_owner(path), kind=kind
    )


def save_result(path: Path, result) -> None:
    """Writes a finished (or stopped) training result into its run folder; metrics last."""
    path = Path(path)
    result.history.to_csv(path / "history.csv", index=False)
    _write_atomic(path / "labels.txt", "\n".join(result.classes) + "\n")
    from tlcore.model.saved_layer import prime_keras_saving  # Keras only when saving

    prime_keras_saving()
    result.model.save(path / "model.keras")
    if result.val_probabilities is not None:
        labels = {label: i for i, label in enumerate(result.classes)}
        predicted = np.argmax(result.val_probabilities, axis=1)
        frame = pd.DataFrame(
            {
                "path": [item.path for item in result.val_items],
                "true": [item.label for item in result.val_items],
                "true_index": [labels[item.label] for item in result.val_items],
                "predicted": [result.classes[i] for i in predicted],
                "confidence": result.val_probabilities[np.arange(len(predicted)), predicted],
            }
        )
        for index, label in enumerate(result.classes):
            frame[PROBABILITY_COLUMN.format(label=label)] = result.val_probabilities[:, index]
        frame.to_csv(path / "val_predictions.csv", index=False)
    _write_atomic(path / "metrics.json", json.dumps(result.metrics, indent=2, default=float))
    set_status(path, "stopped" if result.stopped else "done")
