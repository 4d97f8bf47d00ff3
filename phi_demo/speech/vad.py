"""Where speech is in a recording: silero-vad (a small model its package ships, run with
torch, offline), with the energy threshold as the fallback when it cannot load.

Two uses: `segments()` for a whole file (chunking long recordings at pauses), and
`stream()` for audio as it arrives (the live view's and voice mode's phrase ends), which
decides speech or not for each 32 ms frame exactly once. Measured against known sentence
times by `python -m phi_demo_dev.bench.vad`."""

from __future__ import annotations

import copy
import logging
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, cast

import numpy as np

from phi_demo.media.audio import SAMPLE_RATE, frame_db

FRAME = 512  # samples per decision: 32 ms at 16 kHz, silero-vad's own window
FRAME_S = FRAME / SAMPLE_RATE
log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch


class _SileroModel(Protocol):
    """What is used of silero-vad's TorchScript model (its loader is unannotated)."""

    def reset_states(self) -> None: ...

    def __call__(self, x: torch.Tensor, sr: int) -> torch.Tensor: ...


@dataclass
class EnergyVAD:
    """Speech is any 30 ms frame louder than `threshold_db` dBFS; a phrase ends after
    `min_silence_s` below it. Noise louder than the threshold is speech to it."""

    threshold_db: float = -45.0
    min_silence_s: float = 0.6
    min_speech_s: float = 0.09
    name: str = "energy threshold"

    def segments(self, x: np.ndarray, sr: int = SAMPLE_RATE) -> list[tuple[float, float]]:
        frame_s = 0.03
        loud = frame_db(np.asarray(x, dtype=np.float32), sr, frame_s) > self.threshold_db
        return _runs(loud, frame_s, self.min_silence_s, self.min_speech_s)

    def stream(self) -> "SpeechFrames":
        return SpeechFrames(lambda x: float(frame_db(x, SAMPLE_RATE, FRAME_S)[0]), self.threshold_db,
                            self.threshold_db)


class SileroVAD:
    """silero-vad's speech probability per 32 ms, its own hysteresis and padding."""

    name = "silero-vad"

    def __init__(self, min_silence_s: float = 0.6):
        from silero_vad import load_silero_vad  # noqa: PLC0415 - silero-vad (and torch) load only when chosen

        with warnings.catch_warnings():  # torch's notice that torch.jit.load is deprecated, for every load
            warnings.simplefilter("ignore", FutureWarning)
            self.model = cast(_SileroModel, load_silero_vad())  # bundled TorchScript weights: no download
        self.min_silence_s = min_silence_s

    def segments(self, x: np.ndarray, sr: int = SAMPLE_RATE) -> list[tuple[float, float]]:
        import torch  # noqa: PLC0415 - torch loads only with a model
        from silero_vad import get_speech_timestamps  # noqa: PLC0415 - silero-vad (and torch) load only when chosen

        with torch.inference_mode():
            found = get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), self.model,
                                          sampling_rate=sr, min_silence_duration_ms=int(self.min_silence_s * 1000),
                                          return_seconds=True)
        return [(float(s["start"]), float(s["end"])) for s in found]

    def stream(self) -> "SpeechFrames":
        """A detector for one stream: the model keeps state between frames, so each stream
        gets its own copy (a few ms), and speech runs from p >= 0.5 until p < 0.35, the
        hysteresis silero's own get_speech_timestamps uses."""

        import torch  # noqa: PLC0415 - torch loads only with a model

        model = copy.deepcopy(self.model)
        model.reset_states()

        def score(x: np.ndarray) -> float:
            with torch.inference_mode():
                return float(model(torch.from_numpy(x), SAMPLE_RATE).item())

        return SpeechFrames(score, 0.5, 0.35)


class SpeechFrames:
    """Speech or not for each 32 ms frame of one stream, decided once as audio arrives.
    Times are seconds since the stream began; a partial frame at the end is not decided yet."""

    def __init__(self, score: Callable[[np.ndarray], float], on: float, off: float):
        self._score, self._on, self._off = score, on, off
        self._pending = np.zeros(0, np.float32)
        self._active = False
        self.flags = bytearray()

    def feed(self, samples: np.ndarray) -> None:
        x = np.concatenate([self._pending, np.asarray(samples, np.float32)])
        n = len(x) // FRAME
        for i in range(n):
            p = self._score(np.ascontiguousarray(x[i * FRAME:(i + 1) * FRAME]))
            self._active = p >= (self._off if self._active else self._on)
            self.flags.append(self._active)
        self._pending = x[n * FRAME:]

    def _range(self, start_s: float, end_s: float) -> tuple[int, int]:
        lo = max(0, int(start_s / FRAME_S + 1e-6))
        return lo, max(lo, min(len(self.flags), int(end_s / FRAME_S + 1e-6)))

    def speech_s(self, start_s: float, end_s: float) -> float:
        lo, hi = self._range(start_s, end_s)
        return sum(self.flags[lo:hi]) * FRAME_S

    def first_speech(self, start_s: float, end_s: float) -> float | None:
        """When speech first begins in [start, end)."""
        lo, hi = self._range(start_s, end_s)
        i = self.flags.find(1, lo, hi)
        return None if i < 0 else i * FRAME_S

    def first_pause_end(self, start_s: float, end_s: float, pause_s: float) -> float | None:
        """When the first pause of `pause_s` after some speech in [start, end) is complete."""
        lo, hi = self._range(start_s, end_s)
        speech = self.flags.find(1, lo, hi)
        if speech < 0:
            return None
        k = max(1, math.ceil(pause_s / FRAME_S - 1e-6))
        quiet = self.flags.find(bytes(k), speech, hi)
        return None if quiet < 0 else (quiet + k) * FRAME_S

    def trailing_silence_s(self, start_s: float, end_s: float) -> float:
        """Seconds of non-speech at the end of [start, end) (all of it when none is speech)."""
        lo, hi = self._range(start_s, end_s)
        last = self.flags.rfind(1, lo, hi)
        return (hi - lo if last < 0 else hi - 1 - last) * FRAME_S


def load_vad(prefer: str = "silero") -> tuple[EnergyVAD | SileroVAD, str]:
    """(detector, why) — silero-vad when it loads, else the energy threshold and the reason."""
    if prefer == "silero":
        try:
            return SileroVAD(), "silero-vad"
        except Exception as e:  # noqa: BLE001 - any failure to load means the fallback, said aloud
            log.warning("silero-vad could not load (%s); using the energy threshold", e)
            return EnergyVAD(), f"energy threshold (silero-vad could not load: {e})"
    return EnergyVAD(), "energy threshold"


def _runs(active: np.ndarray, frame_s: float, min_gap_s: float, min_len_s: float) -> list[tuple[float, float]]:
    """Runs of active frames, gaps shorter than min_gap_s bridged, runs shorter than min_len_s dropped."""
    out: list[list[float]] = []
    for i, on in enumerate(active):
        if not on:
            continue
        t = i * frame_s
        if out and t - out[-1][1] < min_gap_s:
            out[-1][1] = t + frame_s
        else:
            out.append([t, t + frame_s])
    return [(a, b) for a, b in out if b - a >= min_len_s]
