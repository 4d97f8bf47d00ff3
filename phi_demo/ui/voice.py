"""Voice mode: talk, pause, hear the answer. Gradio only.

The microphone streams into `phi_demo.speech.voice.VoiceTurns`; each finished turn goes into the
chat as an audio clip with no text (the model card's speech-QA form), through the chat's own
answer path, so a voice conversation is a normal chat: continued by typing, saved, exported.
The browser speaks the answer sentence by sentence with the Web Speech API as it streams
(VOICE_JS); speaking while it answers stops the speech and the generation (barge-in)."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import gradio as gr
import numpy as np
import soundfile as sf
from gradio.events import Dependency

from phi_demo.chat.messages import Turn, normalize_history
from phi_demo.media.audio import SAMPLE_RATE, to_mono_16k
from phi_demo.speech.vad import SpeechFrames
from phi_demo.speech.voice import VoiceTurns
from phi_demo.ui.chat import BoxUpdate, ChatHandlers, History, message_box, tab_of, user_message

_ids = itertools.count(1)


class Detector(Protocol):
    def stream(self) -> SpeechFrames: ...


@dataclass(frozen=True)
class HeardTurn:
    number: int  # the page's number for it: what it reads answers to
    path: str  # the turn's audio, as a file the chat shows and the model hears


class VoiceSession:
    """One tab's voice conversation: its detector state, the turns waiting to be answered,
    and the running answer's stop flag (set by barge-in and by Stop)."""

    def __init__(self, vad: Detector):
        self.id = next(_ids)
        self.turns = VoiceTurns(vad.stream())
        self.lock = threading.Lock()  # the microphone's requests and the answer's run apart
        self.pending: list[HeardTurn] = []
        self.answer_cancel: threading.Event | None = None
        self.answer_turn: int | None = None  # the number of the last turn an answer began for
        self.interrupted = False  # the running answer was stopped: by barge-in or Stop
        self.phase = "listening"  # what the page shows: idle, listening, hearing, thinking
        self.wakeups = 0  # each new value of the page's trigger box starts the answer event


# What the answer event yields: the chat, the message box, what the page reads out.
VoiceShown = tuple[History, BoxUpdate, str]


class VoiceHandlers:
    def __init__(self, chat: ChatHandlers, vad: Detector, folder: Path):
        self.chat, self.vad, self.folder = chat, vad, folder
        folder.mkdir(parents=True, exist_ok=True)

    def start(self, session: VoiceSession | None) -> tuple[VoiceSession, str]:
        """Record pressed: a fresh detector; turns already heard but not answered are kept."""
        if session is None:
            session = VoiceSession(self.vad)
        else:
            session.turns = VoiceTurns(self.vad.stream(), turns=session.turns.turns)
        session.phase = "listening"
        return session, "listening"

    def chunk(self, chunk: tuple[int, np.ndarray] | None,
              session: VoiceSession | None) -> tuple[VoiceSession, str, str | dict[str, Any]]:
        """Each half second of microphone audio. Returns (session, phase, turn trigger)."""
        if session is None:
            session = self.start(None)[0]
        if chunk is None:
            return session, session.phase, gr.skip()
        sample_rate, samples = chunk
        woke = False
        for event, audio in session.turns.feed(to_mono_16k(samples, sample_rate)):
            with session.lock:
                if event == "onset":
                    session.phase = "hearing"  # the page stops speaking at once
                    running = session.answer_cancel
                    if running is not None and not running.is_set():
                        session.interrupted = True
                        running.set()  # the answer being generated stops within a token
                    continue
                if event == "turn" and audio is not None:
                    session.pending.append(HeardTurn(session.turns.turns, self._save(audio, session)))
                # After a noise, the turns it held back (see _next) go on.
                session.phase = "thinking" if session.pending else "listening"
                if session.pending:
                    session.wakeups += 1
                    woke = True
        return session, session.phase, f"{session.id}:{session.wakeups}" if woke else gr.skip()

    def stop(self, session: VoiceSession | None) -> tuple[VoiceSession | None, str]:
        if session is not None:
            session.phase = "idle"
        return session, "idle"

    @staticmethod
    def drop_waiting(history: History | None, session: VoiceSession | None) -> str | dict[str, Any]:
        """The message box's Stop: Stop means quiet. The turns heard but not yet answered are
        dropped, and the voice answer running now is stopped by its own flag too: a turn
        that waited behind the answer Gradio cancelled can begin before this step runs.
        Returns what the page reads: the answer is over and stopped. A cancelled answer never
        says so itself, and the page would show "Thinking" and keep reading what it had."""
        if session is None:
            return gr.skip()
        with session.lock:
            session.pending.clear()
            if session.answer_cancel is not None:
                session.interrupted = True
                session.answer_cancel.set()
            turn = session.answer_turn
        return gr.skip() if turn is None else say(history, turn, done=True, stopped=True)

    def _save(self, audio: np.ndarray, session: VoiceSession) -> str:
        path = self.folder / f"voice-{session.id}-{session.turns.turns}.wav"
        sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
        return str(path)

    def _next(self, session: VoiceSession) -> tuple[HeardTurn, threading.Event | None] | None:
        """The oldest turn waiting and the stop flag of its answer; no flag when it was
        talked over: the person spoke again before its answer could begin, so it gets none
        (as if they had talked over that answer) and the next turn is answered after it. Its
        clip stays in the chat, so the model hears it with the next one as a single question
        (consecutive user messages merge): nothing said is lost, and no answer is read out
        to words the person has already moved past.
        None while nothing waits, or while the person is talking (that turn's end, or the
        noise it turns out to be, wakes the answer event again)."""
        with session.lock:
            if not session.pending or session.phase == "hearing":
                return None
            turn = session.pending.pop(0)
            session.answer_turn = turn.number
            session.interrupted = bool(session.pending)
            if session.interrupted:
                return turn, None
            session.answer_cancel = threading.Event()
            return turn, session.answer_cancel

    def answer(self, history: History | None, session: VoiceSession | None, values: dict[str, Any],
               tab: str = "-") -> Iterator[VoiceShown]:
        """The chat answers every turn waiting, oldest first, one after the other (turns heard
        while this runs are answered here too, however the page's triggers were merged).
        The box shows its Stop button while an answer runs, as for a typed question."""
        if session is None:
            return
        history = list(history or [])
        while (nxt := self._next(session)) is not None:
            turn, cancel = nxt
            if cancel is None:
                history = history + [user_message(Turn("user", "", (turn.path,)))]
                yield history, message_box(False), say(history, turn.number, done=True, stopped=True)
                continue
            last, box = history, message_box(False)
            try:
                for last, box in self.chat.answer({"text": "", "files": [turn.path]}, history=history,
                                                  rollback=history, from_box=False, values=values,
                                                  cancel=cancel, tab=tab):
                    yield last, box, say(last, turn.number, done=False)
            finally:
                with session.lock:
                    if session.answer_cancel is cancel:
                        session.answer_cancel = None
                    if session.phase == "thinking" and not session.pending:
                        session.phase = "listening"
            yield last, box, say(last, turn.number, done=True, stopped=session.interrupted)
            history = last


