"""Long sessions (issue #26): KV reuse over a spoken session past the clip limit, and a soak
of one long mixed chat through `/chat`."""

from __future__ import annotations

import statistics
import tempfile
import threading
from pathlib import Path

import numpy as np

from phi_demo_dev.bench.common import BENCH_SYSTEM
from phi_demo_dev.soak import fresh_clip, run_soak, session_files, soak_server


def voice_rows(engine, turns: int, max_clips: int, new_tokens: int) -> list[tuple[int, int, int, float, int, bool]]:
    """A voice chat of `turns` spoken questions (each clip new audio), answered through the
    page's request path with `max_clips`: (turn, prompt tokens, cached tokens, TTFT s,
    clips left out, whether this turn dropped clips)."""
    from phi_demo.chat.messages import Turn
    from phi_demo.chat.request import Limits, build_request, clip_transcripts
    from phi_demo.contract import collect
    from phi_demo.settings import GenerationSettings

    rng = np.random.default_rng(0)
    gen = GenerationSettings(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    engine.load().prefix_cache.clear()
    clip_transcripts.clear()
    rows = []
    history: list[Turn] = []
    before = 0
    with tempfile.TemporaryDirectory() as folder:
        for t in range(1, turns + 1):
            history.append(Turn("user", "", (fresh_clip(Path(folder) / f"turn{t}.wav", rng),)))
            request = build_request(history, BENCH_SYSTEM, Limits(max_audio_clips=max_clips))
            answer, stats = collect(engine.stream(request, gen, threading.Event()))
            assert stats is not None
            history.append(Turn("assistant", answer))
            rows.append((t, stats.prompt_tokens, stats.cached_tokens, stats.ttft_s, request.clips_left_out,
                         request.clips_left_out != before))
            before = request.clips_left_out
    return rows


def voice_report(rows, max_clips: int, where: str) -> tuple[list[str], str]:
    steady = [c / p for _, p, c, _, _, dropped in rows[1:] if not dropped]
    lines = [f"### A spoken session past the clip limit ({len(rows)} turns, {max_clips} clips kept)", "",
             "| turn | prompt tokens | cached | share cached | TTFT (s) | clips left out |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {t} | {p} | {c} | {c / p:.0%} | {ttft:.3f} | {out}{' (dropped now)' if dropped else ''} |"
              for t, p, c, ttft, out, dropped in rows]
    share = statistics.median(steady) if steady else float("nan")
    summary = (f"voice KV reuse: median {share:.0%} of prompt tokens cached on the {len(steady)} turns after the "
               f"first that dropped nothing (target >= 80%) ({where})")
    return lines + ["", summary + ".", ""], summary


def soak_report(engine, turns: int, new_tokens: int) -> tuple[list[str], str]:
    """One chat of `turns` mixed turns through the app's `/chat`, on the server's default limits."""
    demo, client = soak_server(engine)
    try:
        with tempfile.TemporaryDirectory() as folder:
            result = run_soak(client, session_files(Path(folder), turns), new_tokens)
    finally:
        client.close()
        demo.close()
    warm_up = min(20, turns)
    summary = (f"soak: {result.answered} of {turns} turns answered, {len(result.refused)} refused, resident memory "
               f"{result.growth_after(warm_up):+.0f} MB after turn {warm_up}")
    return ([f"### Soak: one chat of {turns} mixed turns (text, images, clips, a video, a PDF) through /chat", ""]
            + result.lines(warm_up) + [""]), summary
