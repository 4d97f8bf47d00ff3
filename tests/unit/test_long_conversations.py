"""Conversations that never get stuck (issue #26): past every limit a chat goes on, its oldest
media leaving the prompt as notes while their answers stay."""

import json
import shutil
import threading

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from phi_demo.chat.messages import Turn
from phi_demo.chat.policy import EARLIER_CLIP, TRANSCRIBED_CLIP, Cost, keep_newest
from phi_demo.chat.request import Limits, build_request
from phi_demo.errors import UserInputError
from phi_demo.settings import AppSettings, GenerationSettings
from phi_demo.ui.chat import ChatHandlers, said_left_out
from tests.helpers import ROOT

GEN = {"system_prompt": "", "max_new_tokens": 2, "do_sample": False, "temperature": 0.7, "top_p": 0.95,
       "top_k": 50, "repetition_penalty": 1.0, "seed": -1}


@pytest.fixture
def images(tmp_path):
    paths = []
    for i in range(10):
        p = tmp_path / f"shot{i}.png"
        Image.new("RGB", (32, 32), (25 * i, 0, 0)).save(p)
        paths.append(str(p))
    return paths


def _conversation(images, tmp_path):
    """10 image turns with a video (2 frames and its sound) after the 3rd and a 2-page PDF
    after the 6th, each question answered."""
    clip = shutil.copy(ROOT / "assets" / "example_clip.mp4", tmp_path / "clip.mp4")
    report = shutil.copy(ROOT / "assets" / "example_report.pdf", tmp_path / "report.pdf")
    files = images[:3] + [str(clip)] + images[3:6] + [str(report)] + images[6:]
    turns = []
    for i, f in enumerate(files):
        turns += [Turn("user", f"q{i}", (f,)), Turn("assistant", f"a{i}")]
    return turns[:-1]


def test_keep_newest_drops_in_batches_of_half_the_limit():
    """Most turns drop nothing, so the prompt's beginning stays put between drops."""
    dropped = []
    for n in range(1, 12):
        turns = [Turn("user", f"q{i}", (f"{i}.png",)) for i in range(n)]
        kept = keep_newest(turns, [["image"]] * n, [[Cost(images=1)]] * n, 4, 4)
        dropped.append(kept.left_out.images)
        assert n - kept.left_out.images <= 4
    assert dropped == [0, 0, 0, 0, 2, 2, 4, 4, 6, 6, 8]


def test_context_cuts_fall_at_fixed_places_as_the_conversation_grows():
    """Stateless, since clients resend whole histories: the cut depends only on the turns
    before it, so it moves only when it must, by about half the budget at once."""
    from phi_demo.chat.policy import units_to_leave

    cuts = [units_to_leave([30] * n, 10, 200) for n in range(1, 30)]
    assert cuts[:6] == [0] * 6  # 10 + 6 * 30 fits in 200
    assert all(c is not None and 10 + 30 * (n + 1 - c) <= 200 for n, c in enumerate(cuts))
    assert len(set(cuts)) <= 1 + 29 // 3  # it moves at most every few turns
    assert units_to_leave([30, 300], 10, 200) is None  # the newest alone cannot fit


def test_ten_images_a_video_and_a_pdf_on_a_limit_of_four(images, tmp_path):
    turns = _conversation(images, tmp_path)
    req = build_request(turns, limits=Limits(max_images=4, max_video_frames=2))
    # 14 images in all (10 + 2 frames + 2 pages): past 4 they leave 2 at a time, 10 of them.
    assert req.images_left_out == 10 and len(req.images) == 4 and req.clips_left_out == 1
    assert req.audios == []  # the video's sound left with its frames
    head = "".join(f"<|user|>(earlier image: shot{i}.png)\nq{i}<|end|><|assistant|>a{i}<|end|>" for i in range(3))
    video = "<|user|>(earlier video: clip.mp4)\nq3<|end|><|assistant|>a3<|end|>"
    middle = "".join(f"<|user|>(earlier image: shot{i}.png)\nq{i + 1}<|end|><|assistant|>a{i + 1}<|end|>"
                     for i in range(3, 6))
    pdf = "<|user|>(earlier PDF: report.pdf)\nq7<|end|><|assistant|>a7<|end|>"
    tail = "".join(f"<|user|><|image|>q{i}<|end|><|assistant|>a{i}<|end|>" for i in range(8, 11))
    assert req.prompt == head + video + middle + pdf + tail + "<|user|><|image|>q11<|end|><|assistant|>"


def test_only_the_new_message_over_a_limit_is_refused(images, tmp_path):
    turns = _conversation(images, tmp_path)
    with pytest.raises(UserInputError, match="This message would hold 5 images; the limit is 4"):
        build_request(turns[:-1] + [Turn("user", "all", tuple(images[:5]))], limits=Limits(max_images=4))


