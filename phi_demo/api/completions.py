"""`/v1/chat/completions`: an OpenAI request -> the page's turns -> the page's request
(chat/request.build_request: every check and sentence) -> the engine -> OpenAI's answer shapes.

Nothing here knows HTTP: routes.py hands in the parsed JSON body and sends what comes back."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, Union, cast

from phi_demo.api.errors import ApiError
from phi_demo.api.files import ClientFiles
from phi_demo.api.tools import ToolCall, choice_instruction, may_be_call, parse_calls, tools_block
from phi_demo.chat.messages import Turn
from phi_demo.chat.prompt import render_messages
from phi_demo.chat.request import Limits, build_request
from phi_demo.chat.turn import stream_answer
from phi_demo.contract import ChatEngine, GenerationStats, ModelRequest, Notice, PromptMessage
from phi_demo.errors import UserInputError
from phi_demo.settings import GenerationSettings

ROLES = ("system", "developer", "user", "assistant", "tool")
# Fields a client may send that change nothing here (accepted, so unchanged clients work).
IGNORED = {"model", "user", "frequency_penalty", "presence_penalty", "logit_bias", "parallel_tool_calls",
           "response_format", "service_tier", "store", "metadata", "logprobs", "top_logprobs", "stream_options",
           "modalities", "reasoning_effort", "top_k", "repetition_penalty"}
KNOWN = IGNORED | {"messages", "stream", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed",
                   "stop", "n", "tools", "tool_choice"}


def _table(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserInputError(f"{what} must be a JSON object.")
    return cast("dict[str, Any]", value)


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise UserInputError(f"{what} must be text.")
    return value


@dataclass
class Call:
    """One chat-completion request, checked."""

    request: ModelRequest
    gen: GenerationSettings
    model: str
    stream: bool = False
    include_usage: bool = False
    stop: list[str] = field(default_factory=list)
    tool_names: set[str] | None = None  # the functions offered; None: no tools


@dataclass
class _Parts:
    text: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def _part(part: object, files: ClientFiles, out: _Parts, where: str) -> None:
    p = _table(part, f"{where}: each content part")
    kind = p.get("type")
    if kind == "text":
        out.text.append(_text(p.get("text"), f"{where}: a text part's text"))
    elif kind in ("image_url", "video_url"):
        ref = _table(p.get(kind), f"{where}: an {kind} part's {kind}")
        out.files.append(files.put_url(_text(ref.get("url"), f"{where}: the {kind}'s url")))
    elif kind == "input_audio":
        audio = _table(p.get("input_audio"), f"{where}: an input_audio part's input_audio")
        fmt = _text(audio.get("format", ""), f"{where}: the audio's format")
        out.files.append(files.put_base64(_text(audio.get("data"), f"{where}: the audio's data"), f".{fmt}" if fmt.isalnum() else ""))
    elif kind == "file":
        f = _table(p.get("file"), f"{where}: a file part's file")
        data = f.get("file_data")
        if data is None:
            raise UserInputError(f"{where}: a file part needs file_data (a data URL); file ids are not supported.")
        name = f.get("filename")
        out.files.append(files.put_url(_text(data, f"{where}: the file's file_data"),
                                       name.rsplit(".", 1)[-1] if isinstance(name, str) else None))
    else:
        raise UserInputError(f"{where}: unknown content part type {kind!r}; use text, image_url, input_audio, "
                             "file or video_url.")


def _content(content: object, files: ClientFiles, where: str) -> _Parts:
    out = _Parts()
    if content is None:
        return out
    if isinstance(content, str):
        out.text.append(content)
        return out
    if not isinstance(content, list):
        raise UserInputError(f"{where}: content must be text or a list of parts.")
    for part in cast("list[object]", content):
        _part(part, files, out, where)
    return out


def _tool_calls_json(value: object, where: str) -> str:
    """An assistant message's `tool_calls`, as the JSON list the model itself writes."""
    if not isinstance(value, list):
        raise UserInputError(f"{where}: tool_calls must be a list.")
    calls: list[dict[str, Any]] = []
    for item in cast("list[object]", value):
        fn = _table(_table(item, f"{where}: each tool call").get("function"), f"{where}: a tool call's function")
        args = fn.get("arguments", "{}")
        try:
            parsed = json.loads(args) if isinstance(args, str) else args
        except ValueError:
            raise UserInputError(f"{where}: a tool call's arguments are not valid JSON.") from None
        calls.append({"name": _text(fn.get("name"), f"{where}: a tool call's name"), "arguments": parsed})
    return json.dumps(calls, ensure_ascii=False)


