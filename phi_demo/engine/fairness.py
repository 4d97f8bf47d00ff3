"""One model for everyone, in arrival order: a FIFO lock for answers from the page and the API.

A plain `threading.Lock` hands the model to whichever waiter the OS wakes first, so under
load one client can wait behind many later ones. Here each waiter draws a ticket and is
served when its number comes up. A waiter that gives up (a timeout, a closed tab, a dropped
API client) takes its ticket out of the queue, so the next one is served at once.

Urgent live-transcription windows do not queue here: they are handed to the running answer
between its tokens (engine/interleave.py)."""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")

# A waiter notices its cancel flag at least this often (an Event cannot wake a Condition);
# every hand-over wakes it at once.
CANCEL_CHECK_S = 0.1


class FifoLock:
    """The Lock interface (`acquire(blocking, timeout)`, `release`, `with`), served in arrival
    order; `acquire(cancel=event)` also gives up when the event is set."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._tickets = itertools.count()
        self._queue: deque[int] = deque()  # waiting tickets, oldest first
        self._held = False

    def acquire(self, blocking: bool = True, timeout: float = -1, cancel: threading.Event | None = None) -> bool:
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        with self._cond:
            ticket = next(self._tickets)
            self._queue.append(ticket)
            try:
                while self._held or self._queue[0] != ticket:
                    if not blocking or (cancel is not None and cancel.is_set()):
                        return False
                    wait = CANCEL_CHECK_S if cancel is not None else None
                    if deadline is not None:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            return False
                        wait = left if wait is None else min(wait, left)
                    self._cond.wait(wait)
                self._held = True
                return True
            finally:
                self._queue.remove(ticket)
                # The ticket behind a leaver (or behind the new holder) may now be first.
                self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            if not self._held:
                raise RuntimeError("release of an unheld FifoLock")
            self._held = False
            self._cond.notify_all()

    def locked(self) -> bool:
        return self._held

    @property
    def waiting(self) -> int:
        """How many are queued behind the holder."""
        return len(self._queue)

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def serve(self, cancel: threading.Event, stream: Callable[[], Iterator[T]]) -> Iterator[T]:
        """`stream()`'s items once this caller's turn comes; nothing if `cancel` is set first.
        The turn ends when the stream ends or its reader closes it."""
        if not self.acquire(cancel=cancel):
            return
        try:
            yield from stream()
        finally:
            self.release()
