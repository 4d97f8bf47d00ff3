"""The Audio file view's work on a long recording: finding pauses, then recognising chunks
of at most 30 s, as real-time factors (compute seconds per second of audio)."""

from __future__ import annotations

import statistics
import threading
import time


def recording_rows(engine, minutes: float, max_new_tokens: int = 128) -> dict:
    """Transcribe a synthetic recording (espeak-ng sentences with pauses) the way the tab
    does. Returns the numbers for the report."""
    from phi_demo.speech import longaudio
    from phi_demo.speech.live import engine_recognizer
    from phi_demo.speech.vad import load_vad
    from phi_demo_dev.bench.vad import long_recording

    audio, _truth = long_recording(minutes)
    length = len(audio) / longaudio.SAMPLE_RATE
    vad, vad_name = load_vad()
    t = time.perf_counter()
    speech = vad.segments(audio)
    vad_s = time.perf_counter() - t
    recognize = engine_recognizer(engine, "en", "transcribe", max_new_tokens=max_new_tokens)
    chunk_s = []

    def timed(chunk, cancel):
        t0 = time.perf_counter()
        text = recognize(chunk, cancel)
        chunk_s.append((len(chunk) / longaudio.SAMPLE_RATE, time.perf_counter() - t0))
        return text

    t = time.perf_counter()
    *_, last = longaudio.transcribe(audio, speech, timed, threading.Event())
    recognise_s = time.perf_counter() - t
    return {"minutes": length / 60, "detector": vad_name, "vad_s": vad_s, "recognise_s": recognise_s,
            "chunks": len(chunk_s), "median_chunk_s": statistics.median(a for a, _ in chunk_s),
            "max_chunk_s": max(a for a, _ in chunk_s),
            "median_compute_s": statistics.median(c for _, c in chunk_s),
            "rtf": (vad_s + recognise_s) / length, "cues": len(last.cues)}


def report(r: dict) -> list[str]:
    return ["", f"Audio file view: a {r['minutes']:.1f}-minute recording of sentences with pauses:", "",
            "| step | seconds | real-time factor |", "| --- | --- | --- |",
            f"| finding pauses ({r['detector']}) | {r['vad_s']:.1f} | {r['vad_s'] / (r['minutes'] * 60):.4f} |",
            f"| recognising {r['chunks']} chunks (median {r['median_chunk_s']:.1f} s, longest {r['max_chunk_s']:.1f} s; "
            f"median {r['median_compute_s']:.2f} s each) | {r['recognise_s']:.1f} | "
            f"{r['recognise_s'] / (r['minutes'] * 60):.4f} |",
            "", f"File view real-time factor {r['rtf']:.4f} (compute / audio).", ""]
