"""Long recordings: chunking at pauses, formats, summaries by parts, stopping, damaged files,
and the tiny model through the whole path."""

import json
import re
import threading

import numpy as np
import pytest
import soundfile as sf

from phi_demo.errors import UserInputError
from phi_demo.speech import longaudio
from phi_demo.speech.longaudio import Cue, plan_chunks

SR = 16_000


@pytest.fixture(scope="module")
def sentence_clips():
    """The eight espeak-ng sentences, trimmed to their speech."""
    from phi_demo_dev.bench.vad import SENTENCES, synth_recording

    audio, truth = synth_recording(SENTENCES, pause_s=1.0)
    return [audio[int(a * SR):int(b * SR)] for a, b in truth]


def parse_srt(text):
    def sec(s):
        h, m, rest = s.split(":")
        return int(h) * 3600 + int(m) * 60 + float(rest.replace(",", "."))

    return [(sec(a), sec(b)) for a, b in re.findall(r"(\d\d:\d\d:\d\d,\d\d\d) --> (\d\d:\d\d:\d\d,\d\d\d)", text)]


def test_twenty_minutes_of_sentences_give_cues_at_pauses_none_longer_than_30_s():
    from phi_demo.speech.vad import SileroVAD
    from phi_demo_dev.bench.vad import long_recording

    audio, truth = long_recording(20)
    pauses = [(a_end, b_start) for (_, a_end), (b_start, _) in zip(truth, truth[1:])]
    speech = SileroVAD().segments(audio)
    heard = []

    def recognize(chunk, cancel):
        heard.append(len(chunk) / SR)
        return f"chunk {len(heard)}"

    *_, last = longaudio.transcribe(audio, speech, recognize, threading.Event())
    assert last.finished and len(last.cues) == len(heard) >= 40
    cues = parse_srt(longaudio.to_srt(last.cues))
    assert len(cues) == len(last.cues)
    assert max(b - a for a, b in cues) <= 30.0 and max(heard) <= 30.0

    def near_pause(t, edge):
        # A cue starts where speech starts (the end of a pause) and ends where it stops.
        edges = [hi for _, hi in pauses] + [truth[0][0]] if edge == "start" else [lo for lo, _ in pauses] + [truth[-1][1]]
        return min(abs(t - e) for e in edges)

    assert max(near_pause(a, "start") for a, _ in cues) <= 0.5
    assert max(near_pause(b, "end") for _, b in cues) <= 0.5
    # No sentence is cut in two: each lies inside one cue.
    for a, b in truth:
        assert any(ca - 0.5 <= a and b <= cb + 0.5 for ca, cb in cues), (a, b)


def test_plan_chunks_cut_long_speech_without_pauses_and_keep_margins_in_the_pauses():
    chunks = plan_chunks([(1.0, 71.0), (73.0, 80.0)], total_s=85.0, max_s=30.0)
    assert [round(c.end_s - c.start_s, 3) for c in chunks][:3] == [23.333] * 3  # 70 s of speech, no pause: 3 parts
    assert chunks[3].start_s == 73.0 and chunks[3].end_s == 80.0
    assert all(c.cut_to_s - c.cut_from_s <= 30.0 for c in chunks)
    assert chunks[3].cut_from_s == pytest.approx(72.75) and chunks[3].cut_to_s == pytest.approx(80.25)
    assert plan_chunks([], 10.0) == []


def test_formats():
    cues = [Cue(0.5, 2.25, "Hello there."), Cue(3661.0, 3662.5, "Ça va ?"), Cue(4000.0, 4001.0, "")]
    assert longaudio.to_txt(cues) == "Hello there.\nÇa va ?\n"
    assert longaudio.to_srt(cues) == ("1\n00:00:00,500 --> 00:00:02,250\nHello there.\n\n"
                                      "2\n01:01:01,000 --> 01:01:02,500\nÇa va ?\n\n")
    assert longaudio.to_vtt(cues).startswith("WEBVTT\n\n00:00:00.500 --> 00:00:02.250\nHello there.\n\n01:01:01.000")
    data = json.loads(longaudio.to_json(cues, file="a.wav", duration_s=4001.0))
    assert data["file"] == "a.wav" and data["segments"] == [
        {"start": 0.5, "end": 2.25, "text": "Hello there."}, {"start": 3661.0, "end": 3662.5, "text": "Ça va ?"}]
    with pytest.raises(UserInputError, match="Unknown format 'doc'"):
        longaudio.render(cues, "doc")


