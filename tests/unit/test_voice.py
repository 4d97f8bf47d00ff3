"""Hands-free turn taking (phi_demo.speech.voice) and the voice panel's handlers, without a browser."""

import json
import threading

import gradio as gr
import numpy as np
import pytest

from phi_demo.speech.vad import EnergyVAD, SileroVAD
from phi_demo.speech.voice import VoiceTurns
from phi_demo.ui.voice import HeardTurn, VoiceHandlers
from tests.helpers import silence, tone, wait_until

SR = 16_000


quiet = silence


def feed_in_chunks(turns, audio, chunk_s=0.5):
    events = []
    for i in range(0, len(audio), int(chunk_s * SR)):
        for kind, clip in turns.feed(audio[i:i + int(chunk_s * SR)]):
            events.append((kind, round(turns.received_s, 1), None if clip is None else round(len(clip) / SR, 2)))
    return events


def test_a_turn_begins_after_speech_and_ends_after_the_pause():
    turns = VoiceTurns(EnergyVAD().stream())
    audio = np.concatenate([quiet(1.0), tone(2.0), quiet(0.3), tone(1.0), quiet(1.5), tone(0.05), quiet(2.0)])
    events = feed_in_chunks(turns, audio)
    kinds = [k for k, _, _ in events]
    assert kinds == ["onset", "turn"]  # the 0.3 s gap does not end it; the 50 ms click starts nothing
    (_, onset_at, _), (_, end_at, length) = events
    assert onset_at == 1.5 and end_at <= 5.5
    # The turn holds all its speech, a little before it, and 0.2 s after it.
    assert 3.3 + 0.2 <= length <= 3.3 + 0.3 + 0.2 + 0.1


def test_a_very_long_turn_is_cut_at_the_limit():
    turns = VoiceTurns(EnergyVAD().stream(), max_turn_s=5.0)
    events = feed_in_chunks(turns, tone(12.0))
    assert [k for k, _, _ in events].count("turn") == 2
    assert all(length <= 5.6 for k, _, length in events if k == "turn")


def test_spoken_sentences_in_noise_make_one_turn_each():
    from phi_demo_dev.bench.vad import SENTENCES, synth_recording

    audio, truth = synth_recording(SENTENCES[:3], pause_s=1.5, snr_db=10, seed=4)
    turns = VoiceTurns(SileroVAD().stream())
    events = feed_in_chunks(turns, audio)
    lengths = [length for k, _, length in events if k == "turn"]
    assert len(lengths) == 3, events
    for length, (a, b) in zip(lengths, truth):
        assert abs(length - (b - a)) < 0.8


class FakeChat:
    """ChatHandlers.answer's shape: yields (history, box); stops when cancelled."""

    def __init__(self):
        self.started = threading.Event()
        self.messages = []

    def answer(self, message, *, history, rollback, from_box, values, cancel=None, tab="-"):
        self.messages.append(message)
        user = {"role": "user", "content": [{"path": message["files"][0]}]}
        for i in range(200):
            self.started.set()
            text = "Hello there. How are you" + " today" * i
            yield history + [user, {"role": "assistant", "content": text}], "box"
            if cancel.is_set():
                break
            cancel.wait(0.01)


@pytest.fixture
def voice(tmp_path):
    return VoiceHandlers(FakeChat(), EnergyVAD(), tmp_path)


def speak(voice, session, *pieces):
    for piece in pieces:
        session, phase, trigger = voice.chunk((SR, piece), session)
    return session, phase, trigger


def answering(voice, session, history=()):
    outputs = []
    thread = threading.Thread(target=lambda: outputs.extend(voice.answer(list(history), session, {})))
    thread.start()
    assert voice.chat.started.wait(5)
    return thread, outputs


def test_a_turn_goes_to_the_chat_as_audio_only_and_talking_over_the_answer_stops_it(voice):
    session, phase = voice.start(None)
    assert phase == "listening"
    session, phase, trigger = speak(voice, session, tone(1.5), quiet(1.0))
    assert phase == "thinking" and trigger == f"{session.id}:1" and len(session.pending) == 1
    thread, outputs = answering(voice, session)
    message = voice.chat.messages[0]
    assert message["text"] == "" and message["files"][0].endswith(".wav")  # the speech-QA form
    session, phase, _ = voice.chunk((SR, tone(0.5)), session)  # the person talks over the answer
    assert phase == "hearing"
    assert wait_until(lambda: json.loads(outputs[-1][2])["done"], 5), "the answer did not stop"
    last = json.loads(outputs[-1][2])
    assert last["done"] and last["stopped"] and last["turn"] == 1 and last["text"].startswith("Hello there.")
    assert len(outputs) < 150
    speak(voice, session, quiet(1.0))  # the interruption was a noise: nothing more to answer
    thread.join(5)
    assert not thread.is_alive()


