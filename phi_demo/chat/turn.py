"""One chat turn from start to finish, shared by the UI and the /chat API.

Glue between conversation (history -> request) and the engine (request -> text). It
imports neither gradio nor torch: the engine is handed in.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, cast

from phi_demo.chat.messages import Turn, message_to_turn, normalize_history
from phi_demo.chat.request import Limits, build_request
from phi_demo.contract import ChatEngine, ModelRequest, Notice
from phi_demo.errors import UserInputError
from phi_demo.settings import GenerationSettings

# The per-request settings a page or a client sends, by name (the sidebar's and /chat's).
REQUEST_SETTINGS = ("system_prompt",) + GenerationSettings.USER_FIELDS


@dataclass
class Prepared:
    turns: list[Turn]
    request: ModelRequest
    gen: GenerationSettings


def prepare(limits: Limits, message: Any, history: Any, settings: object) -> Prepared:
    """Check the settings, the new message and the history, and decode all media, before
    anything is shown. Whatever a client sends, the only error is a UserInputError with a
    sentence for the user; nothing has changed then."""
    if not isinstance(settings, Mapping):
        raise UserInputError("The settings must be a table of named values.")
    named = cast("Mapping[object, object]", settings)  # a client's JSON: anything, checked below
    values = {str(k): v for k, v in named.items()}
    system_prompt = values.pop("system_prompt", None) or ""
    if not isinstance(system_prompt, str):
        raise UserInputError("The system prompt must be text.")
    gen = GenerationSettings.from_values(**values)  # refuses unknown names and values with a sentence
    turns = normalize_history(history) + [message_to_turn(message)]
    return Prepared(turns, build_request(turns, system_prompt, limits), gen)


def stream_answer(engine: ChatEngine, request: ModelRequest, gen: GenerationSettings,
                  cancel: threading.Event) -> Iterator[tuple[str, Any]]:
    """Yield (answer so far, None) while streaming, (answer so far, Notice) when the engine
    says what a long prefill is doing, then (answer, stats) once. The engine already hands
    text over at a browser-friendly rate."""
    text = ""
    pieces = engine.stream(request, gen, cancel)
    try:
        for piece in pieces:
            if isinstance(piece, str):
                text += piece
                yield text, None
            elif isinstance(piece, Notice):
                yield text, piece
            else:
                yield text, piece
                return
    finally:
        cancel.set()
        if isinstance(pieces, Generator):  # every engine's stream is one (the Protocol says Iterator)
            pieces.close()
