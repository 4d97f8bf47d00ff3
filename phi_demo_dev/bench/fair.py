"""The live view while another user's answer streams: how long the live transcript goes
without an update, what the answer loses in tokens/s, and the longest window sent —
with urgent windows run between the answer's tokens, and without (waiting for its end)."""

from __future__ import annotations

import threading
import time

import numpy as np

from phi_demo_dev.bench.common import ROOT


def _speech() -> np.ndarray:
    import soundfile as sf

    from phi_demo.media.audio import to_mono_16k

    x, sr = sf.read(ROOT / "assets" / "example_question.wav", dtype="float32")
    x = to_mono_16k(x, sr)
    return np.concatenate([x, np.zeros(8000, np.float32), x, x, np.zeros(12000, np.float32)])


def fair_rows(engine, seconds: float = 12.0, answer_tokens: int = 100_000) -> list[dict]:
    """For each mode: the answer streams for about `seconds` while a microphone sends 0.5 s
    chunks in real time to a live transcriber."""
    import dataclasses

    from phi_demo.chat.messages import Turn
    from phi_demo.chat.request import build_request
    from phi_demo.contract import collect
    from phi_demo.settings import GenerationSettings
    from phi_demo.speech.live import LiveTranscriber, StreamingTranscript, engine_recognizer

    chat = build_request([Turn("user", "Tell me a long story about mountains.")])
    limit = int(engine.cache.current.model.config.max_position_embeddings) - 64
    gen = GenerationSettings(max_new_tokens=min(answer_tokens, limit), min_new_tokens=min(answer_tokens, limit))
    # The answer alone, for its tokens/s (the same length as below, stopped after `seconds`).
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    _, alone = collect(engine.stream(chat, gen, stop))
    runs = []
    # Alternately, twice each: the machine's own drift shows as a difference between pairs.
    for interleave in (False, True, False, True):
        engine.interleave_urgent = interleave
        stop = threading.Event()
        result = {}
        started = threading.Event()
        def run(result=result, stop=stop, started=started):
            result["stats"] = collect(engine.stream(chat, gen, stop), on_text=lambda _: started.set())[1]

        answer = threading.Thread(target=run)
        answer.start()
        started.wait(30)
        recognize = engine_recognizer(engine, "en", "transcribe", max_new_tokens=24, urgent=True)
        updates, sent = [], []

        def timed(audio, recognize=recognize, updates=updates, sent=sent):
            sent.append(len(audio) / 16000)
            text = recognize(audio)
            updates.append(time.perf_counter())
            return text

        live = LiveTranscriber(timed, StreamingTranscript())
        audio = np.tile(_speech(), 8)
        t0 = time.perf_counter()
        chunk = 8000
        for i in range(int(seconds * 2)):
            live.add_chunk(16000, audio[i * chunk:(i + 1) * chunk])
            time.sleep(max(0.0, t0 + (i + 1) * 0.5 - time.perf_counter()))
        stop.set()
        answer.join()
        live.stop()
        marks = [t0 + 0.5] + [u for u in updates if u <= t0 + seconds]
        gaps = np.diff(marks) if len(marks) > 1 else np.array([seconds])
        stats = dataclasses.asdict(result["stats"])
        runs.append({"interleave": interleave, "updates": len(marks) - 1,
                     "longest_gap_s": float(gaps.max()) if len(marks) > 1 else seconds,
                     "answer_tok_s": stats["decode_tok_s"], "max_window_s": max(sent, default=0.0),
                     "cap_s": live.policy.max_window_s})
    engine.interleave_urgent = True
    # The answer's loss is measured against the runs where the microphone streamed too (its
    # detector and chunk handling cost the same) but no window ran until the answer ended.
    waiting = float(np.median([r["answer_tok_s"] for r in runs if not r["interleave"]]))
    rows = []
    for interleave in (True, False):
        mine = [r for r in runs if r["interleave"] == interleave]
        tok_s = float(np.median([r["answer_tok_s"] for r in mine]))
        rows.append({"mode": "between the answer's tokens" if interleave else "after the answer (waiting)",
                     "updates": min(r["updates"] for r in mine), "longest_gap_s": max(r["longest_gap_s"] for r in mine),
                     "answer_tok_s": tok_s, "alone_tok_s": alone.decode_tok_s, "drop": 1 - tok_s / waiting,
                     "max_window_s": max(r["max_window_s"] for r in mine), "cap_s": mine[0]["cap_s"]})
    return rows


def report(rows: list[dict], seconds: float) -> list[str]:
    out = ["", f"Live transcription while another answer streams ({seconds:g} s of microphone in 0.5 s chunks; "
           "two runs of each, alternately: fewest updates, longest gap, median tok/s):", "",
           "| urgent windows run | transcript updates | longest gap (s) | answer tok/s (alone) | answer slower by "
           "| longest window sent (cap) |",
           "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append(f"| {r['mode']} | {r['updates']} | {r['longest_gap_s']:.2f} | {r['answer_tok_s']:.1f} "
                   f"({r['alone_tok_s']:.1f}) | {100 * r['drop']:.0f}% | {r['max_window_s']:.1f} s ({r['cap_s']:g} s) |")
    return out + [""]
