"""Voice mode in headless Chromium: the fake microphone plays spoken turns with pauses
between them (made with espeak-ng), over and over."""

import contextlib
import dataclasses
import json
import os
import re
import shutil
import subprocess

import pytest

from phi_demo.chat.policy import EARLIER_CLIP, TRANSCRIBED_CLIP
from phi_demo.contract import GenerationStats
from tests.browser.conftest import launch_with_microphone, start_recording
from tests.browser.test_ui import SEND, SHOTS, STOP, bot_texts
from tests.helpers import ROOT, generate_threads, wait_until

pytestmark = pytest.mark.browser
TURNS = ["What is the capital of France?", "Tell me a short joke about cats.", "Now tell me about dogs instead."]


@pytest.fixture(scope="module")
def conversation_48k(tmp_path_factory):
    """Three utterances, each followed by 3 s of silence, then 57 s more of it, at 48 kHz as a
    microphone gives (the fake microphone plays it in a loop). The quiet spell keeps the
    first utterance from coming round again while a test looks at the third turn's answer."""
    folder = tmp_path_factory.mktemp("voice")
    parts = []
    for i, text in enumerate(TURNS):
        raw = folder / f"{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(raw), text], check=True)
        parts.append(str(raw))
    out = folder / "conversation48k.wav"
    padded = []
    for i, part in enumerate(parts):
        out_i = folder / f"p{i}.wav"
        subprocess.run(["sox", part, "-r", "48000", "-c", "1", str(out_i), "pad", "0.5" if i == 0 else "0", "60" if i == len(parts) - 1 else "3"],
                       check=True)
        padded.append(str(out_i))
    subprocess.run(["sox", *padded, str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def voice_browser(playwright, conversation_48k):
    b = launch_with_microphone(playwright, conversation_48k)
    yield b
    b.close()


def open_voice(browser, server, viewport):
    ctx = browser.new_context(permissions=["microphone"], viewport=viewport)
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    pg.goto(server.url)
    pg.wait_for_selector("#message textarea")
    pg.wait_for_function("document.querySelector('#model-status').innerText.includes('tiny-random')")
    pg.locator("#voice-panel").get_by_text("Voice mode").click()
    pg.wait_for_selector("#voice-mic button.record-button")
    return ctx, pg


def set_max_new(pg, n):
    if pg.viewport_size["width"] < 768:
        return  # the sidebar is closed on a phone; the server default applies
    pg.fill("#max-new-tokens input[type=number]", str(n))
    pg.press("#max-new-tokens input[type=number]", "Enter")


def user_audio_turns(pg):
    return pg.locator("#chatbot [data-testid=user] audio").count()


def stats_lines(pg):
    return [t for t in bot_texts(pg) if "tok/s" in t]


# The chat in page order: the clips shown above the typed question, and whether an answer
# with its stats line follows it.
IN_ORDER = """() => {
  const typed = [...document.querySelectorAll('#chatbot [data-testid=user]')]
    .filter(e => e.innerText.includes('And in writing?')).pop();  // the innermost, if they nest
  if (!typed) return {typedAnswered: false, clipsAbove: 0};
  const before = (e) => typed.compareDocumentPosition(e) & Node.DOCUMENT_POSITION_PRECEDING;
  const after = (e) => typed.compareDocumentPosition(e) & Node.DOCUMENT_POSITION_FOLLOWING;
  return {typedAnswered: [...document.querySelectorAll('#chatbot [data-testid=bot]')]
            .some(e => after(e) && e.innerText.includes('tok/s')),
          // the player itself sits in a shadow root; the message names its kind
          clipsAbove: [...document.querySelectorAll('#chatbot [data-testid=user][aria-label*="type audio"]')]
            .filter(before).length};
}"""


def norm(text):
    return " ".join(re.sub(r"[*_`#>]+", "", text).split())  # as the page reads it out


def test_two_spoken_turns_get_two_answers_read_aloud_without_a_click(voice_browser, server):
    ctx, pg = open_voice(voice_browser, server, {"width": 1280, "height": 1000})
    try:
        set_max_new(pg, 6)
        before = len(server.engine.requests)
        answers_before = len(server.engine.answers)
        start_recording(pg, "#voice-mic")
        pg.wait_for_function("document.querySelector('#voice-state').innerText.includes('Listening')")
        assert wait_until(lambda: user_audio_turns(pg) >= 2 and len(stats_lines(pg)) >= 2, 60), \
            (user_audio_turns(pg), bot_texts(pg))
        SHOTS.mkdir(exist_ok=True)
        pg.set_viewport_size({"width": 1280, "height": 1500})  # the chat and the voice panel together
        pg.locator("#chatbot").scroll_into_view_if_needed()
        pg.screenshot(path=str(SHOTS / "voice.png"))
        if os.environ.get("PHI_DEMO_UPDATE_SCREENSHOT"):
            shutil.copy(SHOTS / "voice.png", ROOT / "docs" / "voice.png")
        pg.locator("#voice-mic").get_by_text("Stop").click()
        # A voice conversation is a normal chat: it goes on by typing, with the clips in it.
        assert wait_until(lambda: not generate_threads(), 30)
        pg.wait_for_selector(SEND, state="visible")
        pg.fill("#message textarea", "And in writing?")
        pg.press("#message textarea", "Enter")
        # A turn heard just before Stop is still answered, before or after the typed question
        # as it happens: the typed question's prompt holds exactly the clips shown above it.
        pg.wait_for_function(f"({IN_ORDER})().typedAnswered", timeout=60_000)
        clips_above = pg.evaluate(f"({IN_ORDER})().clipsAbove")
        typed = next(r for r, _, _ in server.engine.requests if "And in writing?" in r.prompt)  # its own request
        left_out = typed.prompt.count(EARLIER_CLIP) + typed.prompt.count(TRANSCRIBED_CLIP)
        assert clips_above >= 2 and typed.prompt.count("<|audio|>") + left_out == clips_above
    finally:
        spoken = pg.evaluate("window.phiVoice ? window.phiVoice.spoken : []")
        ctx.close()
    turns = [r for r, _, _ in server.engine.requests[before:]]
    assert len(turns) >= 2
    for request in turns[:2]:
        # An audio clip and no text: the model card's speech-QA form.
        assert request.prompt.endswith("<|user|><|audio|><|end|><|assistant|>") and request.modality == "speech"
        seconds = len(request.audios[-1]) / 16000
        assert 1.0 < seconds < 5.0, seconds
    # The page asked the browser to speak each answer, all of it, in order.
    said = norm(" ".join(spoken))
    for answer in server.engine.answers[answers_before:answers_before + 2]:
        assert norm(answer) in said, (answer, spoken)


@contextlib.contextmanager
def answers_held_open(server, hold_s=180.0):
    """Every chat answer streams the model's text, then stays open until something stops it
    (talking over it, Stop), for at most `hold_s`: an answer still running whenever the next
    turn comes, however fast or slow this machine decodes. Yields the stop flags of the
    answers held open now. An answer stopped while held says so in its stats, as one stopped
    while the model was still generating does.

    The model's own part is kept short: a long answer streaming into the page starves the
    fake microphone's capture on a small machine (the page then hears the next utterance
    many seconds late, or not at all)."""
    recorder = server.engine
    held = []

    def stream(request, gen, cancel):
        pieces = type(recorder).stream(recorder, request, gen, cancel)
        try:
            for piece in pieces:
                if isinstance(piece, GenerationStats) and not request.urgent:
                    held.append(cancel)
                    try:
                        cancel.wait(hold_s)
                    finally:
                        held.remove(cancel)
                    if cancel.is_set():
                        piece = dataclasses.replace(piece, cancelled=True, finish_reason="cancelled")
                yield piece
        finally:
            pieces.close()

    recorder.stream = stream
    try:
        yield held
    finally:
        del recorder.stream
        for cancel in list(held):
            cancel.set()


def answering(server, held):
    """An answer runs: the model generates it, or it is held open."""
    return bool(generate_threads() or held)


def test_talking_over_the_answer_stops_it_and_starts_the_next_turn(voice_browser, server):
    ctx, pg = open_voice(voice_browser, server, {"width": 1280, "height": 1000})
    with answers_held_open(server) as held:
        try:
            set_max_new(pg, 24)
            start_recording(pg, "#voice-mic")
            # The second utterance talks over the first answer: it stops, and says so.
            assert wait_until(lambda: any("stopped" in t for t in stats_lines(pg)), 90), bot_texts(pg)
            assert pg.evaluate("window.phiVoice.bargeIns") >= 1  # the page stopped its own speech too
            # The utterance that interrupted is the next user turn; the third talks over its
            # answer in turn, and is answered: no one talks over that one.
            def third_answered():
                return (EARLIER_CLIP in server.engine.requests[-1][0].prompt and user_audio_turns(pg) >= 3
                        and answering(server, held) and pg.is_visible(STOP))

            assert wait_until(third_answered, 90), (user_audio_turns(pg), answering(server, held), pg.is_visible(STOP),
                                           stats_lines(pg), server.engine.requests[-1][0].prompt[-200:])
            # This server keeps 2 clips: the third turn was answered with the first clip left out.
            # The message box's Stop ends a voice answer like any other: the page leaves
            # "Thinking" for "Listening" while the microphone still records, and nothing more
            # is generated (the turns still waiting are dropped: Stop means quiet).
            asked = len(server.engine.requests)
            pg.click(STOP)
            pg.wait_for_function("document.querySelector('#voice-state').dataset.state === 'listening'",
                                 timeout=10_000)
            assert wait_until(lambda: not answering(server, held), 10), "the answer went on after Stop"
            pg.wait_for_selector(SEND, state="visible")
            pg.locator("#voice-mic").get_by_text("Stop").click()
            pg.locator("#voice-mic button.record-button").wait_for()
            assert not answering(server, held) and len(server.engine.requests) == asked, \
                "a turn waiting at Stop was answered"
        finally:
            ctx.close()


def test_the_answer_is_spoken_sentence_by_sentence_as_it_arrives(voice_browser, server):
    """The page's side alone: the answer so far is written into the box the page reads, as
    the server's updates do, and the page's change event hands it over."""
    ctx, pg = open_voice(voice_browser, server, {"width": 1280, "height": 1000})
    try:
        def stream(text, done=False, turn=99, stopped=False):
            before = pg.evaluate("window.phiVoice.updates")
            pg.evaluate("""([value]) => {
                const box = document.querySelector('#voice-say textarea');
                box.value = value;
                box.dispatchEvent(new Event('input', {bubbles: true}));
            }""", [json.dumps({"turn": turn, "text": text, "done": done, "stopped": stopped})])
            pg.wait_for_function(f"window.phiVoice.updates > {before}")
            return pg.evaluate("window.phiVoice.spoken.slice()")

        assert stream("Paris is the capital") == []  # no sentence finished yet
        assert stream("Paris is the capital. It lies on the Seine") == ["Paris is the capital."]
        assert stream("Paris is the capital. It lies on the Seine! About **two** million") == [
            "Paris is the capital.", "It lies on the Seine!"]
        assert stream("Paris is the capital. It lies on the Seine! About **two** million live there",
                      done=True)[-1] == "About two million live there"  # the rest, once done; no markdown read out
        # A new turn starts afresh; a stopped answer says nothing more.
        assert stream("Dogs bark.", turn=100)[-1] == "Dogs bark."
        before = len(pg.evaluate("window.phiVoice.spoken"))
        assert len(stream("Cats purr. More", turn=101, stopped=True, done=True)) == before
    finally:
        ctx.close()


def test_voice_mode_on_a_phone(voice_browser, server):
    ctx, pg = open_voice(voice_browser, server, {"width": 390, "height": 844})
    try:
        box = pg.locator("#voice-mic button.record-button").bounding_box()
        assert box["width"] >= 250 and box["height"] >= 44, box  # one big button
        start_recording(pg, "#voice-mic")
        pg.wait_for_function("document.querySelector('#voice-state').innerText.includes('Listening')")
        pg.locator("#voice-state").scroll_into_view_if_needed()
        pg.screenshot(path=str(SHOTS / "voice-phone.png"))
        pg.locator("#voice-mic").get_by_text("Stop").click()
    finally:
        ctx.close()
