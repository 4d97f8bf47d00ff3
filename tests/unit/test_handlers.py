"""The UI handlers: what a person sees when something goes wrong, and that the chat survives."""

import copy
import json
import re
import threading

import gradio as gr
import pytest

from phi_demo.settings import AppSettings
from phi_demo.ui.chat import ChatHandlers, split_last_turn
from phi_demo.ui.sidebar import SidebarHandlers
from phi_demo.ui.versions import browse_answers, remember_answer
from tests.helpers import ROOT, run_async

IMAGE = str(ROOT / "assets" / "example_image.png")
GEN = {"system_prompt": "sys", "max_new_tokens": 8, "do_sample": False, "temperature": 0.7, "top_p": 0.95,
       "top_k": 50, "repetition_penalty": 1.0, "seed": -1}
HISTORY = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]},
           {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]}]


class FailingEngine:
    def __init__(self, engine, error):
        self._engine, self.error = engine, error

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def stream(self, request, gen, cancel):
        yield "partial "
        raise self.error


def run(handler_gen):
    outputs = []
    with pytest.raises(gr.Error) as err:
        for out in handler_gen:
            outputs.append(out)
    return outputs, err.value


@pytest.fixture
def handlers(engine):
    return ChatHandlers(engine, AppSettings(model="tiny-random", max_images=2))


def test_submit_streams_and_adds_stats(handlers):
    history = copy.deepcopy(HISTORY)
    outs = list(handlers.submit({"text": "Describe", "files": [IMAGE]}, history, GEN))
    final, _ = outs[-1]
    assert final[:2] == HISTORY
    assert final[2]["role"] == "user" and final[2]["content"] == [{"path": IMAGE}, "Describe"]
    assert final[3]["role"] == "assistant" and final[3]["content"]
    assert final[4]["metadata"]["title"].startswith("📊 ") and "tok/s" in final[4]["metadata"]["title"]
    assert history == HISTORY  # the input list itself is never mutated


def test_a_chat_past_the_clip_limit_goes_on_and_the_stats_line_says_what_was_left_out(engine):
    handlers = ChatHandlers(engine, AppSettings(model="tiny-random", max_audio_clips=1))
    clip = str(ROOT / "assets" / "example_question.wav")
    history = [{"role": "user", "content": [{"path": clip}]}, {"role": "assistant", "content": "An answer."}]
    final, _ = list(handlers.submit({"text": "", "files": [clip]}, history, GEN))[-1]
    assert final[-1]["metadata"]["title"].endswith("· oldest 1 audio clip not heard (clip limit)")
    assert final[:2] == history  # the chat still shows the first clip


@pytest.mark.parametrize("message,expected", [
    ({"text": "", "files": []}, "The message is empty"),
    ({"text": "x", "files": [str(ROOT / "README.md")]}, "README.md: this is not an image, audio, a video or a PDF"),
    ({"text": "x", "files": [IMAGE, IMAGE, IMAGE]}, "3 images; the limit is 2"),
])
def test_bad_input_is_refused_before_anything_changes(handlers, message, expected):
    outs, err = run(handlers.submit(message, copy.deepcopy(HISTORY), GEN))
    # Nothing was shown: the chat as it was, the message back in the box the page emptied.
    assert [(h, box["value"], box["submit_btn"]) for h, box in outs] == [(HISTORY, message, True)]
    assert expected in str(err)


def test_corrupt_image_message_and_history_kept(handlers, tmp_path):
    bad = tmp_path / "photo.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    message = {"text": "what", "files": [str(bad)]}
    outs, err = run(handlers.submit(message, copy.deepcopy(HISTORY), GEN))
    assert [(h, box["value"]) for h, box in outs] == [(HISTORY, message)]  # the chat as it was, the message back
    assert "photo.png: the image is damaged or truncated" in str(err)


