"""Phrase boundaries found by each voice-activity detector, against known sentence times,
in clean speech and with noise mixed in at a given SNR.

    python -m phi_demo_dev.bench.vad [--snr 10 --sentences 8]      # needs espeak-ng
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np

SENTENCES = [
    "The weather will be cold tomorrow morning.", "Please send the report before Friday.",
    "Our train leaves from platform nine.", "She planted three apple trees last spring.",
    "The meeting has moved to the blue room.", "Turn left after the old stone bridge.",
    "He forgot his umbrella at the station.", "Dinner is ready at half past seven.",
]


def synth_recording(sentences: list[str], pause_s: float = 1.2, snr_db: float | None = None, seed: int = 0,
                    sr: int = 16_000) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """espeak-ng sentences with `pause_s` of silence between them, optionally with white
    noise at `snr_db` (speech power over noise power, measured on the speech); returns the
    samples and each sentence's (start, end) in seconds."""
    import librosa
    import soundfile as sf

    parts, truth, t = [], [], pause_s
    lead = np.zeros(int(pause_s * sr), np.float32)
    parts.append(lead)
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(sentences):
            wav = Path(tmp) / f"{i}.wav"
            subprocess.run(["espeak-ng", "-w", str(wav), text], check=True)
            x, rate = sf.read(wav, dtype="float32")
            x = librosa.resample(x, orig_sr=rate, target_sr=sr) if rate != sr else x
            loud = np.flatnonzero(np.abs(x) > 0.01)
            x = x[loud[0]:loud[-1] + 1]  # the sentence itself, without espeak's own margins
            truth.append((t, t + len(x) / sr))
            parts += [x, np.zeros(int(pause_s * sr), np.float32)]
            t += len(x) / sr + pause_s
    audio = np.concatenate(parts).astype(np.float32)
    if snr_db is not None:
        speech = np.concatenate([audio[int(a * sr):int(b * sr)] for a, b in truth])
        noise_power = float(np.mean(speech ** 2)) / (10 ** (snr_db / 10))
        audio = audio + np.random.default_rng(seed).normal(0, np.sqrt(noise_power), audio.size).astype(np.float32)
    return audio, truth


def long_recording(minutes: float, sentences: list[str] = SENTENCES, seed: int = 0,
                   sr: int = 16_000) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """`minutes` of the sentences in random order with pauses of 0.7-3 s, and now and then
    two run together with only 0.15 s between them; returns the samples and each
    sentence's (start, end). Each sentence is synthesised once."""
    audio, truth = synth_recording(sentences, pause_s=1.0, sr=sr)
    clips = [audio[int(a * sr):int(b * sr)] for a, b in truth]
    rng = np.random.default_rng(seed)
    parts, out, t = [np.zeros(sr, np.float32)], [], 1.0
    while t < minutes * 60:
        clip = clips[int(rng.integers(len(clips)))]
        pause = 0.15 if rng.random() < 0.15 else float(rng.uniform(0.7, 3.0))
        out.append((t, t + len(clip) / sr))
        parts += [clip, np.zeros(int(pause * sr), np.float32)]
        t += len(clip) / sr + int(pause * sr) / sr
    return np.concatenate(parts), out


def score(segments: list[tuple[float, float]], truth: list[tuple[float, float]], tolerance_s: float = 0.3) -> dict:
    """Pauses found: a detector finds the pause between two sentences when one of its
    segments ends and the next starts inside it (± tolerance). Also the error of each
    found sentence start and end."""
    pauses = [(a_end, b_start) for (_, a_end), (b_start, _) in zip(truth, truth[1:])]
    found = 0
    for lo, hi in pauses:
        if any(lo - tolerance_s <= e and s <= hi + tolerance_s and e <= s
               for (_, e), (s, _) in zip(segments, segments[1:])):
            found += 1
    starts = [min((abs(s - a) for s, _ in segments), default=np.inf) for a, _ in truth]
    ends = [min((abs(e - b) for _, e in segments), default=np.inf) for _, b in truth]
    return {"pauses": len(pauses), "found": found, "segments": len(segments),
            "start_err_s": float(np.median(starts)), "end_err_s": float(np.median(ends))}


def main(argv=None) -> int:
    from phi_demo.speech.vad import EnergyVAD, SileroVAD

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--snr", type=float, action="append", default=None, help="noise levels (dB); repeatable")
    p.add_argument("--sentences", type=int, default=8)
    args = p.parse_args(argv)
    detectors = [EnergyVAD(), SileroVAD()]
    print("| recording | detector | pauses found | segments | median start error (s) | median end error (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for snr in [None] + (args.snr or [10.0]):
        audio, truth = synth_recording(SENTENCES[:args.sentences], snr_db=snr)
        label = "clean" if snr is None else f"white noise, {snr:g} dB SNR"
        for d in detectors:
            r = score(d.segments(audio), truth)
            print(f"| {label} | {d.name} | {r['found']} of {r['pauses']} | {r['segments']} | "
                  f"{r['start_err_s']:.2f} | {r['end_err_s']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
