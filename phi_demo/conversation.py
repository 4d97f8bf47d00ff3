"""Chat history -> the Phi-4 prompt, plus the ordered images and 16 kHz audio it refers to.

Pure functions over plain data: no gradio, no torch. History comes in every shape Gradio 6
produces (content as a string, a file dict, or a list of text/file blocks) and is normalised
here, in one place.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import media
from .errors import UserInputError

SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
IMAGE_TOKEN, AUDIO_TOKEN = "<|image|>", "<|audio|>"
# Phi-4's control tokens all look like <|name|>. A word joiner between '<' and '|' keeps
# the text readable to the model while no tokenizer or processor sees a control token.
_CONTROL_OPENER = re.compile(r"<(\s*)\|")
_WORD_JOINER = "\u2060"


def escape_control_tokens(text: str) -> str:
    """Make user text unable to open an image/audio slot, end a turn or start a role."""
    return _CONTROL_OPENER.sub(lambda m: "<" + _WORD_JOINER + m.group(1) + "|", text)


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    text: str = ""
    files: tuple[str, ...] = ()


def _file_path(item: Any) -> str | None:
    """The server path inside any of Gradio's file shapes, or None if `item` is not a file."""
    if isinstance(item, (str, os.PathLike)):
        return None
    if isinstance(item, (list, tuple)) and item and isinstance(item[0], (str, os.PathLike)):
        return str(item[0])  # the old (path, alt_text) tuple
    if isinstance(item, dict):
        if item.get("type") == "file" or "file" in item:
            return _file_path(item["file"])
        if "path" in item and item["path"]:
            return str(item["path"])
    path = getattr(item, "path", None)  # gradio.FileData
    return str(path) if path else None


def _content_parts(content: Any) -> tuple[list[str], list[str]]:
    texts: list[str] = []
    files: list[str] = []
    items = content if isinstance(content, list) else [content]
    for item in items:
        if item is None:
            continue
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict) and item.get("type") == "text":
            texts.append(str(item.get("text", "")))
        elif (path := _file_path(item)) is not None:
            files.append(path)
        else:
            raise UserInputError(f"A chat message contains something that is neither text nor a file: {item!r:.80}")
    return texts, files


def normalize_history(history: Sequence[Any] | None) -> list[Turn]:
    """Gradio messages -> turns. Consecutive messages of one role merge (Gradio shows each
    uploaded file as its own message); 'thought' messages (our stats) are display only."""
    turns: list[Turn] = []
    for msg in history or []:
        if not isinstance(msg, dict):
            msg = {"role": getattr(msg, "role", None), "content": getattr(msg, "content", None),
                   "metadata": getattr(msg, "metadata", None)}
        role = msg.get("role")
        if role not in ("user", "assistant"):
            if role == "system":
                continue
            raise UserInputError(f"A chat message has the unknown role {role!r}.")
        if (msg.get("metadata") or {}).get("title"):
            continue
        texts, files = _content_parts(msg.get("content"))
        text = "\n".join(t for t in texts if t)
        if turns and turns[-1].role == role:
            prev = turns[-1]
            joined = "\n".join(t for t in (prev.text, text) if t)
            turns[-1] = Turn(role, joined, prev.files + tuple(files))
        else:
            turns.append(Turn(role, text, tuple(files)))
    return turns


def message_to_turn(message: Any) -> Turn:
    """The MultimodalTextbox value ({"text", "files"}) or a plain string -> a user turn."""
    if message is None:
        message = {}
    if isinstance(message, str):
        message = {"text": message}
    if not isinstance(message, dict):
        raise UserInputError("The message must be text or {'text': ..., 'files': [...]}.")
    text = message.get("text") or ""
    if not isinstance(text, str):
        raise UserInputError("The message text must be a string.")
    files = []
    for f in message.get("files") or []:
        path = f if isinstance(f, (str, os.PathLike)) else _file_path(f)
        if not path:
            raise UserInputError(f"An attached file could not be understood: {f!r:.80}")
        files.append(str(path))
    if not text.strip() and not files:
        raise UserInputError("The message is empty: type a question or attach an image or audio clip.")
    for f in files:
        media.kind_of(f)  # refuses unsupported types with a sentence
    return Turn("user", text.strip(), tuple(files))