@pytest.mark.parametrize("error", [RuntimeError("CUDA out of memory"), ValueError("odd failure")])
def test_failure_during_generation_rolls_back(engine, error):
    h = ChatHandlers(FailingEngine(engine, error), AppSettings(model="tiny-random"))
    message = {"text": "Hello?", "files": []}
    outs, err = run(h.submit(message, copy.deepcopy(HISTORY), GEN))
    history, box = outs[-1]
    assert history == HISTORY and box["value"] == message  # chat as before, message back in the box
    assert box["submit_btn"] and not box["stop_btn"]
    assert str(error) in str(err)


def test_retry_regenerates_last_answer(handlers):
    history = copy.deepcopy(HISTORY) + [{"role": "assistant", "content": "stats", "metadata": {"title": "📊"}}]
    outs = list(handlers.retry(history, GEN))
    final, box = outs[-1]
    assert final[0]["content"] == ["Hi"] and final[1]["role"] == "assistant" and final[1]["content"] != "Hello!"
    assert len(final) == 3 and box is not None


def test_the_box_shows_stop_only_while_an_answer_runs(handlers):
    outs = list(handlers.submit({"text": "Hi", "files": []}, [], GEN))
    first, last = outs[0][1], outs[-1][1]
    assert first["stop_btn"] and not first["submit_btn"] and "value" not in first  # the page emptied it
    # Every step says so again, never gr.skip(): the page applies each step as a diff of the
    # one before, in place, and a skip right after the first step would delete its buttons.
    assert all(box == first for _, box in outs[:-1]) and len(outs) > 2
    assert last["submit_btn"] and not last["stop_btn"] and "value" not in last
    assert handlers.stopped() == {"__type__": "update", "submit_btn": True, "stop_btn": False}


def _chat(handlers, *texts):
    history = []
    for text in texts:
        history = list(handlers.submit({"text": text, "files": []}, history, GEN))[-1][0]
    return history


def test_editing_a_message_drops_the_turns_after_it_and_answers_again(handlers):
    history = _chat(handlers, "first", "second", "third")
    users = [i for i, m in enumerate(history) if m["role"] == "user"]
    edited = copy.deepcopy(history)
    edited[users[1]]["content"] = ["second, edited"]  # what the page sends: the edit already shown
    final = list(handlers.edit(edited, users[1], "second, edited", GEN, previous_value=["second"]))[-1][0]
    assert [m["content"] for m in final if m["role"] == "user"] == [["first"], ["second, edited"]]
    assert final[:users[1]] == history[:users[1]] and final[-1]["metadata"]["title"].startswith("📊")


def test_editing_keeps_the_files_and_a_failure_restores_the_text(engine):
    h = ChatHandlers(FailingEngine(engine, RuntimeError("boom")), AppSettings(model="tiny-random"))
    history = [{"role": "user", "content": [{"path": IMAGE}, "What?"]}, {"role": "assistant", "content": "A house."}]
    edited = copy.deepcopy(history)
    edited[0]["content"] = [{"path": IMAGE}, "What colour?"]
    outs, err = run(h.edit(edited, 0, "What colour?", GEN, previous_value=history[0]["content"]))
    assert outs[0][0] == [{"role": "user", "content": [{"path": IMAGE}, "What colour?"]}]  # the image stays
    assert outs[-1][0] == history and "boom" in str(err)


def test_only_user_messages_can_be_edited(handlers):
    outs, err = run(handlers.edit(copy.deepcopy(HISTORY), 1, "x", GEN))
    assert outs == [] and "Only your own messages can be edited" in str(err)


def test_a_like_lands_in_the_feedback_file(engine, tmp_path, monkeypatch):
    path = tmp_path / "fb.jsonl"
    h = ChatHandlers(engine, AppSettings(model="tiny-random", feedback_file=str(path)))
    history = _chat(h, "first", "second")
    monkeypatch.setattr(gr, "Info", lambda *a, **k: None)
    stats_of_second = len(history) - 1  # a 👍 on the stats line counts for the answer above it
    h.feedback(history, stats_of_second, False, GEN)
    h.feedback(history, 1, True, GEN)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["liked"] for x in lines] == [False, True]
    assert [t["text"] for t in lines[0]["conversation"]] == ["first", history[1]["content"], "second"]
    assert lines[0]["answer"] == history[-2]["content"] and lines[1]["answer"] == history[1]["content"]
    assert lines[0]["settings"]["max_new_tokens"] == GEN["max_new_tokens"] and lines[0]["model"]["model"] == "tiny-random"


