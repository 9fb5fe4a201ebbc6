"""What the insight sections share: cached features, thumbnails, error display.

Sections are functions that render given their arguments; the Train, Data and
Evaluate pages call them. They are not pages of their own.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import streamlit as st

from pages.studio import shared
from tlcore.config import RunConfig
from tlcore.data import thumbnail
from tlcore.errors import StudioError


@st.cache_data(show_spinner="Computing backbone features (once; then from the cache)…", max_entries=4)
def _features(key: str, _stamp: tuple, _config: RunConfig, _backbone):
    from tlcore.insight.features import dataset_features

    return dataset_features(_config, backbone=_backbone)


def _key(config: RunConfig) -> str:
    # Only what changes the features or the split: a new learning rate keeps them.
    return json.dumps({"data": asdict(config.data), "model": asdict(config.model), "seed": config.train.seed})


def features(config: RunConfig):
    """The dataset's pooled features (cached per setup, folders and label decisions), or ``None`` after an error."""
    from tlcore.insight.overlay import stamp

    folders = roots(config)
    stamps = (tuple(shared.folder_stamp(root) for root in filter(None, folders)), stamp(folders, config.data.owner))
    try:
        return _features(_key(config), stamps, config, shared.backbone(config.model))
    except StudioError as error:
        shared.show_error(error, "Fix the dataset on the Data page or the backbone on the Model page.")
    except ValueError as error:
        shared.show_error(error)
    return None


def roots(config: RunConfig) -> list[str | None]:
    """The dataset folders (training, validation or ``None``) that label decisions are kept for:
    a .zip or the demo set resolved to the folder its images are read from."""
    sources = (config.data.data_dir, config.data.val_dir)
    return [_folder(source, shared.folder_stamp(source)) if source else None for source in sources]


@st.cache_data(show_spinner=False, max_entries=16)
def _folder(source: str, stamp: float) -> str:
    from tlcore.data import resolve_source

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


def analysis(name: str, config: RunConfig, button: str, spinner: str, compute, key: str | None = None):
    """A button that runs ``compute(features)`` on the cached features and keeps the result.

    Args:
        name: where the result is kept (see :func:`remember`).
        config: the current setup.
        button: the button's label.
        spinner: what the spinner says while ``compute`` runs.
        compute: ``compute(feature_set)`` → the result.
        key: the button's widget key (default ``name``).

    Returns:
        The result kept for this setup (this click's or an earlier one's), or ``None``.
    """
    if st.button(button, key=key or name):
        found = features(config)
        if found is None:
            return None
        try:
            with st.spinner(spinner):
                remember(name, config, compute(found))
        except ValueError as error:
            shared.show_error(error)
            return None
    return recall(name, config)
