"""Hugging Face ZeroGPU: a GPU is attached only while a `spaces.GPU` function runs, in a
forked worker. Off ZeroGPU nothing here changes anything.

The generation runs in the worker, so its arguments (the request: prompt, PIL images,
numpy audio; the generation settings) and what it yields (text, GenerationStats) must
pickle. The cancel flag cannot cross: the page's side stops reading and closes the
worker's generator instead."""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from phi_demo.contract import AttentionOption, ChatEngine, EngineStatus, ModelRequest, Piece
from phi_demo.settings import GenerationSettings

# The engine the worker uses: the fork inherits it, model already on "cuda". Process-wide
# state (phi_demo/caches.py lists it): spaces.GPU runs a module-level function in the fork.
_ENGINE: ChatEngine | None = None


def enabled() -> bool:
    flag = os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")
    return flag and importlib.util.find_spec("spaces") is not None


def duration(request: ModelRequest, gen: GenerationSettings) -> int:
    """Seconds of GPU to ask for: a margin, the decode budget, and the audio to encode."""
    audio_s = sum(len(a) for a in request.audios) / 16000 if request.audios else 0.0
    return int(min(240, 15 + gen.max_new_tokens / 20 + audio_s / 10 + 2 * len(request.images)))


def _generate(request: ModelRequest, gen: GenerationSettings) -> Iterator[Piece]:
    if _ENGINE is None:
        raise RuntimeError("ZeroGPU: no engine was wrapped before the GPU function ran")
    yield from _ENGINE.stream(request, gen, threading.Event())


class ZeroGpuEngine:
    """The engine as the page sees it, with each answer produced inside spaces.GPU."""

    # ZeroGPU ties the GPU quota to the request: views that would call the model from a
    # worker thread of their own call it from the request's thread instead.
    request_thread_only = True

    def __init__(self, engine: ChatEngine) -> None:
        import spaces  # noqa: PLC0415 - only on a ZeroGPU Space

        global _ENGINE
        _ENGINE = engine
        self._engine = engine
        self.is_tiny, self.on_space, self.device = engine.is_tiny, engine.on_space, engine.device
        self.quantize, self.config_error = engine.quantize, engine.config_error
        self.attn_changes = engine.attn_changes
        self.gpu_generate: Callable[[ModelRequest, GenerationSettings], Iterator[Piece]] = \
            spaces.GPU(duration=duration)(_generate)

    @property
    def attn(self) -> str:
        return self._engine.attn

    def status(self) -> EngineStatus:
        return self._engine.status()

    def attention_options(self) -> list[AttentionOption]:
        return self._engine.attention_options()

    def load(self) -> object:
        return self._engine.load()

    def load_in_background(self) -> threading.Thread:
        return self._engine.load_in_background()

    def set_attention(self, name: str) -> str:
        attn = self._engine.set_attention(name)
        self.attn_changes = self._engine.attn_changes
        return attn

    def __getattr__(self, name: str) -> Any:  # anything else (the CLI's and the tests' extras)
        return getattr(self._engine, name)

    def stream(self, request: ModelRequest, gen: GenerationSettings, cancel: threading.Event) -> Iterator[Piece]:
        pieces = self.gpu_generate(request, gen)
        try:
            for piece in pieces:
                yield piece
                if cancel.is_set():
                    return
        finally:
            close = getattr(pieces, "close", None)
            if close:
                close()


def wrap(engine: ChatEngine) -> ChatEngine:
    """The engine to hand to the page: wrapped on ZeroGPU, itself elsewhere."""
    return ZeroGpuEngine(engine) if enabled() else engine
