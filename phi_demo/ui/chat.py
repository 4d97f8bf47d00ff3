"""What each button and box does. Gradio only: the engine object is handed in."""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any

import gradio as gr

from phi_demo.chat.feedback import record, target
from phi_demo.chat.messages import Turn, normalize_history
from phi_demo.chat.request import Limits
from phi_demo.chat.turn import REQUEST_SETTINGS, prepare, stream_answer
from phi_demo.contract import ChatEngine, Notice
from phi_demo.errors import ModelUnavailable, UserInputError
from phi_demo.settings import AppSettings, GenerationSettings, cache_root

log = logging.getLogger(__name__)


def shown_error(message: str, title: str = "Error") -> gr.Error:
    """The one way a failure reaches the page. Expected failures are sentences, not
    tracebacks, so Gradio is told not to print one; unexpected ones are logged where caught."""
    return gr.Error(message, title=title, print_exception=False)


def user_message(turn: Turn) -> dict:
    """A user turn as one Chatbot message: its files, then its text."""
    content: list[Any] = [{"path": f} for f in turn.files]
    if turn.text:
        content.append(turn.text)
    return {"role": "user", "content": content}


def stats_message(stats, attn: str | None, clips_left_out: int = 0) -> dict:
    detail = (f"Prompt: {stats.prompt_tokens} tokens · new: {stats.new_tokens} tokens · "
              f"total {stats.total_s:.2f} s · attention: {attn}")
    title = "📊 " + stats.summary()
    if clips_left_out:
        title += f" · oldest {clips_left_out} audio clip{'s' * (clips_left_out > 1)} not heard (clip limit)"
    return {"role": "assistant", "content": detail, "metadata": {"title": title, "status": "done"}}


def notice_message(notice) -> dict:
    """What a long prefill is doing, as a pending note in the chat (display only: a titled
    message never reaches the prompt)."""
    return {"role": "assistant", "content": "", "metadata": {"title": "⏳ " + notice.text, "status": "pending"}}


def _user_block(history: list, index: int) -> tuple[int, int]:
    """The messages [start, end) of the user turn holding history[index]: one turn may be
    several messages (Gradio shows each file as its own)."""
    start, end = index, index + 1
    while start > 0 and history[start - 1].get("role") == "user":
        start -= 1
    while end < len(history) and history[end].get("role") == "user":
        end += 1
    return start, end


def _last_user_block(history: list) -> tuple[int, int] | None:
    last = next((i for i in range(len(history) - 1, -1, -1) if history[i].get("role") == "user"), None)
    return None if last is None else _user_block(history, last)


def split_last_turn(history: list) -> tuple[list, dict | None]:
    """(history before the last user turn, that turn as a textbox value)."""
    history = list(history or [])
    block = _last_user_block(history)
    if block is None:
        return history, None
    turns = normalize_history(history[block[0]:block[1]])
    turn = turns[-1] if turns else Turn("user")
    return history[:block[0]], {"text": turn.text, "files": list(turn.files)}


# The message box's two buttons: send while idle, stop while an answer runs.
RUNNING, IDLE = {"submit_btn": False, "stop_btn": True}, {"submit_btn": True, "stop_btn": False}


