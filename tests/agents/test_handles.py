"""HandleStore: kinds, LRU bound, expiry, never-reused ids."""
from __future__ import annotations

import pytest

from agents.errors import BadArgument, NotFound
from agents.handles import HandleStore


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_add_get_and_kinds():
    store = HandleStore()
    image, obj = store.add("img", "pixels"), store.add("obj", {"box": 1})
    assert (image, obj) == ("img_1", "obj_2")
    assert store.get("img_1", "img") == "pixels" and store.get("obj_2", "obj") == {"box": 1}
    with pytest.raises(BadArgument, match="'obj_2' is an object handle; an image handle"):
        store.get("obj_2", "img")
    with pytest.raises(BadArgument, match="is not a handle"):
        store.get("picture", "img")
    with pytest.raises(ValueError, match="kind must be one of"):
        store.add("vid", 1)


def test_least_recently_used_is_dropped_and_ids_are_not_reused():
    store = HandleStore(max_items=2)
    a, b = store.add("img", "a"), store.add("img", "b")
    store.get(a, "img")  # a is now more recent than b
    c = store.add("img", "c")
    assert len(store) == 2 and store.get(a, "img") == "a" and store.get(c, "img") == "c"
    with pytest.raises(NotFound, match=f"unknown or expired handle '{b}'.*at most 2 are kept"):
        store.get(b, "img")
    assert store.add("img", "d") == "img_4"


def test_expiry_counts_from_the_last_use():
    clock = Clock()
    store = HandleStore(ttl_s=10, clock=clock)
    handle = store.add("ovl", b"png")
    clock.now = 8
    assert store.get(handle, "ovl") == b"png"
    clock.now = 17  # 9 s after the last use
    assert store.get(handle, "ovl") == b"png"
    clock.now = 27.5
    with pytest.raises(NotFound, match="handles live 10 s after their last use"):
        store.get(handle, "ovl")
    assert len(store) == 0
