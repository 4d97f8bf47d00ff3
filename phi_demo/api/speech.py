"""`/v1/audio/transcriptions` and `/v1/audio/translations`, as OpenAI's speech-to-text API
defines them, behind the Audio file tab's chunker (speech/longaudio.py): a recording as long
as the upload limit allows, cut at pauses into the model's best clip length."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from phi_demo.contract import ChatEngine
from phi_demo.errors import UserInputError
from phi_demo.media.audio import SAMPLE_RATE
from phi_demo.speech import longaudio
from phi_demo.speech.live import engine_recognizer

FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
Segmenter = Callable[[np.ndarray], list[tuple[float, float]]]


@dataclass
class SpeechCall:
    path: str
    task: str  # "transcribe" or "translate"
    language: str = "auto"
    to: str = "en"
    response_format: str = "json"
    max_chunk_s: float = 30.0


def check(task: str, fields: dict[str, str]) -> SpeechCall:
    """The form's fields (besides the file) -> a checked call; sentences for bad values."""
    fmt = fields.get("response_format") or "json"
    if fmt not in FORMATS:
        raise UserInputError(f"Unknown response_format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    temperature = fields.get("temperature")
    if temperature not in (None, ""):
        try:
            float(temperature)
        except ValueError:
            raise UserInputError(f"temperature must be a number, not {temperature!r}.") from None
    # The recogniser decodes greedily: the model card's transcription setting. `prompt` and
    # `temperature` are accepted and do not change it.
    return SpeechCall("", task, fields.get("language") or "auto", fields.get("to_language") or "en", fmt)


def run(engine: ChatEngine, call: SpeechCall, segments: Segmenter, max_seconds: float,
        cancel: threading.Event) -> tuple[str, str]:
    """(body, media type) of the answer."""
    audio, note = longaudio.load_recording(call.path, max_seconds)
    recognize = engine_recognizer(engine, call.language, call.task, call.to)
    progress = list(longaudio.transcribe(audio, segments(audio), recognize, cancel, call.max_chunk_s, note))
    cues = progress[-1].cues
    return render(cues, call, duration=len(audio) / SAMPLE_RATE)


def render(cues: list[longaudio.Cue], call: SpeechCall, duration: float) -> tuple[str, str]:
    text = " ".join(c.text for c in cues if c.text)
    if call.response_format == "text":
        return text + "\n", "text/plain; charset=utf-8"
    if call.response_format == "srt":
        return longaudio.to_srt(cues), "text/plain; charset=utf-8"
    if call.response_format == "vtt":
        return longaudio.to_vtt(cues), "text/vtt; charset=utf-8"
    body: dict[str, Any] = {"text": text}
    if call.response_format == "verbose_json":
        body = {"task": "translate" if call.task == "translate" else "transcribe",
                "language": call.language if call.task == "transcribe" else call.to,
                "duration": round(duration, 3), "text": text,
                "segments": [{"id": i, "start": c.start_s, "end": c.end_s, "text": c.text}
                             for i, c in enumerate(c for c in cues if c.text)]}
    return json.dumps(body, ensure_ascii=False), "application/json"