def say(history: History | None, turn: int, done: bool, stopped: bool = False) -> str:
    """What the page speaks: the answer so far to voice turn `turn`. Titled messages (the
    stats line, a long-prefill notice) are display only and are not spoken."""
    turns = normalize_history(list(history or []))
    text = turns[-1].text if turns and turns[-1].role == "assistant" else ""
    return json.dumps({"turn": turn, "text": text, "done": done, "stopped": stopped})


# The browser side, run by events: the hidden "say" box (the answer so far) and the phase
# box call update() whenever the server changes them, and the speech synthesizer's own
# start/end events refresh the state shown. It speaks each finished sentence once, and stops
# speaking when the person starts to talk. Every sentence handed to speechSynthesis is also
# recorded in window.phiVoice.spoken: headless browsers may have no voices, so tests count
# what was asked, not what was heard.
VOICE_JS = r"""() => {
  if (window.phiVoice) return;
  const synth = window.speechSynthesis;
  const v = window.phiVoice = {spoken: [], bargeIns: 0, updates: 0, turn: null, offset: 0, lastPhase: null,
                               quiet: null, said: null, phase: "idle"};
  const $ = (s) => document.querySelector(s);
  const sentenceEnd = /[.!?\u3002\uff01\uff1f](?=\s|$)|\n/g;
  function fillVoices() {
    const pick = $("#voice-voice select");
    if (!pick || !synth) return;
    const voices = synth.getVoices();
    if (pick.options.length === voices.length + 1) return;
    pick.innerHTML = '<option value="">Browser default</option>' + voices.map((x) =>
      `<option value="${x.voiceURI.replace(/"/g, "&quot;")}">${x.name} (${x.lang})</option>`).join("");
  }
  function show() {
    const phase = v.phase, said = v.said;
    const speaking = synth && (synth.speaking || synth.pending) && !(said && said.stopped);
    const state = phase === "idle" ? "idle" : phase === "hearing" ? "listening"
      : (phase === "thinking" || (said && !said.done)) && !speaking ? "thinking" : speaking ? "speaking" : "listening";
    const box = $("#voice-state");
    if (box && box.dataset.state !== state) {
      box.dataset.state = state;
      box.querySelector(".voice-state-text").textContent = {idle: "Press Record to talk",
        listening: "🎙️ Listening", thinking: "💭 Thinking", speaking: "🔊 Speaking"}[state];
    }
  }
  function speak(text) {
    text = text.replace(/[*_`#>]+/g, "").replace(/\s+/g, " ").trim();  // markdown is not read out
    if (!text) return;
    v.spoken.push(text);
    if (!synth || ($("#voice-mute input") || {}).checked) return;
    const u = new SpeechSynthesisUtterance(text);
    fillVoices();
    const pick = $("#voice-voice select");
    const voice = pick && synth.getVoices().find((x) => x.voiceURI === pick.value);
    if (voice) { u.voice = voice; u.lang = voice.lang; }
    u.onstart = u.onend = u.onerror = show;
    synth.speak(u);
  }
  v.update = (sayValue, phase) => {
    v.updates += 1;
    v.phase = phase || "idle";
    if (v.phase === "hearing" && v.lastPhase !== "hearing") {  // barge-in: stop talking at once
      v.bargeIns += 1;
      if (synth) synth.cancel();
    }
    v.lastPhase = v.phase;
    let said = null;
    try { said = JSON.parse(sayValue || "null"); } catch (e) {}
    v.said = said;
    if (said && said.turn !== v.turn) { v.turn = said.turn; v.offset = 0; v.quiet = null; if (synth) synth.cancel(); }
    if (said && said.stopped && v.quiet !== said.turn) {  // interrupted or Stop pressed: what is queued goes too
      v.quiet = said.turn;
      if (synth) synth.cancel();
    }
    if (said && !said.stopped && v.phase !== "hearing") {
      const text = said.text;
      let end = v.offset, m;
      sentenceEnd.lastIndex = v.offset;
      while ((m = sentenceEnd.exec(text)) !== null) end = m.index + m[0].length;
      if (said.done) end = text.length;
      if (end > v.offset) { speak(text.slice(v.offset, end)); v.offset = end; }
    }
    show();
  };
  if (synth) synth.onvoiceschanged = fillVoices;
  document.addEventListener("focusin", (e) => { if (e.target.closest && e.target.closest("#voice-voice")) fillVoices(); });
}"""
# Both hidden boxes hand their values to the page's side when the server changes either.
VOICE_UPDATE_JS = "(said, phase) => { if (window.phiVoice) window.phiVoice.update(said, phase); return []; }"

