"""Chat history -> the Phi-4 prompt, plus the ordered images and 16 kHz audio it refers to.

Pure functions over plain data: no gradio, no torch. History comes in every shape Gradio 6
produces (content as a string, a file dict, or a list of text/file blocks) and is normalised
here, in one place.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import media, pdf, video
from .contract import Placeholders
from .errors import UserInputError
from .lru import ByteLRU

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


@dataclass(frozen=True)
class MediaItem:
    """One image or clip of a request, in prompt order. `group` numbers the runs of adjacent
    slots of one kind (their placeholder tokens touch), `key` is a hash of the decoded content:
    every image of one size has the same placeholder ids, so ids alone cannot tell them apart."""

    kind: str  # "image" or "audio"
    key: str
    group: int


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
    kinds = [[media.kind_of(f) for f in t.files] if t.role == "user" else [] for t in turns]
    prompt = _render([(t.role, t.text, k) for t, k in zip(turns, kinds)], system_prompt)
    images = [f for t, ks in zip(turns, kinds) for f, k in zip(t.files, ks) if k == "image"]
    audios = [f for t, ks in zip(turns, kinds) for f, k in zip(t.files, ks) if k == "audio"]
    return prompt, images, audios


@dataclass
class Limits:
    max_images: int = 8  # video frames and PDF pages count as images
    max_audio_clips: int = 4  # a video's sound counts as a clip
    max_audio_seconds: float = 300.0
    # Files may only be read from these folders (Gradio's upload cache, our assets);
    # empty means anywhere, for library use. A path typed into history is not an upload.
    allowed_roots: tuple[str, ...] = ()
    max_video_frames: int = 8
    max_video_seconds: float = 300.0

    @classmethod
    def from_settings(cls, settings, allowed_roots: tuple[str, ...] = ()) -> "Limits":
        """The limits an AppSettings sets (its max_* fields of the same names)."""
        names = ("max_images", "max_audio_clips", "max_audio_seconds", "max_video_frames", "max_video_seconds")
        return cls(**{n: getattr(settings, n) for n in names}, allowed_roots=allowed_roots)

    def check_allowed(self, path: str) -> None:
        if not self.allowed_roots:
            return
        try:
            real = os.path.realpath(path)
        except ValueError:  # a NUL byte in the path
            raise UserInputError("A file path in the chat is not valid.") from None
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
    # Every image and clip in prompt order, with its content key and slot group: KV reuse
    # reads these instead of re-parsing the prompt.
    media: list[MediaItem] = field(default_factory=list)
    # A short request (a live-transcription window) that may run between the tokens of a
    # running answer instead of waiting for its end.
    urgent: bool = False
    # How many of the conversation's oldest audio clips the prompt leaves out to stay within
    # the clip limit (a long voice conversation); the page says so.
    clips_left_out: int = 0

    def render(self, placeholders: Placeholders) -> str:
        """The prompt with these placeholder strings (the loaded processor's)."""
        return render_messages(self.messages, placeholders) if self.messages else self.prompt

    @property
    def modality(self) -> str:
        """Which LoRA the original Phi-4 code used: any image -> vision, audio only -> speech."""
        if self.images:
            return "vision"
        if self.audios:
            return "speech"
        return "text"


def _decoded_size(value) -> int:
    if isinstance(value, (video.Clip, pdf.Document)):
        audio = getattr(value, "audio", None)
        return sum(_decoded_size(x) for x in getattr(value, "frames", ()) + getattr(value, "images", ())) + (
            0 if audio is None else int(audio.nbytes))
    if hasattr(value, "nbytes"):
        return int(value.nbytes)
    return value.width * value.height * len(value.getbands())  # PIL image


# Decoded images, clips, videos and documents, shared by every chat (each turn sends its
# history's files again). Bounded by bytes: a few 4096 px images are already hundreds of MB.
DECODED_BUDGET_BYTES = 512 << 20
_decoded = ByteLRU(DECODED_BUDGET_BYTES, _decoded_size)


def _load(path: str, kind: str, limits: Limits, text: str = ""):
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        raise UserInputError(f"{Path(path).name}: the file is no longer available; please attach it again.") from None
    if kind == "image":
        make, params = (lambda: media.load_image(path)), ()
    elif kind == "audio":
        make, params = (lambda: media.load_audio(path, limits.max_audio_seconds)), (limits.max_audio_seconds,)
    elif kind == "video":
        params = (limits.max_video_frames, limits.max_video_seconds)
        make = lambda: video.load_video(path, *params)  # noqa: E731
    else:
        pages = pdf.named_pages(text)
        params = (tuple(pages or ()), limits.max_images)
        make = lambda: pdf.load_pdf(path, pages, limits.max_images)  # noqa: E731
    # (mtime, size) is in the key so a replaced file is decoded again.
    return _decoded.get_or_make((path, st.st_mtime_ns, st.st_size, kind, params), make)


def _expand(path: str, kind: str, decoded) -> tuple[list[tuple[str, Any]], str]:
    """A file's media items in prompt order (a video: its frames, then its sound; a PDF: its
    pages), and the text it adds to the turn (a PDF's text layer)."""
    if kind == "video":
        sound = [] if decoded.audio is None else [("audio", decoded.audio)]
        return [("image", f) for f in decoded.frames] + sound, video.describe(Path(path).name, decoded)
    if kind == "pdf":
        return [("image", page) for page in decoded.images], pdf.text_block(Path(path).name, decoded)
    return [(kind, decoded)], ""


def _assemble(turns: Sequence[tuple[str, str, Sequence[tuple[str, Any]]]], system_prompt: str) -> ModelRequest:
    """(role, text, [(kind, decoded item)]) per turn -> the request, with its structure."""
    kinds = [[k for k, _ in items] for _, _, items in turns]
    messages = _messages([(role, text, k) for (role, text, _), k in zip(turns, kinds)], system_prompt)
    flat = [item for _, _, items in turns for item in items]
    groups = _groups(kinds)
    return ModelRequest(
        render_messages(messages),
        images=[x for k, x in flat if k == "image"],
        audios=[x for k, x in flat if k == "audio"],
        messages=messages,
        media=[MediaItem(k, media.content_key(x), g) for (k, x), g in zip(flat, groups)],
    )


def _check_counts(limits: Limits, n_images: int, n_audios: int, derived: bool) -> None:
    images_note = " (video frames and PDF pages count as images)" if derived else ""
    audio_note = " (a video's sound counts as a clip)" if derived else ""
    if n_images > limits.max_images:
        raise UserInputError(
            f"This conversation would hold {n_images} images{images_note}; the limit is {limits.max_images}. "
            "Clear the chat or send fewer images."
        )
    if n_audios > limits.max_audio_clips:
        raise UserInputError(
            f"This conversation would hold {n_audios} audio clips{audio_note}; the limit is "
            f"{limits.max_audio_clips}. Clear the chat or send fewer clips."
        )


EARLIER_CLIP = "(an audio clip from earlier in the conversation, no longer included)"


def _without_oldest_clips(turns: Sequence[Turn], kinds: list[list[str]], keep: int):
    """A conversation with more audio clips than `keep` (a voice conversation is one clip per
    turn) goes on: the oldest clips of the earlier turns are left out of the prompt, and
    their answers stay. A turn that was only a clip keeps its place as EARLIER_CLIP, so the
    answer after it still follows a question. The new message's own clips are never left
    out: too many of those is refused as before."""
    excess = sum(k == "audio" for ks in kinds for k in ks) - keep
    if excess <= 0:
        return list(turns), kinds, 0
    left_out, out_turns, out_kinds = 0, [], []
    for i, (t, ks) in enumerate(zip(turns, kinds)):
        if t.role == "user" and i < len(turns) - 1 and left_out < excess and "audio" in ks:
            files, kept = [], []
            for f, k in zip(t.files, ks):
                if k == "audio" and left_out < excess:
                    left_out += 1
                else:
                    files.append(f)
                    kept.append(k)
            t, ks = Turn(t.role, t.text or EARLIER_CLIP, tuple(files)), kept
        out_turns.append(t)
        out_kinds.append(ks)
    return out_turns, out_kinds, left_out


def build_request(turns: Sequence[Turn], system_prompt: str = "", limits: Limits | None = None) -> ModelRequest:
    """Render the prompt and decode every image and clip it refers to, enforcing the limits
    (past the clip limit, the oldest earlier clips are left out instead)."""
    limits = limits or Limits()
    if not turns or turns[-1].role != "user":
        raise UserInputError("There is no question to answer: the last message must be the user's.")
    if not isinstance(system_prompt, str):
        raise UserInputError("The system prompt must be text.")
    for t in turns:
        for f in t.files:
            limits.check_allowed(f)  # before a byte of it is read
    kinds = [[media.kind_of(f) for f in t.files] if t.role == "user" else [] for t in turns]
    turns, kinds, left_out = _without_oldest_clips(turns, kinds, limits.max_audio_clips)
    derived = any(k in ("video", "pdf") for ks in kinds for k in ks)
    # Counted before decoding (a video or PDF as at least one image), so that a hundred
    # files are refused without opening them.
    _check_counts(limits, sum(k != "audio" for ks in kinds for k in ks),
                  sum(k == "audio" for ks in kinds for k in ks), derived)
    decoded = []
    for t, ks in zip(turns, kinds):
        items, extra = [], []
        for f, k in zip(t.files, ks):
            got, text = _expand(f, k, _load(f, k, limits, t.text))
            items += got
            extra += [text] if text else []
        decoded.append((t.role, "\n\n".join(extra + ([t.text] if t.text else [])), items))
    if derived:
        _check_counts(limits, sum(k == "image" for _, _, items in decoded for k, _ in items),
                      sum(k == "audio" for _, _, items in decoded for k, _ in items), derived=True)
    request = _assemble(decoded, system_prompt)
    request.clips_left_out = left_out
    return request


def media_request(text: str, images: Sequence[Any] = (), audios: Sequence[Any] = (),
                  system_prompt: str = "", urgent: bool = False) -> ModelRequest:
    """One user turn about media already in memory (RGB images, 16 kHz mono arrays), e.g. a
    live-transcription window: the same prompt and structure as a chat turn."""
    items = [("image", x) for x in images] + [("audio", x) for x in audios]
    request = _assemble([("user", text, items)], system_prompt)
    request.urgent = urgent
    return request
