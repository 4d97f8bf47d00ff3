"""KV reuse across the turns of one chat, against the same chat without it."""

from __future__ import annotations

import threading

from phi_demo.contract import collect
from phi_demo_dev.bench.common import BENCH_SYSTEM, ROOT


def reuse_rows(engine, turns: int, new_tokens: int) -> list[tuple[int, float, float, int]]:
    """A chat with an image in turn 1 and a same-size question each turn:
    (turn, TTFT with reuse, TTFT without, cached tokens)."""
    from phi_demo.chat.messages import Turn
    from phi_demo.chat.request import build_request
    from phi_demo.settings import GenerationSettings

    image = str(ROOT / "assets" / "example_image.png")
    gen = GenerationSettings(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    out = []
    for reuse in (True, False):
        engine.kv_reuse = reuse
        engine.load().prefix_cache.clear()
        history: list = []
        for t in range(1, turns + 1):
            history.append(Turn("user", f"Question {t}: what do you see in the picture now?", (image,) if t == 1 else ()))
            answer, stats = collect(engine.stream(build_request(history, BENCH_SYSTEM), gen, threading.Event()))
            history.append(Turn("assistant", answer))
            if reuse:
                out.append([t, stats.ttft_s, None, stats.cached_tokens])
            else:
                out[t - 1][2] = stats.ttft_s
    engine.kv_reuse = True
    return [tuple(r) for r in out]