def test_the_turn_that_interrupted_is_answered_next(voice):
    session, _, _ = speak(voice, voice.start(None)[0], tone(1.5), quiet(1.0))
    thread, outputs = answering(voice, session)
    session, _, _ = speak(voice, session, tone(1.5))  # talks over the first answer
    thread.join(5)  # it ended while the person talked, before the turn was over
    assert not thread.is_alive()
    # The turn ends only now: its trigger starts the next event. (Fed in one go, the turn
    # could end before a busy machine let the first event look for more, which then answered
    # it itself, as test_a_turn_heard_while_an_answer_ran_is_answered_by_the_same_event shows.)
    session, _, trigger = speak(voice, session, quiet(1.0))
    assert trigger == f"{session.id}:2"
    voice.chat.started.clear()
    thread, more = answering(voice, session, outputs[-1][0])
    voice.drop_waiting(more[-1][0], session)  # Stop
    thread.join(5)
    said = [json.loads(s) for _, _, s in outputs + more]
    assert said[len(outputs) - 1] == {**said[len(outputs) - 1], "turn": 1, "done": True, "stopped": True}
    assert said[-1]["turn"] == 2 and [m["files"][0][-6:] for m in voice.chat.messages] == ["-1.wav", "-2.wav"]
    assert [m["role"] for m in more[-1][0]] == ["user", "assistant", "user", "assistant"]  # the first answer stays


def test_a_turn_heard_while_an_answer_ran_is_answered_by_the_same_event(voice):
    """The page's trigger for a turn that ends while the answer event still runs is merged
    with the one already waiting (always_last): the running event answers it."""
    session, _, _ = speak(voice, voice.start(None)[0], tone(1.5), quiet(1.0))
    thread, outputs = answering(voice, session)
    with session.lock:  # heard meanwhile: the running answer was stopped, the turn waits
        session.pending.append(HeardTurn(2, "second.wav"))
        session.answer_cancel.set()
    assert wait_until(lambda: len(voice.chat.messages) == 2, 5), "the waiting turn was left for a trigger"
    voice.drop_waiting(outputs[-1][0], session)
    thread.join(5)
    assert not thread.is_alive()


def test_a_turn_talked_over_before_its_answer_began_gets_none(voice):
    """The person spoke again before the first turn's answer could begin (a slow queue): as
    if they had talked over that answer, it gets none, and the next turn is answered."""
    session, _, _ = speak(voice, voice.start(None)[0], tone(1.5), quiet(1.0), tone(1.5), quiet(1.0))
    assert len(session.pending) == 2
    thread, outputs = answering(voice, session)
    assert len(voice.chat.messages) == 1
    first = outputs[0]
    assert [m["role"] for m in first[0]] == ["user"] and json.loads(first[2]) == {
        "turn": 1, "text": "", "done": True, "stopped": True}  # shown, not answered, nothing read out
    assert voice.chat.messages[0]["files"][0].endswith("-2.wav")  # the second turn is the one answered
    voice.drop_waiting(outputs[-1][0], session)
    thread.join(5)


def test_no_answer_begins_while_the_person_is_talking(voice):
    """A turn waits while the person talks; if the talk is only a noise, it is answered then."""
    session, _, _ = speak(voice, voice.start(None)[0], tone(1.5), quiet(1.0))
    session, phase, _ = voice.chunk((SR, tone(0.3)), session)  # a cough begins
    assert phase == "hearing" and list(voice.answer([], session, {})) == []
    session, phase, trigger = speak(voice, session, quiet(1.0))  # too short to be a turn
    assert phase == "thinking" and trigger != gr.skip(), "the waiting turn must be answered now"
    thread, outputs = answering(voice, session)
    voice.drop_waiting(outputs[-1][0] if outputs else [], session)
    thread.join(5)
    assert len(voice.chat.messages) == 1


def test_stop_drops_the_waiting_turns_and_stops_the_answer(voice):
    """The message box's Stop: Gradio cancels the answer event it knows of; the Stop's own
    step stops the voice answer running now by its flag (it may have begun after the cancel)
    and drops the turns still waiting. Both end, nothing waits."""
    session, _, _ = speak(voice, voice.start(None)[0], tone(1.5), quiet(1.0))
    thread, outputs = answering(voice, session)
    with session.lock:  # a turn heard that no answer has taken yet
        session.pending.append(HeardTurn(2, "second.wav"))
    shown = outputs[-1][0] if outputs else [{"role": "assistant", "content": "Hello there."}]
    told = json.loads(voice.drop_waiting(shown, session))
    thread.join(5)
    assert not thread.is_alive() and len(outputs) < 150, "the answer did not stop"
    assert session.pending == [] and len(voice.chat.messages) == 1  # the waiting turn is not answered
    assert told == {"turn": 1, "text": told["text"], "done": True, "stopped": True} and told["text"]
    last = json.loads(outputs[-1][2])
    assert last["done"] and last["stopped"], "the answer's own last word must not read out the rest"


def test_stop_with_no_voice_answer_leaves_the_page_alone(voice):
    session, _ = voice.start(None)
    assert voice.drop_waiting([], session) == gr.skip() == voice.drop_waiting([], None)
    assert session.pending == [] and session.answer_cancel is None
