"""Live transcription of a long stream: work per recognition, real-time factor, lag."""

from __future__ import annotations

import statistics
import time

import numpy as np

from phi_demo_dev.bench.common import ROOT


def live_rows(engine, minutes: float) -> tuple[list[tuple[str, float, float, int]], float, float]:
    """Feed a long recording (the example question, a pause, again) in 0.5 s chunks through
    the live-transcription policy, recognising synchronously whenever it asks.
    Returns rows (part, median compute s per recognition, median window s, recognitions),
    the real-time factor and the mean committed-text lag."""
    import soundfile as sf

    from phi_demo.media.audio import to_mono_16k
    from phi_demo.speech.live import StreamingTranscript, engine_recognizer

    speech, sr = sf.read(ROOT / "assets" / "example_question.wav", dtype="float32")
    speech = to_mono_16k(speech, sr)
    pattern = np.concatenate([speech, np.zeros(16000, np.float32), speech, speech, np.zeros(12000, np.float32)])
    total = int(minutes * 60 * 16000)
    audio = np.tile(pattern, total // len(pattern) + 1)[:total]
    recognize = engine_recognizer(engine, "en", "transcribe", max_new_tokens=48)
    policy = StreamingTranscript()
    samples, lags = [], []
    chunk = 8000
    t_all = 0.0
    for i in range(0, len(audio), chunk):
        policy.add_audio(audio[i:i + chunk])
        if policy.needs_recognition():
            window, end = policy.snapshot()
            t = time.perf_counter()
            text = recognize(window)
            dt = time.perf_counter() - t
            t_all += dt
            policy.apply(text, end)
            samples.append((end, dt, len(window) / 16000))
        lags.append(policy.lag_s)
    length = len(audio) / 16000
    rows = []
    for name, lo, hi in (("start (first minute)", 0, 60), ("middle", length / 2 - 30, length / 2 + 30),
                         ("end (last minute)", length - 60, length)):
        part = [(dt, w) for end, dt, w in samples if lo <= end <= hi]
        if part:
            rows.append((name, statistics.median(d for d, _ in part), statistics.median(w for _, w in part), len(part)))
    return rows, t_all / length, statistics.mean(lags)
