"""The streamer hands out exactly the text a full decode gives, whatever the window."""

import pytest
import torch

from phi_demo.engine.generation import CountingStreamer

TEXT = ("Once upon a time, a lighthouse keeper found a bottle.\nInside: «Bonjour!» 你好，世界。 "
        "Emoji 👋🏽🎉 and Ünïcödé; numbers 12345.\n\nThe end — or is it? " * 6)


@pytest.mark.parametrize("window", [1, 4, 16, 1000])
def test_streamed_text_equals_full_decode(engine, window):
    tok = engine.load().processor.tokenizer
    ids = tok(TEXT, add_special_tokens=False).input_ids
    streamer = CountingStreamer(tok, skip_prompt=True, skip_special_tokens=True, window=window, min_interval_s=0)
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt, skipped
    for i in ids:
        streamer.put(torch.tensor([i]))
    streamer.end()
    got = "".join(iter(streamer))
    assert got == tok.decode(ids, skip_special_tokens=True)
    assert streamer.new_tokens == len(ids) and streamer.first_token_at is not None
    assert len(streamer.token_cache) == 0


def test_handoffs_are_rate_limited_but_nothing_is_lost(engine):
    tok = engine.load().processor.tokenizer
    ids = tok("word " * 200, add_special_tokens=False).input_ids
    streamer = CountingStreamer(tok, skip_prompt=False, skip_special_tokens=True, min_interval_s=10)
    for i in ids:
        streamer.put(torch.tensor([i]))
    streamer.end()
    pieces = list(iter(streamer))
    assert len(pieces) == 2  # the first piece at once, the rest at the end
    assert "".join(pieces) == tok.decode(ids)


def test_decode_work_per_token_stays_bounded(engine, monkeypatch):
    """Counted, not timed: how many tokens are re-decoded in all."""
    tok = engine.load().processor.tokenizer
    ids = tok("lorem ipsum dolor sit amet " * 400, add_special_tokens=False).input_ids[:2000]
    decoded = [0]
    real = type(tok).decode

    def counting_decode(self, token_ids, **kw):
        decoded[0] += len(token_ids) if isinstance(token_ids, list) else 1
        return real(self, token_ids, **kw)

    monkeypatch.setattr(type(tok), "decode", counting_decode)
    s = CountingStreamer(tok, skip_prompt=False, skip_special_tokens=True, window=16, min_interval_s=0)
    for i in ids:
        s.put(torch.tensor([i]))
    # TextStreamer alone re-decodes the whole line each step: about n^2/2 = 2,000,000 here.
    assert decoded[0] < 2 * 18 * len(ids)


def test_first_visible_text_is_not_held_back(engine):
    """Tokens with nothing printable yet (the bytes of an emoji) must not start the interval:
    the text shows as soon as it becomes printable."""
    tok = engine.load().processor.tokenizer
    ids = tok("👋 hello there", add_special_tokens=False).input_ids
    k = next(k for k in range(1, len(ids)) if tok.decode(ids[:k]) == "👋 ")
    assert k > 2  # several byte tokens, then the space
    s = CountingStreamer(tok, skip_prompt=True, skip_special_tokens=True, min_interval_s=10)
    s.put(torch.tensor([[1, 2, 3]]))  # the prompt
    for i in ids[:k]:
        s.put(torch.tensor([i]))
    assert s.text_queue.get_nowait() == "👋 "


def test_tokens_between_handoffs_are_not_decoded(engine, monkeypatch):
    """put() only notes a token: decoding waits for the next hand-over (here: the end)."""
    tok = engine.load().processor.tokenizer
    ids = tok("lorem ipsum dolor sit amet " * 100, add_special_tokens=False).input_ids
    calls = [0]
    real = type(tok).decode

    def counting_decode(self, token_ids, **kw):
        calls[0] += 1
        return real(self, token_ids, **kw)

    monkeypatch.setattr(type(tok), "decode", counting_decode)
    s = CountingStreamer(tok, skip_prompt=False, skip_special_tokens=True, min_interval_s=10)
    for i in ids:
        s.put(torch.tensor([i]))
    assert calls[0] <= 3  # the first hand-over(s) until text shows, then nothing until the end
    s.end()
    assert "".join(iter(s)) == tok.decode(ids)
    assert s.new_tokens == len(ids) - 1  # the first put is the prompt when skip_prompt is off
