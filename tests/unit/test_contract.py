"""One engine contract; state every user shares (the model's attention) changes only
between answers; settings that cannot be honoured load nothing."""

import inspect
import threading

import gradio as gr
import pytest

from phi_demo.chat.messages import Turn
from phi_demo.chat.request import build_request
from phi_demo.contract import ChatEngine, GenerationStats, collect
from phi_demo.engine.cache import ModelCache
from phi_demo.engine.local import Engine
from phi_demo.errors import ModelUnavailable
from phi_demo.settings import AppSettings, GenerationSettings
from phi_demo.ui.sidebar import SidebarHandlers
from tests.helpers import wait_until


def engines(engine):
    from phi_demo.engine.remote import OpenAIEngine
    from phi_demo.engine.zerogpu import ZeroGpuEngine
    from phi_demo_dev.bench.common import ForcedLength
    from tests.conftest import RecordingEngine

    return {"local": engine, "openai": OpenAIEngine(AppSettings(backend="openai", base_url="http://127.0.0.1:9/v1")),
            "zerogpu": ZeroGpuEngine(engine), "bench": ForcedLength(engine), "tests": RecordingEngine(engine)}


def test_every_engine_implements_the_contract(engine):
    for name, e in engines(engine).items():
        assert isinstance(e, ChatEngine), name
        for method in ("stream", "set_attention", "load"):
            own = getattr(type(e), method, None)
            if own is None:
                continue  # a wrapper that hands the call on to the engine it wraps
            want = list(inspect.signature(getattr(ChatEngine, method)).parameters)
            assert list(inspect.signature(own).parameters) == want, (name, method)


def test_collect_reads_a_stream_the_one_way():
    stats = GenerationStats(3, 2, 0.1, 0.2, 10.0)
    seen = []
    assert collect(iter(["Hel", "lo", stats]), on_text=seen.append) == ("Hello", stats)
    assert seen == ["Hel", "lo"]


def test_attention_switch_waits_for_the_running_answer(engine):
    loaded = engine.load()
    before = engine.attn
    other = "eager" if before != "eager" else "sdpa"
    request = build_request([Turn("user", "Tell me a long story")])
    stream = engine.stream(request, GenerationSettings(max_new_tokens=400, min_new_tokens=400), threading.Event())
    switched = threading.Event()
    try:
        next(stream)  # an answer is running
        t = threading.Thread(target=lambda: (engine.set_attention(other), switched.set()))
        t.start()
        # The switch waits for the model (the scheduler counts it), and has not happened.
        assert wait_until(lambda: engine.scheduler.waiting == 1, 30)
        assert not switched.is_set() and loaded.attn == before, "switched under a running answer"
        _text, stats = collect(stream)
        assert stats.new_tokens == 400 and not stats.cancelled
        t.join(30)
        assert switched.is_set() and engine.attn == other and loaded.attn == other
        assert engine.load() is loaded  # switched in place, for everyone
    finally:
        stream.close()
        engine.set_attention(before)


def test_another_tab_is_told_of_an_attention_change(engine, monkeypatch):
    infos = []
    monkeypatch.setattr(gr, "Info", lambda msg, *a, **k: infos.append(msg))
    h = SidebarHandlers(engine, AppSettings(model="tiny-random"))
    start = engine.attn
    other = "eager" if start != "eager" else "sdpa"
    _, _, seen_a = h.sync_attention(start, None)  # tab A opens
    _, _, seen_b = h.sync_attention(start, None)  # tab B opens
    try:
        value, _, seen_b = h.change_attention(other)  # B switches (its radio already shows it)
        assert value == gr.skip() and engine.attn == other and "for every user" in infos[-1]
        value, _md, seen_a = h.sync_attention(start, seen_a)  # A's poll
        assert value == other and f"Another user switched the attention implementation to {other}" in infos[-1]
        assert h.sync_attention(other, seen_a) == (gr.skip(), gr.skip(), gr.skip())  # told once
        assert h.sync_attention(other, seen_b)[0] == gr.skip()  # B made the change: no notice
        assert len(infos) == 2
    finally:
        engine.set_attention(start)


@pytest.mark.parametrize("flags,words", [
    (dict(device="cuda"), "no CUDA GPU is visible"),
    (dict(attn="flash_attention_2"), "flash_attention_2 cannot be used here: needs a CUDA GPU"),
])
def test_settings_that_cannot_be_honoured_load_nothing(flags, words, capsys):
    loads = []
    e = Engine(AppSettings(model="tiny-random", **flags), cache=ModelCache(lambda key: loads.append(key)))
    assert e.status().state == "error" and words in e.status().message
    with pytest.raises(ModelUnavailable, match=words):
        e.load()
    with pytest.raises(ModelUnavailable, match=words):
        list(e.stream(build_request([Turn("user", "hi")]), GenerationSettings(max_new_tokens=2), threading.Event()))
    assert loads == [], "something was loaded in place of what was asked for"
    h = SidebarHandlers(e, AppSettings(model="tiny-random", **flags))
    assert words in h.banner_markdown()

    from phi_demo import cli

    argv = ["ask", "hi", "--model", "tiny-random"] + [x for k, v in flags.items() for x in (f"--{k}", v)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and "Traceback" not in err[0]
