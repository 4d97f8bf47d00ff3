"""Urgent requests (live-transcription windows) run between the tokens of a running answer,
and the answer goes on exactly as it would have."""

import threading
import time

from phi_demo.chat.messages import Turn
from phi_demo.chat.request import build_request, media_request
from phi_demo.contract import collect
from phi_demo.settings import GenerationSettings
from tests.helpers import tone

SR = 16_000


speech = tone


def test_a_window_is_recognised_while_a_long_answer_streams_and_the_answer_is_unchanged(engine):
    chat = build_request([Turn("user", "Tell me a long story about mountains.")])
    long = GenerationSettings(max_new_tokens=600, min_new_tokens=600)
    solo, _ = collect(engine.stream(chat, long, threading.Event()))

    first_piece, answer, done_at = threading.Event(), {}, {}

    def run():
        def seen(_):
            first_piece.set()
        answer["text"], answer["stats"] = collect(engine.stream(chat, long, threading.Event()), on_text=seen)
        done_at["t"] = time.perf_counter()

    thread = threading.Thread(target=run)
    thread.start()
    assert first_piece.wait(30)
    before = engine.interleaver.runs
    window = media_request("Transcribe the audio clip into text.", audios=[speech(2.0)], urgent=True)
    text, stats = collect(engine.stream(window, GenerationSettings(max_new_tokens=8), threading.Event()))
    recognised_at = time.perf_counter()
    thread.join(60)
    assert engine.interleaver.runs == before + 1, "the window waited for the answer instead"
    assert recognised_at < done_at["t"] and stats.new_tokens >= 1 and isinstance(text, str)
    # The answer's cache and adapter were put back: the same greedy text as alone.
    assert answer["text"] == solo and answer["stats"].new_tokens == 600


def test_an_urgent_request_with_nothing_running_goes_the_ordinary_way(engine):
    before = engine.interleaver.runs
    window = media_request("Transcribe the audio clip into text.", audios=[speech(1.0)], urgent=True)
    text, stats = collect(engine.stream(window, GenerationSettings(max_new_tokens=4), threading.Event()))
    assert stats is not None and engine.interleaver.runs == before
    assert not engine.interleaver.accepting
