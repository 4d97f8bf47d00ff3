"""KV reuse across chat turns: answers are the same with and without it, and later turns
prefill only what is new."""

import threading

import pytest

from phi_demo.chat.messages import Turn
from phi_demo.chat.request import build_request
from phi_demo.contract import collect
from phi_demo.settings import GenerationSettings
from tests.helpers import ROOT

IMG = str(ROOT / "assets" / "example_image.png")
WAV = str(ROOT / "assets" / "example_question.wav")
GEN = GenerationSettings(max_new_tokens=12)


def answer(engine, turns):
    return collect(engine.stream(build_request(turns, "Be brief."), GEN, threading.Event()))


def chat(engine, user_turns, reuse):
    """Run a whole chat; each answer becomes history for the next turn."""
    engine.kv_reuse = reuse
    engine.load().prefix_cache.clear()
    turns, answers, stats = [], [], []
    for text, files in user_turns:
        turns.append(Turn("user", text, files))
        a, s = answer(engine, turns)
        turns.append(Turn("assistant", a))
        answers.append(a)
        stats.append(s)
    return answers, stats


SCENARIOS = {
    "text only": [("Hello there", ()), ("Tell me more", ()), ("And then?", ())],
    "image first": [("What is this?", (IMG,)), ("What colour is the roof?", ()), ("And the sky?", ()),
                    ("Count the windows", ()), ("Thanks", ())],
    "image and audio": [("Look and listen", (IMG, WAV)), ("Now this clip", (WAV,)), ("Summarise", ())],
    "adjacent images": [("Compare", (IMG, IMG)), ("Which is bigger?", ()), ("And this one?", (IMG,))],
    "audio only": [("Transcribe", (WAV,)), ("Translate it", ()), ("Again", (WAV,))],
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_same_answers_with_and_without_reuse(engine, name):
    try:
        plain, plain_stats = chat(engine, SCENARIOS[name], reuse=False)
        reused, reused_stats = chat(engine, SCENARIOS[name], reuse=True)
    finally:
        engine.kv_reuse = True
    assert reused == plain
    assert all(s.cached_tokens == 0 for s in plain_stats)
    assert reused_stats[0].cached_tokens == 0
    for prev, s in zip(reused_stats, reused_stats[1:]):
        # At least the whole previous prompt comes from the cache; the new turn is prefilled.
        assert prev.prompt_tokens <= s.cached_tokens < s.prompt_tokens, (prev.prompt_tokens, s.cached_tokens)


def test_edited_history_and_retry_fall_back_cleanly(engine):
    engine.kv_reuse = True
    engine.load().prefix_cache.clear()
    first = [Turn("user", "What is this?", (IMG,))]
    a1, _ = answer(engine, first)
    follow = first + [Turn("assistant", a1), Turn("user", "Tell me more")]
    a2, s2 = answer(engine, follow)
    assert s2.cached_tokens > 500  # the image's tokens came from the cache
    # Retry: the very same prompt again.
    a2_again, s_retry = answer(engine, follow)
    assert a2_again == a2 and 0 < s_retry.cached_tokens < s_retry.prompt_tokens
    # Edited first message: only the system prompt and the start can be shared.
    edited = [Turn("user", "Describe this?", (IMG,)), Turn("assistant", a1), Turn("user", "Tell me more")]
    engine.kv_reuse = False
    expected, _ = answer(engine, edited)
    engine.kv_reuse = True
    got, s_edit = answer(engine, edited)
    assert got == expected and 0 < s_edit.cached_tokens < s2.cached_tokens - GEN.max_new_tokens


def test_adapter_change_never_reuses(engine):
    engine.kv_reuse = True
    engine.load().prefix_cache.clear()
    turns = [Turn("user", "Hello there, how are you today?")]
    a, _ = answer(engine, turns)
    # Same text history, but now audio joins: the speech adapter's keys and values differ.
    _, s = answer(engine, turns + [Turn("assistant", a), Turn("user", "Listen", (WAV,))])
    assert s.cached_tokens == 0


def test_several_chats_interleaved(engine):
    """Two conversations take turns, as two browser tabs would; each reuses its own cache."""
    engine.kv_reuse = True
    engine.load().prefix_cache.clear()
    a = [Turn("user", "Tell me about mountains")]
    b = [Turn("user", "What is in this picture?", (IMG,))]
    a.append(Turn("assistant", answer(engine, a)[0]))
    b.append(Turn("assistant", answer(engine, b)[0]))
    a.append(Turn("user", "Which is the highest?"))
    b.append(Turn("user", "What colour is the roof?"))
    _, sa = answer(engine, a)
    _, sb = answer(engine, b)
    assert sa.cached_tokens > 0 and sb.cached_tokens > 500


def test_another_image_of_the_same_size_is_not_taken_from_the_cache(engine, tmp_path):
    """Every 640x448 image has the same placeholder token ids: only its content tells them apart."""
    from PIL import Image

    other = tmp_path / "other.png"
    Image.new("RGB", (640, 448), (250, 250, 20)).save(other)
    engine.kv_reuse = True
    engine.load().prefix_cache.clear()
    answer(engine, [Turn("user", "What is this?", (IMG,))])
    turns = [Turn("user", "What is this?", (str(other),))]
    got, stats = answer(engine, turns)
    engine.kv_reuse = False
    expected, _ = answer(engine, turns)
    engine.kv_reuse = True
    assert got == expected
    prompt_ids = engine.load().processor(text=build_request(turns, "Be brief.").prompt,
                                         images=[Image.open(other).convert("RGB")], return_tensors="pt")["input_ids"][0]
    first_image_token = int((prompt_ids == engine.load().processor.image_token_id).nonzero()[0])
    assert stats.cached_tokens <= first_image_token


def test_a_chat_past_the_rope_switch(engine):
    """Phi-4 switches RoPE factors past 4,096 tokens and generate() then recomputes the whole
    cache. Reuse must not claim a cache that gets dropped, must keep the one generate()
    ended with, and the answers must stay the same."""
    long = " ".join(f"word{i}" for i in range(450))  # about 3,500 tokens with the tiny tokenizer
    turns = [(long, ()), ("more " * 200, ()), ("and a last question", ())]
    plain, _ = chat(engine, turns, reuse=False)
    try:
        reused, stats = chat(engine, turns, reuse=True)
    finally:
        engine.kv_reuse = True
    assert reused == plain
    switch = engine.load().model.config.original_max_position_embeddings
    assert stats[0].prompt_tokens < switch < stats[1].prompt_tokens, [s.prompt_tokens for s in stats]
    assert stats[1].cached_tokens == 0  # turn 1's cache stops before the switch: of no use
    assert stats[2].cached_tokens >= stats[1].prompt_tokens > switch  # turn 2's (long-factor) cache is
