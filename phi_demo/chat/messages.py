"""Chat messages in every shape Gradio 6 produces, normalised here, in one place, into turns."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

from phi_demo.errors import UserInputError


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    text: str = ""
    files: tuple[str, ...] = ()


def file_path(item: Any) -> str | None:
    """The server path inside any of Gradio's file shapes, or None if `item` is not a file.
    A file-shaped item whose path is missing or not text is refused with a sentence."""
    if isinstance(item, (list, tuple)) and item and isinstance(item[0], (str, os.PathLike)):
        return str(item[0])  # the old (path, alt_text) tuple
    if isinstance(item, dict):
        if item.get("type") == "file" or "file" in item:
            inner = item.get("file", item if "path" in item else None)
            if isinstance(inner, (str, os.PathLike)):
                return str(inner)
            if isinstance(inner, dict) and inner is not item:
                return file_path(inner)
            path = inner.get("path") if isinstance(inner, dict) else None
        elif "path" in item:
            path = item["path"]
        else:
            return None
        if isinstance(path, (str, os.PathLike)) and str(path):
            return str(path)
        raise UserInputError(f"A file in the chat has no usable path: {item!r:.80}")
    path = getattr(item, "path", None)  # gradio.FileData
    return str(path) if isinstance(path, (str, os.PathLike)) and str(path) else None


def content_parts(content: Any) -> tuple[list[str], list[str]]:
    texts: list[str] = []
    files: list[str] = []
    items = content if isinstance(content, list) else [content]
    for item in items:
        if item is None:
            continue
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict) and item.get("type") == "text":
            text = item.get("text", "")
            if not isinstance(text, (str, int, float)) or isinstance(text, bool):
                raise UserInputError(f"A text part of a chat message is not text: {text!r:.80}")
            texts.append(str(text))
        elif (path := file_path(item)) is not None:
            files.append(path)
        else:
            raise UserInputError(f"A chat message contains something that is neither text nor a file: {item!r:.80}")
    return texts, files


def normalize_history(history: Sequence[Any] | None) -> list[Turn]:
    """Gradio messages -> turns. Consecutive messages of one role merge (Gradio shows each
    uploaded file as its own message); 'thought' messages (our stats) are display only."""
    if history is not None and not isinstance(history, (list, tuple)):
        raise UserInputError("The history must be a list of {'role', 'content'} messages.")
    turns: list[Turn] = []
    for msg in history or []:
        if not isinstance(msg, dict):
            if not hasattr(msg, "role"):
                raise UserInputError(f"A chat message must be a {{'role', 'content'}} object, not {msg!r:.80}")
            msg = {"role": getattr(msg, "role", None), "content": getattr(msg, "content", None),
                   "metadata": getattr(msg, "metadata", None)}
        role = msg.get("role")
        if role == "system":
            continue
        if not isinstance(role, str) or role not in ("user", "assistant"):
            raise UserInputError(f"A chat message has the unknown role {role!r:.40}; use 'user' or 'assistant'.")
        metadata = msg.get("metadata")
        if isinstance(metadata, dict) and metadata.get("title"):
            continue
        texts, files = content_parts(msg.get("content"))
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
    attached = message.get("files") or []
    if not isinstance(attached, (list, tuple)):
        raise UserInputError("The message's files must be a list.")
    files = []
    for f in attached:
        path = str(f) if isinstance(f, (str, os.PathLike)) else file_path(f)
        if not path:
            raise UserInputError(f"An attached file could not be understood: {f!r:.80}")
        files.append(path)
    if not text.strip() and not files:
        raise UserInputError("The message is empty: type a question or attach an image or audio clip.")
    return Turn("user", text.strip(), tuple(files))
