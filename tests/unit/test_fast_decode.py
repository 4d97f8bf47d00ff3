"""Fast decode (static cache + compiled decode step) gives the same answers as the ordinary
path, for every kind of input and across chat turns, and falls back cleanly.

Most tests compile with the 'eager' backend: dynamo still captures the decode step as one
graph (fullgraph=True fails on any graph break, e.g. media inputs reaching the decode
step), without waiting for inductor's C++ build. One test uses the default, inductor."""

import threading
import time

import pytest
import torch

from phi_demo.chat.messages import Turn
from phi_demo.chat.request import build_request
from phi_demo.contract import collect
from phi_demo.engine.fast_decode import FastDecode, length_limit
from phi_demo.engine.local import Engine
from phi_demo.settings import AppSettings, GenerationSettings

IMAGE, AUDIO = "example_image.png", "example_question.wav"
GEN = GenerationSettings(max_new_tokens=20, min_new_tokens=20)


@pytest.fixture(scope="module")
def fast_engine(tiny_folder):
    e = Engine(AppSettings(model="tiny-random", fast_decode=True, compile_backend="eager"))
    e.load()
    yield e
    e.cache.release()


def chat(engine, assets, turns, gen=GEN):
    """Run a conversation; (answer, stats) per turn."""
    history, out = [], []
    for text, files in turns:
        history.append(Turn("user", text, tuple(str(assets / f) for f in files)))
        answer, stats = collect(engine.stream(build_request(history, "You are a helpful assistant."), gen,
                                              threading.Event()))
        history.append(Turn("assistant", answer))
        out.append((answer, stats))
    return out


@pytest.mark.parametrize("files", [(), (IMAGE,), (AUDIO,), (IMAGE, AUDIO)])
def test_same_answer_as_the_ordinary_path(engine, fast_engine, assets, files):
    engine.load().prefix_cache.clear()
    fast_engine.load().prefix_cache.clear()
    [(want, slow_stats)] = chat(engine, assets, [("Tell me about it.", files)])
    [(got, stats)] = chat(fast_engine, assets, [("Tell me about it.", files)])
    assert got == want and stats.new_tokens == 20
    assert stats.fast_decode and not slow_stats.fast_decode


def test_a_chat_reuses_the_static_cache_and_matches(engine, fast_engine, assets):
    turns = [("Look at this.", (IMAGE,)), ("And now?", ()), ("Listen too.", (AUDIO,)), ("Once more.", ())]
    engine.load().prefix_cache.clear()
    fast_engine.load().prefix_cache.clear()
    want = chat(engine, assets, turns)
    got = chat(fast_engine, assets, turns)
    assert [a for a, _ in got] == [a for a, _ in want]
    assert all(s.fast_decode for _, s in got)
    assert [s.cached_tokens > 0 for _, s in got] == [False, True, True, True]


def test_sampling_with_a_seed_matches(engine, fast_engine, assets):
    gen = GenerationSettings(max_new_tokens=16, do_sample=True, temperature=1.0, seed=3)
    want = chat(engine, assets, [("Surprise me.", ())], gen)[0][0]
    assert chat(fast_engine, assets, [("Surprise me.", ())], gen)[0][0] == want


def test_model_facts_say_it_is_on(fast_engine):
    from phi_demo.ui.sidebar import SidebarHandlers

    info = fast_engine.status().facts
    assert info.fast_decode.startswith("on: static cache + torch.compile (eager), compiled in")
    sidebar = SidebarHandlers(fast_engine, fast_engine.settings).status_markdown()
    assert "**Fast decode:** `on: static cache" in sidebar


def test_cache_lengths_are_few_and_stop_at_the_rope_switch(fast_engine):
    config = fast_engine.load().model.config
    fast = FastDecode()
    limit = length_limit(config)
    assert limit == config.original_max_position_embeddings == 4096
    assert [fast.cache_length(config, n) for n in (1, 1024, 1025, 3000, 4096, 4097)] == \
        [1024, 1024, 2048, 4096, 4096, None]


def test_an_answer_that_may_cross_the_switch_takes_the_ordinary_path(fast_engine, assets):
    cancel = threading.Event()
    gen = GenerationSettings(max_new_tokens=4090, min_new_tokens=4090)
    request = build_request([Turn("user", "Go on and on.")], "")
    stats = None
    for piece in fast_engine.stream(request, gen, cancel):
        if isinstance(piece, str):
            cancel.set()  # a few tokens are enough to see which path ran
        else:
            stats = piece
    assert stats.cancelled and not stats.fast_decode and stats.new_tokens < 100


