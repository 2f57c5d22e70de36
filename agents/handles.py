"""Short handles (``img_3``, ``obj_12``, ``ovl_2``) for things a session made, in a bounded, expiring store.

A handle names an image, an object or an overlay PNG for later calls. The store holds at most
``max_items`` entries (the least recently used is dropped first) and forgets an entry ``ttl_s`` seconds
after its last use, so a long session's memory stays bounded. Handles are never reused within a store.
"""
from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from typing import Any, Callable

from agents.errors import BadArgument, NotFound

KINDS = {"img": "image", "obj": "object", "ovl": "overlay"}
HANDLE_PATTERN = re.compile(r"^(img|obj|ovl)_([0-9]{1,12})$")


def is_handle(text: str) -> bool:
    return HANDLE_PATTERN.match(text) is not None


class HandleStore:
    """Thread-safe LRU store with expiry; ``add`` returns a new handle, ``get`` checks its kind."""

    def __init__(self, max_items: int = 512, ttl_s: float = 3600.0, clock: Callable[[], float] = time.monotonic):
        if max_items < 1 or ttl_s <= 0:
            raise ValueError(f"max_items must be >= 1 and ttl_s > 0, got {max_items}, {ttl_s}")
        self.max_items, self.ttl_s, self._clock = max_items, ttl_s, clock
        self._items: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._counter = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._items)

    def add(self, kind: str, value: Any) -> str:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
        with self._lock:
            self._expire()
            self._counter += 1
            handle = f"{kind}_{self._counter}"
            self._items[handle] = (self._clock(), value)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
            return handle

    def get(self, handle: str, kind: str) -> Any:
        """The value of ``handle``; ``BadArgument`` for another kind, ``NotFound`` for unknown or expired."""
        match = HANDLE_PATTERN.match(handle)
        if match is None:
            raise BadArgument(f"{handle[:40]!r} is not a handle; handles look like '{kind}_1'")
        if match.group(1) != kind:
            raise BadArgument(f"{handle!r} is an {KINDS[match.group(1)]} handle; an {KINDS[kind]} handle "
                              f"({kind}_N) is needed here")
        with self._lock:
            self._expire()
            if handle not in self._items:
                raise NotFound(f"unknown or expired handle {handle!r}: handles live {self.ttl_s:g} s after their "
                               f"last use and at most {self.max_items} are kept; pass the {KINDS[kind]} again")
            _, value = self._items.pop(handle)
            self._items[handle] = (self._clock(), value)
            return value

    def _expire(self) -> None:
        now = self._clock()
        while self._items:
            handle, (used, _) = next(iter(self._items.items()))
            if now - used <= self.ttl_s:
                break
            del self._items[handle]
