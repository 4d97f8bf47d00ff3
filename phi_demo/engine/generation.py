"""One answer: model.generate on the model's worker thread, a TextIteratorStreamer, a cancel
flag, stats. The one generation routine: chat answers and urgent windows (inline, inside a
running answer's generate()) both run through `stream_generate`."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from transformers import (
    Cache,
    DynamicCache,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)
from transformers.feature_extraction_utils import BatchFeature
from transformers.generation.utils import GenerateDecoderOnlyOutput

from phi_demo.chat.policy import earlier_turns_note, message_units, units_to_leave, without_oldest_messages
from phi_demo.chat.prompt import USER, Placeholders, render_messages
from phi_demo.contract import GenerationStats, ModelRequest, Notice, Piece, finish_reason
from phi_demo.engine.fast_decode import FastDecode
from phi_demo.engine.loader import LoadedModel
from phi_demo.engine.prefix_cache import PrefixCache, Reuse, rope_switch, slice_media
from phi_demo.errors import UserInputError
from phi_demo.media.audio import SAMPLE_RATE
from phi_demo.settings import GenerationSettings

__all__ = ["CancelCriteria", "CountingStreamer", "GenerationStats", "generation_kwargs", "prefill_notice",
           "prepare_inputs", "stream_generate"]


class CancelCriteria(StoppingCriteria):
    """Stops generate() at the next token once the request's cancel flag is set."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.cancel.is_set(), dtype=torch.bool, device=input_ids.device)


# A browser gains nothing from more than ~30 repaints a second; text that arrives faster
# is handed on together.
MIN_HANDOFF_INTERVAL_S = 1 / 30


