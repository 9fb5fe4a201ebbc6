"""What the insight sections share: cached features, thumbnails, error display.

Sections are functions that render given their arguments; the Train, Data and
Evaluate pages call them. They are not pages of their own.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from tlcore.config import RunConfig
from tlcore.data.images import thumbnail
from tlcore.data.scan import folder_stamp
from tlcore.errors import StudioError
from tlcore.insight.feature_set import FIX_HINT, features_for, features_key
from tlcore.insight.overlay import decision_folder, decision_words
from ui import cache, messages
from ui.job_panel import start_task, task_outcome


def _prepared(config: RunConfig):
    """``(folders, backbone)`` for :func:`tlcore.insight.feature_set.features_for`, or ``None`` after an error (shown)."""
    try:
        return roots(config), cache.backbone(config.model)
    except (StudioError, ValueError) as error:
        _show(error)
    return None


def _show(error: Exception) -> None:
    messages.show_error(error, FIX_HINT if isinstance(error, StudioError) else "")


def features(config: RunConfig):
    """The dataset's pooled features (cached per setup, folders and label decisions), or ``None`` after an error."""
    prepared = _prepared(config)
    if prepared is None:
        return None
    try:
        with st.spinner("Computing backbone features (once; then from the cache)…"):
            return features_for(config, *prepared)
    except (StudioError, ValueError) as error:
        _show(error)
    return None


def roots(config: RunConfig) -> list[str | None]:
    """The dataset folders (training, validation or ``None``) that label decisions are kept for
    (:func:`tlcore.insight.overlay.decision_folder`)."""
    sources = (config.data.data_dir, config.data.val_dir)
    return [_folder(source, folder_stamp(source)) if source else None for source in sources]


@st.cache_data(show_spinner=False, max_entries=16)
def _folder(source: str, stamp: float) -> str:
    return decision_folder(source)


def decide(config: RunConfig, path: str, digest: str, action: str, label: str | None = None) -> None:
    """Stores a label decision (``"relabel"``, ``"exclude"`` or ``"undo"``) about ``path``; errors are shown."""
    from tlcore.insight.overlay import record

    try:
        record(roots(config), path, digest, action, label, config.data.owner)
    except StudioError as error:
        messages.show_error(error)


def decision(config: RunConfig, path: str) -> dict | None:
    """The stored decision about ``path``, or ``None``."""
    from tlcore.insight.overlay import load_overlay, root_of

    try:
        return load_overlay(root_of(path, roots(config)), config.data.owner).decision(path)
    except StudioError:
        return None


def done(decision: dict) -> str:
    """:func:`tlcore.insight.overlay.decision_words`, escaped for Markdown."""
    return messages.escape_markdown(decision_words(decision))


def show_image(path: str, caption: str = "", size: int = 256) -> None:
    try:
        st.image(thumbnail(path, size), width="stretch")
    except (StudioError, OSError):
        st.caption(f"({messages.escape_markdown(Path(path).name)} is no longer readable)")
    if caption:
        st.caption(caption)


def name(path: str) -> str:
    """A file name, escaped for Markdown."""
    return messages.escape_markdown(Path(path).name)


def remember(name: str, config: RunConfig, value) -> None:
    """Keeps an analysis result for this setup (a changed dataset or backbone forgets it)."""
    st.session_state[f"insight_{name}"] = (features_key(config), value)


def recall(name: str, config: RunConfig):
    """The result :func:`remember` kept for this setup, or ``None``."""
    stored = st.session_state.get(f"insight_{name}")
    return stored[1] if stored is not None and stored[0] == features_key(config) else None


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
                found = features_for(setup, *prepared, job.log) if uses_features else None
                return features_key(setup), compute(found)

            start_task(slot, "analysis", spinner.rstrip("…. "), target)
    finished = task_outcome(slot)
    if finished is not None:
        st.session_state[f"insight_{name}"] = finished  # kept under the setup it was computed for
    return recall(name, config)