def test_feedback_is_off_on_a_space_unless_set(tmp_path):
    from phi_demo.chat.feedback import target

    assert target(None, on_space=True, cache=tmp_path) is None
    assert target(None, on_space=False, cache=tmp_path) == tmp_path / "feedback.jsonl"
    assert target(str(tmp_path / "x.jsonl"), on_space=True, cache=tmp_path) == tmp_path / "x.jsonl"
    assert target("off", on_space=False, cache=tmp_path) is None


def test_retried_answers_can_be_browsed_and_the_one_shown_continues(handlers):
    sampled = {**GEN, "do_sample": True, "temperature": 2.0, "max_new_tokens": 12}
    history = list(handlers.submit({"text": "Tell me", "files": []}, [], sampled))[-1][0]
    versions, *controls = remember_answer(None, history)
    assert not controls[0]["visible"]  # one answer: nothing to browse
    answers = [history[1]["content"]]
    for _ in range(2):
        history = list(handlers.retry(history, sampled))[-1][0]
        versions, prev, label, nxt = remember_answer(versions, history)
        answers.append(history[1]["content"])
    assert len(set(answers)) == 3, "sampling at temperature 2 gave the same answer twice"
    assert label["value"] == "Answer 3 of 3" and prev["interactive"] and not nxt["interactive"]
    history, versions, prev, label, nxt = browse_answers(versions, history, -2)
    assert history[1]["content"] == answers[0] and label["value"] == "Answer 1 of 3" and not prev["interactive"]
    # The chosen answer continues the chat; a new question starts a new set.
    history = list(handlers.submit({"text": "And then?", "files": []}, history, GEN))[-1][0]
    assert history[1]["content"] == answers[0]
    versions, *controls = remember_answer(versions, history)
    assert len(versions.answers) == 1 and not controls[0]["visible"]


def test_a_greedy_retry_that_repeats_itself_is_not_a_new_version(handlers):
    history = list(handlers.submit({"text": "Tell me", "files": []}, [], GEN))[-1][0]
    versions, *_ = remember_answer(None, history)
    history = list(handlers.retry(history, GEN))[-1][0]
    versions, *_ = remember_answer(versions, history)
    assert len(versions.answers) == 1


def test_retry_with_nothing_to_retry(handlers):
    outs, err = run(handlers.retry([], GEN))
    assert "no question to answer again" in str(err)


def test_undo_puts_the_message_back():
    history = [{"role": "user", "content": [{"type": "file", "file": {"path": IMAGE}}, {"type": "text", "text": "What?"}]},
               {"role": "assistant", "content": "A house."}]
    before, message = split_last_turn(copy.deepcopy(HISTORY) + history)
    assert before == HISTORY and message == {"text": "What?", "files": [IMAGE]}


@pytest.fixture
def sidebar(engine):
    return SidebarHandlers(engine, AppSettings(model="tiny-random"))


def test_attention_choice_that_cannot_run_is_refused(sidebar, engine, monkeypatch):
    warnings = []
    monkeypatch.setattr(gr, "Warning", lambda msg, *a, **k: warnings.append(msg))
    value, _, _ = sidebar.change_attention("flash_attention_2")
    assert value == engine.attn and warnings == ["flash_attention_2 cannot be used here: needs a CUDA GPU."]
    assert "flash_attention_2: needs a CUDA GPU" in sidebar.attention_info()


def test_status_and_tiny_banner(sidebar):
    assert "`tiny-random`" in sidebar.status_markdown() and "`cpu`" in sidebar.status_markdown()
    assert "random noise" in sidebar.banner_markdown()


