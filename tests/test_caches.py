"""The one bounded cache: a long-lived server keeps at most so many entries and bytes."""

import threading

import numpy as np
import pytest

from tlcore.caches import BoundedCache


def test_count_bound_evicts_the_least_recently_used():
    cache = BoundedCache("t", max_items=2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3


def test_byte_bound_releases_evicted_arrays():
    released = []
    cache = BoundedCache("t", max_items=10, max_bytes=3000, on_evict=lambda k, v: released.append(k))
    for name in "abcd":
        cache.put(name, np.zeros(100, "float64"))  # 800 bytes each
    assert cache.nbytes <= 3000 and len(cache) == 3
    assert released == ["a"]
    cache.put("huge", np.zeros(1000, "float64"))  # larger than the whole cache: returned, not kept
    assert "huge" not in cache and cache.nbytes <= 3000


def test_get_or_create_builds_once_per_key():
    calls = []
    cache = BoundedCache("t", max_items=4)

    def build():
        calls.append(1)
        return object()

    first = cache.get_or_create("k", build)
    assert cache.get_or_create("k", build) is first and len(calls) == 1


def test_concurrent_puts_keep_the_bounds():
    cache = BoundedCache("t", max_items=5, max_bytes=5 * 80)

    def worker(offset):
        for i in range(200):
            cache.put((offset, i), np.zeros(10))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) <= 5 and cache.nbytes <= 400


def test_a_cache_must_keep_something():
    with pytest.raises(ValueError, match="max_items=0"):
        BoundedCache("t", max_items=0)
