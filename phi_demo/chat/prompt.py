"""The exact Phi-4 prompt from a conversation: pure functions over plain data."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from phi_demo.contract import PromptMessage


@dataclass(frozen=True)
class Placeholders:
    """The strings that stand for one image and one audio clip in a prompt: the loaded
    processor's `image_token` and `audio_token`, handed to the prompt code as plain strings,
    so that code needs no processor."""

    image: str
    audio: str


SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
# Phi-4-multimodal's processor's own: the prompt a request shows (logs, tests, --json) uses
# them; the engine renders the request again with its loaded processor's strings.
PHI4_PLACEHOLDERS = Placeholders("<|image|>", "<|audio|>")
IMAGE_TOKEN, AUDIO_TOKEN = PHI4_PLACEHOLDERS.image, PHI4_PLACEHOLDERS.audio
# Phi-4's control tokens all look like <|name|>. A word joiner between '<' and '|' keeps
# the text readable to the model while no tokenizer or processor sees a control token.
_CONTROL_OPENER = re.compile(r"<(\s*)\|")
_WORD_JOINER = "\u2060"


def escape_control_tokens(text: str) -> str:
    """Make user text unable to open an image/audio slot, end a turn or start a role."""
    return _CONTROL_OPENER.sub(lambda m: "<" + _WORD_JOINER + m.group(1) + "|", text)


def prompt_messages(turns: Sequence[tuple[str, str, Sequence[str]]], system_prompt: str) -> list[PromptMessage]:
    """(role, text, media kinds) per turn -> the conversation as data: role, text, media kinds."""
    messages: list[PromptMessage] = (
        [{"role": "system", "text": system_prompt.strip(), "media": []}] if system_prompt.strip() else [])
    return messages + [{"role": role, "text": text, "media": list(kinds)} for role, text, kinds in turns]


TOOL, TOOL_END, CALL, CALL_END = "<|tool|>", "<|/tool|>", "<|tool_call|>", "<|/tool_call|>"


def render_messages(messages: Sequence[PromptMessage], placeholders: Placeholders = PHI4_PLACEHOLDERS) -> str:
    """The conversation -> the exact Phi-4 prompt, ending with the assistant's cue: one
    placeholder per image and clip, in order, before the user turn's text.

    As the model's chat template has it: a system message's `tools` (a JSON list of
    functions) follows its text inside `<|tool|>…<|/tool|>`; a `tool` message (a function's
    result) is `<|tool|>result<|end|>`, the template's rendering of any role; an assistant
    message's `tool_calls` (the JSON it answered with) come back inside
    `<|tool_call|>…<|/tool_call|>`. Only these markers are control tokens: every text inside
    them is escaped like any user text."""
    parts: list[str] = []
    for m in messages:
        role = m["role"]
        tag = {"system": SYSTEM, "user": USER, "tool": TOOL}.get(role, ASSISTANT)
        slots = "".join(placeholders.image if k == "image" else placeholders.audio for k in m.get("media", ()))
        body = escape_control_tokens(m["text"])
        if role == "system" and (tools := m.get("tools")):
            body += f"{TOOL}{escape_control_tokens(tools)}{TOOL_END}"
        if role == "assistant" and (calls := m.get("tool_calls")):
            body += f"{CALL}{escape_control_tokens(calls)}{CALL_END}"
        parts.append(f"{tag}{slots if role == 'user' else ''}{body}{END}")
    parts.append(ASSISTANT)
    return "".join(parts)



def slot_groups(turn_kinds: Sequence[Sequence[str]]) -> list[int]:
    """The slot-group number of each media item, turn by turn."""
    out: list[int] = []
    group = -1
    for kinds in turn_kinds:
        previous: str | None = None
        for k in kinds:
            if k != previous:
                group += 1
            out.append(group)
            previous = k
    return out
