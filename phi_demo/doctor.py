"""`python -m phi_demo doctor`: ask the loaded model fixed questions about the bundled example
files, through the same request path as the page and `ask`, and judge each answer: does it
stop by itself within a bound, is it printable, does it mention what the file shows.

Torch-free: the engine is handed in, so tests drive it with a fake one. On the tiny
random-weight model only the plumbing can be judged; the content and the stop are noise."""

from __future__ import annotations

import re
import threading
import time
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from phi_demo.chat.messages import Turn
from phi_demo.chat.request import Limits, build_request
from phi_demo.contract import ChatEngine, GenerationStats, collect
from phi_demo.errors import ModelUnavailable, UserInputError
from phi_demo.settings import GenerationSettings

ASSETS = Path(__file__).resolve().parents[1] / "assets"
# Every question asks for a short answer, so a healthy model ends its turn far below this;
# one that reaches it is rambling or never sees its end-of-turn token.
DEFAULT_BOUND = 256
TINY_NOTE = "tiny-random: random weights, content checks skipped — this run checks the plumbing only"


@dataclass(frozen=True)
class Check:
    name: str
    asset: str  # a file in assets/
    question: str
    expect: tuple[tuple[str, ...], ...]  # every group must be met by one of its words
    why: str


# What Phi-4-multimodal-instruct reliably says about each example. Words match whole and
# case-blind, plurals included; a group lists the ways a right answer may put it.
CHECKS: tuple[Check, ...] = (
    Check("image", "example_image.png",
          "What is the main thing in this picture? Answer in one short sentence.",
          (("house", "home", "building", "cottage", "cabin", "hut", "barn"),),
          "a drawn red house with a brown roof, two windows and a door, a tree and the sun beside it"),
    Check("audio", "example_question.wav",
          "Transcribe the audio clip into text.",  # the model card's ASR prompt
          (("capital",), ("france", "french")),
          'espeak-ng says "What is the capital city of France?"; a transcript holds both words'),
    Check("pdf", "example_report.pdf",
          "Which month had the most units sold? Answer with the month's name.",
          (("march", "mar"),),
          "page 2's bar chart of units sold: Jan 120, Feb 95, Mar 160, Apr 140 (the pages' text "
          "layer goes into the prompt too, and page 1 says sales rose in March)"),
    Check("video", "example_clip.mp4",
          "What happens in this video? Answer in one or two sentences.",
          (("square", "box", "block", "cube", "rectangle", "ball", "sphere", "circle"), ("red", "blue")),
          "a red square slides right, then a blue ball bounces; the clip's voice says so too"),
)

_CONTROL_TOKEN = re.compile(r"<\|[A-Za-z0-9_]{1,40}\|>")


def printable_problem(text: str) -> str:
    """'' for text a person can read; else what is wrong with it."""
    if not text.strip():
        return "empty"
    problems = []
    tokens = sorted(set(_CONTROL_TOKEN.findall(text)))
    if tokens:
        problems.append("control tokens " + " ".join(tokens))
    if (n := text.count("\ufffd")):
        problems.append(f"{n} replacement character{'s' * (n > 1)}")
    controls = sorted({c for c in text if unicodedata.category(c) in ("Cc", "Cs") and c not in "\t\n\r"})
    if controls:
        problems.append("control characters " + " ".join(f"U+{ord(c):04X}" for c in controls))
    return "; ".join(problems)


def _word(w: str) -> re.Pattern:
    return re.compile(r"\b" + re.escape(w) + r"(?:s|es)?\b", re.IGNORECASE)


def content_match(text: str, expect: Sequence[Sequence[str]]) -> tuple[list[str], list[tuple[str, ...]]]:
    """(the word found for each group met, the groups not met)."""
    found, missing = [], []
    for group in expect:
        hit = next((w for w in group if _word(w).search(text)), None)
        if hit is None:
            missing.append(tuple(group))
        else:
            found.append(hit)
    return found, missing