class CountingStreamer(TextIteratorStreamer):
    """TextIteratorStreamer that also counts new tokens, notes when the first arrived, keeps
    its decode window short and decodes only when it hands text over.

    generate() calls put() on its own thread once per token, between two forward passes, so
    anything put() does delays the next token. Here put() only notes the token; the text is
    decoded when it is handed to the reader: the first token at once, then at most every
    `min_interval_s` (a browser gains nothing from more repaints, and each hand-off wakes the
    reading thread, which then competes with generation for the GIL).

    TextStreamer re-decodes every token since the last newline at each decode, so a long
    paragraph costs O(n^2). Once the window holds `window` tokens and all of its text has
    been handed out, it is cut back to its last token, which stays as context for the next
    decode, exactly as TextStreamer itself does at a newline."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, skip_prompt: bool = False, timeout: float | None = None,
                 window: int = 16, min_interval_s: float = MIN_HANDOFF_INTERVAL_S, **decode_kwargs: Any) -> None:
        super().__init__(tokenizer, skip_prompt=skip_prompt, timeout=timeout, **decode_kwargs)
        self.window = window
        self.min_interval_s = min_interval_s
        self.new_tokens = 0
        self.first_token_at: float | None = None
        self._held: list[torch.Tensor] = []
        self._last_handoff = 0.0

    def put(self, value: torch.Tensor) -> None:
        now = time.perf_counter()
        if self.next_tokens_are_prompt:  # generate() hands the prompt over first
            self.next_tokens_are_prompt = False
            if self.skip_prompt:
                return
        else:
            if self.first_token_at is None:
                self.first_token_at = now
            self.new_tokens += int(value.numel())
        self._held.append(value.reshape(-1))
        if now - self._last_handoff >= self.min_interval_s:
            self._hand_over()

    def _hand_over(self) -> None:
        if not self._held:
            return
        ids = self._held[0] if len(self._held) == 1 else torch.cat(self._held)
        self._held = []
        super().put(ids)  # TextStreamer: decode, cut at a printable boundary, on_finalized_text
        if len(self.token_cache) > self.window:
            text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
            if self.print_len == len(text):
                self.token_cache = self.token_cache[-1:]
                self.print_len = len(self.tokenizer.decode(self.token_cache, **self.decode_kwargs))

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        # The interval runs from the last text actually handed out: a token that decodes to
        # nothing printable yet (half a word, half a character) must not hold back the next.
        if text:
            self._last_handoff = time.perf_counter()
            self.text_queue.put(text, timeout=self.timeout)
        if stream_end:
            self.text_queue.put(self.stop_signal, timeout=self.timeout)

    def end(self) -> None:
        self._hand_over()
        super().end()


def prepare_inputs(loaded: LoadedModel, request: ModelRequest) -> BatchFeature:
    processor = loaded.processor
    # The prompt's placeholders are the processor's own strings, whatever the checkpoint calls them.
    placeholders = Placeholders(processor.image_token, processor.audio_token)
    text = render_messages(request.messages, placeholders) if request.messages else request.prompt
    kwargs: dict[str, Any] = {"text": text, "return_tensors": "pt"}
    if request.images:
        kwargs["images"] = request.images
    if request.audios:
        kwargs["audio"] = request.audios
        kwargs["sampling_rate"] = SAMPLE_RATE
    inputs = processor(**kwargs)
    # BatchFeature.to casts only floating tensors, so ids stay integer.
    return inputs.to(loaded.model.device, dtype=loaded.model.dtype)


def generation_kwargs(gen: GenerationSettings, processor: Any = None,
                      stop_ids: list[int] | None = None) -> dict[str, Any]:
    kw: dict[str, Any] = {"max_new_tokens": gen.max_new_tokens, "do_sample": gen.do_sample,
                          "repetition_penalty": gen.repetition_penalty}
    if processor is not None:
        # A generated <|image|> or <|audio|> would make the next step re-embed the media into
        # one position and crash (transformers passes the features again at every step).
        kw["suppress_tokens"] = [processor.image_token_id, processor.audio_token_id]
    if stop_ids:
        kw["eos_token_id"] = list(stop_ids)
        pad = getattr(getattr(processor, "tokenizer", None), "pad_token_id", None)
        kw["pad_token_id"] = stop_ids[0] if pad is None else pad
    if gen.min_new_tokens:
        kw["min_new_tokens"] = gen.min_new_tokens
    if gen.do_sample:
        kw.update(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k)
    else:  # keep the model's sampling defaults from warning about unused values
        kw.update(temperature=None, top_p=None, top_k=None)
    return kw


# Below this many new prompt tokens the first token comes quickly enough to need no word.
NOTICE_TOKENS = 256


def prefill_notice(request: ModelRequest, new_tokens: int, done: tuple[int, int] = (0, 0)) -> Notice | None:
    """'Reading the image: 1,682 tokens…' for a prefill long enough to be noticed."""
    if new_tokens < NOTICE_TOKENS:
        return None
    images, audios = len(request.images) - done[0], len(request.audios) - done[1]
    parts: list[str] = []
    if images:
        parts.append("the image" if images == 1 else f"{images} images")
    if audios:
        parts.append("the audio" if audios == 1 else f"{audios} audio clips")
    what = ("Reading " + " and ".join(parts)) if parts else "Reading the conversation"
    return Notice(f"{what}: {new_tokens:,} tokens…")


@dataclass
class _Plan:
    """What one answer runs: its inputs, the cache it starts from, and how it decodes."""

    inputs: BatchFeature
    prompt_tokens: int
    media: dict[str, Any]  # the inputs without the media already inside a reused cache
    cache: Cache
    reuse: Reuse | None
    fast: FastDecode | None
    items: list[str]  # the request's media keys, in prompt order, for the KV-reuse store
    request: ModelRequest  # as answered: without the oldest messages when it was too long
    left_out: int = 0  # messages left out to fit the context budget
    extra: dict[str, Any] = field(default_factory=dict)  # more for generate() (fast decode's compile config)

    @property
    def model_inputs(self) -> dict[str, Any]:
        """What generate() is given: with fast decode a text-only prompt, the media going in
        through fast.prefill (the compiled decode step must see text only)."""
        if self.fast:
            return {"input_ids": self.inputs["input_ids"], "attention_mask": self.inputs["attention_mask"]}
        return self.media

    @property
    def cached_tokens(self) -> int:
        return self.reuse.length if self.reuse else 0


def kv_bytes_per_token(config: Any, dtype: torch.dtype) -> int:
    """What one prompt token costs in the KV cache: a key and a value per layer."""
    heads = int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
    return 2 * int(config.num_hidden_layers) * heads * head_dim * torch.finfo(dtype).bits // 8


def auto_context_budget(config: Any, dtype: torch.dtype, free_bytes: int) -> int:
    """The most prompt tokens whose KV cache takes half the memory free at start (the rest
    is for activations, the answer and the other caches), at most the model's context."""
    limit = int(getattr(config, "max_position_embeddings", 0) or 0)
    fits = free_bytes // 2 // max(1, kv_bytes_per_token(config, dtype))
    return min(fits, limit) if limit else fits


