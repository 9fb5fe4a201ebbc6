"""The one bounded cache: a long-lived server keeps at most so many entries and bytes."""

import ast
import gc
import importlib
import pkgutil
import threading
import types
import weakref
from pathlib import Path

import numpy as np
import pytest

from tlcore.caches import BoundedCache

ROOT = Path(__file__).resolve().parents[1]


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
    import weakref

    from tlcore.inference import predict

    predict._COMPILED.clear()  # what earlier tests left (their models may still be alive) is not this test's
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


# ----------------------------------------------------------------------------- every cache is bounded (issue 23)
#
# One helper serves every cache the long-lived server keeps. For each cache found in
# tlcore: fill it past its count limit and past its byte limit; it keeps no more than
# its bounds, and what it dropped is garbage (nothing else here holds on to it).


class Held:
    """A stand-in value of a chosen size, as each cache's sizer measures it (small itself: 200,000 fit)."""

    __slots__ = ("nbytes", "__weakref__")

    def __init__(self, nbytes: int = 0):
        self.nbytes = nbytes

    @property
    def model(self):  # sizers that measure a loaded backbone's model
        return self

    @property
    def variables(self):  # head engines: weights and two Adam slots, 4 bytes each
        return [types.SimpleNamespace(shape=(self.nbytes // 12,))]

    @property
    def train_x(self):  # feature sets
        return types.SimpleNamespace(nbytes=self.nbytes // 2)

    val_x = train_x


def module_caches() -> dict[str, BoundedCache]:
    """``"tlcore.module.NAME"`` → every BoundedCache a tlcore module keeps, plus a GPT-2 model's own."""
    import tlcore
    from tlcore.text.generation import _compiled_state

    found = {}
    for info in pkgutil.walk_packages(tlcore.__path__, "tlcore."):
        if not info.name.endswith("__main__"):
            module = importlib.import_module(info.name)
            found |= {f"{info.name}.{n}": v for n, v in vars(module).items() if isinstance(v, BoundedCache)}
    found["tlcore.text.generation (per model)"] = _compiled_state(types.SimpleNamespace()).functions
    return found


EVERY_CACHE = {  # the caches named in docs/LIMITS.md and issue 23; more may be added
    "tlcore.inference.predict._COMPILED",
    "tlcore.training.trainer._BACKBONES",
    "tlcore.training.head._FREE",
    "tlcore.training.features._POOLED",
    "tlcore.training.features._ACTIVATIONS",
    "tlcore.text.models._MODELS",
    "tlcore.text.generation (per model)",
    "tlcore.model.file_trial._VERDICTS",
    "tlcore.data.scan._CHECKED",
    "tlcore.insight.duplicates._SIGNATURES",
    "tlcore.paths._EXTRA_ROOTS",
}


def _fill(cache: BoundedCache, count: int, nbytes: int) -> list[weakref.ref]:
    refs = []
    gc.disable()  # no cycles here; collections over TensorFlow's heap would make 200,000 puts take seconds
    try:
        for index in range(count):
            value = Held(nbytes)
            refs.append(weakref.ref(value))
            cache.put(("bounded-test", index), value)
            del value  # the cache holds the only reference: dropping it frees the value at once
    finally:
        gc.enable()
    return refs


def test_every_cache_keeps_its_count_and_byte_bounds_and_releases_what_it_drops():
    caches = module_caches()
    assert EVERY_CACHE <= set(caches), f"missing: {EVERY_CACHE - set(caches)}"
    for name, cache in caches.items():
        cache.clear()
        try:
            refs = _fill(cache, cache.max_items + 3, 0)
            assert len(cache) == cache.max_items, name
            assert [ref() is None for ref in refs] == [True] * 3 + [False] * cache.max_items, name
            if cache.max_bytes is not None:
                cache.clear()
                refs = _fill(cache, 3, (cache.max_bytes // 24 + 1) * 12)  # each over half the limit
                assert len(cache) == 1 and cache.nbytes <= cache.max_bytes, name
                assert [ref() is None for ref in refs] == [True, True, False], name
        finally:
            cache.clear()
        assert [ref() is None for ref in refs] == [True] * len(refs), f"{name} holds values it no longer lists"


def test_tlcore_keeps_no_hand_written_module_level_cache():
    """State kept between calls is a BoundedCache: no empty dict, OrderedDict, set or list filled later."""
    starts_empty = ("dict", "OrderedDict", "defaultdict", "set", "list", "WeakValueDictionary")
    offenders = []
    for path in sorted((ROOT / "tlcore").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            value = getattr(node, "value", None) if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            called = getattr(getattr(value, "func", None), "attr", None) or getattr(
                getattr(value, "func", None), "id", None
            )
            if (
                (isinstance(value, ast.Dict) and not value.keys)
                or (isinstance(value, ast.List | ast.Set) and not value.elts)
                or (isinstance(value, ast.Call) and called in starts_empty and not value.args)
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)[:80]}")
    assert offenders == [], "use tlcore.caches.BoundedCache (bounded, releases on evict)"
