"""The engine's face to the rest of the app: it keeps the ChatEngine contract and wires the
parts that each have one owner — where the model runs (runtime.py), its life (cache.py,
loader.py), fast decode's compiling (fast_decode.py), who has the model (interleave.py) and
the one generation routine (generation.py)."""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import Iterator

import torch
from peft.functional import set_adapter

from phi_demo.chat.messages import Turn
from phi_demo.chat.policy import TRANSCRIBE_CLIP, with_transcripts
from phi_demo.chat.request import build_request, clip_transcripts, media_request
from phi_demo.contract import (
    AttentionOption,
    EngineState,
    EngineStatus,
    ModelFacts,
    ModelRequest,
    Notice,
    Piece,
    collect,
)
from phi_demo.engine import fast_decode, int4_cache, sources
from phi_demo.engine.cache import ModelCache, ModelKey
from phi_demo.engine.fairness import FifoLock
from phi_demo.engine.generation import auto_context_budget, stream_generate
from phi_demo.engine.int4_cache import Int4Cache
from phi_demo.engine.interleave import Handed, Scheduler, UrgentJob
from phi_demo.engine.loader import LoadedModel, load_model
from phi_demo.engine.runtime import Machine, Runtime, attention_for, attention_options, resolve
from phi_demo.errors import HOW_TO_FIX, ModelUnavailable, UserInputError
from phi_demo.settings import TINY_MODEL, AppSettings, GenerationSettings

log = logging.getLogger(__name__)


