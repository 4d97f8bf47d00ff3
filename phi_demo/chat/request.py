"""Turns -> the request the engine answers: the prompt, and every image and 16 kHz clip it refers to, decoded and checked against the limits."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from phi_demo.caches import ByteLRU, register
from phi_demo.chat.messages import Turn
from phi_demo.chat.policy import Cost, keep_newest
from phi_demo.chat.prompt import prompt_messages, render_messages, slot_groups
from phi_demo.contract import LeftClip, MediaItem, ModelRequest
from phi_demo.errors import UserInputError
from phi_demo.media import pdf, video
from phi_demo.media.audio import load_audio
from phi_demo.media.image import load_image
from phi_demo.media.kinds import content_key, kind_of


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
    def from_settings(cls, settings: object, allowed_roots: tuple[str, ...] = ()) -> "Limits":
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


# What a file decodes to: an RGB image, a 16 kHz clip, a video's frames and sound, a PDF's pages.
Decoded = Image.Image | np.ndarray | video.Clip | pdf.Document


def _decoded_size(value: Decoded) -> int:
    if isinstance(value, video.Clip):
        audio: np.ndarray | None = value.audio
        return sum(_decoded_size(x) for x in value.frames) + (0 if audio is None else int(audio.nbytes))
    if isinstance(value, pdf.Document):
        return sum(_decoded_size(x) for x in value.images)
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    return value.width * value.height * len(value.getbands())


# Decoded images, clips, videos and documents, shared by every chat (each turn sends its
# history's files again). Bounded by bytes: a few 4096 px images are already hundreds of MB.
DECODED_BUDGET_BYTES = 512 << 20
_DecodedKey = tuple[str, str, tuple[object, ...]]  # (the file's content digest, kind, decoding parameters)
_FileKey = tuple[str, int, int]  # (path, mtime, size)
DIGEST_ENTRY_BYTES = 256  # a path and a digest, roughly


def file_digest(path: str) -> str:
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class MediaLoader:
    """Opens and decodes the files a request refers to, and owns the budgeted cache of what
    it decoded: a file is decoded once for as long as it stays among the recently used."""

    def __init__(self, budget_bytes: int = DECODED_BUDGET_BYTES):
        self.cache: ByteLRU[_DecodedKey, Decoded] = ByteLRU(budget_bytes, _decoded_size)
        # Decoded by content, not by path: a program resends its history's files each turn, and
        # Gradio writes each upload again (same path, new mtime), so a path key decoded every
        # file of the conversation again each turn and kept every copy. A file's digest is
        # computed once per (path, mtime, size).
        self.digests: ByteLRU[_FileKey, str] = ByteLRU(1 << 20, lambda _d: DIGEST_ENTRY_BYTES)

    @property
    def misses(self) -> int:
        return self.cache.misses

    def clear(self) -> None:
        self.cache.clear()
        self.digests.clear()

    def load(self, path: str, kind: str, limits: Limits, text: str = "") -> Decoded:
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            raise UserInputError(f"{Path(path).name}: the file is no longer available; please attach it again.") from None
        make: Callable[[], Decoded]
        params: tuple[object, ...]
        if kind == "image":
            make, params = (lambda: load_image(path)), ()
        elif kind == "audio":
            make, params = (lambda: load_audio(path, limits.max_audio_seconds)), (limits.max_audio_seconds,)
        elif kind == "video":
            frames, seconds = limits.max_video_frames, limits.max_video_seconds
            make, params = (lambda: video.load_video(path, frames, seconds)), (frames, seconds)
        else:
            pages = pdf.named_pages(text)
            make, params = (lambda: pdf.load_pdf(path, pages, limits.max_images)), (tuple(pages or ()), limits.max_images)
        try:
            digest = self.digests.get_or_make((path, st.st_mtime_ns, st.st_size), lambda: file_digest(path))
        except OSError:
            raise UserInputError(f"{Path(path).name}: the file could not be read; please attach it again.") from None
        return self.cache.get_or_make((digest, kind, params), make)


decoded_media = MediaLoader()
register("decoded media", decoded_media.cache)
register("file digests", decoded_media.digests)

# What the model heard in clips that left a conversation's prompt, by the clip's content
# (/chat and the API resend whole histories, so no conversation object could hold them).
TRANSCRIPTS_BUDGET_BYTES = 4 << 20
clip_transcripts: ByteLRU[str, str] = register(
    "clip transcripts", ByteLRU(TRANSCRIPTS_BUDGET_BYTES, lambda text: len(text.encode())), model_tied=True)


_Item = tuple[str, Any]  # ("image", an RGB image) or ("audio", a 16 kHz clip)


def _expand(path: str, kind: str, decoded: Decoded) -> tuple[list[_Item], str]:
    """A file's media items in prompt order (a video: its frames, then its sound; a PDF: its
    pages), and the text it adds to the turn (a PDF's text layer)."""
    if isinstance(decoded, video.Clip):
        audio: np.ndarray | None = decoded.audio
        sound: list[_Item] = [] if audio is None else [("audio", audio)]
        frames: tuple[Image.Image, ...] = decoded.frames
        return [("image", f) for f in frames] + sound, video.describe(Path(path).name, decoded)
    if isinstance(decoded, pdf.Document):
        pages: tuple[Image.Image, ...] = decoded.images
        return [("image", page) for page in pages], pdf.text_block(Path(path).name, decoded)
    return [(kind, decoded)], ""


def _assemble(turns: Sequence[tuple[str, str, Sequence[tuple[str, Any]]]], system_prompt: str) -> ModelRequest:
    """(role, text, [(kind, decoded item)]) per turn -> the request, with its structure."""
    kinds = [[k for k, _ in items] for _, _, items in turns]
    messages = prompt_messages([(role, text, k) for (role, text, _), k in zip(turns, kinds)], system_prompt)
    flat = [item for _, _, items in turns for item in items]
    groups = slot_groups(kinds)
    return ModelRequest(
        render_messages(messages),
        images=[x for k, x in flat if k == "image"],
        audios=[x for k, x in flat if k == "audio"],
        messages=messages,
        media=[MediaItem(k, content_key(x), g) for (k, x), g in zip(flat, groups)],
    )


def _check_counts(limits: Limits, n_images: int, n_audios: int, derived: bool) -> None:
    """The new message alone over a limit is refused: leaving out earlier media cannot make room."""
    images_note = " (video frames and PDF pages count as images)" if derived else ""
    audio_note = " (a video's sound counts as a clip)" if derived else ""
    if n_images > limits.max_images:
        raise UserInputError(
            f"This message would hold {n_images} images{images_note}; the limit is {limits.max_images}. "
            "Send fewer images at once."
        )
    if n_audios > limits.max_audio_clips:
        raise UserInputError(
            f"This message would hold {n_audios} audio clips{audio_note}; the limit is "
            f"{limits.max_audio_clips}. Send fewer clips at once."
        )


def _cost(path: str, kind: str, limits: Limits, text: str) -> Cost:
    """How many images and clips a file adds; a video or PDF is decoded (once, cached) to know."""
    if kind == "image":
        return Cost(images=1)
    if kind == "audio":
        return Cost(clips=1)
    decoded = decoded_media.load(path, kind, limits, text)
    if isinstance(decoded, video.Clip):
        frames: tuple[Image.Image, ...] = decoded.frames
        audio: np.ndarray | None = decoded.audio
        return Cost(len(frames), int(audio is not None))
    assert isinstance(decoded, pdf.Document)
    pages: tuple[Image.Image, ...] = decoded.images
    return Cost(images=len(pages))


def build_request(turns: Sequence[Turn], system_prompt: str = "", limits: Limits | None = None) -> ModelRequest:
    """Render the prompt and decode every image and clip it refers to. Past a limit the
    conversation goes on: its oldest media leave the prompt (see policy.keep_newest)."""
    limits = limits or Limits()
    if not turns or turns[-1].role != "user":
        raise UserInputError("There is no question to answer: the last message must be the user's.")
    # Library callers and JSON clients may pass anything, whatever the annotation says.
    if not isinstance(system_prompt, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise UserInputError("The system prompt must be text.")
    for t in turns:
        for f in t.files:
            limits.check_allowed(f)  # before a byte of it is read
    kinds = [[kind_of(f) for f in t.files] if t.role == "user" else [] for t in turns]
    new_kinds = kinds[-1]
    # The new message counted before decoding (a video or PDF as at least one image), so
    # that a hundred files are refused without opening them.
    _check_counts(limits, sum(k != "audio" for k in new_kinds), new_kinds.count("audio"),
                  derived=any(k in ("video", "pdf") for k in new_kinds))
    costs = [[_cost(f, k, limits, t.text) for f, k in zip(t.files, ks)] for t, ks in zip(turns, kinds)]
    new_cost = costs[-1]
    _check_counts(limits, sum(c.images for c in new_cost), sum(c.clips for c in new_cost),
                  derived=any(k in ("video", "pdf") for k in new_kinds))
    pending: list[tuple[int, str, np.ndarray]] = []

    def transcript(turn: int, path: str) -> str | None:
        clip = decoded_media.load(path, "audio", limits)
        assert isinstance(clip, np.ndarray)
        key = content_key(clip)
        text = clip_transcripts.get(key)
        if text is None:
            pending.append((turn, key, clip))
        return text

    kept = keep_newest(turns, kinds, costs, limits.max_images, limits.max_audio_clips, transcript)
    decoded: list[tuple[str, str, list[_Item]]] = []
    for original, t, ks in zip(turns, kept.turns, kept.kinds):
        items: list[_Item] = []
        extra: list[str] = []
        for f, k in zip(t.files, ks):
            # The text as the person wrote it names a PDF's pages, not the notes added to it.
            got, text = _expand(f, k, decoded_media.load(f, k, limits, original.text))
            items += got
            extra += [text] if text else []
        decoded.append((t.role, "\n\n".join(extra + ([t.text] if t.text else [])), items))
    request = _assemble(decoded, system_prompt)
    request.images_left_out = kept.left_out.images
    request.clips_left_out = kept.left_out.clips
    system = len(request.messages) - len(turns)  # the system prompt's message, if any
    request.clips_to_transcribe = [LeftClip(turn + system, key, clip) for turn, key, clip in pending]
    return request


def media_request(text: str, images: Sequence[Any] = (), audios: Sequence[Any] = (),
                  system_prompt: str = "", urgent: bool = False) -> ModelRequest:
    """One user turn about media already in memory (RGB images, 16 kHz mono arrays), e.g. a
    live-transcription window: the same prompt and structure as a chat turn."""
    items = [("image", x) for x in images] + [("audio", x) for x in audios]
    request = _assemble([("user", text, items)], system_prompt)
    request.urgent = urgent
    return request
