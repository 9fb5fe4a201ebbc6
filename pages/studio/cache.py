"""Cached tlcore calls shared by the pages: dataset scans, backbones, run models, the run store."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from tlcore.config import ModelConfig
from tlcore.runs import RunStore, runs_root


def store() -> RunStore:
    return RunStore(runs_root())


@st.cache_data(show_spinner="Scanning images…", max_entries=32)
def scan(source: str, skip_placeholders: bool, stamp: float):
    """Cached scan of a dataset folder/zip/demo (``stamp`` changes when the folder does: part of the
    cache key, so images added on disk are seen; an ``_``-prefixed name would not be hashed)."""
    from tlcore.data import resolve_source, scan_folder

    return scan_folder(resolve_source(source), skip_placeholders=skip_placeholders)


def folder_stamp(source: str) -> float:
    path = Path(source)
    try:
        if not path.is_dir():
            return path.stat().st_mtime
        return max([path.stat().st_mtime] + [p.stat().st_mtime for p in path.iterdir()])
    except OSError:
        return 0.0


@st.cache_resource(show_spinner="Loading the backbone…", max_entries=4)
def _backbone(key: str):
    from tlcore.backbones import load_backbone

    return load_backbone(ModelConfig.from_backbone_key(key))


@st.cache_data(show_spinner="Reading the model file…", max_entries=8)
def _model_file_info(path: str, size: int, mtime_ns: int) -> dict:
    from tlcore.backbones import feature_layers, load_model_file

    full = load_model_file(path)
    return {"layers": feature_layers(full), "image_size": full.input_shape[1]}


def model_file_info(path: str) -> dict:
    """``{"layers": cut candidates, "image_size": its own input size or None}`` of a model file.

    Read once per file content, not on every rerun: uploads are content-addressed (see
    ``tlcore.data.save_upload``), and size and modification time are part of the key.
    """
    stat = Path(path).stat()
    return _model_file_info(str(path), stat.st_size, stat.st_mtime_ns)


def backbone(model: ModelConfig):
    """The loaded backbone of ``model`` (reloaded only when a backbone setting changes)."""
    return _backbone(model.backbone_key())


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def run_model(run_path: str, mtime: float):
    """A run's model, loaded again only when its file changes (``mtime`` is part of the key)."""
    from tlcore.runs import read_run

    return read_run(Path(run_path)).load_model()


def _model_mtime(run) -> float:
    return (run.path / "model.keras").stat().st_mtime


def load_run_model(run):
    return run_model(str(run.path), _model_mtime(run))


def tta_probabilities(run, paths: list[str], tta: str = "flip"):
    """The run's model over ``paths`` with test-time augmentation (computed once per run and model file)."""
    return _tta_probabilities(str(run.path), _model_mtime(run), tuple(paths), tta)


@st.cache_data(show_spinner="Predicting the validation images and their mirrors…", max_entries=8)
def _tta_probabilities(run_path: str, mtime: float, paths: tuple[str, ...], tta: str):
    from tlcore.predict import predict_paths

    return predict_paths(run_model(run_path, mtime), list(paths), tta)


@st.cache_data(max_entries=8)
def _input_reference(run_path: str, mtime: float):
    from tlcore.input_check import load_reference

    return load_reference(run_path)


def input_reference(run):
    """The run's saved training-image reference for Predict's input check (read once per run model)."""
    return _input_reference(str(run.path), _model_mtime(run))


def finished_runs():
    return [run for run in store().list() if run.status in ("done", "stopped") and run.has_model]


def pick_run(label: str = "Run", key: str = "run_pick"):
    """A select box of finished runs (the session's last run first); ``None`` if there are none."""
    runs = finished_runs()
    if not runs:
        return None
    ids = [run.run_id for run in runs]
    preferred = st.session_state.get("run_id")
    index = ids.index(preferred) if preferred in ids else 0
    chosen = st.selectbox(label, ids, index=index, key=key)
    st.session_state.run_id = chosen
    return runs[ids.index(chosen)]
