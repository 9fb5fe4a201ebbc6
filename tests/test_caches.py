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


def test_take_hands_out_a_pooled_value_without_releasing_it():
    released = []
    cache = BoundedCache("t", max_items=4, on_evict=lambda k, v: released.append(k))
    cache.put(("shape", 1), "engine 1")
    cache.put(("other", 2), "engine 2")
    assert cache.take(lambda key: key[0] == "shape") == "engine 1"
    assert cache.take(lambda key: key[0] == "shape") is None and released == [] and len(cache) == 1


# ----------------------------------------------------------------------------- the predict cache (issue 21)


def _tiny_classifier(size=8):
    import keras

    return keras.Sequential(
        [keras.Input((size, size, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, "softmax")]
    )


def test_models_used_for_predictions_are_freed_when_their_owner_drops_them():
    """Each model used on Predict stayed pinned by its compiled function: ~34 MB per run, never given back."""
    import gc
    import weakref

    from tlcore.inference import predict

    freed = []
    for _ in range(predict._COMPILED.max_items + 4):  # more models than the cache keeps
        model = _tiny_classifier()
        probabilities = predict.predict_probabilities(model, np.zeros((2, 8, 8, 3), "float32"), "flip")
        assert probabilities.shape == (2, 2)
        freed.append(weakref.ref(model))
        del model
    gc.collect()
    assert [ref() is None for ref in freed] == [True] * len(freed)
    predict.predict_probabilities(_tiny_classifier(), np.zeros((1, 8, 8, 3), "float32"))
    assert len(predict._COMPILED) == 1  # their compiled functions went with them


def test_the_predict_cache_keeps_at_most_its_bound_while_models_live():
    from tlcore.inference import predict

    models = [_tiny_classifier() for _ in range(predict._COMPILED.max_items + 3)]
    for model in models:
        predict.predict_probabilities(model, np.zeros((1, 8, 8, 3), "float32"))
    assert len(predict._COMPILED) <= predict._COMPILED.max_items
    again = predict.predict_probabilities(models[-1], np.ones((1, 8, 8, 3), "float32"))
    assert np.allclose(again, np.asarray(models[-1](np.ones((1, 8, 8, 3), "float32"))), atol=1e-6)
