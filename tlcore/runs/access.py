"""Who may see and change a run: the ownership rule, kept once (the run store and pages call it).

A run folder made by a dashboard visitor holds ``access.json``: ``{"owner": <owner id>}``,
plus ``"share": <token>`` once its owner made a share link. A folder without it was put
there by the operator (the CLI): published.

Who may do what (the one rule; pages only call it): a store acts for an identity.
``RunStore(root)`` is the operator (the CLI, benches): every run. ``RunStore(root,
owner=…)`` is a dashboard visitor: their own runs (read and change); runs with no owner
recorded, which the operator put in the folder (e.g. made with the CLI), are published
read-only to everyone; a run of another visitor only through its share link (``shared`` tokens), read
only, and never listed with one's own. Anything else is "no run named …". On a local server
(``operator=True``: only this machine reaches it, so every browser is the one person's) a
visitor sees and changes every run, as before ownership existed.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from tlcore.errors import StudioError

if TYPE_CHECKING:
    from tlcore.runs.store import Run

ACCESS_FILE = "access.json"
UNREADABLE_OWNER = "unreadable"
SHARE_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,64}")


def _read_json(path: Path) -> dict:
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def write_json_atomic(path: Path, record: dict) -> None:
    """Writes ``record`` as JSON so that a reader sees the old file or the new one, never half."""
    temporary = Path(path).with_name(f".{Path(path).name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(record))
    os.replace(temporary, path)


def run_owner(path: str | Path) -> str | None:
    """The owner id recorded in a run folder; ``None`` for a run the operator made (CLI, no
    ``access.json``: published)."""
    record = Path(path) / ACCESS_FILE
    if not record.exists():
        return None
    owner = _read_json(record).get("owner")
    # A damaged record must not publish a visitor's run: it becomes nobody's (the operator still sees it).
    return owner if isinstance(owner, str) and owner else UNREADABLE_OWNER


class RunAccess:
    """What an identity may do with the runs of a store (mixed into ``tlcore.runs.store.RunStore``).

    Attributes (set by the store): ``root``, ``owner`` (``None``: the operator), ``operator``
    (the one person of a local server) and ``shared`` (share tokens the visitor opened).
    """

    root: Path
    owner: str | None
    operator: bool
    shared: tuple[str, ...]

    def access(self, run: Run) -> str | None:
        """What this identity may do with ``run``: ``"owner"``, ``"operator"``, ``"published"``,
        ``"shared"``, or ``None`` (nothing: it is another visitor's and not shared with this one)."""
        if self.owner is None:
            return "operator"
        if run.owner == self.owner:
            return "owner"
        if self.operator:  # the one person of a local server: every browser of theirs, every run
            return "operator"
        if run.owner is None:
            return "published"
        token = _read_json(run.path / ACCESS_FILE).get("share")
        if isinstance(token, str) and any(hmac.compare_digest(token, mine) for mine in self.shared):
            return "shared"
        return None

    def can_read(self, run: Run) -> bool:
        return self.access(run) is not None

    def can_write(self, run: Run) -> bool:
        return self.access(run) in ("owner", "operator")

    def _visible(self, run: Run) -> Run | None:
        access = self.access(run)
        if access is None:
            return None
        run.access = access
        return run

    def _owned_record(self, run: Run, action: str) -> dict:
        """The run's access record, when this identity owns the run; refuses ``action`` otherwise."""
        if self.owner is None or run.owner != self.owner:
            raise StudioError(f"Only the visitor who trained run {run.run_id} can {action}.")
        return _read_json(run.path / ACCESS_FILE)

    def share(self, run: Run) -> str:
        """The run's share token (made once): whoever opens ``?run=<token>`` may read this run only.

        Raises:
            StudioError: this identity does not own the run.
        """
        record = self._owned_record(run, "share it")
        if not SHARE_TOKEN.fullmatch(str(record.get("share", ""))):
            record["share"] = secrets.token_urlsafe(24)
            write_json_atomic(run.path / ACCESS_FILE, record)
        return record["share"]

    def unshare(self, run: Run) -> None:
        """Ends the run's share link: whoever opened it no longer sees the run.

        Raises:
            StudioError: this identity does not own the run.
        """
        record = self._owned_record(run, "stop sharing it")
        record.pop("share", None)
        write_json_atomic(run.path / ACCESS_FILE, record)

    def share_token(self, run: Run) -> str | None:
        """The run's share token if its owner (this identity) shared it, else ``None``."""
        if self.owner is None or run.owner != self.owner:
            return None
        token = _read_json(run.path / ACCESS_FILE).get("share")
        return token if isinstance(token, str) else None

    def shared_folder(self, token: str) -> Path | None:
        """The run folder a share token opens (any owner's), or ``None`` when no run has it."""
        if not isinstance(token, str) or not SHARE_TOKEN.fullmatch(token) or not self.root.is_dir():
            return None
        for path in self.root.iterdir():
            stored = _read_json(path / ACCESS_FILE).get("share") if path.is_dir() else None
            if isinstance(stored, str) and hmac.compare_digest(stored, token):
                return path
        return None
