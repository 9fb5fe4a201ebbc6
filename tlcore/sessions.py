"""Who a browser is, and the setup it left behind.

A refresh (or a server restart) starts a new Streamlit session. The browser keeps a
random secret in a cookie; the server only ever sees it, derives the owner id from
it, and keeps that owner's setup on disk. A URL holds no identity: whoever opens a
shared link (``?job=…``) has another secret, so sees neither the job nor the setup.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from tlcore.config import RunConfig

COOKIE_NAME = "tlcore_browser"
_SECRET = re.compile(r"[0-9a-f]{32}")


def new_secret() -> str:
    """A fresh browser secret (128 random bits, hex)."""
    return secrets.token_hex(16)


def is_secret(value) -> bool:
    """True when ``value`` has the shape :func:`new_secret` makes (a cookie can hold anything)."""
    return isinstance(value, str) and bool(_SECRET.fullmatch(value))


def owner_id(secret: str) -> str:
    """The owner id of a browser secret: one-way, so ids shown or stored never reveal the secret."""
    return hashlib.sha256(f"tlcore-owner:{secret}".encode()).hexdigest()[:16]


@dataclass
class Setup:
    """What a browser had chosen: the run settings plus what the Data page measured.

    Attributes:
        config: data, model and training settings.
        data_summary: e.g. "245 images · 2 classes" (for the sidebar).
        num_classes: classes of the current dataset (for parameter counts).
    """

    config: RunConfig = field(default_factory=RunConfig)
    data_summary: str = ""
    num_classes: int = 2

    def to_json(self) -> str:
        return json.dumps(
            {"config": self.config.to_dict(), "data_summary": self.data_summary, "num_classes": self.num_classes},
            indent=2,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Setup:
        raw = json.loads(text)
        return cls(RunConfig.from_dict(raw["config"]), str(raw.get("data_summary", "")), int(raw.get("num_classes", 2)))


class SetupStore:
    """Setups on disk, one file per owner: ``<root>/<owner>/setup.json``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, owner: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{8,64}", owner or ""):
            raise ValueError(f"Expected an owner id of hex digits. Received: {owner!r}.")
        return self.root / owner / "setup.json"

    def load(self, owner: str) -> Setup | None:
        """The owner's saved setup; ``None`` when there is none or it is unreadable."""
        try:
            return Setup.from_json(self.path(owner).read_text())
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, owner: str, setup: Setup) -> None:
        """Writes atomically: a crash mid-write leaves the previous setup."""
        path = self.path(owner)
        text = setup.to_json()
        try:
            if path.read_text() == text:
                return
        except OSError:
            path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".setup.{os.getpid()}.tmp")
        temporary.write_text(text)
        os.replace(temporary, path)

    def save_changes(self, owner: str, changes: dict, current: dict) -> dict:
        """Writes only ``changes`` (flat fields, see :func:`setup_fields`) over the latest saved setup.

        Another tab of the same browser may have saved newer fields since this one loaded:
        they stay. With nothing saved yet, ``current`` (this tab's whole setup as flat
        fields) is the base.

        Returns:
            The merged fields now saved.
        """
        stored = self.load(owner)
        merged = {**(setup_fields(stored) if stored is not None else current), **changes}
        self.save(owner, setup_from_fields(merged))
        return merged


def setup_fields(setup: Setup) -> dict:
    """A setup as flat fields, ``{"model.image_size": 160, …, "data_summary": "…"}``.

    The unit in which two tabs of one browser merge their changes: each tab writes only
    the fields it changed (see :meth:`SetupStore.save_changes`).
    """
    raw = json.loads(setup.to_json())
    fields = {f"{kind}.{name}": value for kind, values in raw["config"].items() for name, value in values.items()}
    return {**fields, "data_summary": raw["data_summary"], "num_classes": raw["num_classes"]}


def setup_from_fields(fields: dict) -> Setup:
    """The :class:`Setup` that :func:`setup_fields` flattened."""
    config: dict = {}
    for key, value in fields.items():
        if "." in key:
            kind, name = key.split(".", 1)
            config.setdefault(kind, {})[name] = value
    return Setup(RunConfig.from_dict(config), str(fields.get("data_summary", "")), int(fields.get("num_classes", 2)))


def account_owner_id(user: dict) -> str:
    """The owner id of an account logged in through Streamlit's login (``st.user``).

    Keyed on the identity provider and its subject id (the stable account id OpenID
    Connect promises), else the e-mail; one-way like :func:`owner_id`.

    Raises:
        ValueError: the login gave neither a subject nor an e-mail.
    """
    subject = user.get("sub") or user.get("email")
    if not subject:
        raise ValueError(f"Expected a logged-in user with a `sub` or `email`. Received: keys {sorted(user)}.")
    return hashlib.sha256(f"tlcore-account:{user.get('iss', '')}:{subject}".encode()).hexdigest()[:16]


def cookie_script(secret: str) -> str:
    """The script a page runs to store a new browser's ``secret`` for a year.

    A cookie written by a script cannot be ``HttpOnly`` (Streamlit gives a page no way to send
    a ``Set-Cookie`` header); it is ``SameSite=Strict`` and, on an https page, ``Secure``.
    """
    cookie = f"{COOKIE_NAME}={secret}; path=/; max-age=31536000; SameSite=Strict"
    return f"<script>document.cookie = {cookie!r} + (location.protocol === 'https:' ? '; Secure' : '');</script>"


def current_fields(config: RunConfig, measured: dict) -> dict:
    """:func:`setup_fields` of a live setup: ``config`` and what the Data page measured (``data_summary``, ``num_classes``)."""
    summary, num_classes = measured.get("data_summary", ""), measured.get("num_classes", 2)
    return setup_fields(Setup(config, summary, num_classes))


def newer_fields(stored: dict, synced: dict, current: dict) -> dict:
    """The fields another tab of the browser saved since this session last saw the stored setup (``synced``),
    where this session has not changed the field itself (``current`` still as synced): this session takes them."""
    return {k: v for k, v in stored.items() if v != synced.get(k) and current.get(k) == synced.get(k, v)}


def changed_fields(current: dict, synced: dict) -> dict:
    """The fields this session changed since it last saw the stored setup: the only ones it writes."""
    return {k: v for k, v in current.items() if k not in synced or synced[k] != v}


MAX_SHARED_LINKS = 20


def remember_link(opened: list[str], token: str | None) -> tuple[str, ...]:
    """Adds a share token this session opened (``?run=<token>``) to ``opened``, keeping the latest
    :data:`MAX_SHARED_LINKS` (a session cannot grow the list without end); all of them."""
    if token and token not in opened:
        opened.append(token)
        del opened[:-MAX_SHARED_LINKS]
    return tuple(opened)
