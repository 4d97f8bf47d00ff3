"""Fast decode: a static KV cache and a torch.compile'd decode step.

This is transformers' own recipe (generate() compiles the model's forward for the decode
steps when it is given a compileable cache and a CompileConfig); what this module adds is
what a chat app needs around it:

- The decode graph must see text only. Phi-4's generate() hands the image and audio
  inputs to every step, and the model looks at them with a data-dependent branch, which
  breaks the graph. So the prompt, media included, is prefilled here with the plain
  forward (all but its last token); generate() then sees a text-only prompt over a cache
  that already holds everything.
- Few shapes, few compilations: cache lengths are powers of two from 1,024, so one graph
  per (length, active adapter) serves every request that fits.
- One cache object per length, reused (cleared, or cropped by KV reuse): CUDA graphs
  recorded for a cache's addresses stay valid.
- Phi-4 switches its RoPE scaling once a sequence passes original_max_position_embeddings
  (4,096) and generate() then recomputes the whole cache; an answer that could cross that
  point uses the ordinary path instead.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import torch
from transformers import Cache, CompileConfig, PretrainedConfig, PreTrainedModel, StaticCache

from phi_demo.engine.prefix_cache import PrefixCache, rope_switch

log = logging.getLogger(__name__)

MIN_LENGTH = 1024
MEDIA_KEYS = ("image_pixel_values", "image_sizes", "image_attention_mask",
              "audio_input_features", "audio_embed_sizes", "audio_attention_mask")


def length_limit(config: PretrainedConfig) -> int:
    """Longest sequence the fast path handles: generate() rebuilds the cache past the RoPE
    switch point."""
    return rope_switch(config) or int(config.max_position_embeddings)


def full_attention(config: PretrainedConfig, length: int) -> PretrainedConfig:
    """The config to build a static cache of `length` from: without its sliding window when the
    window cannot slide within that length (Phi-4's 262,144 is twice its context).

    A sliding window makes transformers build StaticSlidingWindowLayers, which count their
    length in a Python int that changes at every step: torch.compile guards on it, recompiles
    at each token and, with fullgraph, fails. A window no shorter than the cache never slides,
    so a plain static layer holds exactly the same keys and values, and the model's own
    sliding-window mask is still the causal one."""
    window = getattr(config, "sliding_window", None)
    if window is None or window < length:
        return config
    plain = copy.copy(config)
    plain.sliding_window = None
    return plain


@dataclass
class FastDecode:
    backend: str = "inductor"
    mode: str | None = None  # None: "reduce-overhead" (CUDA graphs) on CUDA, inductor's default elsewhere
    caches: dict[int, StaticCache] = field(default_factory=dict)  # by length
    warmup_s: float | None = None  # None while compiling
    _config: CompileConfig | None = None

    def cache_length(self, config: PretrainedConfig, needed: int) -> int | None:
        """The static cache length for a request of `needed` tokens, or None: too long."""
        limit = length_limit(config)
        if needed > limit:
            return None
        length = MIN_LENGTH
        while length < needed:
            length *= 2
        return min(length, limit)

    def compile_config(self, device: str) -> CompileConfig:
        if self._config is None:
            cuda = device.startswith("cuda")
            mode = self.mode or ("reduce-overhead" if cuda else "default")
            self._config = CompileConfig(fullgraph=True, dynamic=False, backend=self.backend, mode=mode)
            # transformers compiles on its own only on accelerators; the user asked for it here.
            self._config._compile_all_devices = True  # pyright: ignore[reportAttributeAccessIssue] - declared None
            # Each (cache length, active LoRA adapter) is its own graph: 3 lengths x 3 adapters
            # would pass dynamo's default limit of 8 and silently fall back to eager.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
        return self._config

    def fresh_cache(self, model: PreTrainedModel, length: int, prefix_cache: PrefixCache | None = None) -> StaticCache:
        """The cache for `length`, emptied. A prefix-cache entry holding it is dropped first."""

        cache = self.caches.get(length)
        if cache is None:
            cache = self.caches[length] = StaticCache(config=full_attention(model.config, length), max_cache_len=length)
        else:
            if prefix_cache is not None:
                prefix_cache.discard(cache)
            with torch.inference_mode():  # its tensors were made under inference mode
                cache.reset()
        return cache

    def owns(self, cache: object, length: int | None) -> bool:
        return length is not None and self.caches.get(length) is cache

    @staticmethod
    def prefill(model: PreTrainedModel, inputs: Mapping[str, Any], media: Mapping[str, Any], cache: Cache,
                done: int) -> None:
        """Run the prompt except its last token through the plain forward into `cache`, which
        already holds the first `done` tokens; `media` are the inputs for the media not yet
        in the cache. Call under inference_mode."""
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        if ids.shape[1] - 1 <= done:
            return
        extra = {k: media[k] for k in MEDIA_KEYS if media.get(k) is not None}
        model(input_ids=ids[:, done:-1], attention_mask=mask[:, :-1], cache=cache, use_cache=True,
              logits_to_keep=1, **extra)


# transformers compiles neither bitsandbytes' nor int4's layers, nor a model spread by accelerate.
NOT_WITH = "not with --quantize or --offload (transformers does not compile those)"


def unsupported(quantize: str, offload: bool) -> str | None:
    """Why fast decode cannot run with these settings, or None."""
    return NOT_WITH if quantize != "none" or offload else None


class Compilable(Protocol):
    """The loaded model's side of fast decode (engine/loader.LoadedModel)."""

    fast: FastDecode | None
    fast_error: str | None

    def drop_compiled(self) -> None: ...


def compile_decode(loaded: Compilable, backend: str, modalities: Sequence[str],
                   answer: Callable[[str], None]) -> None:
    """Compile the decode step now, for plain text and each adapter (`answer(modality)` runs a
    short answer with it), so that no answer stalls on it; longer cache lengths compile on
    first use. A failure (no compiler, an unsupported op) leaves the ordinary path in place,
    with the reason in `loaded.fast_error`. Call under the lock generation holds."""
    fast = FastDecode(backend=backend)
    loaded.fast = fast
    start = time.perf_counter()
    try:
        for modality in modalities:
            answer(modality)
    except Exception as e:  # noqa: BLE001 - fall back, never fail the load for it
        log.exception("fast decode: compiling failed")
        loaded.drop_compiled()
        loaded.fast_error = f"compiling failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        return
    fast.warmup_s = time.perf_counter() - start
