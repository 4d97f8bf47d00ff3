"""Chat messages in every shape Gradio 6 produces, normalised here, in one place, into turns."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence, cast

from phi_demo.errors import UserInputError


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    text: str = ""
    files: tuple[str, ...] = ()


def _as_dict(value: object) -> dict[str, object] | None:
    """A JSON object as a table of named values, or None for anything else."""
    return cast("dict[str, object]", value) if isinstance(value, dict) else None


def _as_list(value: object) -> list[object] | None:
    return list(cast("list[object] | tuple[object, ...]", value)) if isinstance(value, (list, tuple)) else None


def _path_text(value: object) -> str | None:
    """A path given as text or as an os.PathLike, as text; None for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return str(cast("os.PathLike[str]", value))
    return None


def file_path(item: object) -> str | None:
    """The server path inside any of Gradio's file shapes, or None if `item` is not a file.
    A file-shaped item whose path is missing or not text is refused with a sentence."""
    pair = _as_list(item)
    if pair and (first := _path_text(pair[0])) is not None:
        return first  # the old (path, alt_text) tuple
    table = _as_dict(item)
    if table is not None:
        if table.get("type") == "file" or "file" in table:
            inner: object = table.get("file", table if "path" in table else None)
            if (named := _path_text(inner)) is not None:
                return named
            inner_table = _as_dict(inner)
            if inner_table is not None and inner_table is not table:
                return file_path(inner_table)
            path = inner_table.get("path") if inner_table is not None else None
        elif "path" in table:
            path = table["path"]
        else:
            return None
        if text := _path_text(path):
            return text
        raise UserInputError(f"A file in the chat has no usable path: {item!r:.80}")
    return _path_text(getattr(item, "path", None)) or None  # gradio.FileData


def _items(content: object) -> list[object]:
    """A message's content as its parts: a list is its parts, anything else is one."""
    if isinstance(content, list):
        return list(cast("list[object]", content))
    return [content]


def content_parts(content: object) -> tuple[list[str], list[str]]:
    texts: list[str] = []
    files: list[str] = []
    for item in _items(content):
        if item is None:
            continue
        part = _as_dict(item)
        if isinstance(item, str):
            texts.append(item)
        elif part is not None and part.get("type") == "text":
            text = part.get("text", "")
            if not isinstance(text, (str, int, float)) or isinstance(text, bool):
                raise UserInputError(f"A text part of a chat message is not text: {text!r:.80}")
            texts.append(str(text))
        elif (path := file_path(item)) is not None:
            files.append(path)
        else:
            raise UserInputError(f"A chat message contains something that is neither text nor a file: {item!r:.80}")
    return texts, files


def _message_table(msg: object) -> dict[str, object]:
    """A history message as {role, content, metadata}: a dict, or an object with those attributes."""
    table = _as_dict(msg)
    if table is not None:
        return table
    if not hasattr(msg, "role"):
        raise UserInputError(f"A chat message must be a {{'role', 'content'}} object, not {msg!r:.80}")
    return {"role": getattr(msg, "role", None), "content": getattr(msg, "content", None),
            "metadata": getattr(msg, "metadata", None)}


def normalize_history(history: Sequence[Any] | None) -> list[Turn]:
    """Gradio messages -> turns. Consecutive messages of one role merge (Gradio shows each
    uploaded file as its own message); 'thought' messages (our stats) are display only."""
    messages = _as_list(history)
    if history is not None and messages is None:
        raise UserInputError("The history must be a list of {'role', 'content'} messages.")
    turns: list[Turn] = []
    for msg in messages or []:
        table = _message_table(msg)
        role = table.get("role")
        if role == "system":
            continue
        if not isinstance(role, str) or role not in ("user", "assistant"):
            raise UserInputError(f"A chat message has the unknown role {role!r:.40}; use 'user' or 'assistant'.")
        metadata = _as_dict(table.get("metadata"))
        if metadata is not None and metadata.get("title"):
            continue
        texts, files = content_parts(table.get("content"))
        text = "\n".join(t for t in texts if t)
        if turns and turns[-1].role == role:
            prev = turns[-1]
            joined = "\n".join(t for t in (prev.text, text) if t)
            turns[-1] = Turn(role, joined, prev.files + tuple(files))
        else:
            turns.append(Turn(role, text, tuple(files)))
    return turns


MESSAGE_SHAPE = "The message must be text or {'text': ..., 'files': [...]}."


def message_to_turn(message: object) -> Turn:
    """The message box's value ({"text", "files"}), a plain string, or whatever JSON a
    client sent as the message -> a user turn, or a sentence saying what is wrong with it."""
    if message is None:
        message = {}
    if isinstance(message, str):
        message = {"text": message}
    table = _as_dict(message)
    if table is None:
        raise UserInputError(f"{MESSAGE_SHAPE} It was {type(message).__name__}: {message!r:.60}")
    text = table.get("text") or ""
    if not isinstance(text, str):
        raise UserInputError("The message text must be a string.")
    attached: object = table.get("files") or []
    files_list = _as_list(attached)
    if files_list is None:
        raise UserInputError("The message's files must be a list.")
    files: list[str] = []
    for f in files_list:
        path = _path_text(f)
        path = file_path(f) if path is None else path
        if not path:
            raise UserInputError(f"An attached file could not be understood: {f!r:.80}")
        files.append(path)
    if not text.strip() and not files:
        raise UserInputError("The message is empty: type a question or attach an image or audio clip.")
    return Turn("user", text.strip(), tuple(files))
