"""The Audio file tab: a long recording cut at pauses, transcribed or translated chunk by
chunk with timestamps, downloadable as TXT, SRT, WebVTT and JSON, then summarised or sent
to the chat. Gradio only; the work is phi_demo.speech.longaudio's."""

from __future__ import annotations

import html
import tempfile
import threading
from pathlib import Path
from typing import Any

import gradio as gr

from phi_demo.contract import ChatEngine
from phi_demo.errors import UserInputError
from phi_demo.settings import AppSettings
from phi_demo.speech import longaudio
from phi_demo.speech.live import engine_asker, engine_recognizer
from phi_demo.speech.longaudio import clock
from phi_demo.speech.tasks import instruction
from phi_demo.ui.chat import shown_error
from phi_demo.ui.live import LANGUAGE_CHOICES, TARGET_CHOICES, show_target


class RecordingHandlers:
    def __init__(self, engine: ChatEngine, settings: AppSettings, vad: Any, vad_name: str):
        self.engine, self.settings = engine, settings
        self.vad, self.vad_name = vad, vad_name
        self._vad_lock = threading.Lock()  # the detector's model keeps state while it runs
        self._jobs: dict[str, threading.Event] = {}  # session -> the running job's stop flag

    def _load(self, path):
        if not path:
            raise shown_error("Upload or record a recording first.", title="Nothing to transcribe")
        try:
            audio, note = longaudio.load_recording(path, self.settings.max_recording_seconds)
        except UserInputError as e:
            raise shown_error(str(e), title="Cannot read this recording") from None
        with self._vad_lock:
            speech = self.vad.segments(audio)
        return audio, note, speech

    def _job(self, request: gr.Request | None) -> threading.Event:
        cancel = threading.Event()
        self._jobs[getattr(request, "session_hash", None) or "-"] = cancel
        return cancel

    def _end(self, request: gr.Request | None, cancel: threading.Event) -> None:
        cancel.set()
        key = getattr(request, "session_hash", None) or "-"
        if self._jobs.get(key) is cancel:
            del self._jobs[key]

    def stop(self, request: gr.Request):
        """Stop: the chunk being recognised ends within a token; what is done stays."""
        job = self._jobs.get(getattr(request, "session_hash", None) or "-")
        if job is not None:
            job.set()

    def transcribe(self, path, language, task, to, max_chunk_s, request: gr.Request, progress=gr.Progress()):  # noqa: B008 - how Gradio hands in its tracker
        """Yields (transcript view, status, downloads, result) after each chunk."""
        try:
            prompt = instruction(language or "auto", task or "transcribe", to or "en")
        except UserInputError as e:
            raise shown_error(str(e), title="Cannot transcribe") from None
        progress(0, desc="Reading the recording…")
        audio, note, speech = self._load(path)
        total_s = len(audio) / longaudio.SAMPLE_RATE
        cancel = self._job(request)
        recognize = engine_recognizer(self.engine, language or "auto", task or "transcribe", to or "en",
                                      max_new_tokens=min(self.settings.max_new_tokens, 512))
        name = Path(path).name
        # The same update at every step, not gr.skip(): see chat.message_box.
        no_files = gr.File(value=None, visible=False)
        yield self.view([]), self.status(None, total_s, note), no_files, None
        try:
            for p in longaudio.transcribe(audio, speech, recognize, cancel, float(max_chunk_s or 30), note):
                if not (p.finished or p.stopped):
                    progress((p.chunks_done, p.chunks), desc=f"{clock(p.done_s)} of {clock(total_s)}", unit="chunks")
                    yield self.view(p.cues), self.status(p, total_s, note), no_files, None
        except UserInputError as e:
            raise shown_error(str(e), title="Nothing to transcribe") from None
        except Exception as e:  # noqa: BLE001 - the engine logged it; the user reads a sentence
            raise shown_error(f"Transcription failed: {e}", title="Transcription failed") from None
        finally:
            self._end(request, cancel)
        about = {"file": name, "duration_s": round(total_s, 3), "task": task, "language": language,
                 **({"to": to} if task == "translate" else {}), "prompt": prompt, "detector": self.vad_name}
        folder = Path(tempfile.mkdtemp(prefix="phi-demo-recording-"))
        files = longaudio.write_all(p.cues, folder, Path(name).stem or "transcript", **about)
        result = {"name": name, "path": path, "cues": [c.__dict__ for c in p.cues], "duration_s": total_s,
                  "task": task, "to": to}
        yield (self.view(p.cues), self.status(p, total_s, note),
               gr.File(value=[str(f) for f in files.values()], visible=bool(p.cues)), result)

    def summarize(self, path, request: gr.Request, progress=gr.Progress()):  # noqa: B008 - how Gradio hands in its tracker
        progress(0, desc="Reading the recording…")
        audio, _note, speech = self._load(path)
        cancel = self._job(request)

        def on_part(i: int, n: int) -> None:
            progress((i, n), desc="Combining the parts…" if i == n else f"Part {i + 1} of {n}", unit="parts")

        try:
            summary = longaudio.summarize(audio, speech, engine_asker(self.engine, self.settings.max_new_tokens),
                                          cancel, self.settings.summary_part_seconds, on_part)
            stopped = cancel.is_set()
        except UserInputError as e:
            raise shown_error(str(e), title="No summary") from None
        except Exception as e:  # noqa: BLE001
            raise shown_error(f"The summary failed: {e}", title="No summary") from None
        finally:
            self._end(request, cancel)
        if stopped:
            return "*The summary was stopped.*" + (f"\n\n{summary.text}" if summary.text else "")
        how = (f"\n\n*Summarised in {len(summary.parts)} parts of up to {clock(self.settings.summary_part_seconds)}, "
               "each from its audio, then combined from the parts' summaries.*" if summary.parts else "")
        return (summary.text or "*(the model gave an empty summary)*") + how

    @staticmethod
    def to_chat(result):
        if not result or not result.get("cues"):
            raise shown_error("Transcribe a recording first: there is no transcript to send.", title="Nothing to send")
        lines = "\n".join(f"[{clock(c['start_s'])}] {c['text']}" for c in result["cues"] if c["text"])
        what = "Translation" if result.get("task") == "translate" else "Transcript"
        text = f"{what} of {result['name']} ({clock(result['duration_s'])}):\n\n{lines}\n\n"
        return {"text": text, "files": []}, gr.Tabs(selected="chat")

    @staticmethod
    def view(cues) -> str:
        if not cues:
            return '<div class="file-transcript"><span class="placeholder">The transcript appears here, chunk by chunk.</span></div>'
        rows = "".join(f'<p><span class="cue-time">{clock(c.start_s)}–{clock(c.end_s)}</span> {html.escape(c.text)}</p>'
                       for c in cues)
        return f'<div class="file-transcript">{rows}</div>'

    def status(self, p, total_s: float, note: str) -> str:
        parts = [f"{clock(total_s)} of audio · pauses found by **{self.vad_name}**"]
        if p is not None:
            parts.append(f"chunk {p.chunks_done} of {p.chunks}")
            if p.seconds and p.done_s:
                parts.append(f"{p.seconds:.1f} s so far (real-time factor {p.seconds / max(p.done_s, 1e-6):.2f})")
            if p.stopped:
                parts.append(f"⏹️ stopped at {clock(p.done_s)}: the files hold what was done")
            elif p.finished:
                parts.append("✅ done")
        text = " · ".join(parts)
        return text + (f"\n\n⚠️ {note}" if note else "")


