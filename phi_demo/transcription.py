"""Speech to text: the instruction the model gets, and live transcription of a microphone
stream with bounded work per chunk.

`StreamingTranscript` is the pure policy (no model, no gradio, no torch):
- audio is kept in a window that starts where the last finished segment ended;
- each recognition of the window gives a hypothesis; words on which two consecutive
  hypotheses agree are committed (LocalAgreement-2, as in whisper_streaming) and never
  change; the rest is a tentative tail;
- when the window ends in a pause (or reaches `max_window_s`), its segment is finished:
  all its words are committed with the segment's times and its audio is dropped, so each
  recognition sees at most `max_window_s` of audio however long the recording is;
- a window without speech is never sent to the model.

`LiveTranscriber` drives it for one recording: chunks are added at once (never queued
behind a recognition); a single worker recognises the latest window whenever it is free."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .contract import ChatEngine
from .errors import UserInputError

# The eight speech languages of the model card.
LANGUAGES = {
    "auto": None, "en": "English", "zh": "Chinese", "de": "German", "fr": "French",
    "it": "Italian", "ja": "Japanese", "es": "Spanish", "pt": "Portuguese",
}
TASKS = ("transcribe", "translate")
SAMPLE_RATE = 16_000


def language_name(code_or_name: str) -> str | None:
    key = (code_or_name or "auto").strip()
    if key.lower() in LANGUAGES:
        return LANGUAGES[key.lower()]
    for name in LANGUAGES.values():
        if name and name.lower() == key.lower():
            return name
    raise UserInputError(
        f"Unknown speech language {code_or_name!r}; choose one of: "
        + ", ".join(f"{c} ({n})" for c, n in LANGUAGES.items() if n) + ", or auto."
    )


def instruction(language: str = "auto", task: str = "transcribe") -> str:
    """The user text that goes after the <|audio|> slot."""
    if task not in TASKS:
        raise UserInputError(f"Unknown task {task!r}; choose transcribe or translate.")
    lang = language_name(language)
    if task == "translate":
        source = f" {lang}" if lang else ""
        return f"Translate the{source} audio to English. Give only the English translation."
    hint = f" The speech is in {lang}." if lang else ""
    return f"Transcribe the audio clip into text.{hint} Give only the transcript."


# --- the pure policy -------------------------------------------------------------

def frame_db(x: np.ndarray, sr: int = SAMPLE_RATE, frame_s: float = 0.03) -> np.ndarray:
    """Level of each frame in dBFS."""
    n = max(1, int(sr * frame_s))
    frames = len(x) // n
    if frames == 0:
        return np.zeros(0)
    rms = np.sqrt(np.mean(np.square(x[: frames * n].reshape(frames, n), dtype=np.float64), axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-10))


def trailing_silence_s(x: np.ndarray, threshold_db: float, sr: int = SAMPLE_RATE, frame_s: float = 0.03) -> float:
    db = frame_db(x, sr, frame_s)
    loud = np.nonzero(db > threshold_db)[0]
    quiet_frames = len(db) if len(loud) == 0 else len(db) - 1 - loud[-1]
    return quiet_frames * frame_s


def has_speech(x: np.ndarray, threshold_db: float, sr: int = SAMPLE_RATE, min_s: float = 0.09) -> bool:
    """At least `min_s` of frames above the threshold."""
    return float(np.sum(frame_db(x, sr) > threshold_db)) * 0.03 >= min_s


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

    # audio in
    def add_audio(self, samples: np.ndarray) -> None:
        samples = np.clip(np.asarray(samples, np.float32), -1.0, 1.0)
        self.window = np.concatenate([self.window, samples])
        self.received_s += len(samples) / self.sr
        if not has_speech(self.window, self.silence_db, self.sr):
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

    def needs_recognition(self) -> bool:
        return (has_speech(self.window, self.silence_db, self.sr)
                and self.window_end_s - self._recognised_until_s >= self.min_new_audio_s)

    def snapshot(self) -> tuple[np.ndarray, float]:
        """The audio to recognise now, and where it ends."""
        return self.window.copy(), self.window_end_s

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
        heard = self.window[: int(round((end_s - self.window_start_s) * self.sr))]
        paused = trailing_silence_s(heard, self.silence_db, self.sr) >= self.pause_s
        if paused or end_s - self.window_start_s >= self.max_window_s:
            self._finish_segment(words, end_s, trailing_silence_s(heard, self.silence_db, self.sr))

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
        def ts(t: float) -> str:
            ms = int(round(t * 1000))
            return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"

        return "".join(f"{i}\n{ts(s.start_s)} --> {ts(s.end_s)}\n{s.text}\n\n" for i, s in enumerate(self.segments, 1))


# --- driving it with a recogniser ------------------------------------------------

def engine_recognizer(engine: ChatEngine, language: str = "auto", task: str = "transcribe",
                      max_new_tokens: int = 96) -> Callable[[np.ndarray], str]:
    """A recogniser backed by the chat engine (speech adapter, greedy decoding)."""
    from .contract import collect
    from .conversation import media_request
    from .settings import GenerationSettings

    text = instruction(language, task)
    gen = GenerationSettings(max_new_tokens=max_new_tokens)

    def recognize(samples: np.ndarray) -> str:
        answer, _stats = collect(engine.stream(media_request(text, audios=[samples]), gen, threading.Event()))
        return answer.strip()

    return recognize


class LiveTranscriber:
    """One recording: thread-safe, chunks never wait for the model."""

    def __init__(self, recognize: Callable[[np.ndarray], str], policy: StreamingTranscript | None = None):
        self.recognize = recognize
        self.policy = policy or StreamingTranscript()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self.error: str | None = None
        self.compute_s: list[tuple[float, float]] = []  # (audio position, seconds) per recognition
        self.stopped = False

    def add_chunk(self, sample_rate: int, samples: np.ndarray) -> None:
        from .media import to_mono_16k

        audio = to_mono_16k(samples, sample_rate)
        with self._lock:
            if self.stopped:
                return
            self.policy.add_audio(audio)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="phi-demo-transcribe", daemon=True)
                self._worker.start()

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
        with self._lock:
            final = None
            if has_speech(self.policy.window, self.policy.silence_db, self.policy.sr):
                try:
                    final = self.recognize(self.policy.window.copy())
                except Exception as e:  # noqa: BLE001
                    self.error = f"Recognition failed: {e}"
            self.policy.finish(final)

    def view(self) -> tuple[str, str, float]:
        with self._lock:
            return self.policy.committed_text, self.policy.tentative_text, self.policy.lag_s
