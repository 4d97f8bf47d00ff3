"""What stays in the prompt of a long conversation: the newest media, in one rule for images
(video frames and PDF pages among them) and audio clips (a video's sound among them)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from phi_demo.chat.messages import Turn
from phi_demo.chat.prompt import render_messages
from phi_demo.contract import MediaItem, ModelRequest, PromptMessage

EARLIER_CLIP = "(an audio clip from earlier in the conversation, no longer included)"
TRANSCRIBED_CLIP = "(earlier audio clip, transcribed: "  # then the model's transcript and ")"
_EARLIER = {"image": "image", "video": "video", "pdf": "PDF", "audio": "audio clip"}


@dataclass(frozen=True)
class Cost:
    """How many images and clips one file puts in the prompt."""

    images: int = 0
    clips: int = 0


@dataclass(frozen=True)
class LeftOut:
    images: int = 0
    clips: int = 0


@dataclass(frozen=True)
class Kept:
    """The conversation as the prompt holds it: the files that stay, each file that left
    replaced by a note in its turn's text."""

    turns: list[Turn]
    kinds: list[list[str]]
    left_out: LeftOut


def earlier_note(path: str, kind: str, transcript: str | None = None) -> str:
    """What stands in a turn for a file that left the prompt."""
    if kind == "audio":
        return f"{TRANSCRIBED_CLIP}{transcript})" if transcript else EARLIER_CLIP
    return f"(earlier {_EARLIER.get(kind, kind)}: {Path(path).name})"


def _to_drop(total: int, limit: int) -> int:
    """How many of the oldest to leave out. Past the limit they leave in batches of half the
    limit, so most turns drop nothing and the prompt's beginning (its KV cache) stays put
    between drops; a stateless rule, since /chat and the API resend the whole history."""
    if total <= limit:
        return 0
    batch = max(1, limit - limit // 2)
    return -(-(total - limit) // batch) * batch


def keep_newest(turns: Sequence[Turn], kinds: Sequence[Sequence[str]], costs: Sequence[Sequence[Cost]],
                max_images: int, max_clips: int,
                transcript: Callable[[int, str], str | None] = lambda _turn, _path: None) -> Kept:
    """Past a limit the oldest files of earlier turns leave the prompt (their answers stay),
    each as a note in its place. The new message's own files never leave: too many of those
    is refused by the caller, since nothing earlier can make room for them."""
    earlier = [c for cs in costs[:-1] for c in cs]
    last = list(costs[-1]) if costs else []
    all_costs = earlier + last
    drop_images = _to_drop(sum(c.images for c in all_costs), max_images)
    drop_clips = _to_drop(sum(c.clips for c in all_costs), max_clips)
    gone = LeftOut()
    out_turns: list[Turn] = []
    out_kinds: list[list[str]] = []
    for i, (t, ks, cs) in enumerate(zip(turns, kinds, costs)):
        files: list[str] = []
        kept: list[str] = []
        notes: list[str] = []
        for f, k, c in zip(t.files, ks, cs):
            leaves = i < len(turns) - 1 and ((c.images and gone.images < drop_images)
                                            or (c.clips and gone.clips < drop_clips))
            if leaves:
                gone = LeftOut(gone.images + c.images, gone.clips + c.clips)
                notes.append(earlier_note(f, k, transcript(i, f) if k == "audio" else None))
            else:
                files.append(f)
                kept.append(k)
        if notes:
            t = Turn(t.role, "\n".join([*notes, t.text] if t.text else notes), tuple(files))
        out_turns.append(t)
        out_kinds.append(kept)
    return Kept(out_turns, out_kinds, gone)


def earlier_turns_note(n: int) -> str:
    return (f"({n} earlier message{'s' * (n > 1)} left out: the conversation is longer than the model "
            "can read at once here)")


def units_to_leave(sizes: Sequence[int], fixed: int, budget: int) -> int | None:
    """How many of the oldest units (a question and its answers) to leave out so that the
    prompt fits in `budget` tokens; None when even the newest alone cannot fit. `fixed` is
    what always stays (the system prompt, the note). The cut points fall where the running
    total crosses a multiple of half the budget: they depend only on the turns before them,
    so as the conversation grows the prompt's beginning stays put until the next cut."""
    total = fixed + sum(sizes)
    if total <= budget:
        return 0
    step = max(1, budget // 2)
    running, mark = 0, step
    for k in range(1, len(sizes)):
        running += sizes[k - 1]
        at_cut = running >= mark or k == len(sizes) - 1
        if at_cut:
            mark = (running // step + 1) * step
            if total - running <= budget:
                return k
    return None


def message_units(messages: Sequence[PromptMessage]) -> list[int]:
    """How many messages each unit holds: a user message and the answers after it."""
    units: list[int] = []
    for m in messages:
        if m["role"] == "user" or not units:
            units.append(0)
        units[-1] += 1
    return units


def without_oldest_messages(request: ModelRequest, lead: int, drop: int, note: str) -> ModelRequest:
    """The request without `drop` messages after its first `lead` ones (the system prompt),
    their images and clips gone with them, `note` opening the first message that stays."""
    head, gone = request.messages[:lead], request.messages[lead:lead + drop]
    kept = [dict(m) for m in request.messages[lead + drop:]]
    if kept:
        kept[0]["text"] = f"{note}\n{kept[0]['text']}" if kept[0]["text"] else note
    n_images = sum(k == "image" for m in gone for k in m["media"])
    n_audios = sum(k == "audio" for m in gone for k in m["media"])
    media = request.media[n_images + n_audios:]
    first_group = media[0].group if media else 0
    messages = head + [cast("PromptMessage", m) for m in kept]
    return dataclasses.replace(
        request, prompt=render_messages(messages), messages=messages,
        images=request.images[n_images:], audios=request.audios[n_audios:],
        media=[MediaItem(m.kind, m.key, m.group - first_group) for m in media])


# The model card's speech-recognition prompt.
TRANSCRIBE_CLIP = "Transcribe the audio clip into text."


def with_transcripts(request: ModelRequest, transcripts: Sequence[str]) -> ModelRequest:
    """The request with each clip of `clips_to_transcribe` noted by its transcript."""
    messages = [cast("PromptMessage", dict(m)) for m in request.messages]
    for clip, text in zip(request.clips_to_transcribe, transcripts):
        m = messages[clip.message]
        m["text"] = m["text"].replace(EARLIER_CLIP, earlier_note("", "audio", text.strip()), 1)
    return dataclasses.replace(request, prompt=render_messages(messages), messages=messages, clips_to_transcribe=[])
