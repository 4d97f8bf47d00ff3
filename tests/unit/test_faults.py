"""Stop storms, failures inside generate, and loads that fail and are retried."""

import shutil
import threading

import pytest

from phi_demo.chat.messages import Turn
from phi_demo.chat.request import build_request
from phi_demo.engine.local import Engine
from phi_demo.errors import ModelUnavailable
from phi_demo.settings import AppSettings, GenerationSettings
from tests.helpers import generate_threads, wait_until


def test_failure_inside_generate_then_next_request_works(engine, assets, monkeypatch, caplog):
    loaded = engine.load()
    real = loaded.model.generate
    calls = []

    def fail_once(**kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected CUDA error")
        return real(**kwargs)

    monkeypatch.setattr(loaded.model, "generate", fail_once)
    request = build_request([Turn("user", "hi")])
    with caplog.at_level("ERROR", logger="phi_demo"), pytest.raises(RuntimeError, match="injected"):
        list(engine.stream(request, GenerationSettings(max_new_tokens=4), threading.Event()))
    # The user reads a sentence; the traceback must still reach the log.
    logged = [r for r in caplog.records if r.exc_info and "injected CUDA error" in str(r.exc_info[1])]
    assert logged and logged[0].name.startswith("phi_demo.engine"), caplog.records
    pieces = list(engine.stream(request, GenerationSettings(max_new_tokens=4), threading.Event()))
    assert pieces[-1].new_tokens >= 1


def test_out_of_memory_is_reported_and_memory_released(engine, monkeypatch, caplog):
    import torch

    loaded = engine.load()

    def oom(**kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(loaded.model, "generate", oom)
    with caplog.at_level("ERROR", logger="phi_demo"), pytest.raises(RuntimeError, match="ran out of memory for this request"):
        list(engine.stream(build_request([Turn("user", "hi")]), GenerationSettings(max_new_tokens=4), threading.Event()))
    assert any(r.exc_info and "Tried to allocate" in str(r.exc_info[1]) for r in caplog.records)


def test_a_failed_load_can_be_retried(tiny_folder, tmp_path):
    later = tmp_path / "model-arrives-later"
    engine = Engine(AppSettings(model=str(later)))
    with pytest.raises(ModelUnavailable, match="does not hold a model"):
        engine.load()
    assert engine.status().state == "error"
    shutil.copytree(tiny_folder, later)
    assert engine.load() is not None
    assert engine.status().state == "ready"
    engine.cache.release()


def test_cancellations_in_a_row_leave_nothing_running(engine):
    """Stop pressed again and again (the memory over 250 of them is watched in a process of
    its own, tests/process/test_process_life.py)."""
    request = build_request([Turn("user", "Talk")])
    gen = GenerationSettings(max_new_tokens=4000, min_new_tokens=4000)
    for _ in range(20):
        stream = engine.stream(request, gen, threading.Event())
        next(stream), next(stream)
        stream.close()
    assert wait_until(lambda: not generate_threads(), 5), "a generation thread is still alive"
    pieces = list(engine.stream(request, GenerationSettings(max_new_tokens=3), threading.Event()))
    assert pieces[-1].new_tokens == 3