def test_the_sidebar_reads_the_typed_model_facts(engine):
    from phi_demo.contract import EngineStatus, ModelFacts

    facts = ModelFacts(model="m", device="cuda:0", attention="sdpa", adapters=("vision",), cuda_allocated_gb=1.5)
    shown = SidebarHandlers(engine, AppSettings(model="tiny-random")).status_markdown(EngineStatus("ready", "", facts))
    assert "- **Device:** `cuda:0`" in shown and "- **Adapters:** `vision`" in shown
    assert "- **GPU memory in use:** `1.5 GB`" in shown and "Revision" not in shown  # what is not known is left out
    server = ModelFacts(model="phi", server="http://x/v1", served_models=("phi", "phi-speech"), attention="server")
    shown = SidebarHandlers(engine, AppSettings(model="tiny-random")).status_markdown(EngineStatus("ready", "", server))
    assert "- **Served models:** `phi, phi-speech`" in shown


def test_the_page_follows_the_load_then_stops_listening(engine, monkeypatch):
    """The page hears of the load's progress from one streamed event, not by asking every second."""
    import asyncio

    from phi_demo.contract import EngineStatus

    class Loading:
        def __init__(self):
            self.states = [EngineStatus("loading", "Downloading 1 of 2 files…")] * 2 + \
                [EngineStatus("loading", "Loading tiny-random…")] + [engine.status()] * 5

        def status(self):
            return self.states.pop(0)

        def __getattr__(self, name):
            return getattr(engine, name)

    async def follow():
        sidebar = SidebarHandlers(Loading(), AppSettings(model="tiny-random"))
        return [md async for md, _banner in sidebar.follow_model()]

    sleeps = []
    real_sleep = asyncio.sleep

    async def no_wait(seconds, *args, **kwargs):
        # Other event loops of this process (a server left by earlier tests) sleep for real.
        if threading.current_thread().name != "follow-model":
            return await real_sleep(seconds, *args, **kwargs)
        sleeps.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", no_wait)
    shown = run_async(follow(), name="follow-model")
    assert [md.splitlines()[0] for md in shown] == ["⏳ Downloading 1 of 2 files…", "⏳ Loading tiny-random…",
                                                    "- **Model:** `tiny-random`"]  # each change once, then done
    assert sleeps == [1.0] * 3


def test_model_unavailable_banner_says_how_to_fix():
    from phi_demo.engine.local import Engine
    from phi_demo.errors import ModelUnavailable

    e = Engine(AppSettings(offline=True))
    with pytest.raises(ModelUnavailable):
        e.load()
    h = ChatHandlers(e, AppSettings(offline=True))
    banner = SidebarHandlers(e, AppSettings(offline=True)).banner_markdown()
    assert "unavailable" in banner and "--model" in banner and "tiny-random" in banner
    outs, err = run(h.submit({"text": "hi", "files": []}, [], GEN))
    assert outs[-1][0] == [] and "tiny-random" in str(err)


def test_a_long_prefill_says_what_it_is_reading(handlers, monkeypatch):
    from phi_demo.engine import generation

    monkeypatch.setattr(generation, "NOTICE_TOKENS", 100)  # the tiny model's image prompt is ~700 tokens
    outs = list(handlers.submit({"text": "Describe", "files": [IMAGE]}, [], GEN))
    pending = [i for i, (h, _) in enumerate(outs) if (h[-1].get("metadata") or {}).get("status") == "pending"]
    assert pending, "no notice before the first token"
    note = outs[pending[0]][0][-1]["metadata"]["title"]
    assert re.fullmatch(r"⏳ Reading the image: [\d,]+ tokens…", note), note
    first_text = next(i for i, (h, _) in enumerate(outs) if h[-1]["role"] == "assistant" and h[-1]["content"])
    assert pending[-1] < first_text  # shown before the answer, and gone once it streams
    final = outs[-1][0]
    assert not any((m.get("metadata") or {}).get("status") == "pending" for m in final)


def test_prefill_notice_wording():
    from phi_demo.contract import ModelRequest
    from phi_demo.engine.generation import prefill_notice

    req = ModelRequest("p", images=[1, 2], audios=[3])
    assert prefill_notice(req, 100) is None
    assert prefill_notice(req, 1682).text == "Reading 2 images and the audio: 1,682 tokens…"
    assert prefill_notice(req, 900, done=(2, 1)).text == "Reading the conversation: 900 tokens…"


