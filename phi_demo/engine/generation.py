"""One answer: model.generate in a thread, a TextIteratorStreamer, a cancel flag, stats."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from ..errors import UserInputError
from ..media import SAMPLE_RATE
from ..settings import GenerationSettings


class CancelCriteria(StoppingCriteria):
    """Stops generate() at the next token once the request's cancel flag is set."""

    def __init__(self, cancel: threading.Event):
        self.cancel = cancel

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.cancel.is_set(), dtype=torch.bool, device=input_ids.device)


class CountingStreamer(TextIteratorStreamer):
    """TextIteratorStreamer that also counts new tokens and notes when the first arrived."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.new_tokens = 0
        self.first_token_at: float | None = None

    def put(self, value):
        if not self.next_tokens_are_prompt:
            if self.first_token_at is None:
                self.first_token_at = time.perf_counter()
            self.new_tokens += int(value.numel())
        super().put(value)


@dataclass
class GenerationStats:
    prompt_tokens: int
    new_tokens: int
    ttft_s: float  # request start -> first new token (prefill included)
    total_s: float
    decode_tok_s: float  # new tokens after the first / time after the first
    cancelled: bool = False

    def summary(self) -> str:
        tail = " · stopped" if self.cancelled else ""
        return (f"{self.new_tokens} tokens · {self.decode_tok_s:.1f} tok/s · "
                f"first token {self.ttft_s:.2f} s · prompt {self.prompt_tokens} tokens{tail}")


def prepare_inputs(loaded, request):
    processor = loaded.processor
    kwargs = {"text": request.prompt, "return_tensors": "pt"}
    if request.images:
        kwargs["images"] = request.images
    if request.audios:
        kwargs["audio"] = request.audios
        kwargs["sampling_rate"] = SAMPLE_RATE
    inputs = processor(**kwargs)
    # BatchFeature.to casts only floating tensors, so ids stay integer.
    return inputs.to(loaded.model.device, dtype=loaded.model.dtype)


def generation_kwargs(gen: GenerationSettings) -> dict:
    kw = {"max_new_tokens": gen.max_new_tokens, "do_sample": gen.do_sample,
          "repetition_penalty": gen.repetition_penalty}
    if gen.min_new_tokens:
        kw["min_new_tokens"] = gen.min_new_tokens
    if gen.do_sample:
        kw.update(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k)
    else:  # keep the model's sampling defaults from warning about unused values
        kw.update(temperature=None, top_p=None, top_k=None)
    return kw


def stream_generate(loaded, request, gen: GenerationSettings, cancel: threading.Event,
                    poll_s: float = 0.25) -> Iterator[str | GenerationStats]:
    """Yield text pieces as they are decoded, then one GenerationStats.

    The caller may stop iterating at any time: closing this generator sets `cancel`, which
    the model sees at its next token. An exception inside generate() is re-raised here."""
    start = time.perf_counter()
    inputs = prepare_inputs(loaded, request)
    prompt_tokens = int(inputs["input_ids"].shape[1])
    limit = int(getattr(loaded.model.config, "max_position_embeddings", 0) or 0)
    if limit and prompt_tokens + gen.max_new_tokens > limit:
        raise UserInputError(
            f"The conversation is {prompt_tokens} tokens long and {gen.max_new_tokens} new tokens were asked for; "
            f"the model's context window is {limit} tokens. Clear the chat, shorten the message or lower max new tokens."
        )
    streamer = CountingStreamer(loaded.processor.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=poll_s)
    errors: list[BaseException] = []

    def run():
        try:
            if gen.seed is not None:
                torch.manual_seed(gen.seed)
            with torch.inference_mode():
                loaded.model.generate(**inputs, streamer=streamer,
                                      stopping_criteria=StoppingCriteriaList([CancelCriteria(cancel)]),
                                      **generation_kwargs(gen))
        except BaseException as e:  # noqa: BLE001 - forwarded to the reader below
            errors.append(e)
            streamer.end()  # never leave the reader waiting

    thread = threading.Thread(target=run, name="phi-demo-generate", daemon=True)
    thread.start()
    try:
        pieces = iter(streamer)
        while True:
            try:
                piece = next(pieces)
            except StopIteration:
                break
            except queue.Empty:
                if thread.is_alive():
                    continue
                break
            if piece:
                yield piece
        thread.join()
        if errors:
            raise errors[0]
        end = time.perf_counter()
        first = streamer.first_token_at or end
        n = streamer.new_tokens
        decode = (n - 1) / (end - first) if n > 1 and end > first else 0.0
        yield GenerationStats(prompt_tokens, n, first - start, end - start, decode, cancel.is_set())
    finally:
        cancel.set()
        thread.join()