class _TooLong(Exception):
    """The newest message alone is longer than the budget: `tokens` long."""

    def __init__(self, tokens: int) -> None:
        super().__init__(tokens)
        self.tokens = tokens


def _fit_context(loaded: LoadedModel, request: ModelRequest, inputs: BatchFeature,
                 budget: int) -> tuple[ModelRequest, BatchFeature, int]:
    """Past `budget` prompt tokens (counted by the processor: image and audio tokens too) the
    oldest messages leave the prompt, a note in their place; (request, inputs, messages left out)."""
    ids = inputs["input_ids"][0]
    total = int(ids.shape[0])
    if total <= budget:
        return request, inputs, 0
    tokenizer = loaded.processor.tokenizer
    user_id = tokenizer.convert_tokens_to_ids(USER)
    # Room for the note that says how many left (its count written with three digits).
    note_tokens = len(tokenizer.encode(earlier_turns_note(999) + "\n", add_special_tokens=False)) + 1
    starts: list[int] = (ids == user_id).nonzero().flatten().tolist()
    lead = next((i for i, m in enumerate(request.messages) if m["role"] == "user"), len(request.messages))
    units = message_units(request.messages[lead:])
    keep = None
    if starts and len(starts) == len(units):
        sizes = [b - a for a, b in zip(starts, starts[1:] + [total])]
        keep = units_to_leave(sizes, starts[0] + note_tokens, budget)
    if keep is None:
        raise _TooLong(total - (starts[-1] - starts[0] if starts else 0))
    drop = sum(units[:keep])
    request = without_oldest_messages(request, lead, drop, earlier_turns_note(drop))
    return request, prepare_inputs(loaded, request), drop


def _too_long(tokens: int, fit: int, limit: int, gen: GenerationSettings) -> str:
    """The sentence for a message that cannot fit even alone."""
    if fit == limit - gen.max_new_tokens:
        return (f"The message is {tokens:,} tokens long and {gen.max_new_tokens} new tokens were asked for; the "
                f"model's context window is {limit} tokens (images and audio count too). Shorten the message, "
                "send fewer or smaller files, or lower max new tokens.")
    return (f"The message is {tokens:,} tokens long with its images and audio; this server reads at most "
            f"{fit:,} prompt tokens at once (its context budget). Shorten the message or send fewer or smaller files.")