class Tab:
    """What Gradio hands a handler about the tab an event comes from."""

    def __init__(self, session_hash):
        self.session_hash = session_hash


def test_the_box_goes_back_to_send_only_when_no_answer_runs_in_that_tab(handlers):
    """After an event that changed the chat, the box goes back to send; but an answer that
    began meanwhile in that tab (a voice turn waiting behind a cancelled answer) keeps its
    stop button, and another tab's answer does not count."""
    running = handlers.answer({"text": "Hi", "files": []}, history=[], rollback=[], from_box=False, values=GEN,
                              tab="a")
    _, box = next(running)
    assert box["stop_btn"]
    assert handlers.box_back(Tab("a")) == gr.skip()
    assert handlers.box_back(Tab("b")) == {"__type__": "update", "submit_btn": True, "stop_btn": False}
    running.close()  # what Gradio does to a cancelled answer before the cancelling event runs
    assert handlers.box_back(Tab("a"))["submit_btn"]


def test_a_failed_answer_does_not_count_as_running(engine):
    h = ChatHandlers(FailingEngine(engine, RuntimeError("boom")), AppSettings(model="tiny-random"))
    run(h.submit({"text": "Hi", "files": []}, [], GEN, tab="a"))
    assert h.box_back(Tab("a"))["submit_btn"]


def test_a_tab_is_not_told_of_its_own_attention_switch_while_it_applies(engine, monkeypatch):
    """A switch waits for the running answer; the tab that asked for it polls meanwhile and
    must not hear of it as another user's, nor have its radio moved (its person may have
    chosen again since)."""
    infos = []
    monkeypatch.setattr(gr, "Info", lambda msg, *a, **k: infos.append(msg))
    sidebar = SidebarHandlers(engine, AppSettings(model="tiny-random"))
    start = engine.attn
    other = "eager" if start != "eager" else "sdpa"
    seen = sidebar.sync_attention(start, None, Tab("me"))[2]
    real_switch = engine.set_attention
    polls = []

    def switch_then_poll(name):  # the switch has happened; this tab's poll comes before the answer
        result = real_switch(name)
        polls.append(sidebar.sync_attention(start, seen, Tab("me")))
        return result

    monkeypatch.setattr(engine, "set_attention", switch_then_poll)
    try:
        value, _md, seen = sidebar.change_attention(other, Tab("me"))
        assert value == gr.skip() and engine.attn == other and seen == (other, engine.attn_changes)
        assert polls[0][0] == gr.skip() and not any("Another user" in i for i in infos)
        assert sidebar.sync_attention(start, (start, 0), Tab("me"))[0] == gr.skip()  # done: still its own
        told = sidebar.sync_attention(start, (start, 0), Tab("someone else"))
        assert told[0] == other and "Another user switched the attention implementation" in infos[-1]
    finally:
        monkeypatch.undo()
        engine.set_attention(start)


def test_a_save_that_comes_late_does_not_take_the_page_back_to_its_chat(tmp_path):
    """New chat pressed while the last answer's save step still waited: that save keeps the chat
    in the list but must not point the page at it again. It did, and the next answer in the new
    chat was saved over it."""
    from phi_demo.ui.chats import NO_CHAT, ChatsHandlers

    ch = ChatsHandlers(AppSettings(chats_dir=str(tmp_path)))
    first = [{"role": "user", "content": "Remember this house"}, {"role": "assistant", "content": "I will."}]
    saved, current, listing = ch.save(first, None, NO_CHAT)  # the first save names the chat
    assert current != NO_CHAT and listing.value == current
    second = first + [{"role": "user", "content": "What colour is the roof?"}, {"role": "assistant", "content": "Red."}]
    chat, blank, _, _ = ch.new()  # New chat, then the second answer's save arrives
    assert chat == [] and blank == NO_CHAT
    saved, pointer, listing = ch.save(second, saved, current)
    assert pointer == gr.skip()
    assert listing == gr.update(choices=[("Remember this house", current)])  # the list only, nothing picked
    assert saved["chats"][current]["messages"][-2]["content"] == "What colour is the roof?"