def test_stop_ends_the_work_within_one_chunk():
    audio = np.zeros(SR * 300, np.float32)
    speech = [(i * 10.0 + 1, i * 10.0 + 6) for i in range(30)]
    cancel = threading.Event()
    calls = []

    def recognize(chunk, c):
        calls.append(1)
        if len(calls) == 2:
            cancel.set()  # Stop pressed while the second chunk is recognised
            return "cut short"
        return "words"

    progress = list(longaudio.transcribe(audio, speech, recognize, cancel, max_chunk_s=10.0))
    last = progress[-1]
    assert last.stopped and not last.finished and len(calls) == 2
    assert [c.text for c in last.cues] == ["words"]  # the interrupted chunk is not kept half-done
    assert last.done_s == last.cues[-1].end_s < last.total_s


def test_no_speech_is_a_sentence():
    with pytest.raises(UserInputError, match="No speech was found"):
        list(longaudio.transcribe(np.zeros(SR * 60, np.float32), [], lambda a, c: "", threading.Event()))


def test_summary_in_one_request_or_by_parts_then_combined():
    audio = np.zeros(SR * 100, np.float32)
    speech = [(i * 10.0 + 1, i * 10.0 + 8) for i in range(10)]
    asked = []

    def ask(text, samples, cancel):
        asked.append((text, None if samples is None else len(samples) / SR))
        return f"summary {len(asked)}"

    one = longaudio.summarize(audio, speech, ask, threading.Event(), part_s=1800)
    assert one.text == "summary 1" and asked == [("Summarize the audio.", 100.0)] and not one.parts
    asked.clear()
    parts = longaudio.summarize(audio, speech, ask, threading.Event(), part_s=40)
    assert len(parts.parts) == 3 and all(s <= 40 for _, s in asked[:-1])
    assert all(t == "Summarize the audio." for t, _ in asked[:-1])
    combine, no_audio = asked[-1]
    assert no_audio is None and "Part 1 (0:00–0:" in combine and "summary 3" in combine
    assert parts.text == "summary 4"
    # The parts are cut in pauses: none starts or ends inside a stretch of speech.
    for a, b in parts.part_times:
        assert not any(lo < a < hi or lo < b < hi for lo, hi in speech)


def test_a_damaged_tail_keeps_what_came_before(tmp_path, sentence_clips):
    audio = np.concatenate(sentence_clips[:3])
    path = tmp_path / "long.flac"
    sf.write(path, audio, SR)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3] + b"\x00garbage" * 500)
    got, note = longaudio.load_recording(path, 7200)
    assert note.startswith("long.flac is damaged after 0:0") and "the part before it was transcribed" in note
    assert 0.4 * len(audio) < len(got) < len(audio)


def test_limit_and_music(tmp_path):
    path = tmp_path / "two-hours.wav"
    with sf.SoundFile(path, "w", SR, 1, "PCM_16") as f:
        f.write(np.zeros(SR * 60, np.int16))
    with pytest.raises(UserInputError, match="the limit is 30 s"):
        longaudio.load_recording(path, 30)
    # Music (chords of pure tones) holds no speech for silero-vad: a sentence, not a hang.
    from phi_demo.speech.vad import SileroVAD

    t = np.arange(SR * 20) / SR
    music = (0.2 * sum(np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0))).astype(np.float32)
    speech = SileroVAD().segments(music)
    assert sum(b - a for a, b in speech) < 2.0


def test_tiny_model_end_to_end(engine):
    """The real path: engine recogniser with the speech adapter, chunks, progress, formats."""
    from phi_demo.speech.live import engine_asker, engine_recognizer
    from phi_demo.speech.vad import SileroVAD
    from phi_demo_dev.bench.vad import SENTENCES, long_recording

    audio, _truth = long_recording(0.7, SENTENCES[:4], seed=3)
    speech = SileroVAD().segments(audio)
    recognize = engine_recognizer(engine, "en", "translate", "fr", max_new_tokens=4)
    progress = list(longaudio.transcribe(audio, speech, recognize, threading.Event(), max_chunk_s=12.0))
    assert progress[-1].finished and [p.chunks_done for p in progress][-2] == progress[-1].chunks >= 3
    assert all(c.text for c in progress[-1].cues)  # random words, but words
    s = longaudio.summarize(audio, speech, engine_asker(engine, 4), threading.Event(), part_s=20)
    assert len(s.parts) >= 2 and isinstance(s.text, str)
