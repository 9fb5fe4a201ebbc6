"""Rooms: the audience link of a presented run (an unguessable, revocable token) and its limits.

A room is a file ``<workspace>/present/<hash of the token>.json``: ``{"owner", "run_id",
"collecting", "created"}``. Only the token's hash names the file, so a listing of the folder
does not hand out working links; a lookup is one file read, whatever the number of runs.
Only a visitor who may change a run (its owner; the one person of a local server) opens a room
for it, revokes it or turns photo collection on. Deleting the file revokes the link at once:
every audience request looks the token up again.

What a room counts while it is open (phones, predictions per minute, the tally of answers)
lives in this process only, in a bounded cache: a restart starts the count again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path

from tlcore.caches import BoundedCache
from tlcore.errors import StudioError
from tlcore.paths import workspace_dir
from tlcore.runs.access import write_json_atomic

TOKEN = re.compile(r"[A-Za-z0-9_-]{32,64}")


class RoomClosedError(StudioError):
    """The link's token is unknown or was revoked."""


class RoomLimitError(StudioError):
    """The room is full, or its phones asked too often: try again later."""


@dataclass(frozen=True)
class RoomLimits:
    """What one room allows (a room is one audience link).

    Attributes:
        capacity: phones at once; a phone counts while it was seen in the last ``idle_seconds``.
        per_minute: predictions of the whole room in any 60 s (the per-token rate limit).
        per_phone_per_minute: predictions of one phone in any 60 s.
        idle_seconds: a phone not seen for this long no longer takes a place.
    """

    capacity: int = 40
    per_minute: int = 180
    per_phone_per_minute: int = 12
    idle_seconds: float = 120.0


@dataclass
class Room:
    """An open audience link. ``token`` is the secret the link carries."""

    token: str
    owner: str | None
    run_id: str
    collecting: bool = False
    created: float = field(default_factory=time.time)


def rooms_dir() -> Path:
    return workspace_dir() / "present"


def _record_path(token: str) -> Path:
    return rooms_dir() / f"{hashlib.sha256(token.encode()).hexdigest()[:40]}.json"


def _save(room: Room) -> None:
    rooms_dir().mkdir(parents=True, exist_ok=True)
    record = {"token": room.token, "owner": room.owner, "run_id": room.run_id, "collecting": room.collecting}
    write_json_atomic(_record_path(room.token), {**record, "created": room.created})


def find_room(token) -> Room | None:
    """The open room of an audience link's token; ``None`` for anything else (unknown, revoked, malformed)."""
    if not isinstance(token, str) or not TOKEN.fullmatch(token):
        return None
    try:
        record = json.loads(_record_path(token).read_text())
    except (OSError, ValueError):
        return None
    stored = record.get("token") if isinstance(record, dict) else None
    if not isinstance(stored, str) or not hmac.compare_digest(stored, token):
        return None
    return Room(
        token,
        record.get("owner"),
        str(record.get("run_id", "")),
        bool(record.get("collecting")),
        record.get("created", 0.0),
    )


def _check_presenter(store, run) -> None:
    if not store.can_write(run):
        raise StudioError(
            f"Only the visitor who trained run {run.run_id} can present it to a room. Train your own run to present it."
        )


def room_for_run(store, run) -> Room | None:
    """The open room of ``run`` made by this store's identity, if any."""
    if not rooms_dir().is_dir():
        return None
    for path in sorted(rooms_dir().glob("*.json")):
        try:
            token = json.loads(path.read_text()).get("token")
        except (OSError, ValueError, AttributeError):
            continue
        room = find_room(token)
        if room is not None and room.run_id == run.run_id and room.owner == store.owner:
            return room
    return None


def open_room(store, run) -> Room:
    """The run's audience link: the open one of this identity, else a new unguessable token.

    Raises:
        StudioError: this identity may not change the run (it is another visitor's, or published).
    """
    _check_presenter(store, run)
    room = room_for_run(store, run)
    if room is None:
        room = Room(secrets.token_urlsafe(32), store.owner, run.run_id)
        _save(room)
    return room


def _owned(store, room: Room) -> None:
    if find_room(room.token) is None:
        raise RoomClosedError("This audience link was revoked already: open a new one to present again.")
    if store.owner is not None and room.owner != store.owner:
        raise StudioError("Only the presenter who opened this audience link can change it.")


def revoke_room(store, room: Room) -> None:
    """Ends the link: the next request of every phone that holds it is refused.

    Raises:
        StudioError: another identity's room, or already revoked.
    """
    _owned(store, room)
    _record_path(room.token).unlink(missing_ok=True)
    _STATES.pop(_record_path(room.token).stem)