def _tools(body: dict[str, Any]) -> tuple[str, str, set[str] | None]:
    """(tools JSON for the system message, the instruction for tool_choice, the names offered)."""
    tools, choice = body.get("tools"), body.get("tool_choice", "auto")
    if tools is None or choice == "none":
        return "", "", None
    if not isinstance(tools, list) or not tools:
        raise UserInputError("tools must be a non-empty list of functions.")
    for t in cast("list[object]", tools):
        fn = _table(_table(t, "Each tool").get("function", t), "A tool's function")
        _text(fn.get("name"), "A tool's function name")
        if "parameters" in fn and not isinstance(fn["parameters"], (dict, type(None))):
            raise UserInputError("A tool's parameters must be a JSON schema object.")
    if not (choice in ("auto", "required") or isinstance(choice, dict)):
        raise UserInputError("tool_choice must be auto, none, required or a named function.")
    listed = cast("list[dict[str, Any]]", tools)
    names = {str(t.get("function", t)["name"]) for t in listed}
    if isinstance(choice, dict):
        name = (_table(cast("object", choice).get("function"), "tool_choice's function")).get("name")  # type: ignore[union-attr]
        if name not in names:
            raise UserInputError(f"tool_choice names {name!r}, which is not among the tools.")
    return tools_block(listed), choice_instruction(choice), names


def _generation(body: dict[str, Any], default_max: int) -> GenerationSettings:
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    temperature = body.get("temperature")
    values: dict[str, object] = {"max_new_tokens": default_max if max_tokens is None else max_tokens,
                                 "top_p": body.get("top_p"), "seed": body.get("seed")}
    # OpenAI's temperature 0 is greedy decoding; without one, the page's default (greedy).
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and temperature == 0:
        values["do_sample"] = False
    elif temperature is not None:
        values.update(do_sample=True, temperature=temperature)
    try:
        return GenerationSettings.from_values(**values)
    except UserInputError as e:
        raise UserInputError(str(e).replace("max_new_tokens", "max_tokens")) from None


def _stop(value: object) -> list[str]:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise UserInputError("stop must be a text or a list of up to 4 texts.")
    return cast("list[str]", stops)


def parse(body: object, files: ClientFiles, limits: Limits, default_max_tokens: int, model: str) -> Call:
    """A client's JSON body -> a checked Call; every problem is a UserInputError with a sentence."""
    b = _table(body, "The request body")
    unknown = sorted(set(b) - KNOWN)
    if unknown:
        raise UserInputError(f"Unknown fields: {', '.join(unknown)}.")
    n = b.get("n", 1)
    if n != 1 or isinstance(n, bool):
        raise UserInputError("Only n=1 is supported: one answer per request.")
    stream = b.get("stream", False)
    if not isinstance(stream, bool):
        raise UserInputError("stream must be true or false.")
    options = b.get("stream_options") or {}
    include_usage = bool(_table(options, "stream_options").get("include_usage", False))
    messages = b.get("messages")
    if not isinstance(messages, list) or not messages:
        raise UserInputError("messages must be a non-empty list.")
    gen = _generation(b, default_max_tokens)
    stop = _stop(b.get("stop"))
    tools_json, instruction, names = _tools(b)
    system: list[str] = []
    turns: list[Turn] = []
    calls: dict[int, str] = {}  # turn index -> the assistant's tool calls as JSON
    for i, raw in enumerate(cast("list[object]", messages)):
        where = f"Message {i + 1}"
        m = _table(raw, where)
        role = m.get("role")
        if role not in ROLES:
            raise UserInputError(f"{where}: role must be one of {', '.join(ROLES)}, not {role!r}.")
        parts = _content(m.get("content"), files, where)
        if role in ("system", "developer"):
            if parts.files:
                raise UserInputError(f"{where}: a system message holds text only.")
            system.append("".join(parts.text))
            continue
        if parts.files and role != "user":
            raise UserInputError(f"{where}: only a user message may carry files.")
        if role == "assistant" and m.get("tool_calls"):
            calls[len(turns)] = _tool_calls_json(m["tool_calls"], where)
        turns.append(Turn(cast("str", role), "\n".join(parts.text), tuple(parts.files)))
    request = _request(turns, "\n\n".join(s for s in system + [instruction] if s), limits, tools_json, calls)
    return Call(request, gen, model, stream, include_usage, stop, names)


