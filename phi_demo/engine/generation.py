"""One answer: model.generate in a thread, a TextIteratorStreamer, a cancel flag, stats."""

from __future__ import annotations

import queue
import threading
import time
from typing import Iterator

import torch
from transformers import DynamicCache, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from phi_demo.chat.prompt import Placeholders, render_messages
from phi_demo.contract import GenerationStats, Notice, finish_reason
from phi_demo.engine.prefix_cache import PrefixCache, rope_switch, slice_media
from phi_demo.errors import UserInputError
from phi_demo.media.audio import SAMPLE_RATE
from phi_demo.settings import GenerationSettings


class CancelCriteria(StoppingCriteria):
    """Stops generate() at the next token once the request's cancel flag is set."""

    def __init__(self, cancel: threading.Event):
        self.cancel = cancel

    def __call__(self, input_ids, scores, **kwargs):
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

    def __init__(self, *args, window: int = 16, min_interval_s: float = MIN_HANDOFF_INTERVAL_S, **kwargs):
        super().__init__(*args, **kwargs)
        self.window = window
        self.min_interval_s = min_interval_s
        self.new_tokens = 0
        self.first_token_at: float | None = None
        self._held: list[torch.Tensor] = []
        self._last_handoff = 0.0

    def put(self, value):
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

    def on_finalized_text(self, text: str, stream_end: bool = False):
        # The interval runs from the last text actually handed out: a token that decodes to
        # nothing printable yet (half a word, half a character) must not hold back the next.
        if text:
            self._last_handoff = time.perf_counter()
            self.text_queue.put(text, timeout=self.timeout)
        if stream_end:
            self.text_queue.put(self.stop_signal, timeout=self.timeout)

    def end(self):
        self._hand_over()
        super().end()


def prepare_inputs(loaded, request):
    processor = loaded.processor
    # The prompt's placeholders are the processor's own strings, whatever the checkpoint calls them.
    placeholders = Placeholders(processor.image_token, processor.audio_token)
    text = render_messages(request.messages, placeholders) if request.messages else request.prompt
    kwargs = {"text": text, "return_tensors": "pt"}
    if request.images:
        kwargs["images"] = request.images
    if request.audios:
        kwargs["audio"] = request.audios
        kwargs["sampling_rate"] = SAMPLE_RATE
    inputs = processor(**kwargs)
    # BatchFeature.to casts only floating tensors, so ids stay integer.
    return inputs.to(loaded.model.device, dtype=loaded.model.dtype)


# The tokens that end an answer whatever the checkpoint's generation config says: Phi-4 ends
# its turn with <|end|>, and <|endoftext|> ends a document.
END_TOKENS = ("<|end|>", "<|endoftext|>")


