"""What an engine is: the one contract that the local engine, the ZeroGPU wrapper, the
OpenAI-compatible server backend and the benchmark's engine all implement. Torch-free, so
the page, the CLI and the transcription can be typed against it without importing a model.

A stream may first yield a Notice (what a long prefill is doing), then yields text pieces
(str) as they are decoded, then exactly one GenerationStats; closing it early stops the model. Attention is a setting of the shared model, not of a
request: `set_attention` changes it for everyone, between answers."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol, Union, runtime_checkable

from .stats import EngineStatus, GenerationStats


@dataclass(frozen=True)
class Notice:
    """What the engine is doing before the first token, when that takes a while (reading an
    image or a long recording): the page shows it instead of nothing."""

    text: str


Piece = Union[str, Notice, GenerationStats]


@dataclass(frozen=True)
class Placeholders:
    """The strings that stand for one image and one audio clip in a prompt: the loaded
    processor's `image_token` and `audio_token`, handed to the prompt code as plain strings,
    so that code needs no processor."""

    image: str
    audio: str


@dataclass(frozen=True)
class AttentionOption:
    name: str
    available: bool
    reason: str = ""


@runtime_checkable
class ChatEngine(Protocol):
    is_tiny: bool
    on_space: bool
    device: str

    @property
    def attn(self) -> str:
        """The attention implementation every answer uses now."""

    def status(self) -> EngineStatus: ...

    def attention_options(self) -> list[AttentionOption]:
        """What can run here (empty: a server decides)."""

    def load(self) -> object:
        """Make the model ready; raises ModelUnavailable with a sentence."""

    def load_in_background(self) -> threading.Thread: ...

    def set_attention(self, name: str) -> str:
        """Switch the shared model's attention once the running answer ends; returns the
        implementation now in use. Raises ValueError with the reason for one that cannot run."""

    def stream(self, request, gen, cancel: threading.Event) -> Iterator[Piece]: ...


def collect(pieces: Iterable[Piece], on_text: Callable[[str], None] | None = None) -> tuple[str, GenerationStats | None]:
    """Read a whole stream: (answer text, its stats). `on_text` sees each piece as it comes."""
    text, stats = [], None
    for piece in pieces:
        if isinstance(piece, str):
            text.append(piece)
            if on_text:
                on_text(piece)
        elif isinstance(piece, GenerationStats):
            stats = piece
    return "".join(text), stats