def render_prompt(turns: Iterable[Turn], system_prompt: str = "") -> tuple[str, list[str], list[str]]:
    """The exact Phi-4 prompt for these turns, ending with the assistant's cue.

    Returns (prompt, image paths, audio paths): one <|image|> per image and one <|audio|>
    per clip, in the order they appear, before the turn's text, as the model card does.
    """
    parts: list[str] = []
    images: list[str] = []
    audios: list[str] = []
    if system_prompt and system_prompt.strip():
        parts.append(f"{SYSTEM}{escape_control_tokens(system_prompt.strip())}{END}")
    for turn in turns:
        if turn.role == "user":
            slots = ""
            for f in turn.files:
                if media.kind_of(f) == "image":
                    slots += IMAGE_TOKEN
                    images.append(f)
                else:
                    slots += AUDIO_TOKEN
                    audios.append(f)
            parts.append(f"{USER}{slots}{escape_control_tokens(turn.text)}{END}")
        else:
            parts.append(f"{ASSISTANT}{escape_control_tokens(turn.text)}{END}")
    parts.append(ASSISTANT)
    return "".join(parts), images, audios


@dataclass
class Limits:
    max_images: int = 8
    max_audio_clips: int = 4
    max_audio_seconds: float = 300.0
    # Files may only be read from these folders (Gradio's upload cache, our assets);
    # empty means anywhere, for library use. A path typed into history is not an upload.
    allowed_roots: tuple[str, ...] = ()

    def check_allowed(self, path: str) -> None:
        if not self.allowed_roots:
            return
        real = os.path.realpath(path)
        for root in self.allowed_roots:
            root = os.path.realpath(root)
            if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
                return
        raise UserInputError(f"{Path(path).name}: this file was not uploaded to this app; please attach it again.")


@dataclass
class ModelRequest:
    """Everything the engine needs for one answer."""

    prompt: str
    images: list = field(default_factory=list)  # RGB PIL images, in prompt order
    audios: list = field(default_factory=list)  # float32 16 kHz mono arrays, in prompt order
    # The same conversation for chat-completions servers: role, text, and the kinds of its
    # media in order ("image"/"audio"), which index into `images`/`audios`.
    messages: list = field(default_factory=list)

    @property
    def modality(self) -> str:
        """Which LoRA the original Phi-4 code used: any image -> vision, audio only -> speech."""
        if self.images:
            return "vision"
        if self.audios:
            return "speech"
        return "text"


@functools.lru_cache(maxsize=64)
def _load_cached(path: str, stamp: tuple, kind: str, max_seconds: float):
    # `stamp` (mtime, size) is in the key so a replaced file is decoded again.
    return media.load_image(path) if kind == "image" else media.load_audio(path, max_seconds)


def _load(path: str, kind: str, max_seconds: float):
    try:
        st = os.stat(path)
    except OSError:
        raise UserInputError(f"{Path(path).name}: the file is no longer available; please attach it again.") from None
    return _load_cached(path, (st.st_mtime_ns, st.st_size), kind, max_seconds)


def build_request(turns: Sequence[Turn], system_prompt: str = "", limits: Limits | None = None) -> ModelRequest:
    """Render the prompt and decode every image and clip it refers to, enforcing the limits."""
    limits = limits or Limits()
    if not turns or turns[-1].role != "user":
        raise UserInputError("There is no question to answer: the last message must be the user's.")
    prompt, image_paths, audio_paths = render_prompt(turns, system_prompt)
    if len(image_paths) > limits.max_images:
        raise UserInputError(
            f"This conversation would hold {len(image_paths)} images; the limit is {limits.max_images}. "
            "Clear the chat or send fewer images."
        )
    if len(audio_paths) > limits.max_audio_clips:
        raise UserInputError(
            f"This conversation would hold {len(audio_paths)} audio clips; the limit is {limits.max_audio_clips}. "
            "Clear the chat or send fewer clips."
        )
    for p in image_paths + audio_paths:
        limits.check_allowed(p)
    images = [_load(p, "image", limits.max_audio_seconds) for p in image_paths]
    audios = [_load(p, "audio", limits.max_audio_seconds) for p in audio_paths]
    messages = ([{"role": "system", "text": system_prompt.strip(), "media": []}] if system_prompt.strip() else [])
    messages += [{"role": t.role, "text": t.text, "media": [media.kind_of(f) for f in t.files]} for t in turns]
    return ModelRequest(prompt, images, audios, messages)
