"""👍/👎 on answers, appended to a JSONL file: one line per click with the conversation up
to the answer, the answer, the settings and the model. No gradio, no torch."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypedDict

_lock = threading.Lock()  # one writer at a time: a line is never interleaved with another


def target(setting: str | None, on_space: bool, cache: Path) -> Path | None:
    """Where feedback goes: the --feedback-file setting; unset, the app's cache folder on a
    machine of one's own and nowhere on a Space (its visitors did not agree to be recorded);
    'off' turns it off anywhere."""
    if setting:
        return None if setting.strip().lower() == "off" else Path(setting).expanduser()
    return None if on_space else cache / "feedback.jsonl"


class Entry(TypedDict):
    """One line of the feedback file."""

    time: str
    liked: bool | str | None  # Gradio's like value; None when the click was taken back
    conversation: Sequence[Mapping[str, object]]  # the turns before the answer
    answer: str
    settings: Mapping[str, object]  # the generation settings the answer was made with
    model: Mapping[str, str]


def record(path: Path, liked: bool | str | None, conversation: Sequence[Mapping[str, object]], answer: str,
           settings: Mapping[str, object], model: Mapping[str, str]) -> Entry:
    entry: Entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "liked": liked, "conversation": conversation,
             "answer": answer, "settings": settings, "model": model}
    line = json.dumps(entry, ensure_ascii=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock, open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())
    return entry
