"""Live transcription: the commit policy (LocalAgreement over a window that starts where the last phrase ended) and the driver that feeds it the microphone."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from phi_demo.chat.request import media_request
from phi_demo.contract import ChatEngine, Piece, collect
from phi_demo.media.audio import SAMPLE_RATE, to_mono_16k
from phi_demo.settings import GenerationSettings
from phi_demo.speech.longaudio import Cue, to_srt
from phi_demo.speech.tasks import instruction
from phi_demo.speech.vad import EnergyVAD, SpeechFrames


def _norm(word: str) -> str:
    return re.sub(r"[^\w]", "", word.lower())


def agreed_prefix(a: list[str], b: list[str]) -> int:
    """How many leading words two hypotheses share (case and punctuation aside)."""
    n = 0
    for x, y in zip(a, b):
        if _norm(x) != _norm(y):
            break
        n += 1
    return n


@dataclass
class Segment:
    start_s: float
    end_s: float
    text: str


@dataclass
class StreamingTranscript:
    max_window_s: float = 15.0
    pause_s: float = 0.6
    silence_db: float = -45.0
    min_new_audio_s: float = 0.4  # do not recognise again for less new audio than this
    sr: int = SAMPLE_RATE
    speech: SpeechFrames | None = None  # this stream's detector; the energy threshold if not given
    min_speech_s: float = 0.09

    window: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    window_start_s: float = 0.0
    received_s: float = 0.0
    segments: list[Segment] = field(default_factory=list)
    agreed: list[str] = field(default_factory=list)  # committed words of the open segment
    tentative: list[str] = field(default_factory=list)
    committed_until_s: float = 0.0
    _previous: list[str] | None = None
    _previous_end_s: float = 0.0
    _recognised_until_s: float = 0.0
    _frames: SpeechFrames = field(init=False, repr=False)  # `speech`, or the energy threshold's

    def __post_init__(self):
        self._frames = self.speech if self.speech is not None else EnergyVAD(self.silence_db).stream()

    # audio in
    def add_audio(self, samples: np.ndarray) -> None:
        samples = np.clip(np.asarray(samples, np.float32), -1.0, 1.0)
        self._frames.feed(samples)
        self.window = np.concatenate([self.window, samples])
        self.received_s += len(samples) / self.sr
        if not self.window_has_speech():
            # Nothing said yet in this window: keep only a short lead-in.
            keep = int(0.3 * self.sr)
            dropped = max(0, len(self.window) - keep)
            self.window = self.window[dropped:]
            self.window_start_s += dropped / self.sr
            if not self.agreed and not self.tentative:
                self.committed_until_s = self.received_s

    @property
    def window_end_s(self) -> float:
        return self.window_start_s + len(self.window) / self.sr

    def window_has_speech(self, end_s: float | None = None) -> bool:
        end = self.window_end_s if end_s is None else end_s
        return self._frames.speech_s(self.window_start_s, end) >= self.min_speech_s

    def trailing_pause_s(self, end_s: float | None = None) -> float:
        """Silence at the end of the window up to `end_s`, as the detector decided it."""
        return self._frames.trailing_silence_s(self.window_start_s, self.window_end_s if end_s is None else end_s)

    def _pause_point(self) -> float | None:
        """Where a pause long enough to end the phrase completed, if no recognition has
        looked past it yet: the window is cut there, whenever in a chunk it happened."""
        t = self._frames.first_pause_end(self.window_start_s, self.window_end_s, self.pause_s)
        return t if t is not None and t > self._recognised_until_s + 1e-6 else None

    def needs_recognition(self) -> bool:
        return self.window_has_speech() and (
            self._pause_point() is not None or self.window_end_s - self._recognised_until_s >= self.min_new_audio_s)

    def snapshot(self) -> tuple[np.ndarray, float]:
        """The audio to recognise now, and where it ends: up to the end of a phrase when one
        ended, and never more than `max_window_s`, however much arrived while the last
        recognition ran (the rest waits its turn)."""
        end_s = min(self.window_end_s, self.window_start_s + self.max_window_s)
        pause = self._pause_point()
        if pause is not None:
            end_s = min(end_s, pause)
        audio = self.window[: int(round((end_s - self.window_start_s) * self.sr))].copy()
        return audio, self.window_start_s + len(audio) / self.sr

    @property
    def waiting_s(self) -> float:
        """Audio received past the cap, for the next window."""
        return max(0.0, len(self.window) / self.sr - self.max_window_s)

    # hypotheses in
    def apply(self, hypothesis: str, end_s: float) -> None:
        """Take the recognition of the window up to `end_s` (audio may have arrived since)."""
        words = hypothesis.split()
        self._recognised_until_s = end_s
        if self._previous is not None:
            n = agreed_prefix(self._previous, words)
            if n > len(self.agreed) and agreed_prefix(self.agreed, words) == len(self.agreed):
                self.agreed = words[:n]
                self.committed_until_s = max(self.committed_until_s, self._previous_end_s)
        self._previous, self._previous_end_s = words, end_s
        # Committed words stay; what follows them by position is the tentative tail.
        self.tentative = words[len(self.agreed):]
        trailing = self.trailing_pause_s(end_s)
        if trailing >= self.pause_s or end_s - self.window_start_s >= self.max_window_s - 1e-6:
            self._finish_segment(words, end_s, trailing)

    def finish(self, hypothesis: str | None) -> None:
        """The recording stopped: the last words become final."""
        if hypothesis is not None:
            self._finish_segment(hypothesis.split(), self.window_end_s, 0.0)
        self.tentative = []
        self.committed_until_s = self.received_s

    def _finish_segment(self, words: list[str], end_s: float, trailing_s: float) -> None:
        final = self.agreed + words[len(self.agreed):]
        if final:
            self.segments.append(Segment(self.window_start_s, max(self.window_start_s, end_s - trailing_s),
                                         " ".join(final)))
        drop = int(round((end_s - self.window_start_s) * self.sr))
        self.window = self.window[drop:]
        self.window_start_s = end_s
        self.agreed, self.tentative, self._previous = [], [], None
        self.committed_until_s = max(self.committed_until_s, end_s)

    # views
    @property
    def committed_text(self) -> str:
        return " ".join([s.text for s in self.segments] + self.agreed)

    @property
    def tentative_text(self) -> str:
        return " ".join(self.tentative)

    @property
    def lag_s(self) -> float:
        """How far committed text lags behind the audio received."""
        return max(0.0, self.received_s - self.committed_until_s)

    def txt(self) -> str:
        return "\n".join(s.text for s in self.segments) + ("\n" if self.segments else "")

    def srt(self) -> str:
        return to_srt([Cue(seg.start_s, seg.end_s, seg.text) for seg in self.segments])


def engine_recognizer(engine: ChatEngine, language: str = "auto", task: str = "transcribe", to: str = "en",
                      max_new_tokens: int = 96, urgent: bool = False) -> Callable[..., str]:
    """A recogniser backed by the chat engine (speech adapter, greedy decoding); the
    optional cancel event stops it within a token. `urgent`: the live view's windows, which
    run between the tokens of a chat answer instead of waiting for its end."""
    text = instruction(language, task, to)
    ask = engine_asker(engine, max_new_tokens, urgent)
    return lambda samples, cancel=None: ask(text, samples, cancel)


def engine_asker(engine: ChatEngine, max_new_tokens: int = 256, urgent: bool = False) -> Callable[..., str]:
    """ask(text, 16 kHz audio or None, cancel) -> the answer: one greedy request."""

    gen = GenerationSettings(max_new_tokens=max_new_tokens)

    def ask(text: str, samples: np.ndarray | None = None, cancel: threading.Event | None = None) -> str:
        request = media_request(text, audios=[] if samples is None else [samples], urgent=urgent)
        # The engine sets the event it is given once the answer ends, so each request gets its
        # own; the caller's cancel closes the stream, which stops the model.
        pieces = engine.stream(request, gen, threading.Event())
        try:
            answer, _stats = collect(_until(pieces, cancel))
        finally:
            if isinstance(pieces, Generator):  # every engine's stream is one (the Protocol says Iterator)
                pieces.close()
        return answer.strip()

    return ask


def _until(pieces: Iterable[Piece], cancel: threading.Event | None) -> Iterator[Piece]:
    for piece in pieces:
        yield piece
        if cancel is not None and cancel.is_set():
            return


class LiveTranscriber:
    """One recording: thread-safe, chunks never wait for the model."""

    def __init__(self, recognize: Callable[[np.ndarray], str], policy: StreamingTranscript | None = None,
                 inline: bool = False):
        """`inline`: recognise in the thread that adds the chunk instead of a worker. On ZeroGPU
        a GPU call must come from the request's own thread; each chunk's request then does the
        recognition that is due (one at a time), and later chunks are stored without waiting."""
        self.recognize = recognize
        self.policy = policy or StreamingTranscript()
        self.inline = inline
        self._idle = threading.Event()  # no inline recognition running
        self._idle.set()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self.error: str | None = None
        self.compute_s: list[tuple[float, float]] = []  # (audio position, seconds) per recognition
        self.stopped = False

    def add_chunk(self, sample_rate: int, samples: np.ndarray) -> None:
        audio = to_mono_16k(samples, sample_rate)
        with self._lock:
            if self.stopped:
                return
            self.policy.add_audio(audio)
            if self.inline:
                if not self._idle.is_set():
                    return
                self._idle.clear()
            elif self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="phi-demo-transcribe", daemon=True)
                self._worker.start()
                return
            else:
                return
        try:
            self._work()
        finally:
            self._idle.set()

    def _work(self) -> None:
        while True:
            with self._lock:
                if self.stopped or not self.policy.needs_recognition():
                    return
                audio, end_s = self.policy.snapshot()
            t = time.perf_counter()
            try:
                text = self.recognize(audio)
            except Exception as e:  # noqa: BLE001 - shown on the page, recording goes on
                self.error = f"Recognition failed: {e}"
                return
            with self._lock:
                self.compute_s.append((end_s, time.perf_counter() - t))
                self.policy.apply(text, end_s)

    def stop(self) -> None:
        """Wait for the running recognition, then finalise what is left."""
        with self._lock:
            self.stopped = True
            worker = self._worker
        if worker is not None:
            worker.join()
        self._idle.wait()
        # The model runs outside the lock, as in _work: view() takes the lock and must never
        # wait for a recognition (the page would freeze for its whole length).
        final = None
        try:
            # What waited past the cap is recognised a window at a time, like the rest.
            while (window := self._next_capped_window()) is not None:
                audio, end_s = window
                text = self.recognize(audio)
                with self._lock:
                    self.policy.apply(text, end_s)
            with self._lock:
                rest = self.policy.window.copy() if self.policy.window_has_speech() else None
            if rest is not None:
                final = self.recognize(rest)
        except Exception as e:  # noqa: BLE001
            self.error = f"Recognition failed: {e}"
        with self._lock:
            self.policy.finish(final)

    def _next_capped_window(self) -> tuple[np.ndarray, float] | None:
        with self._lock:
            p = self.policy
            return p.snapshot() if p.waiting_s > 0 and p.window_has_speech() else None

    def view(self) -> tuple[str, str, float]:
        with self._lock:
            return self.policy.committed_text, self.policy.tentative_text, self.policy.lag_s
