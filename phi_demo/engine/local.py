"""The engine's face to the rest of the app: load state, model facts, one streamed answer."""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from typing import Iterator

import torch
from peft.functional import set_adapter
from transformers import DynamicCache, StoppingCriteriaList

from phi_demo.chat.messages import Turn
from phi_demo.chat.request import build_request
from phi_demo.contract import EngineStatus, GenerationStats, ModelFacts, Piece, finish_reason
from phi_demo.engine import int4_cache, sources
from phi_demo.engine.attention import attention_options, resolve_attention
from phi_demo.engine.cache import ModelCache, ModelKey
from phi_demo.engine.fast_decode import FastDecode
from phi_demo.engine.fit import available_bytes, bf16_bytes_needed, choose_quantize
from phi_demo.engine.generation import CancelCriteria, generation_kwargs, prepare_inputs, stream_generate
from phi_demo.engine.interleave import Interleaver, UrgentJob
from phi_demo.engine.loader import load_model, resolve_device, resolve_dtype
from phi_demo.errors import HOW_TO_FIX, ModelUnavailable, UserInputError
from phi_demo.settings import TINY_MODEL, AppSettings, GenerationSettings

log = logging.getLogger(__name__)


class Engine:
    """Owns the model cache (the app's only global state) and serialises generation: the
    model, its attention and its active LoRA adapter are shared, so one answer is produced
    at a time, and they change only between answers, under the lock generation holds."""

    def __init__(self, settings: AppSettings, cache: ModelCache | None = None):
        self.settings = settings
        self.is_tiny = settings.model == TINY_MODEL
        self.on_space = bool(os.environ.get("SPACE_ID"))
        self.kv_reuse = settings.kv_reuse
        self.cache = cache or ModelCache(self._load)
        self._generate_lock = threading.Lock()

        self.interleaver = Interleaver()
        self.interleave_urgent = True  # the benchmark turns it off to compare
        self._state_lock = threading.Lock()
        self._state = EngineStatus("idle", "The model is not loaded yet.")
        self.attn_changes = 0  # counts switches, so pages can tell another user's change from their own
        self.request_thread_only = False  # the worker thread generates; ZeroGPU's wrapper says otherwise
        # A start-up setting that cannot be honoured (--device cuda without a GPU, --attn
        # flash_attention_2 without flash-attn) is refused: nothing is loaded in its place.
        self.config_error: str | None = None
        self.device, self.dtype, self.attn = settings.device, settings.dtype, settings.attn
        self.quantize, self.quantize_reason = settings.quantize, ""
        self.int4_cache = None
        try:
            self.device = resolve_device(settings.device)
            self.dtype = resolve_dtype(settings.dtype, self.device, self.is_tiny)
            self.attn = resolve_attention(settings.attn, self.device)
            local = settings.model if sources.is_local_model(settings.model) else None
            self.quantize, self.quantize_reason = choose_quantize(
                settings.quantize, self.device, self.is_tiny, self.on_space, bf16_bytes_needed(local), available_bytes())
            if self.quantize == "int4" and self.device != "cpu":
                raise ValueError("--quantize int4 is the CPU path; on a GPU use --quantize 4bit (bitsandbytes).")
            if self.quantize == "int4" and self.dtype == "float16":
                self.dtype = "bfloat16"
            self.int4_cache = int4_cache.from_settings(settings) if self.quantize == "int4" else None
        except (ModelUnavailable, ValueError) as e:
            self.config_error = (f"The app was started with a setting it cannot honour: {e} "
                                 "Nothing was loaded; start it again with settings this machine supports.")
            self._set_state("error", self.config_error)

    # --- state -----------------------------------------------------------------
    def _set_state(self, state: str, message: str = "") -> None:
        with self._state_lock:
            self._state = EngineStatus(state, message)

    def status(self) -> EngineStatus:
        with self._state_lock:
            state = EngineStatus(self._state.state, self._state.message)
        loaded = self.cache.current
        if loaded is not None and state.state != "loading":
            state.facts = self.describe(loaded)
        return state

    def describe(self, loaded) -> ModelFacts:
        quantized = None
        if self.quantize == "int4":
            quantized = (self.quantize_reason or "int4") + \
                f" (decoder and LM head; token embedding int8; encoders and adapters in {loaded.dtype})"
            if getattr(loaded.model, "int4_cache_note", ""):
                quantized += f"; {loaded.model.int4_cache_note}"
        elif self.quantize != "none":
            slow = " — slow on a CPU: use int4 there" if loaded.device == "cpu" else ""
            quantized = f"{self.quantize} (bitsandbytes; decoder; encoders and adapters in {loaded.dtype}){slow}"
        placement = None
        if self.settings.offload:
            devices = {str(d) for d in (getattr(loaded.model, "hf_device_map", None) or {}).values()}
            placement = ", ".join(sorted(devices)) or str(loaded.model.device)
        fast = None
        if self.settings.fast_decode:
            if loaded.fast is not None and loaded.fast.warmup_s is None:
                fast = "compiling…"
            elif loaded.fast is not None:
                fast = (f"on: static cache + torch.compile ({self.settings.compile_backend}), "
                        f"compiled in {loaded.fast.warmup_s:.1f} s")
            else:
                fast = f"off: {loaded.fast_error or 'not compiled yet'}"
        return ModelFacts(
            model=self.settings.model,
            revision=None if self.is_tiny or sources.is_local_model(self.settings.model) else self.settings.revision,
            folder=str(loaded.folder), device=loaded.device, dtype=loaded.dtype, attention=loaded.attn,
            adapters=tuple(loaded.adapters), load_seconds=round(loaded.load_seconds, 2),
            weights_gb=round(loaded.memory_bytes / 1e9, 3), quantized=quantized, placement=placement,
            fast_decode=fast,
            cuda_allocated_gb=round(torch.cuda.memory_allocated() / 1e9, 2) if loaded.device.startswith("cuda") else None,
        )

    def attention_options(self):
        return attention_options(self.device)

    # --- loading -----------------------------------------------------------------
    def key(self, attn: str | None = None) -> ModelKey:
        attn = attn or self.attn
        revision = None if self.is_tiny or sources.is_local_model(self.settings.model) else self.settings.revision
        return ModelKey(self.settings.model, revision, self.device, self.dtype, attn,
                        self.quantize, self.settings.offload)

    def _load(self, key: ModelKey):
        folder = sources.resolve(key.source, key.revision, self.settings.offline,
                                 progress=lambda msg: self._set_state("loading", msg))
        self._set_state("loading", f"Loading {key.source} on {key.device} ({key.dtype}, {key.attn})…")
        loaded = load_model(folder, key.device, key.dtype, key.attn, key.quantize, key.offload,
                            int4_cache=self.int4_cache, progress=lambda msg: self._set_state("loading", msg))
        if key.quantize == "int4":
            log.info("int4 model loaded in %.1f s (%s)", loaded.load_seconds,
                     getattr(loaded.model, "int4_cache_note", "") or "no int4 cache")
        return loaded

    def load(self):
        """The model, loading it if needed (with the current attention)."""
        if self.config_error:
            raise ModelUnavailable(self.config_error)
        key = self.key()
        if self.cache.key != key:
            self._set_state("loading", f"Loading {key.source}…")
        try:
            loaded = self.cache.get(key)
        except ModelUnavailable as e:
            self._set_state("error", str(e))
            raise
        except Exception as e:  # never let a load failure take the app down
            log.exception("model load failed")
            self._set_state("error", f"The model could not be loaded: {e}. {HOW_TO_FIX}")
            raise ModelUnavailable(self._state.message) from e
        if self.settings.fast_decode and loaded.fast_error is None and (loaded.fast is None or loaded.fast.warmup_s is None):
            self._compile(loaded)  # or wait for the compile another caller started
        self._set_state("ready", "")
        return loaded

    def _compile(self, loaded) -> None:
        """Fast decode: compile the decode step now, for plain text and each adapter, so that
        no answer stalls on it; longer cache lengths compile on first use. A failure (no
        compiler, an unsupported op) leaves the ordinary path in place, with the reason shown."""

        with self._generate_lock:
            if loaded.fast is not None or loaded.fast_error is not None:
                return
            if self.quantize != "none" or self.settings.offload:
                loaded.fast_error = "not with --quantize or --offload (transformers does not compile those)"
                return
            self._set_state("loading", "Compiling the decode step for fast decode (one to a few minutes)…")
            fast = FastDecode(backend=self.settings.compile_backend)
            loaded.fast = fast
            start = time.perf_counter()
            request = build_request([Turn("user", "Hello")], self.settings.system_prompt)
            gen = GenerationSettings(max_new_tokens=4, min_new_tokens=4)
            try:
                for modality in ["text"] + [m for m in ("vision", "speech") if self.adapter_for(loaded, m)]:
                    adapter = self.activate_adapter(loaded, modality)
                    for _ in stream_generate(loaded, request, gen, threading.Event(), adapter=adapter):
                        pass
            except Exception as e:  # noqa: BLE001 - fall back, never fail the load for it
                log.exception("fast decode: compiling failed")
                loaded.drop_compiled()
                loaded.fast_error = f"compiling failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
                return
            fast.warmup_s = time.perf_counter() - start

    def load_in_background(self) -> threading.Thread:
        def run():
            try:
                self.load()
            except ModelUnavailable:
                pass  # the state says why; the page shows it
        t = threading.Thread(target=run, name="phi-demo-load", daemon=True)
        t.start()
        return t

    def set_attention(self, name: str) -> str:
        """Switch the shared model's attention for everyone. Waits for the running answer (or
        live-transcription window): the switch happens under the lock generation holds.
        Raises ValueError with the reason when `name` cannot run here."""
        attn = resolve_attention(name, self.device)
        if self.config_error:
            raise ValueError(self.config_error)
        if attn == self.attn:
            return attn
        with self._generate_lock:
            if self.cache.current is not None:
                try:
                    self.cache.get(self.key(attn))  # in place where it can; else a reload
                except Exception as e:  # noqa: BLE001 - a failed switch leaves the app without a model
                    log.exception("attention switch to %s failed", attn)
                    self._set_state("error", f"Switching attention to {attn} failed: {e}. {HOW_TO_FIX}")
                    raise ValueError(f"Switching attention to {attn} failed: {e}") from None
            self.attn = attn
            self.attn_changes += 1
        log.info("attention switched to %s", attn)
        if self.cache.current is not None:
            self.load()  # fast decode compiles again for the new attention
        return attn

    # --- generation --------------------------------------------------------------
    def stream(self, request, gen: GenerationSettings, cancel: threading.Event) -> Iterator[Piece]:
        """A Notice before a long prefill, text pieces of one answer, then its GenerationStats.
        An urgent request (a live-transcription window) runs between the tokens of a running
        answer instead of waiting for its end (engine/interleave.py)."""
        self.load()
        if getattr(request, "urgent", False) and self.interleave_urgent:
            yield from self._stream_urgent(request, gen, cancel)
            return
        with self._generate_lock:
            yield from self._stream_locked(request, gen, cancel)

    def _stream_urgent(self, request, gen, cancel) -> Iterator[Piece]:
        while not cancel.is_set():
            if self._generate_lock.acquire(timeout=0.02):  # nothing running: the ordinary way
                try:
                    yield from self._stream_locked(request, gen, cancel)
                finally:
                    self._generate_lock.release()
                return
            if not self.interleaver.accepting:
                continue  # a load, an attention switch or a fast-decode answer: wait for it
            job = UrgentJob(lambda: self._generate_between(request, gen, cancel))
            self.interleaver.submit(job)
            while not job.done.wait(0.02):
                if (cancel.is_set() or not self.interleaver.accepting) and job.withdraw():
                    break  # the answer ended first: take the lock next time round
            else:
                if job.error is not None:
                    raise job.error
                text, stats = job.result
                if text:
                    yield text
                yield stats
                return

    def _generate_between(self, request, gen, cancel):
        """Run inside the running answer's generate(), on its worker thread: the whole urgent
        request with a cache of its own, its adapter, no KV reuse (the answer's entry stays)."""


        start = time.perf_counter()
        loaded = self.cache.current
        self.activate_adapter(loaded, request.modality)
        inputs = prepare_inputs(loaded, request)
        n_prompt = int(inputs["input_ids"].shape[1])
        with torch.inference_mode():
            if gen.seed is not None:
                torch.manual_seed(gen.seed)
            out = loaded.model.generate(**inputs, cache=DynamicCache(config=loaded.model.config),
                                        stopping_criteria=StoppingCriteriaList([CancelCriteria(cancel)]),
                                        **generation_kwargs(gen, loaded.processor, loaded.stop_ids))
        new = out[0, n_prompt:]
        text = loaded.processor.tokenizer.decode(new, skip_special_tokens=True)
        total = time.perf_counter() - start
        n = int(new.numel())
        return text, GenerationStats(n_prompt, n, total, total, n / total if total else 0.0, cancel.is_set(),
                                     finish_reason=finish_reason(cancel.is_set(), n, gen.max_new_tokens))

    def _stream_locked(self, request, gen, cancel) -> Iterator[Piece]:
        """One answer, for a caller that holds the generation lock."""
        if cancel.is_set():
            return
        loaded = self.load_locked()
        adapter = self.activate_adapter(loaded, request.modality)
        # Urgent requests may run between this answer's tokens; not with fast decode, whose
        # compiled step and static cache belong to the answer.
        yield_point = None
        if self.interleave_urgent and loaded.fast is None:
            yield_point = self.interleaver.yield_point(lambda: self.activate_adapter(loaded, request.modality))
        self.interleaver.accepting = yield_point is not None
        try:
            try:
                yield from stream_generate(loaded, request, gen, cancel,
                                           prefix_cache=loaded.prefix_cache if self.kv_reuse else None,
                                           adapter=adapter, yield_point=yield_point)
            finally:
                # Jobs queued after the answer's last token are taken back by their owners,
                # which then take the lock like anyone else.
                self.interleaver.accepting = False
        except torch.OutOfMemoryError:
            log.exception("out of memory while generating")
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise RuntimeError("The GPU ran out of memory for this request. Try fewer or smaller images, "
                               "a shorter conversation or fewer new tokens.") from None
        except (UserInputError, ModelUnavailable):
            raise
        except Exception:
            # The user reads a sentence; the traceback belongs in the log.
            log.exception("generation failed")
            raise

    def load_locked(self):
        """The loaded model, for a caller that holds the generation lock: the key cannot
        change under it, since attention only switches under the same lock."""
        loaded = self.cache.current
        if loaded is None or self.cache.key != self.key():
            loaded = self.cache.get(self.key())
        return loaded

    @staticmethod
    def adapter_for(loaded, modality: str) -> str | None:
        name = {"vision": "vision", "speech": "speech"}.get(modality)
        return name if name in loaded.adapters else None

    def activate_adapter(self, loaded, modality: str) -> str | None:
        """As the original Phi-4 code: any image -> vision LoRA, audio only -> speech LoRA,
        text only -> none. peft.functional works where transformers' helpers need peft>=0.22."""
        if not loaded.adapters:
            return None

        name = self.adapter_for(loaded, modality)
        set_adapter(loaded.model, name if name else [])
        return name
