"""Live transcription: the commit policy with scripted hypotheses (exact), then the driver."""

import threading
import time

import numpy as np
import pytest

from phi_demo.speech.live import LiveTranscriber, StreamingTranscript, agreed_prefix, engine_recognizer
from tests.helpers import silence, tone

SR = 16000


speech = tone


def step(policy, audio, hypothesis):
    """More audio arrives, then the recogniser returns `hypothesis` for the window so far."""
    policy.add_audio(audio)
    policy.apply(hypothesis, policy.window_end_s)


def test_agreement_commits_the_stable_prefix():
    p = StreamingTranscript()
    step(p, speech(1.0), "hello")
    assert p.committed_text == "" and p.tentative_text == "hello"
    step(p, speech(0.5), "hello world")
    assert p.committed_text == "hello" and p.tentative_text == "world"
    step(p, speech(0.5), "hello world how")
    assert p.committed_text == "hello world" and p.tentative_text == "how"


def test_revision_is_never_committed_early():
    p = StreamingTranscript()
    step(p, speech(1.0), "I scream")
    step(p, speech(0.5), "ice cream is")
    assert p.committed_text == "" and p.tentative_text == "ice cream is"
    step(p, speech(0.5), "ice cream is cold")
    assert p.committed_text == "ice cream is" and p.tentative_text == "cold"
    # A later hypothesis that revises committed words cannot change them.
    step(p, speech(0.5), "nice cream is cold today")
    assert p.committed_text.startswith("ice cream is")


def test_word_split_across_chunks():
    p = StreamingTranscript()
    step(p, speech(0.8), "hel")
    step(p, speech(0.5), "hello there")
    assert p.committed_text == ""
    step(p, speech(0.5), "hello there friend")
    assert p.committed_text == "hello there"


def test_case_and_punctuation_do_not_block_agreement():
    assert agreed_prefix("Hello, world.".split(), "hello world again".split()) == 2


def test_pause_finishes_the_segment_and_drops_its_audio():
    p = StreamingTranscript(pause_s=0.6)
    step(p, speech(1.2), "good morning")
    step(p, silence(0.7), "good morning everyone")  # never agreed, but the pause makes it final
    assert p.committed_text == "good morning everyone" and p.tentative_text == ""
    (seg,) = p.segments
    assert seg.start_s == 0.0 and abs(seg.end_s - 1.2) < 0.1
    assert len(p.window) == 0 and p.window_start_s == pytest.approx(1.9)
    step(p, speech(1.0), "second")
    step(p, speech(0.5), "second phrase")
    assert p.committed_text == "good morning everyone second"


def test_silence_is_never_recognised_and_keeps_the_window_small():
    p = StreamingTranscript()
    for _ in range(60):
        p.add_audio(silence(0.5))
        assert not p.needs_recognition()
    assert len(p.window) <= 0.3 * SR and p.received_s == pytest.approx(30.0)
    assert p.lag_s == 0.0


def test_clipping_is_tolerated():
    p = StreamingTranscript()
    p.add_audio(np.full(SR, 5.0, np.float32))
    assert p.window.max() == 1.0 and p.needs_recognition()


