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
from pathlib import Path

import gradio as gr
import soundfile as sf

from phi_demo.chat.messages import normalize_history
from phi_demo.media.audio import to_mono_16k
from phi_demo.speech.voice import VoiceTurns

_ids = itertools.count(1)


class VoiceSession:
    """One tab's voice conversation: its detector state, the turns waiting to be answered,
    and the running answer's stop flag (set by barge-in and by Stop)."""

    def __init__(self, vad):
        self.id = next(_ids)
        self.turns = VoiceTurns(vad.stream())
        self.pending: list[str] = []
        self.lock = threading.Lock()
        self.answer_cancel: threading.Event | None = None
        self.answer_turn: int | None = None  # the page's number for the last answer begun
        self.interrupted = False  # the running answer was stopped: by barge-in or Stop
        self.phase = "listening"


class VoiceHandlers:
    def __init__(self, chat, vad, folder: Path):
        self.chat, self.vad, self.folder = chat, vad, folder
        folder.mkdir(parents=True, exist_ok=True)

    def start(self, session):
        """Record pressed: a fresh detector; turns already heard but not answered are kept."""
        if session is None:
            session = VoiceSession(self.vad)
        else:
            session.turns = VoiceTurns(self.vad.stream(), turns=session.turns.turns)
        session.phase = "listening"
        return session, "listening"

    def chunk(self, chunk, session):
        """Each half second of microphone audio. Returns (session, phase, turn trigger)."""
        if session is None:
            session = self.start(None)[0]
        if chunk is None:
            return session, session.phase, gr.skip()

        sample_rate, samples = chunk
        trigger = gr.skip()
        for event, audio in session.turns.feed(to_mono_16k(samples, sample_rate)):
            if event == "onset":
                session.phase = "hearing"  # the page stops speaking at once
                with session.lock:
                    running = session.answer_cancel
                    if running is not None and not running.is_set():
                        session.interrupted = True
                        running.set()  # the answer being generated stops within a token
            elif event == "turn":
                path = self._save(audio, session)
                with session.lock:
                    session.pending.append(path)
                session.phase = "thinking"
                trigger = f"{session.id}:{session.turns.turns}"
            else:
                session.phase = "listening"
        return session, session.phase, trigger

    def stop(self, session):
        if session is not None:
            session.phase = "idle"
        return session, "idle"

    @staticmethod
    def drop_waiting(history, session):
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

    def _save(self, audio, session) -> str:
        path = self.folder / f"voice-{session.id}-{session.turns.turns}.wav"
        sf.write(path, audio, 16_000, subtype="PCM_16")
        return str(path)

    def answer(self, history, session, values: dict):
        """The chat answers the oldest waiting turn. Yields (chat, message box, what to say):
        the box shows its Stop button while the answer runs, as for a typed question."""
        if session is None:
            return
        with session.lock:
            if not session.pending:
                return
            path = session.pending.pop(0)
            cancel = session.answer_cancel = threading.Event()
            session.interrupted = False
            turn = session.answer_turn = session.turns.turns
        history = list(history or [])
        last, box = history, gr.skip()
        try:
            for shown, box in self.chat._run({"text": "", "files": [path]}, history, history, False, values, cancel):
                last = shown
                yield shown, box, say(shown, turn, done=False)
        finally:
            with session.lock:
                if session.answer_cancel is cancel:
                    session.answer_cancel = None
            if session.phase == "thinking":
                session.phase = "listening"
        yield last, box, say(last, turn, done=True, stopped=session.interrupted)


def say(history, turn: int, done: bool, stopped: bool = False) -> str:
    """What the page speaks: the answer so far to voice turn `turn`. Titled messages (the
    stats line, a long-prefill notice) are display only and are not spoken."""
    turns = normalize_history(list(history or []))
    text = turns[-1].text if turns and turns[-1].role == "assistant" else ""
    return json.dumps({"turn": turn, "text": text, "done": done, "stopped": stopped})