FILE_CSS = """
.file-transcript { max-height: 24em; overflow-y: auto; padding: 0.5em 0.75em; line-height: 1.5;
                   border: 1px solid var(--border-color-primary); border-radius: 8px; overflow-wrap: anywhere; }
.file-transcript p { margin: 0.25em 0; }
.file-transcript .cue-time { font-variant-numeric: tabular-nums; color: var(--body-text-color-subdued);
                             margin-right: 0.5em; font-size: 0.9em; }
.file-transcript .placeholder { font-style: italic; }
"""


def build_recording_tab(engine: ChatEngine, settings: AppSettings, vad: Any, vad_name: str, tabs: gr.Tabs,
                        chat_box: gr.MultimodalTextbox) -> None:
    """The tab's components and events; call inside a gr.Tab."""
    h = RecordingHandlers(engine, settings, vad, vad_name)
    limit = settings.max_recording_seconds
    limit_text = f"{limit / 3600:g} hours" if limit >= 7200 else f"{limit / 60:g} minutes"
    gr.Markdown(f"Upload or record a recording of up to {limit_text}. It is cut at pauses "
                "into chunks (30 s at most; shorter if you like), each transcribed with its times. Then download it, summarise it, "
                "or ask about it in the chat.")
    audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Recording", elem_id="file-audio")
    with gr.Row():
        language = gr.Dropdown(LANGUAGE_CHOICES, value="auto", label="Language spoken", elem_id="file-language")
        task = gr.Radio([("Transcribe", "transcribe"), ("Translate", "translate")], value="transcribe",
                        label="Task", elem_id="file-task")
        to = gr.Dropdown(TARGET_CHOICES, value="en", label="Translate into", visible=False, elem_id="file-to")
        # Shorter chunks make shorter subtitles; the model transcribes best up to ~30-40 s.
        max_chunk = gr.Slider(5, 30, value=30, step=1, label="Longest chunk (s)", elem_id="file-chunk")
    with gr.Row():
        go = gr.Button("Transcribe", elem_id="file-go")  # not "primary": its white on orange fails contrast
        stop = gr.Button("Stop", elem_id="file-stop")
    status = gr.Markdown(elem_id="file-status")
    view = gr.HTML(h.view([]), elem_id="file-transcript")
    files = gr.File(label="Download (TXT, SRT, WebVTT, JSON)", file_count="multiple", visible=False,
                    interactive=False, elem_id="file-downloads")
    with gr.Row():
        summarize = gr.Button("Summarize", elem_id="file-summarize")
        to_chat = gr.Button("Send to chat", elem_id="file-to-chat")
    summary = gr.Markdown(elem_id="file-summary")
    result = gr.State(None)

    task.change(show_target, [task], [to], api_visibility="private")
    # Its own queue slot, not the chat's: the engine serialises the model per request, so a
    # two-hour file lets chat answers in between its chunks instead of holding them for hours.
    go.click(h.transcribe, [audio, language, task, to, max_chunk], [view, status, files, result],
             concurrency_id="recording", show_progress_on=[status], api_visibility="private")
    summarize.click(h.summarize, [audio], [summary], concurrency_id="recording", show_progress_on=[summary],
                    api_visibility="private")
    # Stop tells the model to stop within a token, so the part already done is written out.
    stop.click(h.stop, None, None, api_visibility="private")
    to_chat.click(h.to_chat, [result], [chat_box, tabs], api_visibility="private")
