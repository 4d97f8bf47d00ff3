"""The chat's handlers: send, retry, edit, undo, 👍/👎 and the /chat endpoint. Gradio only:
the engine is handed in and used through the ChatEngine contract."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import gradio as gr

from phi_demo.chat.feedback import record, target
from phi_demo.chat.messages import Turn, normalize_history
from phi_demo.chat.request import Limits
from phi_demo.chat.turn import Prepared, prepare, stream_answer
from phi_demo.contract import ChatEngine, GenerationStats, ModelFacts, Notice
from phi_demo.errors import ModelUnavailable, UserInputError
from phi_demo.settings import AppSettings, cache_root

# A Chatbot message ({"role", "content", "metadata"?}) and a whole chat, as Gradio sends them.
Message = dict[str, Any]
History = list[Message]
# What the message box shows: a gr.update for it (or gr.skip()).
BoxUpdate = dict[str, Any]
# What every answering handler yields: the chat, then the message box.
Shown = tuple[History, BoxUpdate]


def shown_error(message: str, title: str = "Error") -> gr.Error:
    """The one way a failure reaches the page. Expected failures are sentences, not
    tracebacks, so Gradio is told not to print one; unexpected ones are logged where caught."""
    return gr.Error(message, title=title, print_exception=False)


_KEEP = object()


def message_box(running: bool, value: Any = _KEEP) -> BoxUpdate:
    """The message box while an answer runs (its stop button in place of send) or idle;
    `value` replaces what it holds.

    A generator that streams into the box yields this on every step, never gr.skip():
    Gradio sends each step as a diff of the one before, and its page applies a diff to the
    previous step's update in place, so a skip that arrives with the step before it in one
    read (a busy machine) deletes that step's buttons before the page has shown them: the
    stop button of a starting answer never appeared."""
    if value is _KEEP:
        return gr.update(submit_btn=not running, stop_btn=running)
    return gr.update(value=value, submit_btn=not running, stop_btn=running)


def user_message(turn: Turn) -> Message:
    """A user turn as one Chatbot message: its files, then its text."""
    content: list[Any] = [{"path": f} for f in turn.files]
    if turn.text:
        content.append(turn.text)
    return {"role": "user", "content": content}


STATS_MARK = "📊 "
# What a stats line says the model was not given: (the counted noun, its plural, the reason).
LEFT_OUT = {"images": ("image", "images", "not shown (image limit)"),
            "clips": ("audio clip", "audio clips", "not heard (clip limit)"),
            "messages": ("message", "messages", "left out (context budget)")}


def _left_out_phrase(kind: str, n: int) -> str:
    one, many, why = LEFT_OUT[kind]
    return f" · oldest {n} {one if n == 1 else many} {why}"


def said_left_out(history: History) -> dict[str, int]:
    """What the chat's stats lines last said was left out, per kind (0 where never said)."""
    said: dict[str, int] = {}
    for m in reversed(history):
        meta = m.get("metadata") if isinstance(m, dict) else None  # an imported chat may hold anything
        title = str(meta.get("title") or "") if isinstance(meta, dict) else ""
        if not title.startswith(STATS_MARK):
            continue
        for part in title.split(" · oldest ")[1:]:
            n = part.split(" ", 1)[0]
            for kind in LEFT_OUT:
                if kind not in said and n.isdigit() and _left_out_phrase(kind, int(n)) == f" · oldest {part}":
                    said[kind] = int(n)
    return {kind: said.get(kind, 0) for kind in LEFT_OUT}


def stats_message(stats: GenerationStats, attn: str | None, clips_left_out: int = 0,
                  images_left_out: int = 0, said: dict[str, int] | None = None) -> Message:
    """The answer's stats line. It says what was left out of the prompt when that changes
    (`said`: what the chat's lines said last), so a long chat hears of each drop once."""
    detail = (f"Prompt: {stats.prompt_tokens} tokens · new: {stats.new_tokens} tokens · "
              f"total {stats.total_s:.2f} s · attention: {attn}")
    title = STATS_MARK + stats.summary()
    now = {"images": images_left_out, "clips": clips_left_out, "messages": stats.messages_left_out}
    for kind, n in now.items():
        if n and n != (said or {}).get(kind, 0):
            title += _left_out_phrase(kind, n)
    return {"role": "assistant", "content": detail, "metadata": {"title": title, "status": "done"}}