def test_switching_attention_recompiles(tiny_folder, assets):
    e = Engine(AppSettings(model="tiny-random", attn="sdpa", fast_decode=True, compile_backend="eager"))
    try:
        first = e.load().fast
        assert first is not None
        e.set_attention("eager")
        assert e.attn == "eager" and e.load().fast is not None and e.load().fast is not first
        [(_, stats)] = chat(e, assets, [("Hello?", ())])
        assert stats.fast_decode
    finally:
        e.cache.release()


def test_a_compile_failure_falls_back_with_the_reason(tiny_folder, assets):
    e = Engine(AppSettings(model="tiny-random", fast_decode=True, compile_backend="no-such-backend"))
    try:
        loaded = e.load()
        assert loaded.fast is None
        info = e.status().facts.fast_decode
        assert info.startswith("off: compiling failed") and "no-such-backend" in info
        [(answer, stats)] = chat(e, assets, [("Still there?", ())])
        assert not stats.fast_decode and stats.new_tokens == 20
        assert e.status().state == "ready"
    finally:
        e.cache.release()


def test_not_with_quantization(tiny_folder):
    pytest.importorskip("bitsandbytes")
    e = Engine(AppSettings(model="tiny-random", quantize="8bit", fast_decode=True))
    try:
        e.load()
        assert e.status().facts.fast_decode.startswith("off: not with --quantize")
    finally:
        e.cache.release()


def test_inductor_compiles_and_matches(engine, tiny_folder, assets):
    """The default backend, as a user gets it: C++ code generated and built on this CPU."""
    e = Engine(AppSettings(model="tiny-random", fast_decode=True))
    try:
        loaded = e.load()
        assert loaded.fast is not None, e.status().facts
        assert loaded.fast.warmup_s > 0
        engine.load().prefix_cache.clear()
        turns = [("Look.", (IMAGE,)), ("Again?", ())]
        want = chat(engine, assets, turns)
        got = chat(e, assets, turns)
        assert [a for a, _ in got] == [a for a, _ in want]
        assert all(s.fast_decode for _, s in got)
    finally:
        e.cache.release()
        torch._dynamo.reset()


def test_retry_and_undo_reuse_the_static_cache_and_match(engine, fast_engine, assets):
    """Retry sends the same prompt again, undo a shorter one: both crop the static cache."""
    def ask(e, history):
        return collect(e.stream(build_request(history, "Be brief."), GEN, threading.Event()))

    image = str(assets / IMAGE)
    first = [Turn("user", "Look at this.", (image,))]
    results = {}
    for name, e in (("slow", engine), ("fast", fast_engine)):
        e.load().prefix_cache.clear()
        a1, _ = ask(e, first)
        second = first + [Turn("assistant", a1), Turn("user", "Tell me more.")]
        a2, _ = ask(e, second)
        retried, retry_stats = ask(e, second)  # Retry
        undone, undo_stats = ask(e, first)  # Undo back to the first question
        results[name] = (a1, a2, retried, undone, retry_stats, undo_stats)
    slow, fast = results["slow"], results["fast"]
    assert fast[:4] == slow[:4] and fast[1] == fast[2] and fast[3] == fast[0]
    assert fast[4].fast_decode and fast[4].cached_tokens > 0 and fast[5].cached_tokens > 0


def test_requests_during_the_compile_wait_for_it(tiny_folder):
    """A second caller (another tab, the status poll) during the compile neither races it
    nor reports the model ready before it is."""
    e = Engine(AppSettings(model="tiny-random", fast_decode=True, compile_backend="eager"))
    problems, done = [], threading.Event()

    def load():
        try:
            e.load()
        except Exception as exc:  # noqa: BLE001
            problems.append(exc)

    def poll():
        while not done.is_set():
            try:
                st = e.status()
                if st.state == "ready" and not st.facts.fast_decode.startswith("on:"):
                    problems.append(f"ready while {st.facts.fast_decode if st.facts else None}")
            except Exception as exc:  # noqa: BLE001
                problems.append(exc)
            time.sleep(0.01)  # as the page's timer polls, not a busy loop

    try:
        poller = threading.Thread(target=poll)
        poller.start()
        loaders = [threading.Thread(target=load) for _ in range(3)]
        for t in loaders:
            t.start()
        for t in loaders:
            t.join(120)
        assert not any(t.is_alive() for t in loaders), "a caller hung"
        done.set()
        poller.join(10)
        assert not problems, problems[:3]
        assert e.status().facts.fast_decode.startswith("on:")
    finally:
        done.set()
        e.cache.release()
