"""A chat-completions server (vLLM, `transformers serve`, …) as the app's engine.

It offers what the page and the API use of the local engine — `stream`, `status`,
`attention_options`, `load` — so nothing above it changes. Imports neither torch nor
gradio: an app on this backend runs without torch."""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
from typing import Iterator

import httpx
import numpy as np
import soundfile as sf

from phi_demo.contract import EngineStatus, GenerationStats, ModelFacts
from phi_demo.errors import ModelUnavailable, SettingError
from phi_demo.settings import AppSettings, GenerationSettings


def _png_data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _wav_base64(samples: np.ndarray, sample_rate: int = 16000) -> str:
    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, format="WAV", subtype="PCM_16")
    return base64.b64encode(buf.getvalue()).decode()


def to_openai_messages(request) -> list[dict]:
    """Our messages -> chat-completions messages with standard content parts: images as
    data URLs (`image_url`), audio as base64 WAV (`input_audio`)."""
    images, audios = iter(request.images), iter(request.audios)
    out = []
    for m in request.messages:
        if not m["media"]:
            out.append({"role": m["role"], "content": m["text"]})
            continue
        parts = []
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
    config_error = None
    kv_reuse = False
    device = "remote"
    attn = "server"

    def __init__(self, settings: AppSettings):
        if not settings.base_url:
            raise SettingError("--backend openai needs --base-url (PHI_DEMO_BASE_URL), e.g. http://127.0.0.1:8000/v1")

        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        self.on_space = bool(os.environ.get("SPACE_ID"))
        self._models: list[str] | None = None
        self._lock = threading.Lock()
        self._error = ""

    # --- what the page asks ---------------------------------------------------------
    def attention_options(self):
        return []  # the server decides

    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self.settings.api_key}"} if self.settings.api_key else {}

    def set_attention(self, name: str) -> str:
        raise ValueError("The model server decides its attention implementation.")

    def load(self):
        """Ask the server which models it serves; raises ModelUnavailable if it cannot be reached."""

        with self._lock:
            try:
                r = httpx.get(f"{self.base_url}/models", headers=self._headers(), timeout=10)
                r.raise_for_status()
                self._models = [m["id"] for m in r.json().get("data", [])]
                self._error = ""
            except (httpx.HTTPError, ValueError, KeyError) as e:
                self._error = (f"The model server at {self.base_url} cannot be reached ({e}). "
                               "Start it, or check --base-url and --api-key.")
                raise ModelUnavailable(self._error) from None
        return self

    def load_in_background(self):
        t = threading.Thread(target=lambda: self._try_load(), daemon=True)
        t.start()
        return t

    def _try_load(self):
        try:
            self.load()
        except ModelUnavailable:
            pass

    def status(self):
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
    def payload(self, request, gen: GenerationSettings) -> dict:
        body = {"model": self.model_for(request.modality), "messages": to_openai_messages(request), "stream": True,
                "max_tokens": gen.max_new_tokens, "stream_options": {"include_usage": True}}
        # Only the standard fields: some servers (`transformers serve`) refuse unknown ones, so
        # top-k and repetition penalty, which the chat-completions API lacks, are not sent.
        if gen.do_sample:
            body.update(temperature=gen.temperature, top_p=gen.top_p)
        else:
            body["temperature"] = 0.0
        if gen.seed is not None:
            body["seed"] = gen.seed
        return body

    def stream(self, request, gen: GenerationSettings, cancel: threading.Event) -> Iterator:
        if self._models is None:
            self.load()
        start = time.perf_counter()
        first, n, prompt_tokens, reason = None, 0, 0, None
        try:
            with httpx.stream("POST", f"{self.base_url}/chat/completions", json=self.payload(request, gen),
                              headers=self._headers(), timeout=httpx.Timeout(600, connect=10)) as resp:
                if resp.status_code != 200:
                    detail = resp.read().decode(errors="replace")[:300]
                    raise RuntimeError(f"The model server answered HTTP {resp.status_code}: {detail}")
                self._error = ""
                for line in resp.iter_lines():
                    if cancel.is_set():
                        break  # leaving the block closes the request: the server stops
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("usage"):
                        prompt_tokens = chunk["usage"].get("prompt_tokens", prompt_tokens) or 0
                        n = chunk["usage"].get("completion_tokens", n) or n
                    for choice in chunk.get("choices") or []:
                        reason = choice.get("finish_reason") or reason
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            if first is None:
                                first = time.perf_counter()
                            n += 1  # one chunk per token on the servers we know; usage corrects it
                            yield text
        except httpx.TransportError as e:
            self._error = f"The model server at {self.base_url} cannot be reached ({e})."
            raise ModelUnavailable(self._error + " Start it, or check --base-url.") from None
        end = time.perf_counter()
        first = first or end
        yield GenerationStats(prompt_tokens, n, first - start, end - start,
                              (n - 1) / (end - first) if n > 1 and end > first else 0.0, cancel.is_set(),
                              finish_reason="cancelled" if cancel.is_set() else
                              ("length" if reason == "length" else "stop"))
