"""The page, declared top to bottom, then its events. Gradio only; no torch."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.events import Dependency

from phi_demo.chat.turn import REQUEST_SETTINGS
from phi_demo.contract import ChatEngine
from phi_demo.settings import AppSettings
from phi_demo.speech.vad import EnergyVAD
from phi_demo.ui.chat import BoxUpdate, ChatHandlers, Shown, tab_of
from phi_demo.ui.chats import ChatsHandlers, build_chats_panel
from phi_demo.ui.live import LIVE_CSS, build_live_tab
from phi_demo.ui.recording import FILE_CSS, build_recording_tab
from phi_demo.ui.sidebar import SidebarHandlers, build_sidebar, wire_sidebar
from phi_demo.ui.versions import browse_answers, forget_answers, remember_answer
from phi_demo.ui.voice import VOICE_CSS, VOICE_JS, VoicePanel

ASSETS = Path(__file__).resolve().parents[2] / "assets"
EXAMPLES = [
    [{"text": "What is in this picture?", "files": [str(ASSETS / "example_image.png")]}],
    [{"text": "Answer the spoken question.", "files": [str(ASSETS / "example_question.wav")]}],
    [{"text": "What happens in this video, and what does the voice say?", "files": [str(ASSETS / "example_clip.mp4")]}],
    [{"text": "Which month sold the most, according to the chart on page 2?",
      "files": [str(ASSETS / "example_report.pdf")]}],
]
# Every way people write maths: $…$, $$…$$, \(…\) and \[…\].
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False},
         {"left": "\\(", "right": "\\)", "display": False}, {"left": "\\[", "right": "\\]", "display": True}]
CLOSE_SIDEBAR_ON_PHONE = """() => {
  if (window.innerWidth >= 768) return;
  const toggle = document.querySelector("[aria-label='Toggle Sidebar']");
  const sidebar = toggle && toggle.closest(".sidebar");
  if (sidebar && sidebar.classList.contains("open")) toggle.click();
}"""
# Gradio's footer gives each link's icon the link's own text as alt text, so a screen
# reader says "Settings Settings" (axe-core: image-redundant-alt): next to their text the
# icons are decoration.
QUIET_FOOTER_ICONS = """() => {
  for (const img of document.querySelectorAll("footer img")) {
    const link = img.closest("a, button");
    if (link && link.textContent.trim()) img.alt = "";
  }
}"""
CSS = """
#chatbot { flex-grow: 1; }
#title h1 { font-size: var(--text-xxl); margin-bottom: 0.25em; }
.phi-banner { border-left: 4px solid #f59e0b; padding-left: 0.75em; }
#answer-versions { justify-content: flex-start; align-items: center; gap: 0.5em; }
#answer-versions > * { flex: 0 0 auto; width: auto; }
""" + LIVE_CSS + FILE_CSS + VOICE_CSS


def build_demo(engine: ChatEngine, settings: AppSettings, allowed_roots: tuple[str, ...] = (),
               vad: tuple[Any, str] | None = None) -> gr.Blocks:
    """`vad`: (voice-activity detector, its name) for phrase ends and chunking; the energy
    threshold when not given."""
    if vad is None:
        vad = (EnergyVAD(), "energy threshold")
    ch = ChatsHandlers(settings)
    voice_folder = Path(tempfile.mkdtemp(prefix="phi-demo-voice-"))  # spoken turns, as audio files
    h = ChatHandlers(engine, settings, allowed_roots + (str(ASSETS), str(ch.store.folder), str(voice_folder)))
    side = SidebarHandlers(engine, settings)
    # Gradio deletes uploads older than a day, checking every hour.
    with gr.Blocks(title="Phi-4-multimodal chat", fill_height=True, delete_cache=(3600, 86400)) as demo:
        with gr.Sidebar(position="left", open=True, label="Settings"):
            c = build_chats_panel(ch)
            sb = build_sidebar(side)

        gr.Markdown("# Phi-4-multimodal chat\nAsk about text, images, speech, videos and PDFs. "
                    "Attach files or record with the microphone in the message box.", elem_id="title")
        banner_text = side.banner_markdown()
        banner = gr.Markdown(banner_text, visible=bool(banner_text), elem_id="banner", elem_classes="phi-banner")
        with gr.Tabs() as tabs:
            with gr.Tab("Chat", id="chat"):
                chatbot = gr.Chatbot(label="Chat", elem_id="chatbot", height=480, buttons=["copy", "copy_all"],
                                     placeholder="Ask a question; attach an image, audio, a video or a PDF.",
                                     editable="user", latex_delimiters=LATEX)
                # Its own stop button shows in place of send while an answer runs (chat.message_box).
                textbox = gr.MultimodalTextbox(sources=["upload", "microphone"],
                                               file_types=["image", "audio", "video", ".pdf"],
                                               file_count="multiple", show_label=False, elem_id="message",
                                               placeholder="Type a message, attach images, audio, video or PDF "
                                                           "or record, then Enter")
                # The answers Retry made to the last question: ‹ n of N ›, the one shown continues.
                with gr.Row(elem_id="answer-versions"):
                    earlier = gr.Button("‹", size="sm", visible=False, elem_id="answer-prev", min_width=40, scale=0)
                    version_label = gr.Markdown(visible=False, elem_id="answer-count")
                    later = gr.Button("›", size="sm", visible=False, elem_id="answer-next", min_width=40, scale=0)
                versions = gr.State(None)
                sending = gr.State(None)  # the message just taken out of the box
                with gr.Row():
                    retry = gr.Button("🔄 Retry", elem_id="retry")
                    undo = gr.Button("↩️ Undo", elem_id="undo")
                    clear = gr.Button("🗑️ Clear", elem_id="clear")
                voice = VoicePanel(h, vad, voice_folder)
                examples = gr.Examples(EXAMPLES, inputs=[textbox], label="Examples", elem_id="examples")
            with gr.Tab("Live transcription", id="live"):
                build_live_tab(engine, tabs, textbox, *vad)
            with gr.Tab("Audio file", id="file"):
                build_recording_tab(engine, settings, *vad, tabs, textbox)

        # The /chat endpoint for programs: message and history as plain JSON (whatever a
        # client sends reaches the handler, which answers or says what is wrong), text out.
        with gr.Group(visible=False):
            api_message = gr.JSON(value={"text": "", "files": []}, label="message")
            api_history = gr.JSON(value=[], label="history")
            api_answer = gr.Textbox(label="answer")
            api_button = gr.Button()

        # --- events ---------------------------------------------------------------------
        named = sb.named
        chat_inputs = {chatbot, *named.values()}

        def values(data: dict[Any, Any]) -> dict[str, Any]:
            return {name: data[component] for name, component in named.items()}

        def on_submit(data: dict[Any, Any], request: gr.Request) -> Iterator[Shown]:
            yield from h.submit(data[sending], data[chatbot], values(data), tab=tab_of(request))

        def take_message(message: Any) -> tuple[BoxUpdate, Any]:
            """The box is emptied at once, outside the queue, and the answer reads the message
            from `sending` (Gradio's ChatInterface does the same): an answer that emptied the
            box itself would do it in a streamed step, which the page applies as a diff of the
            next one, and what the person types meanwhile must not be wiped by later steps."""
            return gr.update(value=None), message

        def on_retry(data: dict[Any, Any], request: gr.Request) -> Iterator[Shown]:
            yield from h.retry(data[chatbot], values(data), tab=tab_of(request))

        def on_edit(data: dict[Any, Any], evt: gr.EditData, request: gr.Request) -> Iterator[Shown]:
            yield from h.edit(data[chatbot], evt.index, evt.value, values(data), evt.previous_value,
                              tab=tab_of(request))

        def on_like(data: dict[Any, Any], evt: gr.LikeData) -> None:
            h.feedback(data[chatbot], evt.index, evt.liked, values(data))

        def answering(listener: Any, fn: Any, inputs: Any) -> Dependency:
            """An event that answers: it streams into the chat and the box, one answer at a time."""
            return listener(fn, inputs, [chatbot, textbox], concurrency_id="generate", api_visibility="private")

        browse = [versions, earlier, version_label, later]

        # The steps that change which chat is shown or saved (save, new, open, delete, import,
        # rename) share one queue lane, so they run in the order they were sent: a save still
        # waiting when New chat is pressed runs first, and the new chat's answer cannot land in it.
        def after_answer(event: Dependency, another_chat: bool = False) -> Dependency:
            """How every event that changes the chat ends: the answer shown is kept among the
            versions of its question (another chat starts them over), the chat is saved to
            this browser's list (another chat is saved as it is), and the box is back to send
            unless an answer runs in this tab now (a voice turn may have begun meanwhile)."""
            if another_chat:
                shown = event.then(forget_answers, [chatbot], browse, api_visibility="private")
            else:
                shown = event.then(remember_answer, [versions, chatbot], browse, api_visibility="private").then(
                    ch.save, [chatbot, c.saved, c.current], [c.saved, c.current, c.chat_list], concurrency_id="chats",
                    api_visibility="private")
            return shown.then(h.box_back, None, [textbox], api_visibility="private")

        taken = textbox.submit(take_message, [textbox], [textbox, sending], queue=False, api_visibility="private")
        sent = answering(taken.then, on_submit, {sending, *chat_inputs})
        again = answering(retry.click, on_retry, chat_inputs)
        example_taken = examples.load_input_event.then(take_message, [textbox], [textbox, sending], queue=False,
                                                       api_visibility="private")
        example = answering(example_taken.then, on_submit, {sending, *chat_inputs})
        edited = answering(chatbot.edit, on_edit, chat_inputs)
        spoken = voice.wire(chatbot, textbox, list(named.values()), values)
        running: list[dict[str, Any]] = [sent, again, example, edited, spoken]  # what Stop and the rest cancel
        for event in (sent, again, example, edited, spoken):
            after_answer(event)
        if h.feedback_path:  # the 👍/👎 buttons show only with a listener
            chatbot.like(on_like, chat_inputs, None, api_visibility="private")
        # Stop keeps the part already shown, as the chat and as a saved chat; voice turns
        # still waiting are dropped (Stop means quiet).
        stop = textbox.stop(h.stopped, None, [textbox], cancels=running, api_visibility="private")
        after_answer(stop.then(voice.drop_waiting, [chatbot, voice.session], [voice.say], api_visibility="private"))
        for button, step in ((earlier, -1), (later, 1)):
            after_answer(button.click(lambda v, hist, step=step: browse_answers(v, hist, step), [versions, chatbot],
                                      [chatbot, *browse], cancels=running, api_visibility="private"))
        after_answer(undo.click(h.undo, [chatbot], [chatbot, textbox], cancels=running, api_visibility="private"))
        for button in (clear, c.new):  # the chat stays in the list; the page starts a new one
            after_answer(button.click(ch.new, None, [chatbot, c.current, c.chat_list, textbox], cancels=running,
                                      concurrency_id="chats", api_visibility="private"), another_chat=True)
        after_answer(c.chat_list.input(ch.open, [c.chat_list, c.saved], [chatbot, c.current, textbox],
                                       cancels=running, concurrency_id="chats", api_visibility="private"),
                     another_chat=True)
        after_answer(c.delete.click(ch.delete, [c.current, c.saved], [c.saved, c.current, c.chat_list, chatbot],
                                    cancels=running, concurrency_id="chats", api_visibility="private"),
                     another_chat=True)
        after_answer(c.importer.upload(ch.import_, [c.importer, c.saved], [chatbot, c.saved, c.current, c.chat_list],
                                       cancels=running, concurrency_id="chats", api_visibility="private"),
                     another_chat=True)
        c.rename.submit(ch.rename, [c.current, c.rename, c.saved], [c.saved, c.chat_list, c.rename],
                        concurrency_id="chats", api_visibility="private")
        c.export.click(ch.export, [chatbot, c.current, c.saved], [c.md_file, c.zip_file], api_visibility="private")
        # A reload (or a return visit) reopens the chat this browser was in.
        after_answer(demo.load(ch.reopen, [c.saved, c.current], [chatbot, c.current, c.chat_list],
                               api_visibility="private"), another_chat=True)
        api_button.click(h.api_chat, [api_message, api_history, *(named[n] for n in REQUEST_SETTINGS)],
                         [api_answer], api_name="chat", concurrency_id="generate")

        wire_sidebar(demo, side, sb, banner)
        # On a phone the sidebar would open over the chat: start with it closed there.
        demo.load(None, js=CLOSE_SIDEBAR_ON_PHONE)
        demo.load(None, js=QUIET_FOOTER_ICONS)
        demo.load(None, js=VOICE_JS)
    return demo
