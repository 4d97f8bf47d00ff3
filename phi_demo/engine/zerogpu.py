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

_ENGINE = None  # the engine the worker uses; the fork inherits it, model already on "cuda"


def enabled() -> bool:
    flag = os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")
    return flag and importlib.util.find_spec("spaces") is not None


def duration(request, gen) -> int:
    """Seconds of GPU to ask for: a margin, the decode budget, and the audio to encode."""
    audio_s = sum(len(a) for a in request.audios) / 16000 if request.audios else 0.0
    return int(min(240, 15 + gen.max_new_tokens / 20 + audio_s / 10 + 2 * len(request.images)))


def _generate(request, gen):
    yield from _ENGINE.stream(request, gen, threading.Event())


class ZeroGpuEngine:
    """The engine as the page sees it, with each answer produced inside spaces.GPU."""

    # ZeroGPU ties the GPU quota to the request: views that would call the model from a
    # worker thread of their own call it from the request's thread instead.
    request_thread_only = True

    def __init__(self, engine):
        import spaces  # noqa: PLC0415 - only on a ZeroGPU Space

        global _ENGINE
        _ENGINE = engine
        self._engine = engine
        self.gpu_generate = spaces.GPU(duration=duration)(_generate)

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def stream(self, request, gen, cancel):
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


def wrap(engine):
    """The engine to hand to the page: wrapped on ZeroGPU, itself elsewhere."""
    return ZeroGpuEngine(engine) if enabled() else engine
