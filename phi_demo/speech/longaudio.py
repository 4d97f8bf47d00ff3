"""Long recordings: cut at pauses into chunks the model transcribes well (≤ 30 s), recognise
them in order with timestamps, write subtitles, and summarise.

No gradio and no model here: recognition and answers come in as functions, so the page,
the CLI and the tests drive the same code. Phi-4-multimodal transcribes best on clips of up
to ~40 s and summarises up to 30 minutes of speech in one request (its model card)."""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import soundfile as sf

from phi_demo.errors import UserInputError
from phi_demo.media.audio import SAMPLE_RATE, load_audio, to_mono_16k

FORMATS = ("txt", "srt", "vtt", "json")
SUMMARY_PROMPT = "Summarize the audio."  # the model card's speech-summarisation form


@dataclass
class Cue:
    start_s: float
    end_s: float
    text: str


# --- formats -------------------------------------------------------------------

def _clock(t: float, sep: str) -> str:
    ms = int(round(max(0.0, t) * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def clock(t: float) -> str:
    """A time as people write it: 4:05, or 1:02:05 past an hour."""
    t = int(t)
    return f"{t // 3600}:{t // 60 % 60:02d}:{t % 60:02d}" if t >= 3600 else f"{t // 60}:{t % 60:02d}"


def to_txt(cues: list[Cue]) -> str:
    return "".join(c.text + "\n" for c in cues if c.text)


def to_srt(cues: list[Cue]) -> str:
    cues = [c for c in cues if c.text]
    return "".join(f"{i}\n{_clock(c.start_s, ',')} --> {_clock(c.end_s, ',')}\n{c.text}\n\n"
                   for i, c in enumerate(cues, 1))


def to_vtt(cues: list[Cue]) -> str:
    return "WEBVTT\n\n" + "".join(f"{_clock(c.start_s, '.')} --> {_clock(c.end_s, '.')}\n{c.text}\n\n"
                                  for c in cues if c.text)


def to_json(cues: list[Cue], **about) -> str:
    segments = [{"start": round(c.start_s, 3), "end": round(c.end_s, 3), "text": c.text} for c in cues if c.text]
    return json.dumps({**about, "segments": segments}, ensure_ascii=False, indent=2) + "\n"


def render(cues: list[Cue], fmt: str, **about) -> str:
    if fmt not in FORMATS:
        raise UserInputError(f"Unknown format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    return to_json(cues, **about) if fmt == "json" else {"txt": to_txt, "srt": to_srt, "vtt": to_vtt}[fmt](cues)


def write_all(cues: list[Cue], folder: Path, stem: str = "transcript", **about) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for fmt in FORMATS:
        out[fmt] = folder / f"{stem}.{fmt}"
        out[fmt].write_text(render(cues, fmt, **about), encoding="utf-8")
    return out


# --- chunking ----------------------------------------------------------------------

@dataclass
class Chunk:
    start_s: float  # where its speech starts and ends: the cue's times
    end_s: float
    cut_from_s: float = 0.0  # the audio sent: the speech plus some of the pauses around it
    cut_to_s: float = 0.0


def plan_chunks(speech: list[tuple[float, float]], total_s: float, max_s: float = 30.0,
                margin_s: float = 0.25) -> list[Chunk]:
    """Group speech segments into chunks of at most `max_s`, each cut in a pause. A single
    stretch of speech longer than `max_s` (no pause in it) is cut into equal parts."""
    pieces: list[tuple[float, float]] = []
    for a, b in speech:
        a, b = max(0.0, a), min(total_s, b)
        if b <= a:
            continue
        n = max(1, math.ceil((b - a) / max_s - 1e-9))
        pieces += [(a + (b - a) * i / n, a + (b - a) * (i + 1) / n) for i in range(n)]
    groups: list[list[float]] = []
    for a, b in pieces:
        if groups and b - groups[-1][0] <= max_s:
            groups[-1][1] = b
        else:
            groups.append([a, b])
    chunks = []
    for i, (a, b) in enumerate(groups):
        # Audio margins reach into the pauses, never past the middle of one (or the other chunk).
        before = groups[i - 1][1] if i else 0.0
        after = groups[i + 1][0] if i + 1 < len(groups) else total_s
        lo = max(before if i == 0 else (before + a) / 2, a - margin_s)
        hi = min(after if i + 1 == len(groups) else (b + after) / 2, b + margin_s)
        if hi - lo > max_s:  # margins never make a chunk longer than the limit
            lo, hi = a, b
        chunks.append(Chunk(a, b, lo, hi))
    return chunks


# --- reading a long file -------------------------------------------------------------

def load_recording(path: str | Path, max_seconds: float) -> tuple[np.ndarray, str]:
    """A long recording as 16 kHz mono, and a note when only part of it could be read
    (a damaged tail: what came before it is kept, not refused)."""


    path = Path(path)
    try:
        return load_audio(path, max_seconds), ""
    except UserInputError as e:
        if "damaged or truncated" not in str(e):
            raise
        blocks: list[np.ndarray] = []
        rate = 0  # none read yet
        try:
            with sf.SoundFile(str(path)) as f:
                rate = f.samplerate
                while True:
                    block = f.read(rate, dtype="float32", always_2d=True)
                    if not len(block):
                        break
                    blocks.append(block)
        except Exception:  # noqa: BLE001 - the damaged part: keep what came before it
            pass
        seconds = sum(len(b) for b in blocks) / rate if rate else 0.0
        if seconds < 1.0:
            raise
        audio = to_mono_16k(np.concatenate(blocks), rate)
        return audio, (f"{path.name} is damaged after {clock(seconds)}; "
                       "the part before it was transcribed.")


# --- recognising ---------------------------------------------------------------------

@dataclass
class Progress:
    cues: list[Cue]
    done_s: float  # audio handled so far (speech and the pauses before it)
    total_s: float
    chunks_done: int
    chunks: int
    note: str = ""
    finished: bool = False
    stopped: bool = False
    seconds: float = 0.0  # compute time so far

    @property
    def fraction(self) -> float:
        return 1.0 if self.finished else (self.done_s / self.total_s if self.total_s else 0.0)


Recognise = Callable[[np.ndarray, threading.Event], str]


def transcribe(audio: np.ndarray, speech: list[tuple[float, float]], recognize: Recognise,
               cancel: threading.Event, max_chunk_s: float = 30.0, note: str = "") -> Iterator[Progress]:
    """Yield progress after each chunk; the last one has finished or stopped set. Stop
    (cancel) ends the chunk being recognised: the model stops within a token."""

    total_s = len(audio) / SAMPLE_RATE
    chunks = plan_chunks(speech, total_s, max_chunk_s)
    if not chunks:
        raise UserInputError("No speech was found in this recording: it is silent or holds only noise or music.")
    cues: list[Cue] = []
    t0 = time.perf_counter()
    yield Progress(list(cues), 0.0, total_s, 0, len(chunks), note)
    for i, c in enumerate(chunks):
        if cancel.is_set():
            break
        text = recognize(audio[int(c.cut_from_s * SAMPLE_RATE):int(c.cut_to_s * SAMPLE_RATE)], cancel)
        if cancel.is_set():
            break
        cues.append(Cue(round(c.start_s, 3), round(c.end_s, 3), " ".join(text.split())))
        done = chunks[i + 1].start_s if i + 1 < len(chunks) else total_s
        yield Progress(list(cues), done, total_s, i + 1, len(chunks), note, seconds=time.perf_counter() - t0)
    stopped = cancel.is_set()
    done_s = cues[-1].end_s if stopped and cues else total_s
    yield Progress(list(cues), done_s if stopped else total_s, total_s, len(cues), len(chunks), note,
                   finished=not stopped, stopped=stopped, seconds=time.perf_counter() - t0)


@dataclass
class Summary:
    text: str
    parts: list[str] = field(default_factory=list)  # the parts' summaries, when there were several
    part_times: list[tuple[float, float]] = field(default_factory=list)


def summary_parts(speech: list[tuple[float, float]], total_s: float, part_s: float) -> list[tuple[float, float]]:
    """Where a recording longer than one request is split: at pauses, each part ≤ part_s."""
    if total_s <= part_s:
        return [(0.0, total_s)]
    return [(c.cut_from_s, c.cut_to_s) for c in plan_chunks(speech, total_s, part_s, margin_s=1.0)]


def combine_prompt(parts: list[str], times: list[tuple[float, float]]) -> str:
    listed = "\n\n".join(f"Part {i} ({clock(a)}–{clock(b)}):\n{text.strip()}"
                         for i, (text, (a, b)) in enumerate(zip(parts, times), 1))
    return ("These are summaries of the consecutive parts of one recording, in order.\n\n" + listed +
            "\n\nWrite one summary of the whole recording from them.")


Ask = Callable[[str, "np.ndarray | None", threading.Event], str]


def summarize(audio: np.ndarray, speech: list[tuple[float, float]], ask: Ask, cancel: threading.Event,
              part_s: float = 1800.0, on_part: Callable[[int, int], None] | None = None) -> Summary:
    """One request with the whole recording when it fits (`part_s`, 30 min by default);
    otherwise each part (cut at pauses) is summarised from its audio, and a text request
    combines the parts' summaries, told their order and times."""
    times = summary_parts(speech, len(audio) / SAMPLE_RATE, part_s)
    parts = []
    for i, (a, b) in enumerate(times):
        if cancel.is_set():
            raise UserInputError("The summary was stopped.")
        if on_part:
            on_part(i, len(times))
        parts.append(ask(SUMMARY_PROMPT, audio[int(a * SAMPLE_RATE):int(b * SAMPLE_RATE)], cancel).strip())
    if len(parts) == 1:
        return Summary(parts[0])
    if on_part:
        on_part(len(times), len(times))
    return Summary(ask(combine_prompt(parts, times), None, cancel).strip(), parts, times)
