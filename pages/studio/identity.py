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
        st.session_state.setup_synced = sessions.setup_fields(saved)
    else:  # nothing saved: the defaults are what this session starts from
        st.session_state.setup_synced = _fields(_shared().run_config(), facts())


def facts() -> dict:
    """What the Data page measured of the current dataset: ``data_summary``, ``num_classes``."""
    return st.session_state.setdefault("data_facts", {})


def setup_in_use():
    """The owner and the live setup objects, taken before a page runs.

    First picks up what another tab of this browser saved since this session last saw
    the stored setup (fields this session has not changed itself). Pages change these
    objects in place, so :func:`persist_setup` can save them after the page even when it
    ended with ``st.stop()``, when Streamlit calls may no longer run.
    """
    owner = st.session_state.session_id
    synced = st.session_state.setdefault("setup_synced", {})  # the stored values this session last saw
    stored = setups().load(owner)
    if stored is not None:
        current = _fields(_shared().run_config(), facts())
        newer = sessions.setup_fields(stored)
        newer = {k: v for k, v in newer.items() if v != synced.get(k) and current.get(k) == synced.get(k, v)}
        if newer:
            _adopt(sessions.setup_from_fields({**current, **newer}))
            synced.update(newer)
    return owner, _shared().run_config(), facts(), synced


def persist_setup(in_use) -> None:
    """Saves the fields this session changed, over the latest stored setup (plain Python: safe after ``st.stop()``).

    Writing the whole setup would put this tab's stale values over what another tab of
    the same browser saved meanwhile.
    """
    owner, config, measured, synced = in_use
    current = _fields(config, measured)
    changes = {k: v for k, v in current.items() if synced.get(k, _UNSEEN) != v}
    if changes or not setups().path(owner).is_file():  # the first visit saves the whole setup
        setups().save_changes(owner, changes, current)
        synced.update(changes)


_UNSEEN = object()


def _fields(config, measured: dict) -> dict:
    summary, num_classes = measured.get("data_summary", ""), measured.get("num_classes", 2)
    return sessions.setup_fields(sessions.Setup(config, summary, num_classes))


def _adopt(setup: sessions.Setup) -> None:
    for kind in ("data", "model", "train"):
        st.session_state[f"{kind}_config"] = getattr(setup.config, kind)
    facts().update(data_summary=setup.data_summary, num_classes=setup.num_classes)


def _shared():
    from pages.studio import shared  # shared re-exports this module's functions

    return shared
