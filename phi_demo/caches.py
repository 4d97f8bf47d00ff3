"""Process-wide state, listed in one place. No torch, no gradio.

What the process keeps for every user, beside per-user state in Gradio's session:

- the model itself: engine/cache.ModelCache holds one model at a time (a new key releases the
  old one first), and engine/zerogpu keeps a reference to the engine for ZeroGPU's forked
  worker;
- the byte-budgeted caches registered here: the decoded media by content, and the file
  digests that key them (chat/request.py), the
  container probes (media/kinds.py), and, tied to the model, the transcripts of clips that
  left a conversation's prompt (chat/request.py), the image processor's crops
  (engine/image_cache.py) and int4's dequantization buffers (engine/int4.py).

Every cache has a byte budget, not only a count: a count alone lets a few large images grow
into gigabytes. The model's release (LoadedModel.release) empties the model-tied ones."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from cachetools import LRUCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ByteLRU(Generic[K, V]):
    """A least-recently-used store bounded by bytes (and optionally by count), thread-safe,
    counting its hits and misses. A value larger than the whole budget is not kept."""

    def __init__(self, budget_bytes: int, size_of: Callable[[V], int], max_items: int | None = None) -> None:
        self.budget_bytes = budget_bytes
        self.max_items = max_items
        self._items: LRUCache[K, V] = LRUCache(maxsize=budget_bytes, getsizeof=lambda v: int(size_of(v)))
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def bytes(self) -> int:
        return int(self._items.currsize)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        with self._lock:
            return self._items.get(key)

    def put(self, key: K, value: V) -> None:
        """Keep `value` unless it alone is over the budget; the oldest go until it fits."""
        with self._lock:
            if key in self._items:
                return
            try:
                self._items[key] = value
            except ValueError:  # cachetools: "value too large" for the whole budget
                return
            while self.max_items is not None and len(self._items) > self.max_items:
                self._items.popitem()

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        """The value for `key`, made (outside the lock: making may take long) on a miss."""
        hit = self.get(key)
        if hit is not None:
            with self._lock:
                self.hits += 1
            return hit
        value = make()
        with self._lock:
            self.misses += 1
        self.put(key, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class Budgeted(Protocol):
    """What the registry needs of a cache: its budget, what it holds now, and a way to empty it."""

    @property
    def budget_bytes(self) -> int: ...

    @property
    def bytes(self) -> int: ...

    def __len__(self) -> int: ...

    def clear(self) -> None: ...


@dataclass(frozen=True)
class Registered:
    name: str
    cache: Budgeted
    model_tied: bool  # emptied when the model is released (its contents belong to that model)

    @property
    def budget_bytes(self) -> int:
        return self.cache.budget_bytes


_registry: dict[str, Registered] = {}
_registry_lock = threading.Lock()

C = TypeVar("C", bound=Budgeted)


def register(name: str, cache: C, *, model_tied: bool = False) -> C:
    """List `cache` as process-wide state under `name` (a second registration replaces the first)."""
    with _registry_lock:
        _registry[name] = Registered(name, cache, model_tied)
    return cache


def all_caches() -> list[Registered]:
    with _registry_lock:
        return list(_registry.values())


def clear_all(model_tied_only: bool = False) -> None:
    """Empty every registered cache (or only those tied to the model)."""
    for entry in all_caches():
        if entry.model_tied or not model_tied_only:
            entry.cache.clear()