def stop_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends an answer: the checkpoint's own eos (generation config, then model
    config) plus END_TOKENS where the tokenizer has them.

    A converted checkpoint's generation_config.json may name only <|endoftext|> (199999), as
    `save_pretrained` derives it from config.json; the model ends each turn with <|end|>
    (200020), so relying on the file alone would run every answer on into made-up turns."""
    ids: list[int] = []

    def add(value) -> None:
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, int) and v >= 0 and v not in ids:
                ids.append(v)

    add(getattr(getattr(model, "generation_config", None), "eos_token_id", None))
    add(getattr(getattr(model, "config", None), "eos_token_id", None))
    unknown = getattr(tokenizer, "unk_token_id", None)
    vocab = tokenizer.get_vocab() if tokenizer is not None else {}
    for token in END_TOKENS:
        if token in vocab and vocab[token] != unknown:
            add(vocab[token])
    return ids


def generation_kwargs(gen: GenerationSettings, processor=None, stop_ids: list[int] | None = None) -> dict:
    kw = {"max_new_tokens": gen.max_new_tokens, "do_sample": gen.do_sample,
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


def prefill_notice(request, new_tokens: int, done: tuple[int, int] = (0, 0)) -> Notice | None:
    """'Reading the image: 1,682 tokens…' for a prefill long enough to be noticed."""
    if new_tokens < NOTICE_TOKENS:
        return None
    images, audios = len(request.images) - done[0], len(request.audios) - done[1]
    parts = []
    if images:
        parts.append("the image" if images == 1 else f"{images} images")
    if audios:
        parts.append("the audio" if audios == 1 else f"{audios} audio clips")
    what = ("Reading " + " and ".join(parts)) if parts else "Reading the conversation"
    return Notice(f"{what}: {new_tokens:,} tokens…")


def stream_generate(loaded, request, gen: GenerationSettings, cancel: threading.Event,
                    poll_s: float = 0.25, prefix_cache: PrefixCache | None = None,
                    adapter: str | None = None, yield_point: StoppingCriteria | None = None,
                    ) -> Iterator[str | Notice | GenerationStats]:
    """Yield a Notice before a long prefill, text pieces as they are decoded, then one GenerationStats.

    The caller may stop iterating at any time: closing this generator sets `cancel`, which
    the model sees at its next token. An exception inside generate() is re-raised here.
    With a `prefix_cache`, a prompt that extends an earlier one reuses its KV cache. A
    `yield_point` is called at each token (urgent requests run there)."""
    start = time.perf_counter()
    inputs = prepare_inputs(loaded, request)
    prompt_tokens = int(inputs["input_ids"].shape[1])
    limit = int(getattr(loaded.model.config, "max_position_embeddings", 0) or 0)
    if limit and prompt_tokens + gen.max_new_tokens > limit:
        raise UserInputError(
            f"The conversation is {prompt_tokens} tokens long and {gen.max_new_tokens} new tokens were asked for; "
            f"the model's context window is {limit} tokens. Clear the chat, shorten the message or lower max new tokens."
        )
    model = loaded.model
    fast = loaded.fast
    length = fast.cache_length(model.config, prompt_tokens + gen.max_new_tokens) if fast else None
    if length is None:
        fast = None  # too long for the static cache: the ordinary path
    reuse = None
    if prefix_cache is not None:
        processor = loaded.processor
        items = [m.key for m in request.media]
        switch = rope_switch(model.config)

        def accept(c, n: int) -> bool:
            if switch and prompt_tokens > switch and n <= switch:
                return False  # generate() would drop it and recompute everything
            return fast.owns(c, length) if fast else isinstance(c, DynamicCache)

        reuse = prefix_cache.take(inputs["input_ids"][0], request.media, adapter,
                                  processor.image_token_id, processor.audio_token_id, accept)
    if reuse:
        cache = reuse.cache
    elif fast:
        cache = fast.fresh_cache(model, length, prefix_cache)
    else:
        cache = DynamicCache(config=model.config)
    model_inputs = slice_media(inputs, reuse) if reuse else inputs
    notice = prefill_notice(request, prompt_tokens - (reuse.length if reuse else 0),
                            (reuse.images_done, reuse.audios_done) if reuse else (0, 0))
    if notice:
        yield notice
    extra = {}
    if fast:
        # generate() gets a text-only prompt: the media go in through fast.prefill below.
        media, model_inputs = model_inputs, {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
        extra["compile_config"] = fast.compile_config(loaded.device)
    streamer = CountingStreamer(loaded.processor.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=poll_s)
    errors: list[BaseException] = []
    produced: list = []  # generate()'s output (sequences and the cache it ended with)

    def run():
        try:
            if gen.seed is not None:
                torch.manual_seed(gen.seed)
            with torch.inference_mode():
                if fast:
                    fast.prefill(model, inputs, media, cache, reuse.length if reuse else 0)
                produced.append(model.generate(
                    **model_inputs, cache=cache, streamer=streamer, return_dict_in_generate=True,
                    stopping_criteria=StoppingCriteriaList([CancelCriteria(cancel)] + ([yield_point] if yield_point else [])),
                    **generation_kwargs(gen, loaded.processor, loaded.stop_ids), **extra))
        except BaseException as e:  # noqa: BLE001 - forwarded to the reader below
            errors.append(e)
            streamer.end()  # never leave the reader waiting

    done = loaded.worker.submit(run)
    try:
        pieces = iter(streamer)
        while True:
            try:
                piece = next(pieces)
            except StopIteration:
                break
            except queue.Empty:
                if not done.is_set():
                    continue
                break
            if piece:
                yield piece
        done.wait()
        if errors:
            raise errors[0]
        end = time.perf_counter()
        if prefix_cache is not None and produced:
            # The cache generate() ended with: not ours when it started afresh at the RoPE switch.
            used = produced[0].cache if produced[0].cache is not None else cache
            if used.get_seq_length() > 0:
                prefix_cache.put(produced[0].sequences[0], used, adapter, items)
        first = streamer.first_token_at or end
        n = streamer.new_tokens
        decode = (n - 1) / (end - first) if n > 1 and end > first else 0.0
        yield GenerationStats(prompt_tokens, n, first - start, end - start, decode, cancel.is_set(),
                              reuse.length if reuse else 0, fast is not None,
                              finish_reason(cancel.is_set(), n, gen.max_new_tokens))
    finally:
        cancel.set()
        done.wait()