def test_a_clip_that_left_keeps_its_place(tmp_path):
    clips = []
    for i in range(3):
        p = tmp_path / f"c{i}.wav"
        sf.write(p, np.full(1600 * (i + 1), 0.1, np.float32), 16000)
        clips.append(str(p))
    turns = [Turn("user", "", (clips[0],)), Turn("assistant", "a0"), Turn("user", "", (clips[1],)),
             Turn("assistant", "a1"), Turn("user", "", (clips[2],))]
    req = build_request(turns, limits=Limits(max_audio_clips=2))
    assert req.prompt.startswith(f"<|user|>{EARLIER_CLIP}<|end|><|assistant|>a0<|end|><|user|><|audio|>")


def test_every_turn_of_the_chat_is_answered_and_the_stats_line_says_what_left(engine, images, tmp_path):
    """Through the page's handlers: 11 turns past the image limit, none refused."""
    handlers = ChatHandlers(engine, AppSettings(model="tiny-random", max_images=4, max_video_frames=2))
    turns = _conversation(images, tmp_path)
    history: list = []
    titles = []
    for turn in turns[::2]:
        final, _ = list(handlers.submit({"text": turn.text, "files": list(turn.files)}, history, GEN))[-1]
        assert final[-1]["metadata"]["title"].startswith("📊 ")
        assert final[-2]["role"] == "assistant" and final[-2]["content"]
        titles.append(final[-1]["metadata"]["title"])
        history = final
    # Each drop is said once, on the turn it happens; the turns between say nothing of it.
    said = [t.split(" · oldest ", 1)[1] if " · oldest " in t else "" for t in titles]
    assert said[-1] == "" and said[-2] == "10 images not shown (image limit)", said
    assert sum("1 audio clip not heard (clip limit)" in s for s in said) == 1, said
    drops = [s for s in said if s]
    assert len(drops) == len(set(drops)) >= 3 and len(drops) < len(said) - 2, said
    assert said_left_out(history) == {"images": 10, "clips": 1, "messages": 0}


def test_a_drop_is_said_once_and_a_new_drop_again():
    from phi_demo.contract import GenerationStats
    from phi_demo.ui.chat import stats_message

    stats = GenerationStats(300, 8, 0.1, 0.2, 50.0, messages_left_out=6)
    first = stats_message(stats, "sdpa", images_left_out=2)
    history = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, first]
    assert said_left_out(history) == {"images": 2, "clips": 0, "messages": 6}
    again = stats_message(stats, "sdpa", images_left_out=2, said=said_left_out(history))
    assert " · oldest " not in again["metadata"]["title"]  # nothing new: said nothing
    history += [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, again]
    assert said_left_out(history) == {"images": 2, "clips": 0, "messages": 6}  # still what was said last
    more = stats_message(GenerationStats(300, 8, 0.1, 0.2, 50.0, messages_left_out=8), "sdpa", images_left_out=2,
                         said=said_left_out(history))
    assert more["metadata"]["title"].endswith(" · oldest 8 messages left out (context budget)")
    # A chat imported from anywhere may hold odd messages: they say nothing, and break nothing.
    odd = [{"role": "assistant", "content": "x", "metadata": "📊 oldest 9 images"}, "text", {"metadata": None}]
    assert said_left_out(history + odd) == {"images": 2, "clips": 0, "messages": 6}


@pytest.fixture(scope="module")
def small_context():
    """The tiny model with its context set small: its own copy, so no other test sees it."""
    from phi_demo.engine.local import Engine

    small = Engine(AppSettings(model="tiny-random"))
    small.load().model.config.max_position_embeddings = 400
    return small


def _ask(engine, turns, max_new_tokens=8):
    from phi_demo.contract import collect

    request = build_request(turns)
    return collect(engine.stream(request, GenerationSettings(max_new_tokens=max_new_tokens, do_sample=False),
                                 threading.Event()))


