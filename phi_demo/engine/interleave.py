"""Short urgent requests between the tokens of a running answer.

One answer holds the model from its first token to its last. A live-transcription window
that waits behind a long chat answer leaves the live view frozen for as long as the answer
runs. So an urgent request (ModelRequest.urgent: a few seconds of audio, a few dozen tokens)
does not wait: it is queued here, and the running answer's generate() runs it at its next
token, on the same worker thread, with its own cache, then puts the answer's adapter back
and goes on. The answer's own KV cache is untouched, so it continues exactly as it would
have (a test checks the text is identical)."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

import torch
from transformers import StoppingCriteria


class UrgentJob:
    def __init__(self, run: Callable[[], object]):
        self._run = run
        self._lock = threading.Lock()
        self._state = "queued"
        self.done = threading.Event()
        self.result = None
        self.error: BaseException | None = None

    def _take(self, state: str) -> bool:
        with self._lock:
            if self._state != "queued":
                return False
            self._state = state
            return True

    def claim(self) -> bool:
        """The running answer takes the job; False when its owner took it back."""
        return self._take("running")

    def withdraw(self) -> bool:
        """The owner takes the job back (the answer ended first, or the request was cancelled)."""
        return self._take("withdrawn")

    def execute(self) -> None:
        try:
            self.result = self._run()
        except BaseException as e:  # noqa: BLE001 - handed to the owner, which raises it
            self.error = e
        finally:
            self.done.set()


class Interleaver:
    """`share`: the most of a running answer's time that urgent requests may take. After
    urgent work of c seconds the answer runs at least c·(1 − share)/share before the next:
    on the tiny model a window costs ~0.1 s, so the live view still changes about every
    second; at the real size on a CPU a window costs seconds, and the live view then falls
    behind rather than stalling the answer (it catches up, 15 s at a time, when it ends)."""

    def __init__(self, share: float = 0.08):
        self._lock = threading.Lock()
        self._jobs: deque[UrgentJob] = deque()
        self.accepting = False  # an answer with a yield point is running
        self.runs = 0  # urgent requests run between tokens so far
        self.share = share
        self._next_at = 0.0

    def submit(self, job: UrgentJob) -> None:
        with self._lock:
            self._jobs.append(job)

    def charge(self, seconds: float) -> None:
        """Urgent work (and putting the answer back) took `seconds` of the answer's time."""
        self._next_at = time.perf_counter() + seconds * (1 - self.share) / self.share

    def due(self) -> bool:
        return bool(self._jobs) and time.perf_counter() >= self._next_at

    def run_pending(self) -> int:
        n = 0
        while True:
            with self._lock:
                job = self._jobs.popleft() if self._jobs else None
            if job is None:
                self.runs += n
                return n
            if job.claim():
                job.execute()
                n += 1

    def yield_point(self, resume: Callable[[], None]) -> StoppingCriteria:
        return _YieldPoint(self, resume)


class _YieldPoint(StoppingCriteria):
    """Never stops the answer: at each token, runs what is queued, then `resume()` (which
    activates the answer's adapter again)."""

    def __init__(self, interleaver: Interleaver, resume: Callable[[], None]):
        self.interleaver, self.resume = interleaver, resume

    def __call__(self, input_ids, scores, **kwargs):
        if self.interleaver._jobs and self.interleaver.due():
            start = time.perf_counter()
            if self.interleaver.run_pending():
                self.resume()
                self.interleaver.charge(time.perf_counter() - start)
        return torch.zeros((input_ids.shape[0],), dtype=torch.bool, device=input_ids.device)
