"""The one model instance, keyed by everything that needs a reload."""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from typing import Callable, Generic, Protocol, TypeVar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelKey:
    source: str
    revision: str | None
    device: str
    dtype: str
    attn: str
    quantize: str = "none"
    offload: bool = False


class Releasable(Protocol):
    def set_attention(self, attn: str) -> None: ...

    def release(self) -> None: ...


M = TypeVar("M", bound=Releasable)


class ModelCache(Generic[M]):
    """Same key -> the same object. A new key releases the old model first, so two never
    sit in memory together. A change of attention alone is tried in place. Callers that
    arrive together wait on one lock and share one load."""

    def __init__(self, load: Callable[[ModelKey], M]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._key: ModelKey | None = None
        self._value: M | None = None
        self.loads = 0  # how many real loads happened; tests and the sidebar read it

    @property
    def current(self) -> M | None:
        return self._value

    @property
    def key(self) -> ModelKey | None:
        return self._key

    def get(self, key: ModelKey) -> M:
        with self._lock:
            value = self._value
            if self._key == key and value is not None:
                return value
            if value is not None and self._key is not None and dataclasses.replace(self._key, attn=key.attn) == key:
                try:
                    value.set_attention(key.attn)
                    self._key = key
                    return value
                except Exception as e:  # noqa: BLE001 - some switches need a reload; that is fine
                    log.info("attention switch in place failed (%s); reloading", e)
            self._release_locked()
            value = self._value = self._load(key)
            self._key = key
            self.loads += 1
            return value

    def release(self) -> None:
        with self._lock:
            self._release_locked()

    def _release_locked(self) -> None:
        if self._value is not None:
            self._value.release()
        self._value = None
        self._key = None
