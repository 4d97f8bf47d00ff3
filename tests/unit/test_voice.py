"""Hands-free turn taking (phi_demo.speech.voice) and the voice panel's handlers, without a browser."""

import json
import threading

import numpy as np
import pytest

from phi_demo.speech.vad import EnergyVAD, SileroVAD
from phi_demo.speech.voice import VoiceTurns
from tests.helpers import silence, tone

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
    """ChatHandlers._run's shape: yields (history, box); stops when cancelled."""

    def __init__(self):
        self.started = threading.Event()
        self.messages = []

    def _run(self, message, base, rollback, restore_box, values, cancel=None):
        self.messages.append(message)
        user = {"role": "user", "content": [{"path": message["files"][0]}]}
        for i in range(200):
            self.started.set()
            text = "Hello there. How are you" + " today" * i
            yield base + [user, {"role": "assistant", "content": text}], "box"
            if cancel.is_set():
                break
            cancel.wait(0.01)


@pytest.fixture
def voice(tmp_path):
    from phi_demo.ui.voice import VoiceHandlers

    return VoiceHandlers(FakeChat(), EnergyVAD(), tmp_path)


def test_a_turn_goes_to_the_chat_as_audio_only_and_talking_over_the_answer_stops_it(voice):
    session, phase = voice.start(None)
    assert phase == "listening"
    for piece in (tone(1.5), quiet(1.0)):
        session, phase, trigger = voice.chunk((SR, piece), session)
    assert phase == "thinking" and trigger == f"{session.id}:1" and len(session.pending) == 1
    outputs = []
    answering = threading.Thread(target=lambda: outputs.extend(voice.answer([], session, {})))
    answering.start()
    assert voice.chat.started.wait(5)
    message = voice.chat.messages[0]
    assert message["text"] == "" and message["files"][0].endswith(".wav")  # the speech-QA form
    session, phase, _ = voice.chunk((SR, tone(0.5)), session)  # the person talks over the answer
    assert phase == "hearing"
    answering.join(5)
    assert not answering.is_alive(), "the answer did not stop"
    last = json.loads(outputs[-1][2])
    assert last["done"] and last["stopped"] and last["turn"] == 1 and last["text"].startswith("Hello there.")
    assert len(outputs) < 150


def test_stop_drops_the_waiting_turns_and_stops_the_answer_that_began_after_the_cancel(voice):
    """The message box's Stop: Gradio cancels the answer it knows of; a turn that waited
    behind it may already have begun when the Stop's own step runs. Both end, nothing waits."""
    session, _ = voice.start(None)
    for piece in (tone(1.5), quiet(1.0), tone(1.5), quiet(1.0)):
        session, _, _ = voice.chunk((SR, piece), session)
    assert len(session.pending) == 2
    outputs = []
    answering = threading.Thread(target=lambda: outputs.extend(voice.answer([], session, {})))
    answering.start()
    assert voice.chat.started.wait(5)
    shown = outputs[-1][0] if outputs else [{"role": "assistant", "content": "Hello there."}]
    told = json.loads(voice.drop_waiting(shown, session))
    answering.join(5)
    assert not answering.is_alive() and len(outputs) < 150, "the answer did not stop"
    assert session.pending == [] and list(voice.answer([], session, {})) == []  # the second turn is not answered
    assert told == {"turn": 2, "text": told["text"], "done": True, "stopped": True} and told["text"]
    last = json.loads(outputs[-1][2])
    assert last["done"] and last["stopped"], "the answer's own last word must not read out the rest"


def test_stop_with_no_voice_answer_leaves_the_page_alone(voice):
    import gradio as gr

    session, _ = voice.start(None)
    assert voice.drop_waiting([], session) == gr.skip() == voice.drop_waiting([], None)
    assert session.pending == [] and session.answer_cancel is None
