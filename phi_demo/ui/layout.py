"""The page, declared top to bottom, then its events. Gradio only; no torch."""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from phi_demo.chat.turn import REQUEST_SETTINGS
from phi_demo.settings import GenerationSettings
from phi_demo.speech.vad import EnergyVAD
from phi_demo.ui.chat import ChatHandlers, browse_answers, remember_answer
from phi_demo.ui.chats import ChatsHandlers, build_chats_panel
from phi_demo.ui.live import LIVE_CSS, build_live_tab
from phi_demo.ui.recording import FILE_CSS, build_recording_tab
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
CSS = """
#chatbot { flex-grow: 1; }
.phi-banner { border-left: 4px solid #f59e0b; padding-left: 0.75em; }
#answer-versions { justify-content: flex-start; align-items: center; gap: 0.5em; }
#answer-versions > * { flex: 0 0 auto; width: auto; }
""" + LIVE_CSS + FILE_CSS + VOICE_CSS


def build_demo(engine, settings, allowed_roots: tuple[str, ...] = (), vad=None) -> gr.Blocks:
    """`vad`: (voice-activity detector, its name) for phrase ends and chunking; the energy
    threshold when not given."""
    if vad is None:
        vad = (EnergyVAD(), "energy threshold")
    ch = ChatsHandlers(settings)
    voice_folder = Path(tempfile.mkdtemp(prefix="phi-demo-voice-"))  # spoken turns, as audio files
    h = ChatHandlers(engine, settings, allowed_roots + (str(ASSETS), str(ch.store.folder), str(voice_folder)))
    d = GenerationSettings(max_new_tokens=settings.max_new_tokens)
    L = GenerationSettings.LIMITS
    # Gradio deletes uploads older than a day, checking every hour.
    with gr.Blocks(title="Phi-4-multimodal chat", fill_height=True, delete_cache=(3600, 86400)) as demo:
        with gr.Sidebar(position="left", open=True, label="Settings"):
            c = build_chats_panel(ch)
            gr.Markdown("### Model")
            model_md = gr.Markdown(h.status_markdown(), elem_id="model-status")
            options = [o.name for o in engine.attention_options()]
            # A remote server decides its own attention: shown, not editable.
            attn = gr.Radio(options or [engine.attn], value=engine.attn, interactive=bool(options),
                            label="Attention implementation", info=h.attention_info(), elem_id="attn")
            seen_attn = gr.State(None)  # (attention, change count) this tab has shown
            gr.Markdown("### Generation")
            max_new = gr.Slider(*L["max_new_tokens"], value=d.max_new_tokens, step=1, label="Max new tokens",
                                elem_id="max-new-tokens")
            do_sample = gr.Checkbox(value=d.do_sample, label="Sampling (off = greedy)", elem_id="do-sample")
            temperature = gr.Slider(*L["temperature"], value=d.temperature, step=0.01, label="Temperature")
            top_p = gr.Slider(*L["top_p"], value=d.top_p, step=0.01, label="Top-p")
            top_k = gr.Slider(*L["top_k"], value=d.top_k, step=1, label="Top-k")
            rep = gr.Slider(*L["repetition_penalty"], value=d.repetition_penalty, step=0.01,
                            label="Repetition penalty")
            seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)", elem_id="seed")
            system_prompt = gr.Textbox(settings.system_prompt, lines=3, label="System prompt",
                                       elem_id="system-prompt")
            reset = gr.Button("Reset to defaults", elem_id="reset")

        gr.Markdown("## Phi-4-multimodal chat\nAsk about text, images, speech, videos and PDFs. "
                    "Attach files or record with the microphone in the message box.")
        banner_text = h.banner_markdown()
        banner = gr.Markdown(banner_text, visible=bool(banner_text), elem_id="banner", elem_classes="phi-banner")
        with gr.Tabs() as tabs:
            with gr.Tab("Chat", id="chat"):
                chatbot = gr.Chatbot(label="Chat", elem_id="chatbot", height=480, buttons=["copy", "copy_all"],
                                     placeholder="Ask a question; attach an image, audio, a video or a PDF.",
                                     editable="user", latex_delimiters=LATEX)
                # Its own stop button shows in place of send while an answer runs (handlers.RUNNING).
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

        # The /chat endpoint for programs: plain message + history in, answer text out.
        with gr.Group(visible=False):
            api_message = gr.MultimodalTextbox(file_count="multiple")
            api_history = gr.JSON(value=[])
            api_answer = gr.Textbox(label="answer")
            api_button = gr.Button()
        # Polls the load state until the model is ready (or failed), then switches itself off.
        timer = gr.Timer(1.0, active=True)

        # The request settings by name: the one place components become names.
        named = {"system_prompt": system_prompt, "max_new_tokens": max_new, "do_sample": do_sample,
                 "temperature": temperature, "top_p": top_p, "top_k": top_k, "repetition_penalty": rep,
                 "seed": seed}
        assert set(named) == set(REQUEST_SETTINGS), "the sidebar must offer every request setting"

        def values(data: dict) -> dict:
            return {name: data[component] for name, component in named.items()}

        def on_submit(data):
            yield from h.submit(data[textbox], data[chatbot], values(data))

        def on_retry(data):
            yield from h.retry(data[chatbot], values(data))

        def on_edit(data, evt: gr.EditData):
            yield from h.edit(data[chatbot], evt.index, evt.value, values(data), evt.previous_value)

        def on_like(data, evt: gr.LikeData):
            h.feedback(data[chatbot], evt.index, evt.liked, values(data))

        def on_reset():
            return {named[name]: value for name, value in h.defaults().items()}

        run = dict(outputs=[chatbot, textbox], concurrency_id="generate", api_visibility="private")
        sent = textbox.submit(on_submit, {textbox, chatbot, *named.values()}, **run)
        again = retry.click(on_retry, {chatbot, *named.values()}, **run)
        example = examples.load_input_event.then(on_submit, {textbox, chatbot, *named.values()}, **run)
        edited = chatbot.edit(on_edit, {chatbot, *named.values()}, **run)
        spoken = voice.wire(chatbot, textbox, list(named.values()), values)
        running = [sent, again, example, edited, spoken]
        if h.feedback_path:  # the 👍/👎 buttons show only with a listener
            chatbot.like(on_like, {chatbot, *named.values()}, None, api_visibility="private")
        private = dict(api_visibility="private")
        # Saved chats: every change to the chat is saved to this browser's list.
        save = (ch.save, [chatbot, c["saved"], c["current"]], [c["saved"], c["current"], c["chat_list"]])
        browse = [versions, earlier, version_label, later]
        fresh_versions = (lambda hist: remember_answer(None, hist), [chatbot], browse)  # another chat shown
        # A cancelled answer never reaches its own last step: whatever cancels one puts the box back.
        idle_box = (h.stopped, None, [textbox])
        for event in running:
            event.then(remember_answer, [versions, chatbot], browse, **private).then(*save, **private)
        # Stop keeps the part already shown, as the chat and as a saved chat.
        stop = textbox.stop(h.stopped, None, [textbox], cancels=running, **private)
        stop.then(*voice.drop_waiting, **private)
        stop.then(remember_answer, [versions, chatbot], browse, **private).then(*save, **private)
        for button, step in ((earlier, -1), (later, 1)):
            button.click(lambda v, hist, step=step: browse_answers(v, hist, step), [versions, chatbot],
                         [chatbot] + browse, cancels=running, **private).then(*idle_box, **private).then(*save, **private)
        undo.click(h.undo, [chatbot], [chatbot, textbox], cancels=running, **private).then(
            remember_answer, [versions, chatbot], browse, **private).then(*save, **private)
        for button in (clear, c["new"]):  # the chat stays in the list; the page starts a new one
            button.click(ch.new, None, [chatbot, c["current"], c["chat_list"], textbox], cancels=running, **private).then(
                remember_answer, [versions, chatbot], browse, **private)
        c["chat_list"].input(ch.open, [c["chat_list"], c["saved"]], [chatbot, c["current"], textbox],
                             cancels=running, **private).then(*fresh_versions, **private).then(*idle_box, **private)
        c["delete"].click(ch.delete, [c["current"], c["saved"]], [c["saved"], c["current"], c["chat_list"], chatbot],
                          cancels=running, **private).then(*fresh_versions, **private).then(*idle_box, **private)
        c["rename"].submit(ch.rename, [c["current"], c["rename"], c["saved"]], [c["saved"], c["chat_list"], c["rename"]],
                           **private)
        c["export"].click(ch.export, [chatbot, c["current"], c["saved"]], [c["md_file"], c["zip_file"]], **private)
        c["importer"].upload(ch.import_, [c["importer"], c["saved"]], [chatbot, c["saved"], c["current"], c["chat_list"]],
                             cancels=running, **private).then(*fresh_versions, **private).then(*idle_box, **private)
        demo.load(ch.listing, [c["saved"]], [c["chat_list"]], **private)
        api_button.click(h.api_chat, [api_message, api_history] + [named[n] for n in REQUEST_SETTINGS],
                         [api_answer], api_name="chat", concurrency_id="generate")

        timer.tick(h.poll_status, None, [model_md, banner, timer], api_visibility="private")
        demo.load(h.poll_status, None, [model_md, banner, timer], api_visibility="private")
        # Attention belongs to the shared model: a change waits for the running answer and
        # applies to everyone; every tab polls for changes made elsewhere.
        attn.change(h.change_attention, [attn], [attn, model_md, seen_attn], api_visibility="private",
                    concurrency_id="attention")
        attn_timer = gr.Timer(2.0, active=bool(options))
        attn_timer.tick(h.sync_attention, [attn, seen_attn], [attn, model_md, seen_attn], api_visibility="private",
                        show_progress="hidden")
        demo.load(h.sync_attention, [attn, seen_attn], [attn, model_md, seen_attn], api_visibility="private")
        reset.click(on_reset, None, list(named.values()), api_visibility="private")
        # On a phone the sidebar would open over the chat: start with it closed there.
        demo.load(None, js=CLOSE_SIDEBAR_ON_PHONE)
        demo.load(None, js=VOICE_JS)
    return demo
