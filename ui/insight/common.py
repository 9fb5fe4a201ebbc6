"""What the insight sections share: cached features, thumbnails, error display.

Sections are functions that render given their arguments; the Train, Data and
Evaluate pages call them. They are not pages of their own.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import streamlit as st

from tlcore.caches import BoundedCache
from tlcore.config import RunConfig
from tlcore.data.images import thumbnail
from tlcore.data.scan import folder_stamp
from tlcore.errors import StudioError
from ui import cache
from ui import shared
from ui.job_panel import start_task, task_outcome

# The dataset's pooled features per setup, folders and label decisions: one bounded tlcore
# cache (not st.cache_data) so an analysis job's thread can use it too, and one copy is kept.
_FEATURE_SETS = BoundedCache(
    "analysis features", max_items=4, max_bytes=1 << 30, sizer=lambda found: found.train_x.nbytes + found.val_x.nbytes
)


def _key(config: RunConfig) -> str:
    # Only what changes the features or the split: a new learning rate keeps them.
    return json.dumps({"data": asdict(config.data), "model": asdict(config.model), "seed": config.train.seed})


def _feature_set(config: RunConfig, stamps: tuple, backbone, log=None):
    from tlcore.insight.feature_set import dataset_features

    def create():
        return dataset_features(config, log, backbone=backbone)

    return _FEATURE_SETS.get_or_create((_key(config), stamps), create)


def _prepared(config: RunConfig):
    """``(stamps, backbone)`` for :func:`_feature_set`, or ``None`` after an error (shown)."""
    from tlcore.insight.overlay import stamp

    try:
        folders = roots(config)
        stamps = (tuple(folder_stamp(root) for root in filter(None, folders)), stamp(folders, config.data.owner))
        return stamps, cache.backbone(config.model)
    except StudioError as error:
        shared.show_error(error, "Fix the dataset on the Data page or the backbone on the Model page.")
    except ValueError as error:
        shared.show_error(error)
    return None


def features(config: RunConfig):
    """The dataset's pooled features (cached per setup, folders and label decisions), or ``None`` after an error."""
    prepared = _prepared(config)
    if prepared is None:
        return None
    try:
        with st.spinner("Computing backbone features (once; then from the cache)…"):
            return _feature_set(config, *prepared)
    except StudioError as error:
        shared.show_error(error, "Fix the dataset on the Data page or the backbone on the Model page.")
    except ValueError as error:
        shared.show_error(error)
    return None


def roots(config: RunConfig) -> list[str | None]:
    """The dataset folders (training, validation or ``None``) that label decisions are kept for:
    a .zip or the demo set resolved to the folder its images are read from."""
    sources = (config.data.data_dir, config.data.val_dir)
    return [_folder(source, folder_stamp(source)) if source else None for source in sources]


@st.cache_data(show_spinner=False, max_entries=16)
def _folder(source: str, stamp: float) -> str:
    from tlcore.data.sources import resolve_source

    try:
        return str(resolve_source(source))
    except StudioError:
        return source


def decide(config: RunConfig, path: str, digest: str, action: str, label: str | None = None) -> None:
    """Stores a label decision (``"relabel"``, ``"exclude"`` or ``"undo"``) about ``path``; errors are shown."""
    from tlcore.insight.overlay import record

    try:
        record(roots(config), path, digest, action, label, config.data.owner)
    except StudioError as error:
        shared.show_error(error)


def decision(config: RunConfig, path: str) -> dict | None:
    """The stored decision about ``path``, or ``None``."""
    from tlcore.insight.overlay import load_overlay, root_of

    try:
        return load_overlay(root_of(path, roots(config)), config.data.owner).decision(path)
    except StudioError:
        return None


def done(decision: dict) -> str:
    """A decision in words, escaped for Markdown: "excluded" or "relabelled → bees"."""
    return shared.escape_markdown(
        "excluded" if decision["action"] == "exclude" else f"relabelled → {decision['label']}"
    )


def show_image(path: str, caption: str = "", size: int = 256) -> None:
    try:
        st.image(thumbnail(path, size), width="stretch")
    except (StudioError, OSError):
        st.caption(f"({shared.escape_markdown(Path(path).name)} is no longer readable)")
    if caption:
        st.caption(caption)


def name(path: str) -> str:
    """A file name, escaped for Markdown."""
    return shared.escape_markdown(Path(path).name)


def remember(name: str, config: RunConfig, value) -> None:
    """Keeps an analysis result for this setup (a changed dataset or backbone forgets it)."""
    st.session_state[f"insight_{name}"] = (_key(config), value)


def recall(name: str, config: RunConfig):
    """The result :func:`remember` kept for this setup, or ``None``."""
    stored = st.session_state.get(f"insight_{name}")
    return stored[1] if stored is not None and stored[0] == _key(config) else None


def analysis(
    name: str, config: RunConfig, button: str, spinner: str, compute, key: str | None = None, uses_features=True
):
    """A button that runs ``compute(features)`` as a job of the registry and keeps the result.

    The work (the features too, the first time) runs in a job: the process-wide cap and
    one job at a time per visitor hold, with their messages; the page shows progress and
    Stop meanwhile, then the result, or the error once.

    Args:
        name: where the result is kept (see :func:`remember`).
        config: the current setup.
        button: the button's label.
        spinner: what the job is doing, in a few words (shown while it runs).
        compute: ``compute(feature_set)`` → the result (``compute(None)`` when not ``uses_features``).
        key: the button's widget key (default ``name``).
        uses_features: whether ``compute`` needs the dataset's features.

    Returns:
        The result kept for this setup (this job's or an earlier one's), or ``None``.
    """
    slot = f"analysis_{name}"
    if st.button(button, key=key or name):
        setup = RunConfig.from_dict(config.to_dict())  # the job's own copy: the page's objects stay editable
        prepared = _prepared(setup) if uses_features else ()
        if prepared is not None:

            def target(job):
                found = _feature_set(setup, *prepared, job.log) if uses_features else None
                return _key(setup), compute(found)

            start_task(slot, "analysis", spinner.rstrip("…. "), target)
    finished = task_outcome(slot)
    if finished is not None:
        st.session_state[f"insight_{name}"] = finished  # kept under the setup it was computed for
    return recall(name, config)
