"""Urgent requests (live-transcription windows) run between the tokens of a running answer,
and the answer goes on exactly as it would have."""

import threading
import time

import torch

from phi_demo.chat.messages import Turn
from phi_demo.chat.request import build_request, media_request
from phi_demo.contract import collect
from phi_demo.engine.interleave import Handed, Scheduler, UrgentJob
from phi_demo.settings import GenerationSettings
from tests.helpers import tone, wait_until

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
    before = engine.scheduler.runs
    window = media_request("Transcribe the audio clip into text.", audios=[speech(2.0)], urgent=True)
    text, stats = collect(engine.stream(window, GenerationSettings(max_new_tokens=8), threading.Event()))
    recognised_at = time.perf_counter()
    thread.join(60)
    assert engine.scheduler.runs == before + 1, "the window waited for the answer instead"
    assert recognised_at < done_at["t"] and stats.new_tokens >= 1 and isinstance(text, str)
    # The window went through the one generation routine: its stats are an answer's.
    assert stats.prompt_tokens > 0 and 0 < stats.ttft_s <= stats.total_s and not stats.cancelled
    assert stats.finish_reason == ("length" if stats.new_tokens >= 8 else "stop")
    # The answer's cache and adapter were put back: the same greedy text as alone.
    assert answer["text"] == solo and answer["stats"].new_tokens == 600
    assert answer["stats"].finish_reason == "length"


def test_an_urgent_request_with_nothing_running_goes_the_ordinary_way(engine):
    before = engine.scheduler.runs
    window = media_request("Transcribe the audio clip into text.", audios=[speech(1.0)], urgent=True)
    text, stats = collect(engine.stream(window, GenerationSettings(max_new_tokens=4), threading.Event()))
    assert stats is not None and engine.scheduler.runs == before
    assert not engine.scheduler.accepting


def test_urgent_windows_take_at_most_their_share_of_the_answers_time(engine):
    """A live view asking for a window again and again beside a long answer: the windows run
    between its tokens, but take no more than the scheduler's share (8%) of its time."""
    chat = build_request([Turn("user", "Tell me a long story about rivers.")])
    long = GenerationSettings(max_new_tokens=1500, min_new_tokens=1500)
    window = media_request("Transcribe the audio clip into text.", audios=[speech(2.0)], urgent=True)
    first_piece, answer = threading.Event(), {}

    def run():
        answer["stats"] = collect(engine.stream(chat, long, threading.Event()), on_text=lambda _: first_piece.set())[1]

    thread = threading.Thread(target=run)
    thread.start()
    assert first_piece.wait(30)
    runs, spent = engine.scheduler.runs, engine.scheduler.urgent_s
    longest = 0.0
    while thread.is_alive():
        _, stats = collect(engine.stream(window, GenerationSettings(max_new_tokens=8), threading.Event()))
        longest = max(longest, stats.total_s)
    thread.join()
    windows, urgent = engine.scheduler.runs - runs, engine.scheduler.urgent_s - spent
    total = answer["stats"].total_s
    print(f"\n{windows} urgent windows beside a {total:.2f} s answer took {urgent:.3f} s: {urgent / total:.1%} of it "
          f"(share {engine.scheduler.share:.0%}, longest window {longest:.3f} s)")
    assert windows >= 2
    # The share holds between windows; the last one may fall just before the answer's end.
    assert urgent <= engine.scheduler.share * total + longest


# --- the hand-over itself, without a model --------------------------------------------


def _answer_holding(scheduler, tokens, stop):
    """A stand-in answer: holds the model and calls the yield point at each 'token'."""
    point = scheduler.yield_point(lambda: None)
    ids = torch.zeros((1, 1), dtype=torch.long)
    with scheduler.exclusive(), scheduler.taking_urgent():
        tokens.set()
        while not stop.is_set():
            point(ids, None)
            time.sleep(0.005)


def test_a_job_handed_to_a_running_answer_runs_at_its_next_token():
    scheduler, tokens, stop = Scheduler(), threading.Event(), threading.Event()
    answer = threading.Thread(target=_answer_holding, args=(scheduler, tokens, stop))
    answer.start()
    try:
        assert tokens.wait(5)
        job = UrgentJob(lambda: threading.current_thread(), threading.Event())
        assert scheduler.hand_over(job) is Handed.RAN
        assert job.result is answer and scheduler.runs == 1  # on the answer's own thread
    finally:
        stop.set()
        answer.join(5)


def test_a_job_queued_when_the_answer_ends_takes_the_free_model():
    scheduler = Scheduler(share=0.5)
    scheduler._next_at = float("inf")  # the answer never gets to it
    tokens, stop = threading.Event(), threading.Event()
    answer = threading.Thread(target=_answer_holding, args=(scheduler, tokens, stop))
    answer.start()
    assert tokens.wait(5)
    got = []
    waiter = threading.Thread(target=lambda: got.append(scheduler.hand_over(UrgentJob(lambda: 1, threading.Event()))))
    waiter.start()
    assert wait_until(lambda: len(scheduler._jobs) == 1, 5)
    stop.set()
    answer.join(5)
    waiter.join(5)
    assert got == [Handed.FREE] and not scheduler._jobs
    scheduler.release()


def test_a_cancelled_job_is_not_run():
    scheduler, tokens, stop = Scheduler(), threading.Event(), threading.Event()
    scheduler._next_at = float("inf")
    answer = threading.Thread(target=_answer_holding, args=(scheduler, tokens, stop))
    answer.start()
    try:
        assert tokens.wait(5)
        cancel, ran = threading.Event(), []
        got = []
        waiter = threading.Thread(target=lambda: got.append(scheduler.hand_over(UrgentJob(lambda: ran.append(1),
                                                                                          cancel))))
        waiter.start()
        assert wait_until(lambda: len(scheduler._jobs) == 1, 5)
        cancel.set()
        waiter.join(5)
        assert got == [Handed.CANCELLED] and not ran and not scheduler._jobs
    finally:
        stop.set()
        answer.join(5)
