"""The live transcription view: microphone chunks in, committed text and a tentative tail out."""

from __future__ import annotations

import html
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from phi_demo.contract import ChatEngine
from phi_demo.speech.live import LiveTranscriber, StreamingTranscript, engine_recognizer
from phi_demo.speech.tasks import LANGUAGES

LANGUAGE_CHOICES = [("Detect automatically", "auto")] + [(name, code) for code, name in LANGUAGES.items() if name]
TARGET_CHOICES = [(name, code) for code, name in LANGUAGES.items() if name]


def show_target(task):
    """The "Translate into" picker shows only for translation."""
    return gr.update(visible=task == "translate")


class LiveHandlers:
    def __init__(self, engine: ChatEngine, vad: Any = None, vad_name: str = "energy threshold"):
        self.engine = engine
        self.vad, self.vad_name = vad, vad_name

    def transcriber(self, language, task, to) -> LiveTranscriber:
        """One recording: its own detector state, and on ZeroGPU recognitions made from the
        chunk requests' own threads (the GPU quota belongs to a request)."""
        policy = StreamingTranscript(speech=self.vad.stream() if self.vad is not None else None)
        recognize = engine_recognizer(self.engine, language or "auto", task or "transcribe", to or "en", urgent=True)
        return LiveTranscriber(recognize, policy, inline=self.engine.request_thread_only)

    def start(self, language, task, to="en"):
        live = self.transcriber(language, task, to)
        hidden = gr.File(value=None, visible=False)  # the last recording's files, until this one stops
        return live, self.render(live), self.status(live), hidden, hidden

    def chunk(self, chunk, live, language, task, to="en"):
        if live is None or live.stopped:
            live = self.start(language, task, to)[0]
        if chunk is not None:
            sample_rate, samples = chunk
            live.add_chunk(sample_rate, samples)
        return self.render(live), self.status(live), live

    def stop(self, live):
        if live is None:
            return self.render(None), "", gr.File(visible=False), gr.File(visible=False), None
        live.stop()
        folder = Path(tempfile.mkdtemp(prefix="phi-demo-transcript-"))
        txt, srt = folder / "transcript.txt", folder / "transcript.srt"
        txt.write_text(live.policy.txt(), encoding="utf-8")
        srt.write_text(live.policy.srt(), encoding="utf-8")
        return (self.render(live), self.status(live), gr.File(str(txt), visible=True),
                gr.File(str(srt), visible=True), live)

    @staticmethod
    def render(live) -> str:
        if live is None:
            return '<div class="live-transcript"><span class="placeholder">Press Record and speak.</span></div>'
        committed, tentative, _ = live.view()
        body = html.escape(committed)
        if tentative:
            body += (" " if body else "") + f'<span class="tentative">{html.escape(tentative)}</span>'
        if not body:
            body = '<span class="placeholder">Listening…</span>'
        return f'<div class="live-transcript">{body}</div>'

    def status(self, live) -> str:
        if live is None:
            return ""
        if live.error:
            return f"❌ {live.error}"
        p = live.policy
        last = live.compute_s[-1][1] if live.compute_s else 0.0
        window = min(len(p.window) / p.sr, p.max_window_s)
        waiting = f" (+{p.waiting_s:.1f} s waiting)" if p.waiting_s else ""
        return (f"Heard {p.received_s:.1f} s · committed text lags by **{p.lag_s:.1f} s** · "
                f"window {window:.1f} s{waiting} · last recognition {last:.2f} s · pauses: {self.vad_name}")

    @staticmethod
    def transcript_text(live) -> str:
        if live is None:
            return ""
        committed, tentative, _ = live.view()
        return " ".join(t for t in (committed, tentative) if t)

    def to_chat(self, live):
        text = self.transcript_text(live)
        if not text:
            raise gr.Error("There is no transcript to send yet.", print_exception=False)
        return {"text": text, "files": []}, gr.Tabs(selected="chat")


LIVE_CSS = """
.live-transcript { min-height: 8em; padding: 0.75em; border: 1px solid var(--border-color-primary);
                   border-radius: 8px; font-size: 1.1em; line-height: 1.5; overflow-wrap: anywhere; }
/* Grey enough to read as tentative, dark enough for 4.5:1 contrast (axe-core checks it). */
.live-transcript .tentative { color: var(--neutral-600); font-style: italic; }
.dark .live-transcript .tentative { color: var(--neutral-300); }
.live-transcript .placeholder { color: var(--body-text-color); font-style: italic; }
"""


def build_live_tab(engine: ChatEngine, tabs: gr.Tabs, chat_box: gr.MultimodalTextbox, vad: Any = None,
                   vad_name: str = "energy threshold") -> None:
    """The tab's components and events; call inside a gr.Tab."""
    h = LiveHandlers(engine, vad, vad_name)
    gr.Markdown("Press **Record** and speak: committed text appears as you talk, and a grey tail "
                "may still change. If recording does not start, allow microphone access in your browser. "
                f"Pauses are found by **{vad_name}**.", elem_id="live-intro")
    with gr.Row():
        language = gr.Dropdown(LANGUAGE_CHOICES, value="auto", label="Language spoken", elem_id="live-language")
        task = gr.Radio([("Transcribe", "transcribe"), ("Translate", "translate")], value="transcribe",
                        label="Task", elem_id="live-task")
        to = gr.Dropdown(TARGET_CHOICES, value="en", label="Translate into", visible=False, elem_id="live-to")
    mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="Microphone", elem_id="live-mic")
    view = gr.HTML(h.render(None), elem_id="live-transcript")
    status = gr.Markdown(elem_id="live-status")
    with gr.Row():
        copy_box = gr.Textbox(label="Transcript", buttons=["copy"], interactive=False, lines=3, elem_id="live-text")
    with gr.Row():
        # Shown when a recording stops and there is something to download, not as empty drop zones.
        txt_file = gr.File(label="Download .txt", elem_id="live-txt", visible=False, interactive=False)
        srt_file = gr.File(label="Download .srt (segment times)", elem_id="live-srt", visible=False,
                           interactive=False)
    to_chat = gr.Button("Send to chat", elem_id="live-to-chat")
    live = gr.State(None)

    task.change(show_target, [task], [to], api_visibility="private")
    mic.start_recording(h.start, [language, task, to], [live, view, status, txt_file, srt_file], api_visibility="private")
    # Each tab's stream stays open for its whole recording, so streams must not share one slot;
    # the handler only stores audio, the engine serialises the model.
    mic.stream(h.chunk, [mic, live, language, task, to], [view, status, live], stream_every=0.5, time_limit=30 * 60,
               concurrency_limit=None, show_progress="hidden", api_visibility="private").then(
        h.transcript_text, [live], [copy_box], api_visibility="private")
    mic.stop_recording(h.stop, [live], [view, status, txt_file, srt_file, live], api_visibility="private").then(
        h.transcript_text, [live], [copy_box], api_visibility="private")
    to_chat.click(h.to_chat, [live], [chat_box, tabs], api_visibility="private")