@dataclass
class Outcome:
    check: Check
    bound: int
    tiny: bool
    answer: str = ""
    stats: GenerationStats | None = None
    error: str = ""
    read_s: float = 0.0  # decoding the file into the request
    found: list[str] = field(default_factory=list)
    missing: list[tuple[str, ...]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def stopped(self) -> bool:
        # The engine reports no finish reason; ending short of the bound uncancelled can
        # only mean the model emitted its end-of-turn token.
        s = self.stats
        return s is not None and not s.cancelled and s.new_tokens < self.bound

    @property
    def printable(self) -> str:
        return printable_problem(self.answer)

    @property
    def passed(self) -> bool:
        return not self.failures

    def judge(self) -> "Outcome":
        self.found, self.missing = content_match(self.answer, self.check.expect)
        f = self.failures = []
        if self.error:
            f.append(self.error)
            return self
        if self.stats is None:
            f.append("the stream ended without its stats")
            return self
        if self.stats.cancelled:
            f.append("the answer was cancelled")
        if self.stats.new_tokens < 1:
            f.append("no new tokens")
        if self.tiny:
            # Noise may decode to broken characters or nothing, but a control token in the
            # text means the decoder kept special tokens, which noise cannot cause.
            if _CONTROL_TOKEN.search(self.answer):
                f.append("control tokens in the text")
            return self
        if not self.stopped:
            f.append(f"did not stop within {self.bound} new tokens")
        if self.printable:
            f.append(f"not printable: {self.printable}")
        if self.missing:
            f.append("does not mention " + ", ".join(" or ".join(g) for g in self.missing))
        return self

    def as_dict(self) -> dict:
        s = self.stats
        return {
            **asdict(self.check), "result": self.result, "answer": self.answer, "error": self.error or None,
            "failures": self.failures, "stopped_by_itself": self.stopped if s else None,
            "content_judged": not self.tiny, "found": self.found, "missing": [list(g) for g in self.missing],
            "printable_problem": self.printable or None,
            "read_s": round(self.read_s, 3),
            "new_tokens": s.new_tokens if s else None, "max_new_tokens": self.bound,
            "prompt_tokens": s.prompt_tokens if s else None, "cancelled": s.cancelled if s else None,
            "ttft_s": round(s.ttft_s, 4) if s else None, "total_s": round(s.total_s, 4) if s else None,
            "decode_tok_s": round(s.decode_tok_s, 2) if s else None,
        }

    @property
    def result(self) -> str:
        if not self.passed:
            return "FAIL"
        return "plumbing ok" if self.tiny else "pass"


def run_checks(engine: ChatEngine, system_prompt: str, limits: Limits, bound: int = DEFAULT_BOUND,
               checks: Sequence[Check] = CHECKS, assets: Path = ASSETS,
               progress: Callable[[str], None] | None = None) -> list[Outcome]:
    """Ask every check's question, one after another, greedily (the same answer every run)."""
    missing = [c.asset for c in checks if not (assets / c.asset).is_file()]
    if missing:
        raise UserInputError(f"The example files {', '.join(missing)} are not in {assets}; the doctor needs "
                             "the repository's assets folder.")
    gen = GenerationSettings.from_values(max_new_tokens=bound)
    outcomes = []
    for i, check in enumerate(checks, 1):
        if progress:
            progress(f"[{i}/{len(checks)}] {check.name}: {check.question}")
        o = Outcome(check, bound, engine.is_tiny)
        t0 = time.perf_counter()
        try:
            request = build_request([Turn("user", check.question, (str(assets / check.asset),))], system_prompt,
                                    limits)
            o.read_s = time.perf_counter() - t0
            o.answer, o.stats = collect(engine.stream(request, gen, threading.Event()))
        except UserInputError as e:
            o.error = f"{check.asset}: {e}"
        except ModelUnavailable:
            raise
        except Exception as e:  # noqa: BLE001 - one check crashing (out of memory on the video) must not hide the others
            o.error = f"{type(e).__name__}: {e}"
        outcomes.append(o.judge())
    return outcomes


def _clip(text: str, n: int = 300) -> str:
    one = " ".join(text.split())
    return one if len(one) <= n else one[: n - 1] + "…"


def _row(o: Outcome) -> list[str]:
    s = o.stats
    if s is None:
        return [o.check.name, o.check.asset, "-", "-", "-", "-", "-", "-", o.result]
    count = f"{s.new_tokens}/{o.bound}"
    if s.cancelled:
        stops = f"no: cancelled ({count})"
    elif o.tiny:
        stops = f"not judged ({count})"
    else:
        stops = f"yes ({count})" if o.stopped else f"no: hit {count}"
    printable = "yes" if not o.printable else f"no: {o.printable}"
    if o.tiny and o.printable and not _CONTROL_TOKEN.search(o.answer):
        printable += " (noise, not judged)"
    if o.tiny:
        mentions = "skipped"
    elif o.missing:
        mentions = "no: " + ", ".join("|".join(g) for g in o.missing)
    else:
        mentions = "yes: " + ", ".join(o.found)
    return [o.check.name, o.check.asset, stops, f"{s.ttft_s:.2f} s", f"{s.total_s:.2f} s", f"{s.decode_tok_s:.1f}",
            printable, mentions, o.result]


HEADER = ["check", "asset", "stops by itself", "first token", "total", "tok/s", "printable", "mentions", "result"]


def render(outcomes: Sequence[Outcome], heading: str = "") -> str:
    """The table, a line per failure with the answer it got, and the verdict."""
    tiny = any(o.tiny for o in outcomes)
    rows = [HEADER] + [_row(o) for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = [heading] if heading else []
    if tiny:
        lines.append(TINY_NOTE)
    if lines:
        lines.append("")
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    failed = [o for o in outcomes if not o.passed]
    for o in failed:
        lines += ["", f"FAIL {o.check.name}: " + "; ".join(o.failures),
                  f"  asked:    {o.check.question}",
                  f"  expected: {' and '.join('(' + ' or '.join(g) + ')' for g in o.check.expect)} — {o.check.why}"]
        if not o.error:
            lines.append(f"  answer:   {_clip(o.answer)!r}")
    lines.append("")
    if failed:
        lines.append(f"{len(failed)} of {len(outcomes)} checks failed.")
    elif tiny:
        lines.append(f"All {len(outcomes)} questions went through the request path and the engine "
                     "(content not judged on random weights).")
    else:
        lines.append(f"All {len(outcomes)} checks passed.")
    return "\n".join(lines) + "\n"
