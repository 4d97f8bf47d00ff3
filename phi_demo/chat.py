"""One chat turn from start to finish, shared by the UI and the /chat API.

Glue between conversation (history -> request) and the engine (request -> text). It
imports neither gradio nor torch: the engine is handed in.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Iterator

from .conversation import Limits, ModelRequest, Turn, build_request, message_to_turn, normalize_history
from .settings import GenerationSettings


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
                  attn: str | None = None) -> Iterator[tuple[str, Any]]:
    """Yield (answer so far, None) while streaming, then (answer, stats) once. The engine
    already hands text over at a browser-friendly rate."""
    text = ""
    pieces = engine.stream(request, gen, cancel, attn=attn)
    try:
        for piece in pieces:
            if isinstance(piece, str):
                text += piece
                yield text, None
            else:
                yield text, piece
                return
    finally:
        cancel.set()
        pieces.close()