def test_past_the_context_the_oldest_messages_leave_in_batches(small_context):
    """Every turn is answered; the prompt stays within the context minus the answer's room,
    and between drops the prompt's beginning stays put, so its KV cache is reused."""
    turns: list[Turn] = []
    stats = []
    for i in range(14):
        turns.append(Turn("user", f"Question {i}: " + " ".join(f"word{i}x{j}" for j in range(12))))
        text, s = _ask(small_context, turns)
        assert s is not None and s.finish_reason != "cancelled"
        assert s.prompt_tokens + 8 <= 400
        stats.append(s)
        turns.append(Turn("assistant", f"Answer {i}."))
    left = [s.messages_left_out for s in stats]
    assert left[0] == 0 and left[-1] > 0 and left == sorted(left)
    steady = [s for a, b, s in zip(left, left[1:], stats[1:]) if a == b and a > 0]
    assert steady and all(s.cached_tokens > s.prompt_tokens // 2 for s in steady)


def test_the_stats_line_says_how_many_messages_left_for_the_context():
    from phi_demo.contract import GenerationStats
    from phi_demo.ui.chat import stats_message

    stats = GenerationStats(300, 8, 0.1, 0.2, 50.0, messages_left_out=6)
    assert stats_message(stats, "sdpa")["metadata"]["title"].endswith("· oldest 6 messages left out (context budget)")


def test_a_message_that_cannot_fit_alone_gets_a_sentence(small_context):
    with pytest.raises(UserInputError, match=r"The message is [\d,]+ tokens long and 8 new tokens .* context window is 400 tokens"):
        _ask(small_context, [Turn("user", " ".join(f"w{i}" for i in range(600)))])


def test_past_the_context_budget_flag_a_message_alone_gets_its_sentence(small_context):
    from phi_demo.engine.local import Engine

    budgeted = Engine(AppSettings(model="tiny-random", context_budget=100), cache=small_context.cache)
    with pytest.raises(UserInputError, match=r"reads at most 100 prompt tokens at once \(its context budget\)"):
        _ask(budgeted, [Turn("user", " ".join(f"w{i}" for i in range(200)))])


def test_the_budget_is_computed_from_free_memory_and_capped_by_the_context(small_context):
    from phi_demo.engine.generation import auto_context_budget, kv_bytes_per_token

    config = small_context.load().model.config
    per_token = kv_bytes_per_token(config, torch.float32)
    assert auto_context_budget(config, torch.float32, 100 * per_token) == 50  # half the free memory
    assert auto_context_budget(config, torch.float32, 10**12) == 400  # never past the context


def test_a_clip_that_leaves_is_transcribed_once_and_its_transcript_stays(engine, tmp_path):
    """The turn that drops a clip pays for its transcript (a notice says so); later turns
    find it in the cache, so the prompt's beginning is the same text turn after turn."""
    from phi_demo.chat.policy import with_transcripts
    from phi_demo.chat.request import clip_transcripts
    from phi_demo.contract import Notice

    clip_transcripts.clear()
    rng = np.random.default_rng(0)
    clips = []
    for i in range(4):
        p = tmp_path / f"spoken{i}.wav"
        sf.write(p, rng.uniform(-0.3, 0.3, 4000 + 800 * i).astype(np.float32), 16000)
        clips.append(str(p))
    turns = [Turn("user", "", (clips[0],)), Turn("assistant", "a0"), Turn("user", "", (clips[1],)),
             Turn("assistant", "a1"), Turn("user", "", (clips[2],)), Turn("assistant", "a2"),
             Turn("user", "", (clips[3],))]
    first = build_request(turns, "Be brief.", Limits(max_audio_clips=2))
    assert [c.message for c in first.clips_to_transcribe] == [1, 3]  # after the system prompt
    pieces = list(engine.stream(first, GenerationSettings(max_new_tokens=2, do_sample=False), threading.Event()))
    assert isinstance(pieces[0], Notice) and "Transcribing 2 earlier audio clips" in pieces[0].text
    assert len(clip_transcripts) == 2
    again = build_request(turns, "Be brief.", Limits(max_audio_clips=2))
    assert again.clips_to_transcribe == []
    texts = [clip_transcripts.get(c.key) or "" for c in first.clips_to_transcribe]
    assert again.prompt == with_transcripts(first, texts).prompt
    assert again.prompt.count(TRANSCRIBED_CLIP) == sum(bool(t.strip()) for t in texts) > 0


def test_talking_before_a_queued_answer_starts_cancels_it(engine, tmp_path):
    """On a server made busy on purpose, a spoken turn's answer waits for the model; the
    person talks again: that answer never starts, its clip stays in the chat and is heard
    with the next turn as one question (consecutive user messages merge)."""
    from phi_demo.speech.vad import EnergyVAD
    from phi_demo.ui.voice import VoiceHandlers
    from tests.helpers import silence, tone, wait_until

    voice = VoiceHandlers(ChatHandlers(engine, AppSettings(model="tiny-random")), EnergyVAD(), tmp_path)
    busy_cancel, busy_started = threading.Event(), threading.Event()
    long = GenerationSettings(max_new_tokens=4000, min_new_tokens=4000, do_sample=False)

    def keep_busy():
        for _ in engine.stream(build_request([Turn("user", "busy")]), long, busy_cancel):
            busy_started.set()

    busy = threading.Thread(target=keep_busy)
    busy.start()
    try:
        assert busy_started.wait(30)
        session = voice.start(None)[0]
        for piece in (tone(1.5), silence(1.0)):
            session, _, _ = voice.chunk((16_000, piece), session)
        outputs: list = []
        answering = threading.Thread(target=lambda: outputs.extend(voice.answer([], session, GEN)))
        answering.start()
        assert wait_until(lambda: session.answer_cancel is not None and outputs, 10)
        voice.chunk((16_000, tone(0.5)), session)  # talks before the answer could start
        answering.join(10)
        assert not answering.is_alive() and busy.is_alive(), "the queued answer waited for the busy one"
        said = json.loads(outputs[-1][2])
        assert said["done"] and said["stopped"] and said["text"] == ""
        assert [m["role"] for m in outputs[-1][0]] == ["user"]  # the clip stays, with no answer
    finally:
        busy_cancel.set()
        busy.join(30)


def test_the_sidebar_shows_the_context_budget(engine):
    from phi_demo.ui.sidebar import facts_markdown

    facts = engine.status().facts
    assert facts is not None and facts.context_budget
    assert f"**Context budget:** `{facts.context_budget:,} prompt tokens`" in facts_markdown(facts)
