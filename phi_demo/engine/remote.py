"""A chat-completions server (vLLM, `transformers serve`, …) as the app's engine, spoken to
with the openai SDK.

It offers what the page and the API use of the local engine — `stream`, `status`,
`attention_options`, `load` — so nothing above it changes. Imports neither torch nor
gradio: an app on this backend runs without torch."""

from __future__ import annotations

import base64
import io
import os
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import openai
import soundfile as sf
from openai.types.chat import ChatCompletionChunk
from PIL import Image

from phi_demo.contract import (
    AttentionOption,
    EngineStatus,
    FinishReason,
    GenerationStats,
    ModelFacts,
    ModelRequest,
    Piece,
)
from phi_demo.errors import ModelUnavailable, SettingError
from phi_demo.settings import AppSettings, GenerationSettings

_NO_OPENAI_IDENTITY: dict[str, str | openai.Omit] = {"OpenAI-Organization": openai.omit, "OpenAI-Project": openai.omit}


def _png_data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _wav_base64(samples: np.ndarray, sample_rate: int = 16000) -> str:
    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, format="WAV", subtype="PCM_16")
    return base64.b64encode(buf.getvalue()).decode()


def to_openai_messages(request: ModelRequest) -> list[dict[str, Any]]:
    """Our messages -> chat-completions messages with standard content parts: images as
    data URLs (`image_url`), audio as base64 WAV (`input_audio`)."""
    images, audios = iter(request.images), iter(request.audios)
    out: list[dict[str, Any]] = []
    for m in request.messages:
        if not m["media"]:
            out.append({"role": m["role"], "content": m["text"]})
            continue
        parts: list[dict[str, Any]] = []
        for kind in m["media"]:
            if kind == "image":
                parts.append({"type": "image_url", "image_url": {"url": _png_data_url(next(images))}})
            else:
                parts.append({"type": "input_audio", "input_audio": {"data": _wav_base64(next(audios)), "format": "wav"}})
        if m["text"]:
            parts.append({"type": "text", "text": m["text"]})
        out.append({"role": m["role"], "content": parts})
    return out


