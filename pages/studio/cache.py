"""Cached tlcore calls shared by the pages: dataset scans, backbones, run models, the run store.

Every cache here is bounded (count, and bytes for the heavy ones): the server lives for days.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from tlcore.caches import BoundedCache, size_of
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


# Backbones and run models: tlcore's bounded cache (by count and bytes; what is evicted is
# released) rather than st.cache_resource, which bounds the count only. One copy each,
# usable from job threads too.
_BACKBONES = BoundedCache("page backbones", max_items=2, max_bytes=1 << 30, sizer=lambda loaded: size_of(loaded.model))
_RUN_MODELS = BoundedCache("run models", max_items=4, max_bytes=1 << 30)


def _loaded(cache: BoundedCache, key, create, spinner: str):
    found = cache.get(key)
    if found is not None:
        return found
    with st.spinner(spinner):
        return cache.get_or_create(key, create)


def backbone(model: ModelConfig):
    """The loaded backbone of ``model`` (reloaded only when a backbone setting changes)."""
    from tlcore.backbones import load_backbone

    key = model.backbone_key()
    return _loaded(_BACKBONES, key, lambda: load_backbone(ModelConfig.from_backbone_key(key)), "Loading the backbone…")


def run_model(run_path: str, mtime: float):
    """A run's model, loaded again only when its file changes (``mtime`` is part of the key)."""
    from tlcore.runs import read_run

    return _loaded(_RUN_MODELS, (run_path, mtime), lambda: read_run(Path(run_path)).load_model(), "Loading the model…")


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