def _plan(loaded: LoadedModel, request: ModelRequest, gen: GenerationSettings,
          prefix_cache: PrefixCache | None, adapter: str | None, allow_fast: bool,
          budget: int | None = None) -> _Plan:
    inputs = prepare_inputs(loaded, request)
    model = loaded.model
    limit = int(getattr(model.config, "max_position_embeddings", 0) or 0)
    left_out = 0
    room = limit - gen.max_new_tokens if limit else None
    if budget is not None or room is not None:
        # Never more than the model's context minus the answer's room.
        fit = min(x for x in (budget, room) if x is not None)
        try:
            if fit > 0:
                request, inputs, left_out = _fit_context(loaded, request, inputs, fit)
        except _TooLong as e:
            raise UserInputError(_too_long(e.tokens, fit, limit, gen)) from None
    prompt_tokens = int(inputs["input_ids"].shape[1])
    if limit and prompt_tokens + gen.max_new_tokens > limit:
        raise UserInputError(
            f"The conversation is {prompt_tokens} tokens long and {gen.max_new_tokens} new tokens were asked for; "
            f"the model's context window is {limit} tokens. Clear the chat, shorten the message or lower max new tokens."
        )
    fast = loaded.fast if allow_fast else None
    length = fast.cache_length(model.config, prompt_tokens + gen.max_new_tokens) if fast else None
    if length is None:
        fast = None  # too long for the static cache: the ordinary path
    reuse = None
    if prefix_cache is not None:
        reuse = _reusable(loaded, request, inputs, prefix_cache, adapter, fast, length)
    cache: Cache
    if reuse:
        cache = reuse.cache
    elif fast and length:
        cache = fast.fresh_cache(model, length, prefix_cache)
    else:
        cache = DynamicCache(config=model.config)
    media: dict[str, Any] = dict(slice_media(inputs, reuse) if reuse else inputs)
    plan = _Plan(inputs, prompt_tokens, media, cache, reuse, fast, [m.key for m in request.media], request, left_out)
    if fast:
        plan.extra["compile_config"] = fast.compile_config(loaded.device)
    return plan


def _reusable(loaded: LoadedModel, request: ModelRequest, inputs: BatchFeature, prefix_cache: PrefixCache,
              adapter: str | None, fast: FastDecode | None, length: int | None) -> Reuse | None:
    """The KV cache of an earlier turn this prompt extends, cropped to the shared prefix."""
    prompt_tokens = int(inputs["input_ids"].shape[1])
    switch = rope_switch(loaded.model.config)

    def accept(c: object, n: int) -> bool:
        if switch and prompt_tokens > switch and n <= switch:
            return False  # generate() would drop it and recompute everything
        return fast.owns(c, length) if fast and length else isinstance(c, DynamicCache)

    processor = loaded.processor
    return prefix_cache.take(inputs["input_ids"][0], request.media, adapter,
                             processor.image_token_id, processor.audio_token_id, accept)


def _generate(loaded: LoadedModel, plan: _Plan, gen: GenerationSettings, cancel: threading.Event,
              streamer: CountingStreamer, yield_point: StoppingCriteria | None) -> GenerateDecoderOnlyOutput:
    """generate() itself: sequences and the cache it ended with."""
    model = loaded.model
    if gen.seed is not None:
        torch.manual_seed(gen.seed)
    criteria = StoppingCriteriaList([CancelCriteria(cancel)] + ([yield_point] if yield_point else []))
    with torch.inference_mode():
        if plan.fast:
            plan.fast.prefill(model, plan.inputs, plan.media, plan.cache, plan.cached_tokens)
        # The checker cannot bind generate(): transformers types its `self` as a protocol that
        # only some of its models satisfy on paper.
        generate = model.generate  # pyright: ignore[reportAttributeAccessIssue]
        out = generate(**plan.model_inputs, cache=plan.cache, streamer=streamer, return_dict_in_generate=True,
                       stopping_criteria=criteria, **generation_kwargs(gen, loaded.processor, loaded.stop_ids),
                       **plan.extra)
    if not isinstance(out, GenerateDecoderOnlyOutput):
        raise TypeError(f"generate() returned a {type(out).__name__}, not its output with the cache")
    return out


