"""Who the browser is (a cookie, or Streamlit's login) and the setup it finds again after a refresh or a restart."""

from __future__ import annotations

import streamlit as st

from tlcore import paths, sessions
from tlcore.errors import StudioError
from tlcore.paths import sessions_dir


def setups() -> sessions.SetupStore:
    return sessions.SetupStore(sessions_dir())


def identify() -> None:
    """Knows the visitor and restores their setup.

    With Streamlit's login configured by the operator (an ``[auth]`` section in
    ``.streamlit/secrets.toml``) the visitor is their logged-in account; otherwise the
    browser, from its cookie (a refresh keeps it). A browser without the cookie gets a
    new secret, set as a cookie by the sidebar (:func:`cookie_script`).
    """
    if "session_id" in st.session_state:
        return
    if login_configured():
        owner = _logged_in_owner()
    else:
        secret = st.context.cookies.get(sessions.COOKIE_NAME)
        if not sessions.is_secret(secret):
            secret = st.session_state.new_cookie = sessions.new_secret()
        owner = sessions.owner_id(secret)
    st.session_state.session_id = owner
    saved = setups().load(owner)
    if saved is not None:
        for kind in ("data", "model", "train"):
            st.session_state.setdefault(f"{kind}_config", getattr(saved.config, kind))
        facts().update(data_summary=saved.data_summary, num_classes=saved.num_classes)
        st.session_state.setup_synced = sessions.setup_fields(saved)
    else:  # nothing saved: the defaults are what this session starts from
        st.session_state.setup_synced = sessions.current_fields(_shared().run_config(), facts())


def login_configured() -> bool:
    """Whether the operator set up Streamlit's login (``st.login``); then identities are accounts."""
    try:
        return "auth" in st.secrets
    except Exception:  # noqa: BLE001  - no secrets.toml at all: Streamlit raises its own not-found error
        return False


def _logged_in_owner() -> str:
    if not st.user.get("is_logged_in"):
        st.title("Transfer-learning studio")
        st.write("This studio keeps each person's runs, uploads and datasets private: log in to use it.")
        st.button("Log in", on_click=st.login, type="primary")
        st.stop()
    return sessions.account_owner_id(st.user.to_dict())


def cookie_script() -> str | None:
    """:func:`tlcore.sessions.cookie_script` of a new browser's secret, once (``None``: nothing to set).

    An operator who needs more than a script's cookie configures Streamlit's login (:func:`login_configured`).
    """
    secret = st.session_state.get("new_cookie")
    return sessions.cookie_script(secret) if secret else None


def local_server() -> bool:
    """Whether this server serves one person on this machine (see ``tlcore.paths.is_local_server``)."""
    return _setting(lambda: paths.is_local_server(st.get_option("server.address")))


def downloads_allowed() -> bool:
    """Whether visitors may make this server download a model they name (``tlcore.paths.downloads_allowed``)."""
    return _setting(lambda: paths.downloads_allowed(local_server()))


def _setting(read):
    try:
        return read()
    except StudioError as error:  # a mistyped TLCORE_SHARED / TLCORE_ALLOW_DOWNLOADS: said on every page
        _shared().show_error(error)
        st.stop()


def shared_tokens() -> tuple[str, ...]:
    """The share tokens this visitor opened (``?run=<token>`` links), kept for the browser session."""
    return sessions.remember_link(st.session_state.setdefault("shared_runs", []), st.query_params.get("run"))


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
        current = sessions.current_fields(_shared().run_config(), facts())
        newer = sessions.newer_fields(sessions.setup_fields(stored), synced, current)
        if newer:
            _adopt(sessions.setup_from_fields({**current, **newer}))
            synced.update(newer)
    config = _shared().run_config()
    # The data settings carry the owner: their label decisions, and the data-roots fence
    # with their own folders, follow the settings into training and every analysis.
    config.data.owner = owner
    return owner, config, facts(), synced


def persist_setup(in_use) -> None:
    """Saves the fields this session changed, over the latest stored setup (plain Python: safe after ``st.stop()``).

    Writing the whole setup would put this tab's stale values over what another tab of
    the same browser saved meanwhile.
    """
    owner, config, measured, synced = in_use
    current = sessions.current_fields(config, measured)
    changes = sessions.changed_fields(current, synced)
    if changes or not setups().path(owner).is_file():  # the first visit saves the whole setup
        setups().save_changes(owner, changes, current)
        synced.update(changes)


def _adopt(setup: sessions.Setup) -> None:
    for kind in ("data", "model", "train"):
        st.session_state[f"{kind}_config"] = getattr(setup.config, kind)
    facts().update(data_summary=setup.data_summary, num_classes=setup.num_classes)


def _shared():
    from ui import shared  # shared imports this module: its config and errors are read when called

    return shared