class OpenAIEngine:
    is_tiny = False
    quantize = "none"  # the server's business
    attn_changes = 0
    request_thread_only = False
    config_error: str | None = None
    kv_reuse = False
    device = "remote"
    attn = "server"

    def __init__(self, settings: AppSettings) -> None:
        if not settings.base_url:
            raise SettingError("--backend openai needs --base-url (PHI_DEMO_BASE_URL), e.g. http://127.0.0.1:8000/v1")

        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        self.on_space = bool(os.environ.get("SPACE_ID"))
        self._models: list[str] | None = None
        self._lock = threading.Lock()
        self._error = ""
        # No retries: a server that is down is said at once, and the user retries.
        self.client = openai.OpenAI(base_url=self.base_url, api_key=settings.api_key or "no-key", max_retries=0,
                                    timeout=openai.Timeout(600, connect=10))

    # --- what the page asks ---------------------------------------------------------
    def attention_options(self) -> list[AttentionOption]:
        return []  # the server decides

    def _headers(self) -> Mapping[str, str | openai.Omit]:
        """Per request: no Authorization header at all when no key was given, and never an
        organisation or project the environment may hold for api.openai.com."""
        if self.settings.api_key:
            return _NO_OPENAI_IDENTITY
        return {**_NO_OPENAI_IDENTITY, "Authorization": openai.omit}

    def set_attention(self, name: str) -> str:
        raise ValueError("The model server decides its attention implementation.")

    def load(self) -> OpenAIEngine:
        """Ask the server which models it serves; raises ModelUnavailable if it cannot be reached."""
        with self._lock:
            try:
                self._models = [m.id for m in self.client.models.list(extra_headers=self._headers())]
                self._error = ""
            except openai.OpenAIError as e:
                self._error = (f"The model server at {self.base_url} cannot be reached ({_said(e)}). "
                               "Start it, or check --base-url and --api-key.")
                raise ModelUnavailable(self._error) from None
        return self

    def load_in_background(self) -> threading.Thread:
        t = threading.Thread(target=self._try_load, daemon=True)
        t.start()
        return t

    def _try_load(self) -> None:
        try:
            self.load()
        except ModelUnavailable:
            pass

    def status(self) -> EngineStatus:
        if self._error:
            return EngineStatus("error", self._error)
        if self._models is None:
            return EngineStatus("loading", f"Contacting {self.base_url}…")
        return EngineStatus("ready", "", ModelFacts(model=self.model_for("text"), server=self.base_url,
                                                    attention="decided by the server",
                                                    served_models=tuple(self._models)))

    def model_for(self, modality: str) -> str:
        s = self.settings
        named = {"vision": s.served_vision_model, "speech": s.served_speech_model}.get(modality)
        if named:
            return named
        if s.served_model:
            return s.served_model
        if self._models:
            return self._models[0]
        raise ModelUnavailable(f"The server at {self.base_url} lists no model; pass --served-model.")

    # --- one answer ----------------------------------------------------------------------
    def payload(self, request: ModelRequest, gen: GenerationSettings) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model_for(request.modality), "messages": to_openai_messages(request),
                                "stream": True, "max_tokens": gen.max_new_tokens,
                                "stream_options": {"include_usage": True}}
        # Only the standard fields: some servers (`transformers serve`) refuse unknown ones, so
        # top-k and repetition penalty, which the chat-completions API lacks, are not sent.
        if gen.do_sample:
            body.update(temperature=gen.temperature, top_p=gen.top_p)
        else:
            body["temperature"] = 0.0
        if gen.seed is not None:
            body["seed"] = gen.seed
        return body

    def stream(self, request: ModelRequest, gen: GenerationSettings, cancel: threading.Event) -> Iterator[Piece]:
        if self._models is None:
            self.load()
        start = time.perf_counter()
        answer = _Answer()
        try:
            chunks = self.client.chat.completions.create(**self.payload(request, gen), extra_headers=self._headers())
            self._error = ""
            with chunks:  # leaving the block closes the request: the server stops
                for chunk in chunks:
                    if cancel.is_set():
                        break
                    yield from answer.read(chunk)
        except openai.APIStatusError as e:
            raise RuntimeError(f"The model server answered HTTP {e.status_code}: {_said(e)[:300]}") from None
        except openai.APIConnectionError as e:
            self._error = f"The model server at {self.base_url} cannot be reached ({_said(e)})."
            raise ModelUnavailable(self._error + " Start it, or check --base-url.") from None
        except openai.APIError as e:  # an error event inside the stream
            raise RuntimeError(f"The model server failed while answering: {_said(e)[:300]}") from None
        yield answer.stats(start, time.perf_counter(), cancel.is_set())


class _Answer:
    """What the chunks of one streamed answer add up to."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.new_tokens = 0
        self.prompt_tokens = 0
        self.reason: str | None = None

    def read(self, chunk: ChatCompletionChunk) -> Iterator[str]:
        if chunk.usage:
            self.prompt_tokens = chunk.usage.prompt_tokens or self.prompt_tokens
            self.new_tokens = chunk.usage.completion_tokens or self.new_tokens
        for choice in chunk.choices:
            self.reason = choice.finish_reason or self.reason
            text = choice.delta.content
            if text:
                if self.first is None:
                    self.first = time.perf_counter()
                self.new_tokens += 1  # one chunk per token on the servers we know; usage corrects it
                yield text

    def stats(self, start: float, end: float, cancelled: bool) -> GenerationStats:
        first = self.first or end
        n = self.new_tokens
        reason: FinishReason = "cancelled" if cancelled else ("length" if self.reason == "length" else "stop")
        return GenerationStats(self.prompt_tokens, n, first - start, end - start,
                               (n - 1) / (end - first) if n > 1 and end > first else 0.0, cancelled,
                               finish_reason=reason)


def _said(error: openai.OpenAIError) -> str:
    """The server's (or the connection's) own words, on one line."""
    if isinstance(error, openai.APIStatusError):
        try:
            text = error.response.text
        except Exception:  # noqa: BLE001 - a body that cannot be read: the SDK's message then
            text = ""
        return (text or error.message).replace("\n", " ")
    words = str(error.__cause__ or error)
    return words.splitlines()[0] if words else type(error).__name__
