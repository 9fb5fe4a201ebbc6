"""Who the browser is (a cookie) and the setup it finds again after a refresh or a restart."""

from __future__ import annotations

import streamlit as st

from tlcore import sessions
from tlcore.data import workspace_dir


def setups() -> sessions.SetupStore:
    return sessions.SetupStore(workspace_dir() / "sessions")


def identify() -> None:
    """Knows the browser from its cookie (a refresh keeps it) and restores its setup.

    A browser without the cookie gets a new secret, set as a cookie by :func:`sidebar`.
    """
    if "session_id" in st.session_state:
        return
    secret = st.context.cookies.get(sessions.COOKIE_NAME)
    if not sessions.is_secret(secret):
        secret = st.session_state.new_cookie = sessions.new_secret()
    owner = st.session_state.session_id = sessions.owner_id(secret)
    saved = setups().load(owner)
    if saved is not None:
        for kind in ("data", "model", "train"):
            st.session_state.setdefault(f"{kind}_config", getattr(saved.config, kind))
        facts().update(data_summary=saved.data_summary, num_classes=saved.num_classes)


def facts() -> dict:
    """What the Data page measured of the current dataset: ``data_summary``, ``num_classes``."""
    return st.session_state.setdefault("data_facts", {})


def setup_in_use():
    """The owner and the live setup objects, taken before a page runs.

    Pages change these objects in place, so :func:`persist_setup` can save them after
    the page even when it ended with ``st.stop()``, when Streamlit calls may no longer run.
    """
    return st.session_state.session_id, _shared().run_config(), facts()


def persist_setup(in_use) -> None:
    """Saves the setup as the page left it (plain Python: safe after ``st.stop()``)."""
    owner, config, measured = in_use
    summary, num_classes = measured.get("data_summary", ""), measured.get("num_classes", 2)
    setups().save(owner, sessions.Setup(config, summary, num_classes))


def _shared():
    from pages.studio import shared  # shared re-exports this module's functions

    return shared
