"""One long-lived thread per loaded model that runs every generate() call, one at a time."""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import logging
import os
import queue
import threading
from typing import Callable

log = logging.getLogger(__name__)

# The thread's name says whether it is generating: handy in a thread dump, and how tests
# see that Stop really stopped the model.
BUSY = "phi-demo-generate"
IDLE = "phi-demo-generate-idle"


def _malloc_trim():
    """glibc's malloc_trim, or None elsewhere (macOS, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


# After an answer, hand the memory its activations used back to the system: glibc keeps
# freed heap pages (under its raised mmap threshold, up to 32 MB chunks come from the
# heap), so resident memory grew by over a gigabyte after a few image and audio answers.
_TRIM = _malloc_trim()


class GenerationWorker:
    """Runs submitted functions on one thread that outlives each answer.

    A fresh thread per answer costs twice: on the CPU each new thread builds its own OpenMP
    team (raw generate measured 7% slower in a fresh thread than in the main thread on 2
    cores, and no slower in a long-lived one), and CUDA graphs recorded by torch.compile
    ("reduce-overhead", used by fast decode) belong to the thread that recorded them, so
    they would be recorded again for every answer.

    The thread is (re)started on demand: also after a fork (ZeroGPU runs the GPU work in a
    forked process, where the parent's threads do not exist)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._jobs: queue.SimpleQueue | None = None
        self._pid = None
        self._at_exit = False

    def submit(self, fn: Callable[[], None]) -> threading.Event:
        """Queue `fn` (which must not raise); the returned event is set once it has run."""
        done = threading.Event()
        with self._lock:
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._jobs = queue.SimpleQueue()
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._loop, args=(self._jobs,), name=IDLE, daemon=True)
                self._thread.start()
                if not self._at_exit:
                    # Ended and joined before the interpreter tears down: a torch thread still
                    # alive then can abort the process ("terminate called without an active
                    # exception"), seen after answers that ran windows between their tokens.
                    atexit.register(self.stop, 10.0)
                    self._at_exit = True
            self._jobs.put((fn, done))
        return done

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

    @staticmethod
    def _loop(jobs: queue.SimpleQueue) -> None:
        me = threading.current_thread()
        while (job := jobs.get()) is not None:
            fn, done = job
            me.name = BUSY
            try:
                fn()
            except BaseException:  # noqa: BLE001 - the worker must survive any one job
                log.exception("generation job failed")
            finally:
                me.name = IDLE
                done.set()
            if _TRIM is not None:
                _TRIM(0)  # after done: the answer's timings do not include it
