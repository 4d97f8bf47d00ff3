"""A least-recently-used store bounded by bytes (and optionally by count). No torch, no gradio.

Every cache in the app has a byte budget: a count alone lets a few large images grow into
gigabytes, shared by all users."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable


class ByteLRU:
    def __init__(self, budget_bytes: int, size_of: Callable[[Any], int], max_items: int | None = None):
        self.budget_bytes = budget_bytes
        self.max_items = max_items
        self._size_of = size_of
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable):
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            self._items.move_to_end(key)
            return hit[0]

    def put(self, key: Hashable, value) -> None:
        """Keep `value` unless it alone is over the budget; evict the oldest until it fits."""
        size = int(self._size_of(value))
        with self._lock:
            if key in self._items or size > self.budget_bytes:
                return
            self._items[key] = (value, size)
            self.bytes += size
            while self.bytes > self.budget_bytes or (self.max_items and len(self._items) > self.max_items):
                _, (_, old) = self._items.popitem(last=False)
                self.bytes -= old

    def get_or_make(self, key: Hashable, make: Callable[[], Any]):
        hit = self.get(key)
        if hit is not None:
            return hit
        value = make()
        with self._lock:
            self.misses += 1
        self.put(key, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0
