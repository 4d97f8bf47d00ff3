"""Who has the model: one answer at a time, and short urgent requests between its tokens.

One answer holds the model from its first token to its last. A live-transcription window
that waits behind a long chat answer leaves the live view frozen for as long as the answer
runs. So an urgent request (ModelRequest.urgent: a few seconds of audio, a few dozen tokens)
does not wait: it is handed to the running answer, whose generate() runs it at its next
token, on the same worker thread, with its own cache, then puts the answer's adapter back
and goes on. The answer's own KV cache is untouched, so it continues exactly as it would
have (a test checks the text is identical).

Everything here waits on one Condition: the answer's yield point, the end of an answer and
the release of the model all notify it, so nobody polls."""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, Literal, TypeVar

import torch
from transformers import StoppingCriteria

T = TypeVar("T")

# A waiting urgent request notices its cancel flag at least this often (an Event cannot wake a
# Condition); every other change wakes it at once.
CANCEL_CHECK_S = 0.25


class UrgentJob(Generic[T]):
    """One urgent request's work, handed to the running answer: new (not queued), queued,
    running, then done. Only the Scheduler changes its state, under its Condition."""

    def __init__(self, run: Callable[[], T], cancel: threading.Event) -> None:
        self.run = run
        self.cancel = cancel
        self.state: Literal["new", "queued", "running", "done"] = "new"
        self.result: T | None = None
        self.error: BaseException | None = None


class Handed(enum.Enum):
    RAN = "ran"  # the job ran between a running answer's tokens: its result or error is on it
    FREE = "free"  # nothing was running: the caller now holds the model and must release() it
    CANCELLED = "cancelled"  # cancelled before it ran


class Scheduler:
    """The model's one lock, and the hand-over of urgent work to the answer that holds it.

    `share`: the most of a running answer's time that urgent requests may take. After urgent
    work of c seconds the answer runs at least c·(1 − share)/share before the next: on the
    tiny model a window costs ~0.1 s, so the live view still changes about every second; at
    the real size on a CPU a window costs seconds, and the live view then falls behind rather
    than stalling the answer (it catches up, 15 s at a time, when it ends)."""

    def __init__(self, share: float = 0.08) -> None:
        self._cond = threading.Condition()
        self._held = False
        self._accepting = False  # the holder is an answer with a yield point
        self._jobs: deque[UrgentJob[Any]] = deque()
        self.waiting = 0  # callers of hold() waiting for the model now
        self.runs = 0  # urgent requests run between tokens so far
        self.urgent_s = 0.0  # the answers' time they took (putting the answer's adapter back included)
        self.share = share
        self._next_at = 0.0

    @property
    def accepting(self) -> bool:
        return self._accepting

    # --- the model's lock ---------------------------------------------------------------
    def hold(self) -> None:
        """Wait until nobody holds the model, then hold it."""
        with self._cond:
            self.waiting += 1
            try:
                self._cond.wait_for(lambda: not self._held)
            finally:
                self.waiting -= 1
            self._held = True

    def release(self) -> None:
        with self._cond:
            self._held = False
            self._accepting = False
            self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the model for the block: an answer, a load, an attention switch, a compile."""
        self.hold()
        try:
            yield
        finally:
            self.release()

    @contextmanager
    def taking_urgent(self) -> Iterator[None]:
        """For the block (inside `exclusive`), urgent work is handed to the holder's yield point."""
        with self._cond:
            self._accepting = True
            self._cond.notify_all()
        try:
            yield
        finally:
            # Jobs still queued are taken back by their owners, which then wait for the model.
            with self._cond:
                self._accepting = False
                self._cond.notify_all()

    # --- the urgent side ---------------------------------------------------------------
    def hand_over(self, job: UrgentJob[T]) -> Handed:
        """Run `job` at the running answer's next token and wait for it; or, when the model is
        free, hold it (Handed.FREE: the caller runs the request the ordinary way, then
        releases). A load, an attention switch or a fast-decode answer is waited out."""
        cancel = job.cancel
        with self._cond:
            while True:
                if job.state == "done":
                    return Handed.RAN
                if job.state == "queued" and (cancel.is_set() or not self._accepting):
                    self._jobs.remove(job)  # the answer ended first, or the request was cancelled
                    job.state = "new"
                if job.state == "new":
                    if cancel.is_set():
                        return Handed.CANCELLED
                    if not self._held:
                        self._held = True
                        return Handed.FREE
                    if self._accepting:
                        self._jobs.append(job)
                        job.state = "queued"
                self._cond.wait(CANCEL_CHECK_S)

    def yield_point(self, resume: Callable[[], object]) -> StoppingCriteria:
        """The running answer's side: a stopping criterion that never stops it, and at each
        token runs the urgent work that is due, then `resume()` (the answer's adapter again)."""
        return _YieldPoint(self, resume)

    def _due(self) -> bool:
        return bool(self._jobs) and time.perf_counter() >= self._next_at

    def _run_due(self, resume: Callable[[], object]) -> None:
        if not self._due():  # read without the lock: a job queued just now waits one token
            return
        start = time.perf_counter()
        ran = 0
        while (job := self._next_job()) is not None:
            try:
                job.result = job.run()
            except BaseException as e:  # noqa: BLE001 - handed to the owner, which raises it
                job.error = e
            with self._cond:
                job.state = "done"
                self.runs += 1
                self._cond.notify_all()
            ran += 1
        if ran:
            resume()
            # Urgent work (and putting the answer back) took this much of the answer's time.
            spent = time.perf_counter() - start
            self.urgent_s += spent
            self._next_at = time.perf_counter() + spent * (1 - self.share) / self.share

    def _next_job(self) -> UrgentJob[Any] | None:
        with self._cond:
            while self._jobs:
                job = self._jobs.popleft()
                if job.cancel.is_set():
                    job.state = "new"  # its owner sees the cancel and gives up
                    self._cond.notify_all()
                    continue
                job.state = "running"
                return job
            return None


class _YieldPoint(StoppingCriteria):
    def __init__(self, scheduler: Scheduler, resume: Callable[[], object]) -> None:
        self.scheduler, self.resume = scheduler, resume

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object) -> torch.Tensor:
        self.scheduler._run_due(self.resume)
        return torch.zeros((input_ids.shape[0],), dtype=torch.bool, device=input_ids.device)
