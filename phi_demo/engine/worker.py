"""One long-lived thread per loaded model that runs every generate() call, one at a time."""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import logging
import os
import queue
import threading
import weakref
from typing import Callable

log = logging.getLogger(__name__)

_Job = tuple[Callable[[], None], threading.Event]


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None elsewhere (macOS, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


# After an answer, hand the memory its activations used back to the system: glibc keeps
# freed heap pages (under its raised mmap threshold, up to 32 MB chunks come from the
# heap), so resident memory grew by over a gigabyte after a few image and audio answers.
_TRIM = _malloc_trim()

# Every worker alive, so that a test (or a thread dump) can ask whether any model is
# generating without holding the engine. Weak: a released model's worker goes with it.
_workers: weakref.WeakSet[GenerationWorker] = weakref.WeakSet()


def busy_workers() -> list[GenerationWorker]:
    """The workers running a job right now."""
    return [w for w in list(_workers) if w.busy.is_set()]


class GenerationWorker:
    """Runs submitted functions on one thread that outlives each answer.

    A fresh thread per answer costs twice: on the CPU each new thread builds its own OpenMP
    team (raw generate measured 7% slower in a fresh thread than in the main thread on 2
    cores, and no slower in a long-lived one), and CUDA graphs recorded by torch.compile
    ("reduce-overhead", used by fast decode) belong to the thread that recorded them, so
    they would be recorded again for every answer.

    The thread is (re)started on demand: also after a fork (ZeroGPU runs the GPU work in a
    forked process, where the parent's threads do not exist).

    `busy` is set while a job runs; `submitted`, `started` and `finished` count jobs, and
    `wait_idle` waits until every submitted one has finished: how the engine (and the tests)
    see that the model is generating, and that Stop really stopped it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._jobs: queue.SimpleQueue[_Job | None] | None = None
        self._pid: int | None = None
        self._at_exit = False
        self.busy = threading.Event()
        self._counts = threading.Condition()
        self.submitted = 0
        self.started = 0
        self.finished = 0
        _workers.add(self)

    def submit(self, fn: Callable[[], None]) -> threading.Event:
        """Queue `fn` (which must not raise); the returned event is set once it has run."""
        done = threading.Event()
        with self._lock:
            jobs = self._jobs
            if jobs is None or self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                jobs = self._jobs = queue.SimpleQueue()
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._loop, args=(jobs,), name="phi-demo-worker", daemon=True)
                self._thread.start()
                if not self._at_exit:
                    # Ended and joined before the interpreter tears down: a torch thread still
                    # alive then can abort the process ("terminate called without an active
                    # exception"), seen after answers that ran windows between their tokens.
                    atexit.register(self.stop, 10.0)
                    self._at_exit = True
            with self._counts:
                self.submitted += 1
            jobs.put((fn, done))
        return done

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every submitted job has finished; False if `timeout` passed first."""
        with self._counts:
            return self._counts.wait_for(lambda: self.finished >= self.submitted, timeout)

    def stop(self, timeout: float = 60.0) -> None:
        """End the thread once its queued work is done, and wait for that.

        Waiting matters: a thread that has run torch work and ends while the model is being
        freed and the process exits aborted the process ("terminate called without an
        active exception", exit code 134)."""
        with self._lock:
            thread, jobs = self._thread, self._jobs
            self._thread = self._jobs = None
        if jobs is not None:
            jobs.put(None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("the generation thread did not end within %.0f s", timeout)

    def _loop(self, jobs: queue.SimpleQueue[_Job | None]) -> None:
        while (job := jobs.get()) is not None:
            fn, done = job
            with self._counts:
                self.started += 1
            self.busy.set()
            try:
                fn()
            except BaseException:  # noqa: BLE001 - the worker must survive any one job
                log.exception("generation job failed")
            finally:
                self.busy.clear()
                with self._counts:
                    self.finished += 1
                    self._counts.notify_all()
                done.set()
            if _TRIM is not None:
                _TRIM(0)  # after done: the answer's timings do not include it