class Engine:
    """Owns the model cache (the app's only global state) and serialises generation: the
    model, its attention and its active LoRA adapter are shared, so one answer is produced
    at a time, and they change only between answers, while the scheduler's lock is held."""

    def __init__(self, settings: AppSettings, cache: ModelCache[LoadedModel] | None = None,
                 machine: Machine | None = None) -> None:
        self.settings = settings
        self.is_tiny = settings.model == TINY_MODEL
        self.machine = machine or Machine.detect(settings.model)
        self.on_space = self.machine.on_space
        self.kv_reuse = settings.kv_reuse
        self.cache: ModelCache[LoadedModel] = cache or ModelCache(self._load)
        self.scheduler = Scheduler()
        # Answers from the page and the API take the model in arrival order.
        self.arrivals = FifoLock()
        self.interleave_urgent = True  # the benchmark turns it off to compare
        self._auto_budget: int | None = None
        self._state_lock = threading.Lock()
        self._state = EngineStatus("idle", "The model is not loaded yet.")
        self.attn_changes = 0  # counts switches, so pages can tell another user's change from their own
        self.request_thread_only = False  # the worker thread generates; ZeroGPU's wrapper says otherwise
        # A start-up setting that cannot be honoured (--device cuda without a GPU, --attn
        # flash_attention_2 without flash-attn) is refused: nothing is loaded in its place.
        self.config_error: str | None = None
        self.runtime = Runtime(settings.device, settings.dtype, settings.attn, settings.quantize)  # as asked
        self.int4_cache: Int4Cache | None = None
        try:
            self.runtime = resolve(settings, self.machine)
            self.int4_cache = int4_cache.from_settings(settings) if self.runtime.quantize == "int4" else None
        except (ModelUnavailable, ValueError) as e:
            self.config_error = (f"The app was started with a setting it cannot honour: {e} "
                                 "Nothing was loaded; start it again with settings this machine supports.")
            self._set_state("error", self.config_error)
        for reason in self.runtime.reasons:
            log.info("runtime: %s", reason)
        self.device, self.dtype = self.runtime.device, self.runtime.dtype
        self.quantize, self.quantize_reason = self.runtime.quantize, self.runtime.quantize_reason

    @property
    def attn(self) -> str:
        return self.runtime.attn

    # --- state -----------------------------------------------------------------
    def _set_state(self, state: EngineState, message: str = "") -> None:
        with self._state_lock:
            self._state = EngineStatus(state, message)

    def status(self) -> EngineStatus:
        with self._state_lock:
            state = EngineStatus(self._state.state, self._state.message)
        loaded = self.cache.current
        if loaded is not None and state.state != "loading":
            state.facts = self.describe(loaded)
        return state

    def describe(self, loaded: LoadedModel) -> ModelFacts:
        placement = None
        if self.settings.offload:
            devices = {str(d) for d in (getattr(loaded.model, "hf_device_map", None) or {}).values()}
            placement = ", ".join(sorted(devices)) or str(loaded.model.device)
        return ModelFacts(
            model=self.settings.model, revision=self.key().revision,
            folder=str(loaded.folder), device=loaded.device, dtype=loaded.dtype, attention=loaded.attn,
            adapters=tuple(loaded.adapters), load_seconds=round(loaded.load_seconds, 2),
            weights_gb=round(loaded.memory_bytes / 1e9, 3), quantized=self._quantized(loaded), placement=placement,
            fast_decode=self._fast_decode(loaded),
            cuda_allocated_gb=round(torch.cuda.memory_allocated() / 1e9, 2) if loaded.device.startswith("cuda") else None,
            context_budget=self.context_budget(loaded),
        )

    def context_budget(self, loaded: LoadedModel) -> int:
        """The most prompt tokens an answer reads: --context-budget, or computed once from the
        memory free after loading (each answer also keeps the model's context minus its room)."""
        if self.settings.context_budget:
            return self.settings.context_budget
        if self._auto_budget is None:
            self._auto_budget = auto_context_budget(loaded.model.config, loaded.model.dtype, _free_bytes(loaded.device))
        return self._auto_budget

    def _quantized(self, loaded: LoadedModel) -> str | None:
        if self.quantize == "int4":
            text = (self.quantize_reason or "int4") + \
                f" (decoder and LM head; token embedding int8; encoders and adapters in {loaded.dtype})"
            return text + (f"; {loaded.int4_cache_note}" if loaded.int4_cache_note else "")
        if self.quantize != "none":
            slow = " — slow on a CPU: use int4 there" if loaded.device == "cpu" else ""
            return f"{self.quantize} (bitsandbytes; decoder; encoders and adapters in {loaded.dtype}){slow}"
        return None

    def _fast_decode(self, loaded: LoadedModel) -> str | None:
        if not self.settings.fast_decode:
            return None
        if loaded.fast is not None and loaded.fast.warmup_s is None:
            return "compiling…"
        if loaded.fast is not None:
            return (f"on: static cache + torch.compile ({self.settings.compile_backend}), "
                    f"compiled in {loaded.fast.warmup_s:.1f} s")
        return f"off: {loaded.fast_error or 'not compiled yet'}"

    def attention_options(self) -> list[AttentionOption]:
        return attention_options(self.device, self.machine)

    # --- watching the model work ---------------------------------------------------------
    @property
    def generating(self) -> bool:
        """The model is generating right now (an answer, a live window, a compile warm-up)."""
        loaded = self.cache.current
        return loaded is not None and loaded.worker.busy.is_set()

    @property
    def answers_finished(self) -> int:
        """Generation runs the loaded model has finished (answers and windows run on their own)."""
        loaded = self.cache.current
        return loaded.worker.finished if loaded is not None else 0

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until the model has finished all generation it was given; False on timeout."""
        loaded = self.cache.current
        return loaded is None or loaded.worker.wait_idle(timeout)

    # --- loading -----------------------------------------------------------------
    def key(self, attn: str | None = None) -> ModelKey:
        revision = None if self.is_tiny or sources.is_local_model(self.settings.model) else self.settings.revision
        return ModelKey(self.settings.model, revision, self.device, self.dtype, attn or self.attn,
                        self.quantize, self.settings.offload)

    def _load(self, key: ModelKey) -> LoadedModel:
        folder = sources.resolve(key.source, key.revision, self.settings.offline,
                                 progress=lambda msg: self._set_state("loading", msg))
        self._set_state("loading", f"Loading {key.source} on {key.device} ({key.dtype}, {key.attn})…")
        loaded = load_model(folder, key.device, key.dtype, key.attn, key.quantize, key.offload,
                            int4_cache=self.int4_cache, progress=lambda msg: self._set_state("loading", msg))
        if key.quantize == "int4":
            log.info("int4 model loaded in %.1f s (%s)", loaded.load_seconds, loaded.int4_cache_note or "no int4 cache")
        return loaded

    def load(self) -> LoadedModel:
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
            message = f"The model could not be loaded: {e}. {HOW_TO_FIX}"
            self._set_state("error", message)
            raise ModelUnavailable(message) from e
        if self.settings.fast_decode and loaded.fast_error is None and (loaded.fast is None or loaded.fast.warmup_s is None):
            self._compile(loaded)  # or wait for the compile another caller started
        self._set_state("ready", "")
        return loaded

    def _compile(self, loaded: LoadedModel) -> None:
        """Fast decode: compile the decode step before any answer needs it (fast_decode.py)."""
        with self.scheduler.exclusive():
            if loaded.fast is not None or loaded.fast_error is not None:
                return
            why_not = fast_decode.unsupported(self.quantize, self.settings.offload)
            if why_not:
                loaded.fast_error = why_not
                return
            self._set_state("loading", "Compiling the decode step for fast decode (one to a few minutes)…")
            modalities = ["text"] + [m for m in ("vision", "speech") if self.adapter_for(loaded, m)]
            fast_decode.compile_decode(loaded, self.settings.compile_backend, modalities,
                                       lambda modality: self._warm_up(loaded, modality))

    def _warm_up(self, loaded: LoadedModel, modality: str) -> None:
        request = build_request([Turn("user", "Hello")], self.settings.system_prompt)
        adapter = self.activate_adapter(loaded, modality)
        for _ in stream_generate(loaded, request, GenerationSettings(max_new_tokens=4, min_new_tokens=4),
                                 threading.Event(), adapter=adapter):
            pass

    def load_in_background(self) -> threading.Thread:
        def run() -> None:
            try:
                self.load()
            except ModelUnavailable as e:
                # The state says why and the page shows it; the terminal that started the app too.
                log.error("%s", e)
        t = threading.Thread(target=run, name="phi-demo-load", daemon=True)
        t.start()
        return t

    def set_attention(self, name: str) -> str:
        """Switch the shared model's attention for everyone. Waits for the running answer (or
        live-transcription window): the switch happens while the scheduler's lock is held.
        Raises ValueError with the reason when `name` cannot run here."""
        attn = attention_for(name, self.device, self.machine)
        if self.config_error:
            raise ValueError(self.config_error)
        if attn == self.attn:
            return attn
        with self.scheduler.exclusive():
            if self.cache.current is not None:
                try:
                    self.cache.get(self.key(attn))  # in place where it can; else a reload
                except Exception as e:  # noqa: BLE001 - a failed switch leaves the app without a model
                    log.exception("attention switch to %s failed", attn)
                    self._set_state("error", f"Switching attention to {attn} failed: {e}. {HOW_TO_FIX}")
                    raise ValueError(f"Switching attention to {attn} failed: {e}") from None
            self.runtime = self.runtime.with_attention(attn)
            self.attn_changes += 1
        log.info("attention switched to %s", attn)
        if self.cache.current is not None:
            self.load()  # fast decode compiles again for the new attention
        return attn

    # --- generation --------------------------------------------------------------
    def stream(self, request: ModelRequest, gen: GenerationSettings, cancel: threading.Event) -> Iterator[Piece]:
        """A Notice before a long prefill, text pieces of one answer, then its GenerationStats.
        An urgent request (a live-transcription window) runs between the tokens of a running
        answer instead of waiting for its end (engine/interleave.py)."""
        self.load()
        if request.urgent and self.interleave_urgent:
            yield from self._stream_urgent(request, gen, cancel)
            return
        yield from self.arrivals.serve(cancel, lambda: self._stream_exclusive(request, gen, cancel))

    def _stream_exclusive(self, request: ModelRequest, gen: GenerationSettings,
                          cancel: threading.Event) -> Iterator[Piece]:
        with self.scheduler.exclusive():
            yield from self._stream_locked(request, gen, cancel)

    def _stream_urgent(self, request: ModelRequest, gen: GenerationSettings,
                       cancel: threading.Event) -> Iterator[Piece]:
        job = UrgentJob(lambda: self._generate_between(request, gen, cancel), cancel)
        handed = self.scheduler.hand_over(job)
        if handed is Handed.FREE:  # nothing running: the ordinary way
            try:
                yield from self._stream_locked(request, gen, cancel)
            finally:
                self.scheduler.release()
        elif handed is Handed.RAN:
            if job.error is not None:
                raise job.error
            yield from job.result or []

    def _generate_between(self, request: ModelRequest, gen: GenerationSettings,
                          cancel: threading.Event) -> list[Piece]:
        """Run inside the running answer's generate(), on its worker thread: the whole urgent
        request, through the same routine as any answer, with a cache of its own and its
        adapter, without KV reuse (the answer's entry stays)."""
        loaded = self.cache.current
        if loaded is None:
            raise ModelUnavailable("The model was released while an answer was running.")
        adapter = self.activate_adapter(loaded, request.modality)
        return list(stream_generate(loaded, request, gen, cancel, adapter=adapter, inline=True))

    def _stream_locked(self, request: ModelRequest, gen: GenerationSettings,
                       cancel: threading.Event) -> Iterator[Piece]:
        """One answer, for a caller that holds the model."""
        if cancel.is_set():
            return
        loaded = self.load_locked()
        if request.clips_to_transcribe:
            n = len(request.clips_to_transcribe)
            yield Notice(f"Transcribing {'an earlier audio clip' if n == 1 else f'{n} earlier audio clips'} "
                         "that leave the prompt…")
            request = self._with_transcripts(loaded, request, cancel)
        adapter = self.activate_adapter(loaded, request.modality)
        # Urgent requests may run between this answer's tokens; not with fast decode, whose
        # compiled step and static cache belong to the answer.
        if not (self.interleave_urgent and loaded.fast is None):
            yield from self._guarded(stream_generate(loaded, request, gen, cancel, adapter=adapter,
                                                     prefix_cache=loaded.prefix_cache if self.kv_reuse else None,
                                                     budget=self.context_budget(loaded)))
            return
        yield_point = self.scheduler.yield_point(lambda: self.activate_adapter(loaded, request.modality))
        with self.scheduler.taking_urgent():
            yield from self._guarded(stream_generate(loaded, request, gen, cancel, adapter=adapter,
                                                     prefix_cache=loaded.prefix_cache if self.kv_reuse else None,
                                                     yield_point=yield_point, budget=self.context_budget(loaded)))

    # Enough for a voice turn's words; a note, not a full transcription service.
    TRANSCRIPT_TOKENS = 200

    def _with_transcripts(self, loaded: LoadedModel, request: ModelRequest, cancel: threading.Event) -> ModelRequest:
        """Made once per clip (cached by content): the turn whose clips leave pays for them."""
        adapter = self.activate_adapter(loaded, "speech")
        gen = GenerationSettings(max_new_tokens=self.TRANSCRIPT_TOKENS, do_sample=False)
        texts: list[str] = []
        for clip in request.clips_to_transcribe:
            text = clip_transcripts.get(clip.key)
            if text is None:
                if cancel.is_set():
                    return request
                # Its own flag: a finished stream sets the flag it was given.
                text, _ = collect(stream_generate(loaded, media_request(TRANSCRIBE_CLIP, audios=[clip.audio]), gen,
                                                  threading.Event(), adapter=adapter))
                text = " ".join(text.split())
                clip_transcripts.put(clip.key, text)
            texts.append(text)
        return with_transcripts(request, texts)

    @staticmethod
    def _guarded(pieces: Iterator[Piece]) -> Iterator[Piece]:
        """The answer's pieces, with failures said in a sentence and logged with their traceback."""
        try:
            yield from pieces
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

    def load_locked(self) -> LoadedModel:
        """The loaded model, for a caller that holds the model: the key cannot change under
        it, since attention only switches while the same lock is held."""
        loaded = self.cache.current
        if loaded is None or self.cache.key != self.key():
            loaded = self.cache.get(self.key())
        return loaded

    @staticmethod
    def adapter_for(loaded: LoadedModel, modality: str) -> str | None:
        name = {"vision": "vision", "speech": "speech"}.get(modality)
        return name if name in loaded.adapters else None

    def activate_adapter(self, loaded: LoadedModel, modality: str) -> str | None:
        """As the original Phi-4 code: any image -> vision LoRA, audio only -> speech LoRA,
        text only -> none. peft.functional works where transformers' helpers need peft>=0.22."""
        if not loaded.adapters:
            return None
        name = self.adapter_for(loaded, modality)
        set_adapter(loaded.model, name if name else [])
        return name


def _free_bytes(device: str) -> int:
    """Memory free now on the device the KV cache lives on."""
    if device.startswith("cuda"):
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):  # no such counter (macOS): assume 8 GB free
        return 8 << 30