def _request(turns: list[Turn], system_prompt: str, limits: Limits, tools_json: str,
             calls: dict[int, str]) -> ModelRequest:
    """The page's request for the turns up to the last user message; the function results and
    calls after it (text only) and the tools are then added to its messages, and the prompt
    rendered again from them."""
    last_user = max((i for i, t in enumerate(turns) if t.role == "user"), default=-1)
    if last_user < 0:
        raise UserInputError("There is no question to answer: the conversation needs a user message.")
    request = build_request(turns[:last_user + 1], system_prompt, limits)
    if not (tools_json or calls or last_user + 1 < len(turns)):
        return request
    messages: list[PromptMessage] = list(request.messages)
    if tools_json:
        if not messages or messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "text": "", "media": []})
        messages[0] = {**messages[0], "tools": tools_json}
    messages += [PromptMessage(role=t.role, text=t.text, media=[]) for t in turns[last_user + 1:]]
    offset = 1 if messages[0]["role"] == "system" else 0
    for i, json_calls in calls.items():
        if offset + i < len(messages) and messages[offset + i]["role"] == "assistant":
            messages[offset + i] = {**messages[offset + i], "tool_calls": json_calls}
    request.messages = messages
    request.prompt = render_messages(messages)
    return request


# --- answering ------------------------------------------------------------------------

@dataclass(frozen=True)
class LeftOut:
    """What the answer was given without (docs/API.md): the oldest messages past the context
    budget, the oldest images and clips past their limits. Sent as response headers, so a
    client that keeps its own history knows the model did not read all of it."""

    messages: int = 0
    images: int = 0
    clips: int = 0

    def headers(self) -> dict[str, str]:
        return {"X-Phi-Demo-Messages-Left-Out": str(self.messages), "X-Phi-Demo-Images-Left-Out": str(self.images),
                "X-Phi-Demo-Clips-Left-Out": str(self.clips)}


@dataclass
class Outcome:
    text: str
    calls: list[ToolCall]
    stats: GenerationStats | None
    finish_reason: str


def _finish(stats: GenerationStats | None, stopped_at: bool, calls: list[ToolCall]) -> str:
    if calls:
        return "tool_calls"
    if stopped_at or stats is None:
        return "stop"
    return "length" if stats.finish_reason == "length" else "stop"


Said = Union[Outcome, LeftOut, None]


def pieces(engine: ChatEngine, call: Call, cancel: threading.Event) -> Iterator[tuple[str, Said]]:
    """("", LeftOut) once the engine has fitted the prompt (before any text), then (new text,
    None) as it may be shown, then ("", the Outcome) once. Text that may still become a tool
    call is held back until it cannot; a stop string ends the answer there and stops the model."""
    # stream_answer is a generator (typed as an Iterator): closing it frees the model at once.
    answers = cast("Generator[tuple[str, Any], None, None]", stream_answer(engine, call.request, call.gen, cancel))
    with closing(answers):
        yield from _read(answers, call, cancel)