# The browser side. Polls the hidden "say" box (the answer so far) and the phase; speaks
# each finished sentence once; stops speaking when the person starts to talk. Every
# sentence handed to speechSynthesis is also recorded in window.phiVoice.spoken: headless
# browsers may have no voices, so tests count what was asked, not what was heard.
VOICE_JS = r"""() => {
  if (window.phiVoice) return;
  const synth = window.speechSynthesis;
  const v = window.phiVoice = {spoken: [], bargeIns: 0, turn: null, offset: 0, lastPhase: null, quiet: null};
  const $ = (s) => document.querySelector(s);
  const sentenceEnd = /[.!?\u3002\uff01\uff1f](?=\s|$)|\n/g;
  function speak(text) {
    text = text.replace(/[*_`#>]+/g, "").replace(/\s+/g, " ").trim();  // markdown is not read out
    if (!text) return;
    v.spoken.push(text);
    if (!synth || ($("#voice-mute input") || {}).checked) return;
    const u = new SpeechSynthesisUtterance(text);
    const pick = $("#voice-voice select");
    const voice = pick && synth.getVoices().find((x) => x.voiceURI === pick.value);
    if (voice) { u.voice = voice; u.lang = voice.lang; }
    synth.speak(u);
  }
  function fillVoices() {
    const pick = $("#voice-voice select");
    if (!pick || !synth) return;
    const voices = synth.getVoices();
    if (pick.options.length === voices.length + 1) return;
    pick.innerHTML = '<option value="">Browser default</option>' + voices.map((x) =>
      `<option value="${x.voiceURI.replace(/"/g, "&quot;")}">${x.name} (${x.lang})</option>`).join("");
  }
  if (synth) synth.onvoiceschanged = fillVoices;
  function tick() {
    fillVoices();
    const phase = ($("#voice-phase textarea") || {}).value || "idle";
    if (phase === "hearing" && v.lastPhase !== "hearing") {  // barge-in: stop talking at once
      v.bargeIns += 1;
      if (synth) synth.cancel();
    }
    v.lastPhase = phase;
    let said = null;
    try { said = JSON.parse(($("#voice-say textarea") || {}).value || "null"); } catch (e) {}
    if (said && said.turn !== v.turn) { v.turn = said.turn; v.offset = 0; v.quiet = null; if (synth) synth.cancel(); }
    if (said && said.stopped && v.quiet !== said.turn) {  // interrupted or Stop pressed: what is queued goes too
      v.quiet = said.turn;
      if (synth) synth.cancel();
    }
    if (said && !said.stopped && phase !== "hearing") {
      const text = said.text;
      let end = v.offset, m;
      sentenceEnd.lastIndex = v.offset;
      while ((m = sentenceEnd.exec(text)) !== null) end = m.index + m[0].length;
      if (said.done) end = text.length;
      if (end > v.offset) { speak(text.slice(v.offset, end)); v.offset = end; }
    }
    const speaking = synth && (synth.speaking || synth.pending);
    const state = phase === "idle" ? "idle" : phase === "hearing" ? "listening"
      : (phase === "thinking" || (said && !said.done)) && !speaking ? "thinking" : speaking ? "speaking" : "listening";
    const box = $("#voice-state");
    if (box && box.dataset.state !== state) {
      box.dataset.state = state;
      box.querySelector(".voice-state-text").textContent = {idle: "Press Record to talk",
        listening: "🎙️ Listening", thinking: "💭 Thinking", speaking: "🔊 Speaking"}[state];
    }
  }
  setInterval(tick, 150);
}"""

VOICE_CSS = """
#voice-mic button.record-button, #voice-mic button.stop-button { min-height: 3.5em; font-size: 1.2em; width: 100%; }
#voice-state { font-size: 1.3em; font-weight: 600; text-align: center; padding: 0.4em; }
.phi-hidden { display: none !important; }
"""


class VoicePanel:
    """Declared where it shows (under the chat's message box); wired once the chat's
    settings exist."""

    def __init__(self, chat_handlers, vad, folder: Path):
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

    def wire(self, chatbot, textbox, values_inputs, on_values):
        """Returns the answer event (Stop, Clear and the chat list cancel it like any answer)."""
        h, private = self.h, dict(api_visibility="private")
        self.mic.start_recording(h.start, [self.session], [self.session, self.phase], **private)
        # Each tab's stream stays open for its whole recording: no shared slot (as the live view).
        self.mic.stream(h.chunk, [self.mic, self.session], [self.session, self.phase, self.trigger],
                        stream_every=0.5, time_limit=60 * 60, concurrency_limit=None, show_progress="hidden",
                        **private)
        self.mic.stop_recording(h.stop, [self.session], [self.session, self.phase], **private)

        def on_turn(data):
            yield from h.answer(data[chatbot], data[self.session], on_values(data))

        self.drop_waiting = (h.drop_waiting, [chatbot, self.session], [self.say])
        return self.trigger.change(on_turn, {chatbot, self.session, *values_inputs}, [chatbot, textbox, self.say],
                                   concurrency_id="generate", show_progress="hidden", **private)
