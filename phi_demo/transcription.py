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
Speech and pauses come from a voice-activity detector fed as audio arrives (`vad.SpeechFrames`):
silero-vad on the page, the energy threshold when it cannot load and in the pure tests.

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


def instruction(language: str = "auto", task: str = "transcribe", to: str = "en") -> str:
    """The user text that goes after the <|audio|> slot: the model card's forms ("Transcribe
    the audio clip into text.", "Translate the audio to French."), with the spoken language
    as a hint when it is known."""
    if task not in TASKS:
        raise UserInputError(f"Unknown task {task!r}; choose transcribe or translate.")
    lang = language_name(language)
    hint = f" The speech is in {lang}." if lang else ""
    if task == "translate":
        target = language_name(to)
        if target is None:
            raise UserInputError("Say which language to translate into: en, zh, de, fr, it, ja, es or pt.")
        return f"Translate the audio to {target}.{hint} Give only the {target} translation."
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
    speech: object = None  # vad.SpeechFrames for this stream; the energy threshold if not given
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

    def __post_init__(self):
        if self.speech is None:
            from .vad import EnergyVAD

            self.speech = EnergyVAD(self.silence_db).stream()

    # audio in
    def add_audio(self, samples: np.ndarray) -> None:
        samples = np.clip(np.asarray(samples, np.float32), -1.0, 1.0)
        self.speech.feed(samples)
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
        return self.speech.speech_s(self.window_start_s, end) >= self.min_speech_s

    def trailing_pause_s(self, end_s: float | None = None) -> float:
        """Silence at the end of the window up to `end_s`, as the detector decided it."""
        return self.speech.trailing_silence_s(self.window_start_s, self.window_end_s if end_s is None else end_s)

    def _pause_point(self) -> float | None:
        """Where a pause long enough to end the phrase completed, if no recognition has
        looked past it yet: the window is cut there, whenever in a chunk it happened."""
        t = self.speech.first_pause_end(self.window_start_s, self.window_end_s, self.pause_s)
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
        from .longaudio import Cue, to_srt

        return to_srt([Cue(seg.start_s, seg.end_s, seg.text) for seg in self.segments])


# --- driving it with a recogniser ------------------------------------------------

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
    from .contract import collect
    from .conversation import media_request
    from .settings import GenerationSettings

    gen = GenerationSettings(max_new_tokens=max_new_tokens)

    def ask(text: str, samples: np.ndarray | None = None, cancel: threading.Event | None = None) -> str:
        request = media_request(text, audios=[] if samples is None else [samples], urgent=urgent)
        # The engine sets the event it is given once the answer ends, so each request gets its
        # own; the caller's cancel closes the stream, which stops the model.
        pieces = engine.stream(request, gen, threading.Event())
        try:
            answer, _stats = collect(_until(pieces, cancel))
        finally:
            pieces.close()
        return answer.strip()

    return ask


def _until(pieces, cancel: threading.Event | None):
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
        from .media import to_mono_16k

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
        with self._lock:
            p, final = self.policy, None
            try:
                # What waited past the cap is recognised a window at a time, like the rest.
                while p.waiting_s > 0 and p.window_has_speech():
                    audio, end_s = p.snapshot()
                    p.apply(self.recognize(audio), end_s)
                if p.window_has_speech():
                    final = self.recognize(p.window.copy())
            except Exception as e:  # noqa: BLE001
                self.error = f"Recognition failed: {e}"
            p.finish(final)

    def view(self) -> tuple[str, str, float]:
        with self._lock:
            return self.policy.committed_text, self.policy.tentative_text, self.policy.lag_s
