"""Cached tlcore calls shared by the pages: dataset scans, backbones, run models, the run store.

Every cache here is bounded (count, and bytes for the heavy ones): the server lives for days.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from tlcore.caches import BoundedCache, size_of
from tlcore.config import ModelConfig
from tlcore.data.scan import folder_stamp
from tlcore.paths import runs_dir
from tlcore.runs.store import RunStore


def store() -> RunStore:
    """The run store as this visitor may see it: their runs, published runs, runs shared with them."""
    from ui.identity import local_server, shared_tokens

    owner = st.session_state.get("session_id")
    return RunStore(runs_dir(), owner=owner, operator=local_server(), shared=shared_tokens())


def scan(source: str, skip_placeholders: bool):
    """The dataset as this visitor may read it (see :func:`_scan`), scanned again when the folder changed."""
    return _scan(source, skip_placeholders, folder_stamp(source), st.session_state.get("session_id"))


@st.cache_data(show_spinner="Scanning images…", max_entries=32)
def _scan(source: str, skip_placeholders: bool, stamp: float, owner: str | None):
    """Cached :func:`tlcore.data.pipeline.scan_source`: ``stamp`` changes when the folder does (part of the
    cache key, so images added on disk are seen); the owner too: what one visitor may read, another may not."""
    from tlcore.data.pipeline import scan_source

    return scan_source(source, owner, skip_placeholders)


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


@st.cache_data(show_spinner="Reading the model file…", max_entries=8)
def _model_file_info(path: str, size: int, mtime_ns: int) -> dict:
    from tlcore.model.backbones import model_file_facts

    return model_file_facts(path)


def model_file_info(path: str) -> dict:
    """:func:`tlcore.model.backbones.model_file_facts` of a model file, read once per file content, not on
    every rerun: uploads are content-addressed (see ``tlcore.data.sources.save_upload``), and size and
    modification time are part of the key."""
    stat = Path(path).stat()
    return _model_file_info(str(path), stat.st_size, stat.st_mtime_ns)


def backbone(model: ModelConfig):
    """The loaded backbone of ``model`` (reloaded only when a backbone setting changes)."""
    from tlcore.model.backbones import load_backbone

    key = model.backbone_key()
    return _loaded(_BACKBONES, key, lambda: load_backbone(ModelConfig.from_backbone_key(key)), "Loading the backbone…")


def fine_tune_epoch_seconds(model: ModelConfig, train, num_train: int, num_val: int) -> dict:
    """What a fine-tune epoch should take on this server (:func:`tlcore.model.choices.epoch_timing`),
    measured once per backbone, settings and image counts."""
    from tlcore.config import RunConfig

    settings = RunConfig(model=model, train=train).to_json()
    return _epoch_seconds(model.backbone_key(), settings, num_train, num_val)


@st.cache_data(show_spinner="Timing a fine-tune epoch on this server…", max_entries=16)
def _epoch_seconds(backbone_key: str, settings: str, num_train: int, num_val: int) -> dict:
    from tlcore.model.cut import fine_tune_timing

    return fine_tune_timing(backbone(ModelConfig.from_backbone_key(backbone_key)), settings, num_train, num_val)


def run_model(run_path: str, mtime: float):
    """A run's model, loaded again only when its file changes (``mtime`` is part of the key)."""
    from tlcore.runs.store import read_run

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
    from tlcore.inference.predict import predict_paths

    return predict_paths(run_model(run_path, mtime), list(paths), tta)


@st.cache_data(max_entries=8)
def _input_reference(run_path: str, mtime: float):
    from tlcore.inference.input_check import load_reference

    return load_reference(run_path)


def input_reference(run):
    """The run's saved training-image reference for Predict's input check (read once per run model)."""
    return _input_reference(str(run.path), _model_mtime(run))


def finished_runs(shared: bool = True):
    """The finished runs this visitor may see (``shared``: with runs opened through a share link)."""
    return [run for run in store().list(shared) if run.finished]


def pick_run(label: str = "Run", key: str = "run_pick", shared: bool = True):
    """A select box of the finished runs this visitor may see (a shared link's run, else the
    session's last run first); ``None`` if there are none. Read-only runs say so."""
    runs = finished_runs(shared)
    if not runs:
        return None
    ids, labels = [run.run_id for run in runs], {run.run_id: run.choice_label for run in runs}
    index = store().first_choice(runs, st.query_params.get("run"), st.session_state.get("run_id"))
    chosen = st.selectbox(label, ids, index=index, key=key, format_func=labels.get)
    st.session_state.run_id = chosen
    return runs[ids.index(chosen)]
