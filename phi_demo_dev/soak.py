"""Soak run of one long session: many mixed turns (text, images, audio clips, a video, a
PDF) in a single chat through the app's `/chat` endpoint, the whole history sent each time
as a program would, printing resident memory so that growth shows.

`python -m phi_demo_dev.soak --turns 100` (the tiny model unless --model says otherwise); the
benchmark's `soak` section runs the same, and tests/server/test_soak.py runs 20 turns."""

from __future__ import annotations

import argparse
import functools
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image

ASSETS = Path(__file__).resolve().parents[1] / "assets"
# One round of the mix: every kind the page takes, text most often, as a session goes.
MIX = ("text", "image", "clip", "text", "image", "video", "clip", "image", "pdf", "text")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@functools.cache
def _question() -> tuple[np.ndarray, int]:
    speech, rate = sf.read(ASSETS / "example_question.wav", dtype="float32")
    return speech, rate


def fresh_clip(path: Path, rng: np.random.Generator) -> str:
    """The example spoken question with a little noise: the same words, new content (so no
    content-keyed cache serves it)."""
    speech, rate = _question()
    sf.write(path, speech + rng.normal(0, 1e-3, speech.shape).astype("float32"), rate)
    return str(path)


def session_files(folder: Path, turns: int) -> list[tuple[str, str, list[str]]]:
    """(kind, question, files) for each turn. Every image and clip is new content (a colour,
    a little noise), so the byte-budgeted caches fill as in a real session, not with one
    entry reused."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for turn in range(1, turns + 1):
        kind = MIX[(turn - 1) % len(MIX)]
        files: list[str] = []
        if kind == "image":
            path = folder / f"image{turn}.png"
            Image.new("RGB", (96, 64), ((turn * 37) % 256, (turn * 91) % 256, 128)).save(path)
            files.append(str(path))
        elif kind == "clip":
            files.append(fresh_clip(folder / f"clip{turn}.wav", rng))
        elif kind == "video":
            files.append(str(ASSETS / "example_clip.mp4"))
        elif kind == "pdf":
            files.append(str(ASSETS / "example_report.pdf"))
        question = {"text": f"Turn {turn}: and what about this?", "image": "What is in the picture?",
                    "clip": "", "video": "What happens in the video?", "pdf": "Summarise page 1."}[kind]
        out.append((kind, question, files))
    return out


@dataclass
class SoakResult:
    turns: int = 0
    answered: int = 0
    refused: list[str] = field(default_factory=list)  # (turn: the sentence) for each turn that got none
    seconds: list[float] = field(default_factory=list)  # per turn, request to the last update
    rss: dict[int, float] = field(default_factory=dict)  # turn -> resident MB after it (0: before)
    cached: dict[int, float] = field(default_factory=dict)  # turn -> MB held by the registered caches

    def growth_after(self, warm_up: int) -> float:
        """Resident MB gained from the end of the warm-up to the end."""
        start = max(t for t in self.rss if t <= warm_up)
        return self.rss[max(self.rss)] - self.rss[start]

    def lines(self, warm_up: int) -> list[str]:
        marks = " · ".join(f"turn {t}: {mb:.0f}" for t, mb in sorted(self.rss.items()))
        held = " · ".join(f"turn {t}: {mb:.0f}" for t, mb in sorted(self.cached.items()))
        med = statistics.median(self.seconds) if self.seconds else float("nan")
        return [f"{self.answered} of {self.turns} turns answered, {len(self.refused)} refused; median turn "
                f"{med:.2f} s, slowest {max(self.seconds, default=float('nan')):.2f} s, all {sum(self.seconds):.0f} s.",
                f"Resident memory (MB) {marks}; {self.growth_after(warm_up):+.0f} MB from turn {warm_up} to the end.",
                f"Of which the byte-budgeted caches (decoded media, image crops, ...; MB): {held}.",
                *(f"Refused: {r}" for r in self.refused)]


def cached_mb() -> float:
    from phi_demo.caches import all_caches

    return sum(entry.cache.bytes for entry in all_caches()) / 2**20


def run_soak(client: Any, turns: list[tuple[str, str, list[str]]], max_new_tokens: int = 16,
             marks: int = 10, warm_up: int = 20, rss: Callable[[], float] = rss_mb,
             on_turn: Callable[[int, str, float], None] | None = None) -> SoakResult:
    """Send `turns` as one chat through `/chat` with gradio_client's `client`, each with the
    whole history so far (its files sent again, as a stateless program does)."""
    from gradio_client import handle_file

    result = SoakResult(turns=len(turns))
    history: list[dict[str, Any]] = []
    gc.collect()
    result.rss[0], result.cached[0] = rss(), cached_mb()
    every = max(1, len(turns) // marks)
    for i, (kind, text, files) in enumerate(turns, 1):
        message = {"text": text, "files": [handle_file(f) for f in files]}
        t0 = time.perf_counter()
        try:
            outputs = list(client.submit(message, history, api_name="/chat", max_new_tokens=max_new_tokens,
                                         do_sample=False))
        except Exception as e:  # noqa: BLE001 - a refusal is what the soak counts
            result.refused.append(f"turn {i} ({kind}): {e}")
            continue
        result.seconds.append(time.perf_counter() - t0)
        result.answered += 1
        answer = outputs[-1] if outputs else ""
        content: list[dict[str, Any]] = [{"type": "file", "file": handle_file(f)} for f in files]
        if text:
            content.append({"type": "text", "text": text})
        history += [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]
        if on_turn:
            on_turn(i, kind, result.seconds[-1])
        if i == warm_up or i % every == 0 or i == len(turns):
            gc.collect()
            result.rss[i], result.cached[i] = rss(), cached_mb()
    return result


def soak_server(engine: Any, limits: dict[str, int] | None = None):
    """The app's server around `engine` on a free port, and a gradio_client for it."""
    from gradio_client import Client

    from phi_demo.settings import AppSettings
    from phi_demo_dev.bench.common import launch_app

    demo = launch_app(AppSettings(model="tiny-random", host="127.0.0.1", feedback_file="off", **(limits or {})),
                      engine)
    return demo, Client(demo.local_url, verbose=False)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--turns", type=int, default=100)
    p.add_argument("--model", default="tiny-random")
    p.add_argument("--max-new-tokens", type=int, default=16)
    args = p.parse_args(argv)

    import tempfile

    from phi_demo.engine.local import Engine
    from phi_demo.settings import AppSettings

    engine = Engine(AppSettings(model=args.model))
    engine.load()
    demo, client = soak_server(engine)
    try:
        with tempfile.TemporaryDirectory() as folder:
            turns = session_files(Path(folder), args.turns)
            result = run_soak(client, turns, args.max_new_tokens,
                              on_turn=lambda i, kind, s: print(f"turn {i} ({kind}): {s:.2f} s", flush=True))
    finally:
        client.close()
        demo.close()
    print("\n".join(result.lines(min(20, args.turns))))


if __name__ == "__main__":
    main()