def test_window_and_work_stay_bounded_over_a_long_recording():
    """20 minutes of talking with a 1 s pause every 8 s, and one 40 s stretch without a pause."""
    p = StreamingTranscript(max_window_s=15.0)
    longest = 0.0
    recognitions = 0
    pattern = [(speech(8.0), "words"), (silence(1.0), None)] * 140 + [(speech(40.0), "long")]
    for audio, word in pattern:
        for i in range(0, len(audio), SR // 2):
            p.add_audio(audio[i:i + SR // 2])
            if p.needs_recognition():
                snap, end = p.snapshot()
                longest = max(longest, len(snap) / SR)
                recognitions += 1
                p.apply(" ".join([word or "x"] * int(len(snap) / SR)), end)
    assert longest <= 15.0 + 0.5
    assert recognitions <= p.received_s / 0.5  # at most one per chunk
    assert len(p.segments) >= 140
    assert p.lag_s < 16


def test_srt_and_txt():
    p = StreamingTranscript()
    step(p, speech(1.0), "one two")
    step(p, silence(0.7), "one two")
    p.add_audio(speech(61.0 - p.received_s))
    p.finish("three")
    assert p.txt() == "one two\nthree\n"
    srt = p.srt().splitlines()
    assert srt[0] == "1" and srt[1].startswith("00:00:00,000 --> 00:00:01,")
    assert srt[4] == "2" and srt[5].endswith("--> 00:01:01,000") and srt[6] == "three"


def test_live_transcriber_coalesces_chunks_while_the_model_is_busy():
    calls = []

    def slow(audio):
        calls.append(len(audio) / SR)
        time.sleep(0.2)
        return "la " * int(len(audio) / SR)

    live = LiveTranscriber(slow)
    chunk = speech(0.1)
    start = time.time()
    for _ in range(60):  # 6 s of audio in about 0.6 s: far faster than the recogniser
        live.add_chunk(SR, (chunk * 32767).astype(np.int16))
        time.sleep(0.01)
    assert time.time() - start < 3, "adding a chunk waited for the model"
    live.stop()
    assert live.policy.received_s == pytest.approx(6.0, abs=0.01)  # no audio lost
    assert len(calls) < 20  # coalesced, not one per chunk
    assert not [t for t in threading.enumerate() if t.name == "phi-demo-transcribe" and t.is_alive()]
    committed, tentative, lag = live.view()
    assert committed and tentative == "" and lag == 0.0


def test_two_recordings_are_independent():
    a = LiveTranscriber(lambda audio: "alpha")
    b = LiveTranscriber(lambda audio: "beta")
    for _ in range(20):
        a.add_chunk(48000, (np.tile(speech(0.1), 3) * 30000).astype(np.int16))
        b.add_chunk(44100, np.stack([speech(0.1)] * 2, axis=1))
    a.stop()
    b.stop()
    assert set(a.view()[0].split()) == {"alpha"} and set(b.view()[0].split()) == {"beta"}


def test_recognition_failure_is_reported_not_raised():
    def broken(audio):
        raise RuntimeError("model exploded")

    live = LiveTranscriber(broken)
    live.add_chunk(SR, speech(1.0))
    live.stop()
    assert live.error == "Recognition failed: model exploded"


def test_engine_recognizer_uses_the_speech_adapter(engine, monkeypatch):
    seen = []
    real = engine.activate_adapter
    monkeypatch.setattr(engine, "activate_adapter", lambda loaded, m: seen.append(real(loaded, m)) or seen[-1])
    recognize = engine_recognizer(engine, "en", "transcribe", max_new_tokens=6)
    text = recognize(speech(2.0))
    assert isinstance(text, str) and text
    assert seen == ["speech"]


def test_the_window_sent_never_passes_the_cap_however_slow_the_model():
    """Audio that arrives while a recognition runs waits for the next window: the window
    sent to the model is never longer than max_window_s (a status once showed 23.4 s of 15)."""
    sent = []

    def slow(audio):
        sent.append(len(audio) / SR)
        time.sleep(0.3)
        return "la la"

    live = LiveTranscriber(slow, StreamingTranscript(max_window_s=3.0))
    for _ in range(100):  # 10 s of unbroken speech in about 1 s
        live.add_chunk(SR, speech(0.1))
        time.sleep(0.01)
    assert live.policy.waiting_s > 0  # more arrived than one window holds
    live.stop()
    assert max(sent) <= 3.0 + 1e-6 and live.policy.received_s == pytest.approx(10.0)
    assert all(s.end_s - s.start_s <= 3.0 + 1e-6 for s in live.policy.segments)


def test_the_view_never_waits_for_the_last_recognition_when_recording_stops():
    """stop() recognises what is left; the page keeps asking for the view meanwhile, and must
    get it at once, not after the whole recognition."""
    entered, finish = threading.Event(), threading.Event()

    def blocking(audio):
        entered.set()
        finish.wait(10)
        return "last words"

    # Nothing is recognised while recording (too little new audio each time): stop() does it.
    live = LiveTranscriber(blocking, StreamingTranscript(min_new_audio_s=1000))
    live.add_chunk(SR, speech(2.0))
    stopper = threading.Thread(target=live.stop)
    stopper.start()
    try:
        assert entered.wait(5), "stop() did not recognise what was left"
        seen = []
        viewer = threading.Thread(target=lambda: seen.append(live.view()))
        viewer.start()
        viewer.join(1.0)
        assert seen, "view() waited for the model"
    finally:
        finish.set()
        stopper.join(10)
    assert live.view()[0] == "last words"


def test_on_zerogpu_recognition_runs_in_the_thread_that_adds_the_chunk():
    threads = []

    def recognize(audio):
        threads.append(threading.current_thread())
        return "word"

    live = LiveTranscriber(recognize, inline=True)
    for _ in range(20):
        live.add_chunk(SR, speech(0.1))
    assert threads and set(threads) == {threading.current_thread()}
    assert not [t for t in threading.enumerate() if t.name == "phi-demo-transcribe"]
    live.stop()
    assert live.view()[0].startswith("word")


def test_silero_finds_the_phrase_ends_in_noise_where_the_threshold_hears_one_long_phrase():
    """Sentences at 10 dB SNR through the live policy: with silero-vad each pause ends a
    segment; with the -45 dBFS threshold the noise never lets one end."""
    from phi_demo.speech.vad import EnergyVAD, SileroVAD
    from phi_demo_dev.bench.vad import SENTENCES, synth_recording

    audio, truth = synth_recording(SENTENCES[:3], pause_s=1.2, snr_db=10, seed=2)
    ends = {}
    for name, vad in (("silero", SileroVAD()), ("energy", EnergyVAD())):
        p = StreamingTranscript(max_window_s=60.0, speech=vad.stream())
        for i in range(0, len(audio), SR // 2):  # half-second chunks, recognised as they come
            p.add_audio(audio[i:i + SR // 2])
            if p.needs_recognition():
                p.apply("words", p.snapshot()[1])
        ends[name] = [s.end_s for s in p.segments]
    assert len(ends["silero"]) == 3 and ends["energy"] == []  # each sentence ends in a pause, the last too
    for found, (_, true_end) in zip(ends["silero"], truth):
        assert abs(found - true_end) < 0.5
