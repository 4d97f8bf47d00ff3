"""One chat turn from start to finish, shared by the UI and the /chat API.

Glue between conversation (history -> request) and the engine (request -> text). It
imports neither gradio nor torch: the engine is handed in.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

from .conversation import Limits, ModelRequest, Turn, build_request, message_to_turn, normalize_history
from .settings import GenerationSettings

# A browser gains nothing from more than ~30 repaints a second, and each update costs a
# server->browser message; pieces that arrive faster are sent together.
MIN_UPDATE_INTERVAL_S = 1 / 30


@dataclass
class Prepared:
    turns: list[Turn]
    request: ModelRequest


def prepare(engine_limits: Limits, message: Any, history: Any, system_prompt: str) -> Prepared:
    """Check the new message and the history and decode all media, before anything is shown.
    Raises UserInputError with a sentence for the user; nothing has changed then."""
    turns = normalize_history(history) + [message_to_turn(message)]
    return Prepared(turns, build_request(turns, system_prompt, engine_limits))


def stream_answer(engine, request: ModelRequest, gen: GenerationSettings, cancel: threading.Event,
                  attn: str | None = None, min_interval_s: float = MIN_UPDATE_INTERVAL_S) -> Iterator[tuple[str, Any]]:
    """Yield (answer so far, None) while streaming, then (answer, stats) once.
    Updates are coalesced to at most one per `min_interval_s`; the last text is never held back."""
    text = ""
    sent = ""
    last = 0.0
    pieces = engine.stream(request, gen, cancel, attn=attn)
    try:
        for piece in pieces:
            if isinstance(piece, str):
                text += piece
                now = time.perf_counter()
                if now - last >= min_interval_s:
                    sent, last = text, now
                    yield text, None
            else:
                yield text, piece
                return
        if text != sent:
            yield text, None
    finally:
        cancel.set()
        pieces.close()
