"""The run store: one folder per training run, readable even when a run died midway.

Layout of ``runs/<run_id>/``: ``config.json`` and ``status.json`` (written first),
then ``history.csv``, ``labels.txt``, ``model.keras``, ``val_predictions.csv``,
``tensorboard/`` and, last, ``metrics.json``. A run whose process died before the
end keeps ``status.json`` at "running" with a dead pid, and is listed as incomplete.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tlcore.config import RunConfig
from tlcore.errors import StudioError

STATUS_FILE = "status.json"
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
    """

    run_id: str
    path: Path
    status: str
    config: RunConfig | None
    metrics: dict = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    error: str = ""
    started: str = ""

    @property
    def history(self) -> pd.DataFrame:
        path = self.path / "history.csv"
        return pd.read_csv(path) if path.is_file() else pd.DataFrame()

    @property
    def has_model(self) -> bool:
        return (self.path / "model.keras").is_file()

    def load_model(self):
        """The trained classifier, loaded with ``safe_mode=True``."""
        if not self.has_model:
            raise StudioError(f"Run {self.run_id} has no saved model (status: {self.status}).")
        from tlcore.backbones import load_model_file

        return load_model_file(self.path / "model.keras")

    def val_predictions(self) -> pd.DataFrame:
        path = self.path / "val_predictions.csv"
        return pd.read_csv(path) if path.is_file() else pd.DataFrame()