def _edited_text(value) -> str:
    """The text of an edited message, in whichever shape the Chatbot sends it."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return str(value.get("text") or value.get("content") or "")
    if isinstance(value, (list, tuple)):
        return "\n".join(_edited_text(v) for v in value if not isinstance(v, dict) or "text" in v or
                         v.get("type") == "text").strip()
    return ""


def _answer_start(history: list) -> int:
    """Where the last answer begins (just after the last user message); len(history) if none."""
    block = _last_user_block(history)
    return len(history) if block is None else block[1]


def _question_key(history: list, start: int) -> str:
    """The conversation up to the last question, as text: answers to the same question share it."""

    turns = normalize_history(history[:start])
    return json.dumps([(t.role, t.text, [os.path.basename(f) for f in t.files]) for t in turns])


def remember_answer(versions, history):
    """After each answer: keep it among the answers to the same question (Retry adds one;
    a new question starts over). Returns (versions, the ‹ n/N › controls)."""
    history = list(history or [])
    start = _answer_start(history)
    answer = history[start:]
    if not answer:
        return versions, *_browse_controls(None)
    key = _question_key(history, start)
    if not versions or versions.get("key") != key:
        versions = {"key": key, "answers": [answer], "shown": 0}
    elif _text(answer) not in [_text(a) for a in versions["answers"]]:  # greedy retries repeat themselves
        versions = {**versions, "answers": versions["answers"] + [answer], "shown": len(versions["answers"])}
    return versions, *_browse_controls(versions)


def browse_answers(versions, history, step: int):
    """‹ or ›: show another answer to the last question; the one shown continues the chat."""
    history = list(history or [])
    start = _answer_start(history)
    if not versions or versions.get("key") != _question_key(history, start):
        return gr.skip(), versions, *_browse_controls(None)
    shown = min(max(versions["shown"] + step, 0), len(versions["answers"]) - 1)
    versions = {**versions, "shown": shown}
    return history[:start] + versions["answers"][shown], versions, *_browse_controls(versions)


def _text(answer: list) -> str:
    return "\n".join(t.text for t in normalize_history(answer))


def _browse_controls(versions):
    n = len(versions["answers"]) if versions else 0
    if n < 2:
        return gr.update(visible=False), gr.update(value="", visible=False), gr.update(visible=False)
    i = versions["shown"]
    return (gr.update(visible=True, interactive=i > 0), gr.update(value=f"Answer {i + 1} of {n}", visible=True),
            gr.update(visible=True, interactive=i < n - 1))


class ChatHandlers:
    """Each handler takes the request settings by name (see chat.REQUEST_SETTINGS): the page
    maps its sidebar components to names in one place, /chat has them as parameters."""

    def __init__(self, engine: ChatEngine, settings: AppSettings, allowed_roots: tuple[str, ...] = ()):
        self.engine = engine
        self.settings = settings
        self.limits = Limits.from_settings(settings, allowed_roots)

    @property
    def feedback_path(self):
        """Where 👍/👎 go, or None when feedback is off."""

        return target(self.settings.feedback_file, self.engine.on_space, cache_root())

    # --- chat ------------------------------------------------------------------
    def _prepare(self, message, history, values: dict):
        """Settings and request for one answer; bad input becomes the sentence the user sees."""
        try:
            return prepare(self.limits, message, history, values)
        except UserInputError as e:
            raise shown_error(str(e), title="Cannot send this message") from None

    @staticmethod
    def _failure(e: Exception) -> str:
        """What the user reads when an answer fails after it started (the engine has logged
        the traceback of anything unexpected)."""
        if isinstance(e, (UserInputError, ModelUnavailable, RuntimeError)):
            return str(e)
        return f"Something went wrong while answering: {e}"

    def _run(self, message, base_history, rollback_history, restore_box, values: dict,
             cancel: threading.Event | None = None):
        """Shared by send, retry, edit, examples and voice turns: show the user turn, stream the
        answer, and on any failure put the chat (and the message box) back exactly as they
        were. The box shows its stop button instead of send while the answer runs. `cancel`
        lets another event stop the answer (voice barge-in); its stats line then says so."""
        prepared = self._prepare(message, base_history, values)
        shown = list(base_history) + [user_message(prepared.turns[-1])]
        yield shown, (gr.update(value=None, **RUNNING) if restore_box else gr.update(**RUNNING))
        cancel = cancel or threading.Event()
        last = shown
        try:
            for text, extra in stream_answer(self.engine, prepared.request, prepared.gen, cancel):
                answer = [{"role": "assistant", "content": text}] if text else []
                if isinstance(extra, Notice):
                    answer = [notice_message(extra)]  # until the first text arrives
                elif extra is not None:
                    answer.append(stats_message(extra, self.engine.attn, prepared.request.clips_left_out))
                last = shown + answer
                yield last, gr.skip()
        except Exception as e:  # noqa: BLE001 - reported, and the chat is put back
            yield rollback_history, (gr.update(value=message, **IDLE) if restore_box else gr.update(**IDLE))
            raise shown_error(self._failure(e), title="No answer") from None
        finally:
            cancel.set()  # Stop, a closed tab and a cancelled job all arrive here
        yield last, gr.update(**IDLE)

    @staticmethod
    def stopped():
        """Stop was pressed: the answer's generator is cancelled, so the box is reset here."""
        return gr.update(**IDLE)

    def submit(self, message, history, values: dict):
        history = list(history or [])
        yield from self._run(message, history, history, True, values)

    def retry(self, history, values: dict):
        history = list(history or [])
        before, message = split_last_turn(history)
        if message is None:
            raise shown_error("There is no question to answer again yet.", title="Nothing to retry")
        yield from self._run(message, before, history, False, values)

    def edit(self, history, index, new_value, values: dict, previous_value=None):
        """A user message edited in place: the turns after it are dropped and it is answered
        again (KV reuse keeps whatever is still a prefix). Its files stay; its text is the new one."""
        history = list(history or [])
        if not isinstance(index, int) or not 0 <= index < len(history) or history[index].get("role") != "user":
            raise shown_error("Only your own messages can be edited.", title="Cannot edit")
        start, end = _user_block(history, index)
        turns = normalize_history(history[start:end])
        files = list(turns[-1].files) if turns else []
        message = {"text": _edited_text(new_value), "files": files}
        # The page shows the edit already; a failure puts the message back as it was.
        rollback = list(history)
        if previous_value is not None:
            rollback[index] = {**history[index], "content": previous_value}
        yield from self._run(message, history[:start], rollback, False, values)

    def feedback(self, history, index, liked, values: dict):
        """👍/👎 on an answer: one JSONL line with the conversation up to it and the answer."""

        path = self.feedback_path
        history = list(history or [])
        if path is None or not isinstance(index, int) or not 0 <= index < len(history):
            return
        end = index
        while end > 0 and (history[end].get("role") != "assistant" or (history[end].get("metadata") or {}).get("title")):
            end -= 1  # a 👍 on the stats line counts for the answer above it
        turns = normalize_history(history[: end + 1])
        if not turns or turns[-1].role != "assistant":
            return
        conversation = [{"role": t.role, "text": t.text, "files": [os.path.basename(f) for f in t.files]}
                        for t in turns[:-1]]
        facts = self.engine.status().facts
        model = {k: getattr(facts, k) for k in ("model", "revision", "device", "dtype", "attention", "quantized")
                 if facts is not None and getattr(facts, k) is not None}
        record(path, liked, conversation, turns[-1].text, dict(values), model)
        gr.Info("Thanks: your feedback was saved." if liked is not None else "Feedback removed.")

    @staticmethod
    def undo(history):
        before, message = split_last_turn(history)
        return before, (gr.update(value=message, **IDLE) if message is not None else gr.update(**IDLE))

    def api_chat(self, message, history, system_prompt, max_new_tokens, do_sample, temperature,
                 top_p, top_k, repetition_penalty, seed):
        """/chat: the growing answer text, for gradio_client and other programs. The parameter
        names are the API's, so they are spelled out. Attention is the shared model's setting,
        not a request's (the page's sidebar changes it for everyone)."""
        values = dict(system_prompt=system_prompt, max_new_tokens=max_new_tokens, do_sample=do_sample,
                      temperature=temperature, top_p=top_p, top_k=top_k, repetition_penalty=repetition_penalty,
                      seed=seed)
        prepared = self._prepare(message, history, {k: v for k, v in values.items() if v is not None})
        cancel = threading.Event()
        try:
            for text, extra in stream_answer(self.engine, prepared.request, prepared.gen, cancel):
                if not isinstance(extra, Notice):  # /chat streams answer text only
                    yield text
        except Exception as e:  # noqa: BLE001 - reported as a sentence
            raise shown_error(self._failure(e)) from None
        finally:
            cancel.set()

    # --- sidebar ---------------------------------------------------------------
    def status_markdown(self) -> str:
        st = self.engine.status()
        if st.state == "error":
            return f"❌ **Model unavailable.** {st.message}"
        if st.state in ("loading", "idle"):
            return f"⏳ {st.message or 'Loading…'}"
        i = st.facts
        if i is None:
            return f"⏳ {st.message or 'Loading…'}"
        if i.server:
            rows = [("Backend", "OpenAI-compatible server"), ("Server", i.server), ("Model", i.model),
                    ("Served models", ", ".join(i.served_models) or "none listed"), ("Attention", i.attention)]
            return "\n".join(f"- **{k}:** `{v}`" for k, v in rows)
        rows = [("Model", i.model), ("Revision", i.revision), ("Device", i.device), ("dtype", i.dtype),
                ("Attention", i.attention), ("Adapters", ", ".join(i.adapters) or "none"),
                ("Load time", f"{i.load_seconds} s"), ("Weights", f"{i.weights_gb} GB"),
                ("Quantized", i.quantized), ("Placement", i.placement), ("Fast decode", i.fast_decode),
                ("GPU memory in use", None if i.cuda_allocated_gb is None else f"{i.cuda_allocated_gb} GB")]
        return "\n".join(f"- **{k}:** `{v}`" for k, v in rows if v is not None)

    def banner_markdown(self) -> str:
        st = self.engine.status()
        if st.state == "error":
            return f"### ❌ The model is unavailable\n{st.message}"
        if self.engine.on_space and self.engine.device == "cpu" and not self.engine.is_tiny:
            weights = ("It runs with int4 weights here: about 5 tokens a second on 2 CPU cores, and an image "
                       "takes 15-20 s to read. " if self.engine.quantize == "int4" else
                       "In bf16 on a CPU it answers at about 2 tokens a second, and an image takes 10-40 s. ")
            return ("### 🐢 This Space has no GPU\n" + weights + "For fast answers, pick GPU hardware; to try "
                    "only the interface, set `PHI_DEMO_MODEL=tiny-random` in the Space's settings "
                    "(or run `python app.py --model tiny-random`).")
        if self.engine.is_tiny:
            return ("### ⚠️ Tiny random model\nThis is a tiny model with **random weights**: its answers are "
                    "random noise. It exists so you can try the interface without a GPU or a download.")
        return ""

    def poll_status(self):
        state = self.engine.status().state
        banner = self.banner_markdown()
        return (self.status_markdown(), gr.Markdown(banner, visible=bool(banner)),
                gr.Timer(active=state in ("loading", "idle")))

    def attention_info(self) -> str:
        options = self.engine.attention_options()
        if not options:
            return "Decided by the model server."
        off = [f"{o.name}: {o.reason}" for o in options if not o.available]
        return "Unavailable here — " + "; ".join(off) if off else "All implementations can run here."

    def change_attention(self, choice):
        """The sidebar's attention radio: switch the shared model for everyone, once the
        running answer ends. Returns (radio value, model facts, what this tab has seen)."""
        if choice == self.engine.attn:
            return gr.skip(), gr.skip(), self._seen()
        try:
            self.engine.set_attention(choice)
        except ValueError as e:
            gr.Warning(str(e))
            return self.engine.attn, self.status_markdown(), self._seen()
        gr.Info(f"Attention is now {self.engine.attn}, for every user of this app.")
        return self.engine.attn, self.status_markdown(), self._seen()

    def _seen(self) -> tuple[str, int]:
        return self.engine.attn, self.engine.attn_changes

    def sync_attention(self, shown, seen):
        """Polled: when another tab changed the shared attention, show it here and say so."""
        now = self._seen()
        if seen is None or tuple(seen) == now or shown == now[0]:
            return gr.skip(), gr.skip(), now  # nothing new, or this tab's own change
        gr.Info(f"Another user switched the attention implementation to {now[0]}; it applies to everyone.")
        return now[0], self.status_markdown(), now

    def defaults(self) -> dict:
        """The settings' defaults by name (system prompt and generation; -1 = random seed)."""
        d = GenerationSettings(max_new_tokens=self.settings.max_new_tokens).as_dict()
        values = {name: d.get(name) for name in REQUEST_SETTINGS if name != "system_prompt"}
        values["seed"] = -1
        return {"system_prompt": self.settings.system_prompt, **values}