def _read(answers: Iterator[tuple[str, Any]], call: Call,
          cancel: threading.Event) -> Iterator[tuple[str, Said]]:
    shown, held, answer, stats, stopped_at = 0, False, "", None, False
    told = False
    for text, extra in answers:
        if isinstance(extra, GenerationStats):
            stats = extra
        # The engine says what it left out in a Notice before the first token; an earlier
        # Notice (transcribing clips that left) says nothing about it yet.
        if not told and (text or isinstance(extra, GenerationStats)
                         or (isinstance(extra, Notice) and extra.messages_left_out)):
            told = True
            n = extra.messages_left_out if isinstance(extra, (Notice, GenerationStats)) else 0
            yield "", LeftOut(n, call.request.images_left_out, call.request.clips_left_out)
        if not text and not isinstance(extra, GenerationStats):
            continue
        cut = min((i for i in (text.find(s) for s in call.stop) if i >= 0), default=-1)
        if cut >= 0:
            text, stopped_at = text[:cut], True
        answer = text
        held = call.tool_names is not None and may_be_call(answer)
        if not held and len(answer) > shown:
            yield answer[shown:], None
            shown = len(answer)
        if stopped_at:
            cancel.set()  # the engine stops at its next token
            break
    if not told:  # the engine ended before saying anything (stopped while waiting)
        yield "", LeftOut(0, call.request.images_left_out, call.request.clips_left_out)
    calls, rest = parse_calls(answer, call.tool_names) if call.tool_names is not None else ([], answer)
    if not calls and len(answer) > shown:
        yield answer[shown:], None
    yield "", Outcome(rest if calls else answer, calls, stats, _finish(stats, stopped_at, calls))


def _usage(stats: GenerationStats | None) -> dict[str, Any]:
    prompt, new, cached = (stats.prompt_tokens, stats.new_tokens, stats.cached_tokens) if stats else (0, 0, 0)
    return {"prompt_tokens": prompt, "completion_tokens": new, "total_tokens": prompt + new,
            "prompt_tokens_details": {"cached_tokens": cached}}


def _calls_json(calls: list[ToolCall], with_index: bool = False) -> list[dict[str, Any]]:
    return [{**({"index": i} if with_index else {}), "id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": c.arguments}} for i, c in enumerate(calls)]


def complete(engine: ChatEngine, call: Call, cancel: threading.Event) -> tuple[dict[str, Any], LeftOut]:
    """The whole answer as one `chat.completion`, and what it was given without."""
    outcome, left_out = None, LeftOut()
    for _, said in pieces(engine, call, cancel):
        if isinstance(said, LeftOut):
            left_out = said
        elif said is not None:
            outcome = said
    assert outcome is not None  # pieces() always ends with one
    message: dict[str, Any] = {"role": "assistant", "content": outcome.text or (None if outcome.calls else "")}
    if outcome.calls:
        message["tool_calls"] = _calls_json(outcome.calls)
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": call.model, "choices": [{"index": 0, "message": message, "finish_reason": outcome.finish_reason,
                                              "logprobs": None}],
            "usage": _usage(outcome.stats)}, left_out


def stream_chunks(engine: ChatEngine, call: Call, cancel: threading.Event) -> Iterator[dict[str, Any] | LeftOut]:
    """First what the answer is given without (for the response headers, sent once the engine
    has fitted the prompt), then the answer as `chat.completion.chunk`s: the role, the text,
    the tool calls, the finish, and the usage when the client asked for it."""
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": call.model}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        out = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        return {**out, "usage": None} if call.include_usage else out

    for text, outcome in pieces(engine, call, cancel):
        if isinstance(outcome, LeftOut):
            yield outcome
            yield chunk({"role": "assistant", "content": ""})
            continue
        if outcome is None:
            yield chunk({"content": text})
            continue
        if outcome.calls:
            yield chunk({"tool_calls": _calls_json(outcome.calls, with_index=True)})
        yield chunk({}, outcome.finish_reason)
        if call.include_usage:
            yield {**base, "choices": [], "usage": _usage(outcome.stats)}


def engine_ready(engine: ChatEngine) -> None:
    """503 while the model loads (the client retries), and the reason when it cannot load."""
    status = engine.status()
    if status.state == "loading":
        raise ApiError(503, status.message or "The model is loading; try again shortly.", code="model_loading",
                       retry_after=5)
    if status.state == "error":
        raise ApiError(503, status.message or "The model could not be loaded.", code="model_unavailable")