VOICE_CSS = """
#voice-mic button.record-button, #voice-mic button.stop-button { min-height: 3.5em; font-size: 1.2em; width: 100%; }
#voice-state { font-size: 1.3em; font-weight: 600; text-align: center; padding: 0.4em; }
.phi-hidden { display: none !important; }
"""


class VoicePanel:
    """Declared where it shows (under the chat's message box); wired once the chat's
    settings exist."""

    def __init__(self, chat_handlers: ChatHandlers, vad: tuple[Detector, str], folder: Path):
        self.h = VoiceHandlers(chat_handlers, vad[0], folder)
        with gr.Accordion("🎙️ Voice mode: talk, pause, hear the answer", open=False, elem_id="voice-panel"):
            gr.Markdown("Press **Record** and talk. When you pause, your words go to the chat and the answer is "
                        f"read aloud as it arrives. Talk over it to interrupt. Pauses are found by **{vad[1]}**. "
                        "Headphones keep the answer's voice out of the microphone.")
            gr.HTML('<div><span class="voice-state-text">Press Record to talk</span></div>', elem_id="voice-state")
            self.mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="Voice",
                                elem_id="voice-mic")
            with gr.Row():
                gr.HTML('<label>Voice <select aria-label="Voice for reading answers aloud">'
                        '<option value="">Browser default</option></select></label>', elem_id="voice-voice")
                gr.HTML('<label><input type="checkbox"> Mute</label>', elem_id="voice-mute")
            # The page's side of the conversation (VOICE_JS reads them); hidden, not left out.
            self.phase = gr.Textbox("idle", elem_id="voice-phase", elem_classes="phi-hidden", show_label=False)
            self.trigger = gr.Textbox(elem_id="voice-trigger", elem_classes="phi-hidden", show_label=False)
            self.say = gr.Textbox(elem_id="voice-say", elem_classes="phi-hidden", show_label=False)
        self.session = gr.State(None)

    def drop_waiting(self, history: History | None, session: VoiceSession | None) -> str | dict[str, Any]:
        return self.h.drop_waiting(history, session)

    def wire(self, chatbot: gr.Chatbot, textbox: gr.MultimodalTextbox, values_inputs: list[Any],
             on_values: Callable[[dict[Any, Any]], dict[str, Any]]) -> Dependency:
        """Returns the answer event (Stop, Clear and the chat list cancel it like any answer)."""
        h = self.h
        self.mic.start_recording(h.start, [self.session], [self.session, self.phase], api_visibility="private")
        # Each tab's stream stays open for its whole recording: no shared slot (as the live view).
        self.mic.stream(h.chunk, [self.mic, self.session], [self.session, self.phase, self.trigger],
                        stream_every=0.5, time_limit=60 * 60, concurrency_limit=None, show_progress="hidden",
                        api_visibility="private")
        self.mic.stop_recording(h.stop, [self.session], [self.session, self.phase], api_visibility="private")
        for box in (self.say, self.phase):
            box.change(None, [self.say, self.phase], None, js=VOICE_UPDATE_JS, api_visibility="private")

        def on_turn(data: dict[Any, Any], request: gr.Request) -> Iterator[VoiceShown]:
            yield from h.answer(data[chatbot], data[self.session], on_values(data), tab=tab_of(request))

        # A trigger while answers run waits for them (always_last) and finds nothing left:
        # the running event answers every turn heard meanwhile.
        return self.trigger.change(on_turn, {chatbot, self.session, *values_inputs}, [chatbot, textbox, self.say],
                                   trigger_mode="always_last", concurrency_id="generate", show_progress="hidden",
                                   api_visibility="private")