def notice_message(notice: Notice) -> Message:
    """What a long prefill is doing, as a pending note in the chat (display only: a titled
    message never reaches the prompt)."""
    return {"role": "assistant", "content": "", "metadata": {"title": "⏳ " + notice.text, "status": "pending"}}


def user_block(history: History, index: int) -> tuple[int, int]:
    """The messages [start, end) of the user turn holding history[index]: one turn may be
    several messages (Gradio shows each file as its own)."""
    start, end = index, index + 1
    while start > 0 and history[start - 1].get("role") == "user":
        start -= 1
    while end < len(history) and history[end].get("role") == "user":
        end += 1
    return start, end


def last_user_block(history: History) -> tuple[int, int] | None:
    last = next((i for i in range(len(history) - 1, -1, -1) if history[i].get("role") == "user"), None)
    return None if last is None else user_block(history, last)


def split_last_turn(history: History | None) -> tuple[History, dict[str, Any] | None]:
    """(history before the last user turn, that turn as a message box value)."""
    history = list(history or [])
    block = last_user_block(history)
    if block is None:
        return history, None
    turns = normalize_history(history[block[0]:block[1]])
    turn = turns[-1] if turns else Turn("user")
    return history[:block[0]], {"text": turn.text, "files": list(turn.files)}


def _edited_text(value: Any) -> str:
    """The text of an edited message, in whichever shape the Chatbot sends it."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return str(value.get("text") or value.get("content") or "")
    if isinstance(value, (list, tuple)):
        parts = [v for v in value if not isinstance(v, dict) or "text" in v or v.get("type") == "text"]
        return "\n".join(_edited_text(v) for v in parts).strip()
    return ""


def tab_of(request: gr.Request | None) -> str:
    """Which browser tab an event comes from (its Gradio session)."""
    return (request.session_hash if request is not None else None) or "-"


def model_record(facts: ModelFacts | None) -> dict[str, str]:
    """What a feedback line says about the model that answered."""
    if facts is None:
        return {}
    named = {"model": facts.model, "revision": facts.revision, "device": facts.device, "dtype": facts.dtype,
             "attention": facts.attention, "quantized": facts.quantized}
    return {k: v for k, v in named.items() if v is not None}


class ChatHandlers:
    """Each handler takes the request settings by name (see chat.turn.REQUEST_SETTINGS): the
    page maps its sidebar components to names in one place, /chat has them as parameters."""

    def __init__(self, engine: ChatEngine, settings: AppSettings, allowed_roots: tuple[str, ...] = ()):
        self.engine = engine
        self.settings = settings
        self.limits = Limits.from_settings(settings, allowed_roots)
        self._lock = threading.Lock()
        self._answering: Counter[str] = Counter()  # tab -> answers streaming there now

    @property
    def feedback_path(self):
        """Where 👍/👎 go, or None when feedback is off."""
        return target(self.settings.feedback_file, self.engine.on_space, cache_root())

    def _prepare(self, message: Any, history: Any, values: dict[str, Any]) -> Prepared:
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

    def answer(self, message: Any, *, history: History, rollback: History, from_box: bool,
               values: dict[str, Any], cancel: threading.Event | None = None, tab: str = "-") -> Iterator[Shown]:
        """Shared by send, retry, edit, examples and voice turns: show `message` after
        `history`, stream the answer, and on any failure put the chat back as `rollback`.
        The box shows its stop button instead of send while the answer runs; a message
        `from_box` (which the page took out of the box) goes back into it on any failure.
        `cancel` lets another event stop the answer (voice barge-in); its stats line then
        says so. While it streams, `tab` counts as answering (see box_back)."""
        try:
            prepared = self._prepare(message, history, values)
        except gr.Error:
            if from_box:  # the page emptied the box when it sent the message: it goes back
                yield history, message_box(False, message)
            raise
        cancel = cancel or threading.Event()
        last = shown = list(history) + [user_message(prepared.turns[-1])]
        running = message_box(True)
        failure: Exception | None = None
        with self._lock:
            self._answering[tab] += 1
        try:
            yield shown, running
            for text, extra in stream_answer(self.engine, prepared.request, prepared.gen, cancel):
                answer: History = [{"role": "assistant", "content": text}] if text else []
                if isinstance(extra, Notice):
                    answer = [notice_message(extra)]  # until the first text arrives
                elif isinstance(extra, GenerationStats):
                    answer.append(stats_message(extra, self.engine.attn, prepared.request.clips_left_out,
                                                 prepared.request.images_left_out, said_left_out(history)))
                last = shown + answer
                yield last, running
        except Exception as e:  # noqa: BLE001 - reported below, and the chat is put back
            failure = e
        finally:
            cancel.set()  # Stop, a closed tab and a cancelled job all arrive here
            self._done(tab)
        if failure is not None:
            yield rollback, (message_box(False, message) if from_box else message_box(False))
            raise shown_error(self._failure(failure), title="No answer") from None
        yield last, message_box(False)

    def _done(self, tab: str) -> None:
        with self._lock:
            self._answering[tab] -= 1
            if self._answering[tab] <= 0:
                del self._answering[tab]

    def box_back(self, request: gr.Request | None = None) -> BoxUpdate:
        """After an event that changed the chat: the box back to send, unless an answer runs
        in this tab now. A cancelled answer has ended by then (Gradio closes it before the
        cancelling event runs), but a voice turn that waited behind it may have begun, and
        its stop button must stay."""
        with self._lock:
            running = self._answering[tab_of(request)] > 0
        return gr.skip() if running else message_box(False)

    @staticmethod
    def stopped() -> BoxUpdate:
        """Stop was pressed: the answer's generator is cancelled, so the box is reset here."""
        return message_box(False)

    def submit(self, message: Any, history: History | None, values: dict[str, Any], tab: str = "-") -> Iterator[Shown]:
        history = list(history or [])
        yield from self.answer(message, history=history, rollback=history, from_box=True, values=values, tab=tab)

    def retry(self, history: History | None, values: dict[str, Any], tab: str = "-") -> Iterator[Shown]:
        history = list(history or [])
        before, message = split_last_turn(history)
        if message is None:
            raise shown_error("There is no question to answer again yet.", title="Nothing to retry")
        yield from self.answer(message, history=before, rollback=history, from_box=False, values=values, tab=tab)

    def edit(self, history: History | None, index: Any, new_value: Any, values: dict[str, Any],
             previous_value: Any = None, tab: str = "-") -> Iterator[Shown]:
        """A user message edited in place: the turns after it are dropped and it is answered
        again (KV reuse keeps whatever is still a prefix). Its files stay; its text is the new one."""
        history = list(history or [])
        if not isinstance(index, int) or not 0 <= index < len(history) or history[index].get("role") != "user":
            raise shown_error("Only your own messages can be edited.", title="Cannot edit")
        start, end = user_block(history, index)
        turns = normalize_history(history[start:end])
        files = list(turns[-1].files) if turns else []
        message = {"text": _edited_text(new_value), "files": files}
        # The page shows the edit already; a failure puts the message back as it was.
        rollback = list(history)
        if previous_value is not None:
            rollback[index] = {**history[index], "content": previous_value}
        yield from self.answer(message, history=history[:start], rollback=rollback, from_box=False, values=values,
                               tab=tab)

    def feedback(self, history: History | None, index: Any, liked: Any, values: dict[str, Any]) -> None:
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
        record(path, liked, conversation, turns[-1].text, dict(values), model_record(self.engine.status().facts))
        gr.Info("Thanks: your feedback was saved." if liked is not None else "Feedback removed.")

    @staticmethod
    def undo(history: History | None) -> Shown:
        """The last turn goes; its question goes back into the box (box_back resets the buttons)."""
        before, message = split_last_turn(history)
        return before, (gr.update(value=message) if message is not None else gr.skip())

    def api_chat(self, message: Any, history: Any, system_prompt: Any, max_new_tokens: Any, do_sample: Any,
                 temperature: Any, top_p: Any, top_k: Any, repetition_penalty: Any, seed: Any) -> Iterator[str]:
        """/chat: the growing answer text, for gradio_client and other programs. The message
        and history arrive as plain JSON, whatever a client sends: a message that is not
        {text, files} gets a sentence like any other mistake. The parameter names are the
        API's, so they are spelled out. Attention is the shared model's setting, not a
        request's (the page's sidebar changes it for everyone)."""
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
