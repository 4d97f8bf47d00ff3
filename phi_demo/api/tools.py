"""Tool calls in Phi-4-mini's own format, for the OpenAI-compatible API.

The tools go into the system message as `<|tool|>[...]<|/tool|>`, a JSON list of the
functions (name, description, parameters), exactly where the model's chat template puts
`message['tools']`. The model answers a call with a JSON list of `{"name", "arguments"}`
objects, between `<|tool_call|>` and `<|/tool_call|>` in Microsoft's examples; vLLM's
`phi4_mini_json` parser reads the same list after `functools`, the form its own chat
template asks for. Both are read here, as is a bare list or a single object at the start of
an answer. Anything else is text.

Pure functions over strings: no model, no web framework."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

TOOL_OPEN, TOOL_CLOSE = "<|tool|>", "<|/tool|>"
CALL_OPEN, CALL_CLOSE = "<|tool_call|>", "<|/tool_call|>"
# What may come before the JSON of a call: the model's marker, vLLM's word, or nothing.
_LEAD = re.compile(r"^\s*(?:<\|tool_call\|>|functools)?\s*", re.S)


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # a JSON object, as text (what OpenAI clients json.loads)
    id: str


def tools_block(tools: list[dict[str, Any]]) -> str:
    """The functions of an OpenAI `tools` list as the JSON Phi-4-mini was trained on."""
    functions = []
    for tool in tools:
        fn = tool.get("function", tool)
        entry: dict[str, Any] = {"name": fn["name"]}
        if fn.get("description"):
            entry["description"] = fn["description"]
        entry["parameters"] = fn.get("parameters") or {"type": "object", "properties": {}}
        functions.append(entry)
    return json.dumps(functions, ensure_ascii=False)


def choice_instruction(tool_choice: Any) -> str:
    """A sentence for the system message that says which tool to use, for `tool_choice` other
    than "auto" (a named function, or "required")."""
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        if name:
            return f"Call the function {name} now."
    if tool_choice == "required":
        return "Answer with a call to one of the functions."
    return ""


def _decode_list(text: str) -> tuple[list[Any], int] | None:
    """The JSON list (or object) at the start of `text`, and where it ends; None if there is none."""
    try:
        value, end = json.JSONDecoder().raw_decode(text)
    except ValueError:
        return None
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items):
        return None
    return items, end


def parse_calls(text: str, known: set[str] | None = None) -> tuple[list[ToolCall], str]:
    """(tool calls, text left over) from a whole answer. Text that is not a call comes back
    unchanged with no calls. `known`: the names offered; a call to another name is text."""
    lead = _LEAD.match(text)
    body = text[lead.end():] if lead else text
    found = _decode_list(body)
    if found is None:
        return [], text
    items, end = found
    if known is not None and any(i["name"] not in known for i in items):
        return [], text
    calls = []
    for item in items:
        args = item.get("arguments", item.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                return [], text
        if not isinstance(args, dict):
            return [], text
        calls.append(ToolCall(item["name"], json.dumps(args, ensure_ascii=False), f"call_{uuid.uuid4().hex[:24]}"))
    rest = body[end:]
    rest = rest[len(CALL_CLOSE):] if rest.lstrip().startswith(CALL_CLOSE) else rest
    return calls, rest.strip()


def may_be_call(prefix: str) -> bool:
    """Whether an answer that begins with `prefix` may still turn out to be a tool call: a
    stream holds its text back until this is False or the answer ends."""
    stripped = prefix.lstrip()
    if not stripped:
        return True
    for marker in (CALL_OPEN, "functools"):
        if marker.startswith(stripped) or stripped.startswith(marker):
            return True
    return stripped[0] in "[{"