class RunStore:
    """All runs under one folder (default ``runs/``)."""

    def __init__(self, root: str | Path = "runs"):
        self.root = Path(root)

    def create(self, config: RunConfig, name: str | None = None) -> Path:
        """Makes a new run folder with config.json and a "running" status."""
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        slug = re.sub(r"[^A-Za-z0-9]+", "-", name or Path(config.model.backbone).stem).strip("-")[:40] or "run"
        path = self.root / f"{stamp}-{slug}-{secrets.token_hex(2)}"
        path.mkdir(parents=True)
        return start_run(path, config)

    def list(self) -> list[Run]:
        """Every run, newest first; unreadable folders appear as incomplete, never raise."""
        if not self.root.is_dir():
            return []
        runs = [read_run(p) for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return sorted(runs, key=lambda r: r.run_id, reverse=True)

    def table(self) -> pd.DataFrame:
        """One row per run: id, status, backbone, accuracy, epochs, timings."""
        rows = []
        for run in self.list():
            config = run.config
            rows.append(
                {
                    "run_id": run.run_id,
                    "status": run.status,
                    "backbone": Path(config.model.backbone).name if config else "?",
                    "weights": config.model.weights if config else "?",
                    "val_accuracy": run.metrics.get("val_accuracy"),
                    "val_loss": run.metrics.get("val_loss"),
                    "epochs_run": run.metrics.get("epochs_run"),
                    "train_seconds": run.metrics.get("train_seconds"),
                    "classes": len(run.labels),
                }
            )
        return pd.DataFrame(
            rows,
            columns=[
                "run_id",
                "status",
                "backbone",
                "weights",
                "val_accuracy",
                "val_loss",
                "epochs_run",
                "train_seconds",
                "classes",
            ],
        )

    def get(self, run_id: str) -> Run:
        path = self.root / run_id
        if not re.fullmatch(r"[A-Za-z0-9._-]+", run_id) or not path.is_dir():
            raise StudioError(f"No run named {run_id!r} in {self.root}.")
        return read_run(path)

    def histories(self, run_ids: list[str]) -> pd.DataFrame:
        """The histories of several runs stacked, with a ``run_id`` column (for overlays)."""
        frames = [self.get(r).history.assign(run_id=r) for r in run_ids]
        frames = [f for f in frames if not f.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def compare(self, run_ids: list[str]) -> pd.DataFrame:
        """Metrics of several runs side by side (one column per run)."""
        data = {}
        for run_id in run_ids:
            run = self.get(run_id)
            flat = {k: v for k, v in run.metrics.items() if not isinstance(v, dict)}
            if run.config:
                flat.update(
                    backbone=Path(run.config.model.backbone).name,
                    epochs=run.config.train.epochs,
                    fine_tune_epochs=run.config.train.fine_tune_epochs,
                    learning_rate=run.config.train.learning_rate,
                    augment=run.config.train.augment,
                )
            data[run_id] = flat
        return pd.DataFrame(data)


def runs_root() -> Path:
    """``$TLCORE_RUNS_DIR`` (default ``./runs``): where the dashboard keeps runs."""
    return Path(os.environ.get("TLCORE_RUNS_DIR") or "runs")


def start_training(registry, owner: str, config: RunConfig, store: RunStore, name: str | None = None):
    """Starts a training run as a background job of ``registry``; returns the job.

    Raises:
        JobBusyError: this session already trains, or the studio is at its job cap.
        ValueError: the config is invalid (checked before any thread starts).
    """
    config.validate()
    title = f"{Path(config.model.backbone).name} on {Path(config.data.data_dir).name}"

    def target(job):
        run_dir = store.create(config, name=name)
        job.run_dir = str(run_dir)
        return train_run(config, run_dir, log=job.log, stop=job.stop)

    return registry.start(owner, "train", title, target)


def ab_configs(config: RunConfig) -> tuple[RunConfig, RunConfig]:
    """The A/B pair on the same data and split: fixed feature extractor vs fine-tuned."""
    fixed = RunConfig.from_dict(config.to_dict())
    fixed.train.fine_tune_epochs = 0
    tuned = RunConfig.from_dict(config.to_dict())
    tuned.train.fine_tune_epochs = config.train.fine_tune_epochs or max(2, config.train.epochs // 2)
    return fixed, tuned


def start_ab(registry, owner: str, config: RunConfig, store: RunStore):
    """Trains the A/B pair one after the other as one job; ``job.result`` lists both run ids."""
    from tlcore.jobs import ProgressLog

    fixed, tuned = ab_configs(config)
    fixed.validate()
    tuned.validate()

    def target(job):
        run_ids = []
        for label, variant in (("A-fixed-features", fixed), ("B-fine-tune", tuned)):
            if job.stop.is_set():
                break
            if run_ids:
                job.log = ProgressLog()  # the page follows the current half of the pair
            run_dir = store.create(variant, name=label)
            job.run_dir = str(run_dir)
            train_run(variant, run_dir, log=job.log, stop=job.stop)
            run_ids.append(run_dir.name)
        return run_ids

    return registry.start(owner, "ab", f"A/B on {Path(config.data.data_dir).name}", target)


def start_run(path: Path, config: RunConfig) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _write_atomic(path / "config.json", config.to_json())
    set_status(path, "running")
    return path


def set_status(path: Path, status: str, **extra) -> None:
    record = _read_json(Path(path) / STATUS_FILE)
    record.update(status=status, pid=os.getpid(), updated=dt.datetime.now().isoformat(timespec="seconds"), **extra)
    record.setdefault("started", record["updated"])
    _write_atomic(Path(path) / STATUS_FILE, json.dumps(record, indent=2))


def read_run(path: Path) -> Run:
    """Reads a run folder; anything missing or damaged makes it "incomplete", never an error."""
    path = Path(path)
    status = _read_json(path / STATUS_FILE)
    state = status.get("status", "incomplete")
    if state == "running" and not _pid_alive(status.get("pid")):
        state = "incomplete"
    try:
        config = RunConfig.load(path / "config.json")
    except (OSError, ValueError, TypeError):
        config = None
        state = "incomplete" if state in ("done", "running") else state
    metrics = _read_json(path / "metrics.json")
    if state == "done" and not metrics:
        state = "incomplete"
    labels_path = path / "labels.txt"
    labels = labels_path.read_text().splitlines() if labels_path.is_file() else []
    return Run(path.name, path, state, config, metrics, labels, status.get("error", ""), status.get("started", ""))


def save_result(path: Path, result) -> None:
    """Writes a finished (or stopped) training result into its run folder; metrics last."""
    path = Path(path)
    result.history.to_csv(path / "history.csv", index=False)
    _write_atomic(path / "labels.txt", "\n".join(result.classes) + "\n")
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
            frame[f"p:{label}"] = result.val_probabilities[:, index]
        frame.to_csv(path / "val_predictions.csv", index=False)
    _write_atomic(path / "metrics.json", json.dumps(result.metrics, indent=2, default=float))
    set_status(path, "stopped" if result.stopped else "done")


def train_run(config: RunConfig, run_dir: str | Path, **job_options):
    """Runs :func:`tlcore.training.run_training` and records it in ``run_dir``.

    A failure is recorded as ``status: failed`` with its message, then re-raised.
    """
    from tlcore.training import run_training

    run_dir = start_run(Path(run_dir), config)
    try:
        result = run_training(config, run_dir=run_dir, **job_options)
        save_result(run_dir, result)
    except BaseException as error:
        set_status(run_dir, "failed", error=str(error).splitlines()[0][:500] if str(error) else type(error).__name__)
        raise
    return result


# ----------------------------------------------------------------------------- exports


def export_saved_model(run: Run, model=None) -> Path:
    """Exports the run's classifier as a TensorFlow SavedModel (``model.export``)."""
    model = model or run.load_model()
    target = run.path / "exports" / "saved_model"
    shutil.rmtree(target, ignore_errors=True)
    model.export(str(target), format="tf_saved_model", verbose=False)
    return target


def export_tflite(run: Run, quantize: bool = False, model=None) -> Path:
    """Converts the SavedModel export to TFLite, float or dynamic-range quantized."""
    import tensorflow as tf

    saved = run.path / "exports" / "saved_model"
    if not saved.is_dir():
        export_saved_model(run, model)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    target = run.path / "exports" / ("model_dynamic_range.tflite" if quantize else "model_float.tflite")
    target.write_bytes(converter.convert())
    return target


def tflite_predict(path: Path, batch: np.ndarray) -> np.ndarray:
    """Runs a TFLite model on a batch, one image at a time."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path))
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(input_detail["index"], [1, *batch.shape[1:]])
    interpreter.allocate_tensors()
    outputs = []
    for image in batch:
        interpreter.set_tensor(input_detail["index"], image[None].astype(np.float32))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output_detail["index"])[0])
    return np.stack(outputs)


def export_all(run: Run, sample_images: list) -> dict:
    """Exports SavedModel + float and quantized TFLite, re-loads each, checks top-1.

    Returns:
        ``{format: {"path", "top1_agreement"}}``: the fraction of sample images whose
        top-1 class matches the Keras model's.

    Raises:
        StudioError: an export disagrees with the Keras model on any sample's top-1.
    """
    import tensorflow as tf

    from tlcore.predict import load_batch

    model = run.load_model()
    batch = load_batch(sample_images, int(model.input_shape[1]))
    reference = np.argmax(model.predict(batch, verbose=0), axis=1)
    saved = export_saved_model(run, model)
    reloaded = tf.saved_model.load(str(saved))  # keep a reference: its variables die with it
    outputs = {"saved_model": (saved, reloaded.serve(tf.constant(batch)).numpy())}
    for quantize in (False, True):
        path = export_tflite(run, quantize, model)
        outputs[path.stem] = (path, tflite_predict(path, batch))
    report = {}
    for name, (path, probabilities) in outputs.items():
        agreement = float(np.mean(np.argmax(probabilities, axis=1) == reference))
        report[name] = {"path": str(path), "top1_agreement": agreement}
        if agreement < 1.0:
            raise StudioError(
                f"The {name} export disagrees with the Keras model on {1 - agreement:.0%} of the samples."
            )
    return report
