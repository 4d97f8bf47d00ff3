"""Where speech is in a recording: silero-vad (a small model its package ships, run with
torch, offline), with the energy threshold as the fallback when it cannot load.

Not wired into the live view yet (issue #15): this is the detector and its measurement
(`python scripts/vad_compare.py`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16_000
log = logging.getLogger(__name__)


@dataclass
class EnergyVAD:
    """Speech is any 30 ms frame louder than `threshold_db` dBFS; a phrase ends after
    `min_silence_s` below it. Noise louder than the threshold is speech to it."""

    threshold_db: float = -45.0
    min_silence_s: float = 0.6
    min_speech_s: float = 0.09
    name: str = "energy threshold"

    def segments(self, x: np.ndarray, sr: int = SAMPLE_RATE) -> list[tuple[float, float]]:
        from .transcription import frame_db

        frame_s = 0.03
        loud = frame_db(np.asarray(x, dtype=np.float32), sr, frame_s) > self.threshold_db
        return _runs(loud, frame_s, self.min_silence_s, self.min_speech_s)


class SileroVAD:
    """silero-vad's speech probability per 32 ms, its own hysteresis and padding."""

    name = "silero-vad"

    def __init__(self, min_silence_s: float = 0.6):
        from silero_vad import load_silero_vad

        self.model = load_silero_vad()  # bundled TorchScript weights: no download
        self.min_silence_s = min_silence_s

    def segments(self, x: np.ndarray, sr: int = SAMPLE_RATE) -> list[tuple[float, float]]:
        import torch
        from silero_vad import get_speech_timestamps

        with torch.inference_mode():
            found = get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), self.model,
                                          sampling_rate=sr, min_silence_duration_ms=int(self.min_silence_s * 1000),
                                          return_seconds=True)
        return [(float(s["start"]), float(s["end"])) for s in found]


def load_vad(prefer: str = "silero") -> tuple[object, str]:
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
