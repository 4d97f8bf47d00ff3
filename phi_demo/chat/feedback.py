"""👍/👎 on answers, appended to a JSONL file: one line per click with the conversation up
to the answer, the answer, the settings and the model. No gradio, no torch."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

_lock = threading.Lock()  # one writer at a time: a line is never interleaved with another


def target(setting: str | None, on_space: bool, cache: Path) -> Path | None:
    """Where feedback goes: the --feedback-file setting; unset, the app's cache folder on a
    machine of one's own and nowhere on a Space (its visitors did not agree to be recorded);
    'off' turns it off anywhere."""
    if setting:
        return None if setting.strip().lower() == "off" else Path(setting).expanduser()
    return None if on_space else cache / "feedback.jsonl"


def record(path: Path, liked: Any, conversation: list[dict], answer: str, settings: dict, model: dict) -> dict:
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "liked": liked, "conversation": conversation,
             "answer": answer, "settings": settings, "model": model}
    line = json.dumps(entry, ensure_ascii=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock, open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())
    return entry