def _keep_for_reuse(prefix_cache: PrefixCache, plan: _Plan, out: GenerateDecoderOnlyOutput,
                    adapter: str | None) -> None:
    # The cache generate() ended with: not ours when it started afresh at the RoPE switch.
    used = out.cache if out.cache is not None else plan.cache
    if used.get_seq_length() > 0:
        prefix_cache.put(out.sequences[0], used, adapter, plan.items)


def _stats(plan: _Plan, streamer: CountingStreamer, start: float, end: float, cancelled: bool,
           gen: GenerationSettings) -> GenerationStats:
    first = streamer.first_token_at or end
    n = streamer.new_tokens
    decode = (n - 1) / (end - first) if n > 1 and end > first else 0.0
    return GenerationStats(plan.prompt_tokens, n, first - start, end - start, decode, cancelled,
                           plan.cached_tokens, plan.fast is not None,
                           finish_reason(cancelled, n, gen.max_new_tokens), messages_left_out=plan.left_out)


def _pieces(streamer: CountingStreamer, done: threading.Event) -> Iterator[str]:
    """The streamer's text as it comes, until generate() has ended."""
    pieces = iter(streamer)
    while True:
        try:
            piece = next(pieces)
        except StopIteration:
            return
        except queue.Empty:
            if not done.is_set():
                continue
            return
        if piece:
            yield piece


def stream_generate(loaded: LoadedModel, request: ModelRequest, gen: GenerationSettings, cancel: threading.Event,
                    poll_s: float = 0.25, prefix_cache: PrefixCache | None = None,
                    adapter: str | None = None, yield_point: StoppingCriteria | None = None,
                    inline: bool = False, budget: int | None = None) -> Iterator[Piece]:
    """Yield a Notice before a long prefill, text pieces as they are decoded, then one GenerationStats.

    The caller may stop iterating at any time: closing this generator sets `cancel`, which
    the model sees at its next token. An exception inside generate() is re-raised here.
    With a `prefix_cache`, a prompt that extends an earlier one reuses its KV cache. A
    `yield_point` is called at each token (urgent requests run there).

    `inline`: generate() runs on this thread instead of the model's worker, and the text comes
    once it has ended — for an urgent request run inside a running answer's generate(), which
    is on the worker already. Never with fast decode: its compiled step and static caches
    belong to the answer.

    `budget`: the most prompt tokens; past it the oldest messages are left out."""
    start = time.perf_counter()
    plan = _plan(loaded, request, gen, prefix_cache, adapter, allow_fast=not inline, budget=budget)
    notice = _notice(plan.request, plan)
    if plan.left_out:
        n = plan.left_out
        said = (notice.text if notice else "Reading the conversation…").rstrip("…")
        notice = Notice(f"{said} (the oldest {n} message{'s' * (n > 1)} left out to fit the context budget)…",
                        messages_left_out=n)
    if notice:
        yield notice
    streamer = CountingStreamer(loaded.processor.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=poll_s)
    errors: list[BaseException] = []
    produced: list[GenerateDecoderOnlyOutput] = []

    def run() -> None:
        try:
            produced.append(_generate(loaded, plan, gen, cancel, streamer, yield_point))
        except BaseException as e:  # noqa: BLE001 - forwarded to the reader below
            errors.append(e)
            streamer.end()  # never leave the reader waiting

    if inline:
        run()
        done = threading.Event()
        done.set()
    else:
        done = loaded.worker.submit(run)
    try:
        yield from _pieces(streamer, done)
        done.wait()
        if errors:
            raise errors[0]
        end = time.perf_counter()
        if prefix_cache is not None and produced:
            _keep_for_reuse(prefix_cache, plan, produced[0], adapter)
        yield _stats(plan, streamer, start, end, cancel.is_set(), gen)
    finally:
        cancel.set()
        done.wait()


def _notice(request: ModelRequest, plan: _Plan) -> Notice | None:
    return prefill_notice(request, plan.prompt_tokens - plan.cached_tokens,
                          (plan.reuse.images_done, plan.reuse.audios_done) if plan.reuse else (0, 0))