def update_room(store, room: Room, *, collecting: bool | None = None, run=None) -> Room:
    """Turns photo collection on or off, or moves the link to another run of the presenter (a retrained one).

    Raises:
        StudioError: another identity's room, a revoked one, or a run this identity may not change.
    """
    _owned(store, room)
    if collecting is not None:
        room.collecting = bool(collecting)
    if run is not None:
        _check_presenter(store, run)
        room.run_id = run.run_id
    _save(room)
    return room


class RoomState:
    """What an open room counts, in this process: phones, recent predictions, the tally.

    Thread-safe: every audience session of the server calls it.
    """

    def __init__(self, limits: RoomLimits):
        self.limits = limits
        self._lock = threading.Lock()
        self._phones: OrderedDict[str, float] = OrderedDict()  # phone -> last seen, oldest first
        self._recent: deque[float] = deque()
        self._phone_recent: dict[str, deque[float]] = {}
        self.tally: Counter = Counter()
        self.predictions = 0
        self._seconds: deque[float] = deque(maxlen=200)  # the server's time per answer, latest ones

    def _forget_idle(self, now: float) -> None:
        while self._phones and next(iter(self._phones.values())) < now - self.limits.idle_seconds:
            phone, _ = self._phones.popitem(last=False)
            self._phone_recent.pop(phone, None)
        while self._recent and self._recent[0] < now - 60:
            self._recent.popleft()

    def join(self, phone: str, now: float | None = None) -> None:
        """Counts ``phone`` as in the room.

        Raises:
            RoomLimitError: the room already holds ``capacity`` other phones.
        """
        now = time.time() if now is None else now
        with self._lock:
            self._forget_idle(now)
            if phone not in self._phones and len(self._phones) >= self.limits.capacity:
                raise RoomLimitError(
                    f"The room is full: {len(self._phones)} phones are using this link (the limit is "
                    f"{self.limits.capacity}). Watch the big screen, or try again in a few minutes."
                )
            self._phones[phone] = now
            self._phones.move_to_end(phone)

    def admit(self, phone: str, now: float | None = None) -> None:
        """Counts one prediction of ``phone`` against the room's limits.

        Raises:
            RoomLimitError: the room is full, or the room or this phone made too many predictions in the last minute.
        """
        now = time.time() if now is None else now
        self.join(phone, now)
        with self._lock:
            mine = self._phone_recent.setdefault(phone, deque())
            while mine and mine[0] < now - 60:
                mine.popleft()
            if len(mine) >= self.limits.per_phone_per_minute:
                raise RoomLimitError(
                    f"You made {len(mine)} predictions in the last minute (the limit is "
                    f"{self.limits.per_phone_per_minute} per phone): wait {_wait(mine[0], now)} s and try again."
                )
            if len(self._recent) >= self.limits.per_minute:
                raise RoomLimitError(
                    f"The room made {len(self._recent)} predictions in the last minute (the limit is "
                    f"{self.limits.per_minute}): wait {_wait(self._recent[0], now)} s and try again."
                )
            mine.append(now)
            self._recent.append(now)

    def record(self, label: str, seconds: float | None = None) -> None:
        """Adds one answer to the room's tally (and the server's time to make it, when given)."""
        with self._lock:
            self.tally[label] += 1
            self.predictions += 1
            if seconds is not None:
                self._seconds.append(seconds)

    def snapshot(self, now: float | None = None) -> dict:
        """``{"phones", "predictions", "last_minute", "tally", "seconds_p50", "seconds_p95"}`` for the
        presenter's screen (the server's time per answer over the latest 200; ``None`` before any)."""
        now = time.time() if now is None else now
        with self._lock:
            self._forget_idle(now)
            return {
                "phones": len(self._phones),
                "predictions": self.predictions,
                "last_minute": len(self._recent),
                "tally": dict(self.tally.most_common()),
                "seconds_p50": _quantile(self._seconds, 0.5),
                "seconds_p95": _quantile(self._seconds, 0.95),
            }


def _quantile(values, q: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else None


def _wait(oldest: float, now: float) -> int:
    return max(1, int(oldest + 60 - now + 0.999))


# One state per open room, bounded: a server keeps at most this many rooms' counts.
_STATES = BoundedCache("present rooms", max_items=64)


def room_state(room: Room, limits: RoomLimits | None = None) -> RoomState:
    """The process-wide counts of ``room`` (made on first use with ``limits``, default :class:`RoomLimits`)."""
    return _STATES.get_or_create(_record_path(room.token).stem, lambda: RoomState(limits or RoomLimits()))
