"""One bounded cache for every heavy object the long-lived server keeps.

A dashboard process lives for days and serves many visitors: every model, compiled
function, backbone, GPT-2 model and feature array it keeps must be bounded, by count
and by bytes, and what is evicted must be released (no other reference kept here).
Each cache is a :class:`BoundedCache`; :func:`get_or_create` builds a missing value
outside the lock, so two threads asking for different keys don't wait on each other.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

_MISSING = object()


def size_of(value: Any) -> int:
    """Bytes a cached value holds, as far as can be told cheaply.

    numpy arrays (and tuples/lists/dicts of them) count their buffers; objects with a
    ``nbytes`` attribute count that; Keras models count their weights; anything else
    counts 0 bytes (it is then bounded by count only).
    """
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, tuple | list):
        return sum(size_of(item) for item in value)
    if isinstance(value, dict):
        return sum(size_of(item) for item in value.values())
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    weights = getattr(value, "weights", None)
    if isinstance(weights, list):
        try:
            return int(sum(np.prod(w.shape) * 4 for w in weights))
        except (TypeError, ValueError):
            return 0
    return 0


class BoundedCache:
    """A thread-safe least-recently-used cache bounded by entry count and bytes.

    Args:
        name: shown in :meth:`stats` (what the cache holds).
        max_items: at most this many entries (>= 1).
        max_bytes: at most this many bytes as measured by ``sizer`` (``None``: no limit).
            A single value larger than the limit is returned but not kept.
        sizer: bytes of one value (default :func:`size_of`).
        on_evict: called with ``(key, value)`` after an entry leaves the cache, outside the lock.
    """

    def __init__(
        self,
        name: str,
        max_items: int,
        max_bytes: int | None = None,
        sizer: Callable[[Any], int] = size_of,
        on_evict: Callable[[Hashable, Any], None] | None = None,
    ):
        if max_items < 1:
            raise ValueError(f"A cache keeps at least one entry. Received: max_items={max_items}.")
        self.name = name
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._sizer = sizer
        self._on_evict = on_evict
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value kept under ``key`` (now the most recently used), else ``default``."""
        with self._lock:
            entry = self._entries.get(key, _MISSING)
            if entry is _MISSING:
                return default
            self._entries.move_to_end(key)
            return entry[0]

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def keys(self) -> list[Hashable]:
        """The keys kept, least recently used first."""
        with self._lock:
            return list(self._entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def put(self, key: Hashable, value: Any) -> Any:
        """Keeps ``value`` under ``key`` (replacing any), evicting the least recently used."""
        size = self._sizer(value)
        with self._lock:
            evicted = self._replace(key, value, size)
        self._release(evicted)
        return value

    def update(self, key: Hashable, change: Callable[[Any], Any]) -> Any:
        """Replaces ``key``'s value by ``change(current)`` (``None`` when absent) atomically; returns it.

        ``change`` runs under the lock, so two threads changing one key both count: keep
        it cheap (a small list or dict; never loading a model).
        """
        with self._lock:
            current = self._entries.get(key, (None, 0))[0]
            value = change(current)
            evicted = self._replace(key, value, self._sizer(value))
        self._release(evicted)
        return value

    def _replace(self, key: Hashable, value: Any, size: int) -> list[tuple[Hashable, Any]]:
        # Under the lock: keeps value under key (most recent), then evicts down to the bounds.
        evicted: list[tuple[Hashable, Any]] = []
        old = self._entries.pop(key, _MISSING)
        if old is not _MISSING:
            self._bytes -= old[1]
            if old[0] is not value:
                evicted.append((key, old[0]))
        if self.max_bytes is None or size <= self.max_bytes:
            self._entries[key] = (value, size)
            self._bytes += size
        while len(self._entries) > self.max_items or (self.max_bytes is not None and self._bytes > self.max_bytes):
            old_key, (old_value, old_size) = self._entries.popitem(last=False)
            self._bytes -= old_size
            evicted.append((old_key, old_value))
        return evicted

    def get_or_create(self, key: Hashable, create: Callable[[], Any]) -> Any:
        """The value under ``key``; ``create()`` builds and keeps it when missing.

        ``create`` runs outside the lock. If two threads build the same key at once,
        the first value kept wins and both get it.
        """
        value = self.get(key, _MISSING)
        if value is not _MISSING:
            return value
        value = create()
        with self._lock:
            entry = self._entries.get(key, _MISSING)
            if entry is not _MISSING:
                self._entries.move_to_end(key)
                return entry[0]
        return self.put(key, value)

    def pop(self, key: Hashable) -> Any:
        """Removes and releases ``key``'s value; returns it, or ``None`` when absent."""
        with self._lock:
            entry = self._entries.pop(key, _MISSING)
            if entry is _MISSING:
                return None
            self._bytes -= entry[1]
        self._release([(key, entry[0])])
        return entry[0]

    def take(self, predicate: Callable[[Hashable], bool]) -> Any:
        """Removes and returns the most recently used value whose key satisfies ``predicate``.

        The value is handed to the caller, not released (``on_evict`` is not called): a
        pool of reusable objects takes one out and puts it back when done.

        Returns:
            The value, or ``None`` when no key matches.
        """
        with self._lock:
            for key in reversed(self._entries):
                if predicate(key):
                    value, size = self._entries.pop(key)
                    self._bytes -= size
                    return value
        return None

    def discard_where(self, predicate: Callable[[Hashable], bool]) -> int:
        """Removes every entry whose key satisfies ``predicate``; returns how many."""
        with self._lock:
            keys = [key for key in self._entries if predicate(key)]
            removed = []
            for key in keys:
                value, size = self._entries.pop(key)
                self._bytes -= size
                removed.append((key, value))
        self._release(removed)
        return len(removed)

    def clear(self) -> None:
        """Empties the cache, releasing every value."""
        self.discard_where(lambda key: True)

    def stats(self) -> dict:
        """``{"name", "items", "bytes", "max_items", "max_bytes"}`` for logs and benches."""
        with self._lock:
            return {
                "name": self.name,
                "items": len(self._entries),
                "bytes": self._bytes,
                "max_items": self.max_items,
                "max_bytes": self.max_bytes,
            }

    def _release(self, evicted: list[tuple[Hashable, Any]]) -> None:
        if self._on_evict is None:
            return
        for key, value in evicted:
            self._on_evict(key, value)
