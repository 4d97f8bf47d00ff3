"""The exact Phi-4 prompt from a conversation: pure functions over plain data."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from phi_demo.chat.messages import Turn
from phi_demo.media.kinds import kind_of


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


def _messages(turns: Sequence[tuple[str, str, Sequence[str]]], system_prompt: str) -> list[dict]:
    """(role, text, media kinds) per turn -> the conversation as data: role, text, media kinds."""
    messages = [{"role": "system", "text": system_prompt.strip(), "media": []}] if system_prompt.strip() else []
    return messages + [{"role": role, "text": text, "media": list(kinds)} for role, text, kinds in turns]


def render_messages(messages: Sequence[dict], placeholders: Placeholders = PHI4_PLACEHOLDERS) -> str:
    """The conversation -> the exact Phi-4 prompt, ending with the assistant's cue: one
    placeholder per image and clip, in order, before the user turn's text."""
    parts: list[str] = []
    for m in messages:
        tag = {"system": SYSTEM, "user": USER}.get(m["role"], ASSISTANT)
        slots = "".join(placeholders.image if k == "image" else placeholders.audio for k in m["media"])
        parts.append(f"{tag}{slots if m['role'] == 'user' else ''}{escape_control_tokens(m['text'])}{END}")
    parts.append(ASSISTANT)
    return "".join(parts)


def _render(turns: Sequence[tuple[str, str, Sequence[str]]], system_prompt: str) -> str:
    return render_messages(_messages(turns, system_prompt))


def _groups(turn_kinds: Sequence[Sequence[str]]) -> list[int]:
    """The slot-group number of each media item, turn by turn."""
    out, group = [], -1
    for kinds in turn_kinds:
        previous = None
        for k in kinds:
            if k != previous:
                group += 1
            out.append(group)
            previous = k
    return out


def render_prompt(turns: Iterable[Turn], system_prompt: str = "") -> tuple[str, list[str], list[str]]:
    """The exact Phi-4 prompt for these turns, ending with the assistant's cue.

    Returns (prompt, image paths, audio paths): one <|image|> per image and one <|audio|>
    per clip, in the order they appear, before the turn's text, as the model card does.
    """
    turns = list(turns)
    kinds = [[kind_of(f) for f in t.files] if t.role == "user" else [] for t in turns]
    prompt = _render([(t.role, t.text, k) for t, k in zip(turns, kinds)], system_prompt)
    images = [f for t, ks in zip(turns, kinds) for f, k in zip(t.files, ks) if k == "image"]
    audios = [f for t, ks in zip(turns, kinds) for f, k in zip(t.files, ks) if k == "audio"]
    return prompt, images, audios
