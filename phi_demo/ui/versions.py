"""‹ n of N ›: the answers Retry made to the last question, one of them shown; the one shown
continues the chat. Gradio only."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from typing import Any

import gradio as gr

from phi_demo.chat.messages import normalize_history
from phi_demo.ui.chat import History, last_user_block


@dataclass(frozen=True)
class AnswerVersions:
    """The answers to one question in one conversation (`key`), and which is shown."""

    key: str
    answers: tuple[History, ...]
    shown: int = 0


# (versions, ‹ button, "Answer n of N", › button): what every step below returns for the page.
Controls = tuple[AnswerVersions | None, dict[str, Any], dict[str, Any], dict[str, Any]]


def _answer_start(history: History) -> int:
    """Where the last answer begins (just after the last user message); len(history) if none."""
    block = last_user_block(history)
    return len(history) if block is None else block[1]


def _question_key(history: History, start: int) -> str:
    """The conversation up to the last question, as text: answers to the same question share it."""
    turns = normalize_history(history[:start])
    return json.dumps([(t.role, t.text, [os.path.basename(f) for f in t.files]) for t in turns])


def _text(answer: History) -> str:
    return "\n".join(t.text for t in normalize_history(answer))


def _controls(versions: AnswerVersions | None) -> Controls:
    n = len(versions.answers) if versions else 0
    if versions is None or n < 2:
        return versions, gr.update(visible=False), gr.update(value="", visible=False), gr.update(visible=False)
    i = versions.shown
    return (versions, gr.update(visible=True, interactive=i > 0),
            gr.update(value=f"Answer {i + 1} of {n}", visible=True), gr.update(visible=True, interactive=i < n - 1))


def remember_answer(versions: AnswerVersions | None, history: History | None) -> Controls:
    """After each change to the chat: keep its last answer among the answers to the same
    question (Retry adds one; a new question, or another chat, starts over)."""
    history = list(history or [])
    start = _answer_start(history)
    answer = history[start:]
    if not answer:
        return _controls(None)
    key = _question_key(history, start)
    if versions is None or versions.key != key:
        versions = AnswerVersions(key, (answer,))
    elif _text(answer) not in [_text(a) for a in versions.answers]:  # greedy retries repeat themselves
        versions = AnswerVersions(key, versions.answers + (answer,), len(versions.answers))
    return _controls(versions)


def forget_answers(history: History | None) -> Controls:
    """Another chat is shown: the answers remembered belong to the one before it."""
    return remember_answer(None, history)


def browse_answers(versions: AnswerVersions | None, history: History | None,
                   step: int) -> tuple[History | dict[str, Any], *Controls]:
    """‹ or ›: show another answer to the last question; the one shown continues the chat."""
    history = list(history or [])
    start = _answer_start(history)
    if versions is None or versions.key != _question_key(history, start):
        return gr.skip(), *_controls(None)
    versions = replace(versions, shown=min(max(versions.shown + step, 0), len(versions.answers) - 1))
    return history[:start] + versions.answers[versions.shown], *_controls(versions)
