"""Soak run: many chat turns (text, images, audio) through the same path the page uses,
printing resident memory so that growth shows. `python -m phi_demo_dev.soak --turns 200`."""

from __future__ import annotations

import argparse
import gc
import threading
import time
from pathlib import Path

from phi_demo.chat.request import Limits
from phi_demo.chat.turn import prepare, stream_answer
from phi_demo.settings import AppSettings

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--turns", type=int, default=200)
    p.add_argument("--model", default="tiny-random")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--turns-per-chat", type=int, default=5)
    args = p.parse_args(argv)

    from phi_demo.engine.local import Engine

    engine = Engine(AppSettings(model=args.model))
    engine.load()
    files = [[], [str(ASSETS / "example_image.png")], [str(ASSETS / "example_question.wav")],
             [str(ASSETS / "example_image.png"), str(ASSETS / "example_question.wav")]]
    start_rss = rss_mb()
    print(f"start: {start_rss:.0f} MB resident")
    history: list = []
    t0 = time.perf_counter()
    marks = {}
    for turn in range(1, args.turns + 1):
        if (turn - 1) % args.turns_per_chat == 0:
            history = []
        message = {"text": f"Turn {turn}: what do you see or hear?", "files": files[turn % len(files)]}
        prepared = prepare(Limits(max_images=16, max_audio_clips=16), message, history,
                           {"system_prompt": "You are terse.", "max_new_tokens": args.max_new_tokens})
        text = ""
        for partial, _stats in stream_answer(engine, prepared.request, prepared.gen, threading.Event()):
            text = partial
        history += [{"role": "user", "content": [{"path": f} for f in message["files"]] + [message["text"]]},
                    {"role": "assistant", "content": text}]
        if turn == 20 or turn % max(1, args.turns // 10) == 0 or turn == args.turns:
            gc.collect()
            marks[turn] = rss_mb()
            print(f"after turn {turn}: {marks[turn]:.0f} MB resident")
    elapsed = time.perf_counter() - t0
    first = marks.get(20, start_rss)
    print(f"{args.turns} turns in {elapsed:.0f} s; resident memory {start_rss:.0f} MB at start, "
          f"{first:.0f} MB after turn 20, {marks[args.turns]:.0f} MB at the end "
          f"({marks[args.turns] - first:+.0f} MB from turn 20 to the end)")


if __name__ == "__main__":
    main()
