"""What the OpenAI-compatible endpoint adds per request: the same prompt through engine.stream
in this process and through `/v1/chat/completions` (streaming, the official openai client),
each timed by its caller from the request to the end of the answer.

The tiny model's random tokens are mostly special tokens, which decode to no text, so the
time to the first *text* is not observable. A one-token answer's whole time is its time to
the first token; an n-token answer's gives tokens/s."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import cast

from phi_demo.contract import ChatEngine
from phi_demo_dev.bench.common import BENCH_QUESTION, BENCH_SYSTEM, ForcedLength, launch_app

Measure = Callable[[int], float]  # (tokens) -> seconds from the request to the answer's end


def _direct(engine) -> Measure:
    from phi_demo.chat.messages import Turn
    from phi_demo.chat.request import build_request
    from phi_demo.contract import collect
    from phi_demo.settings import GenerationSettings

    def run(n: int) -> float:
        engine.load().prefix_cache.clear()
        t0 = time.perf_counter()
        request = build_request([Turn("user", BENCH_QUESTION)], BENCH_SYSTEM)  # the API builds one too
        _text, stats = collect(engine.stream(request, GenerationSettings(max_new_tokens=n), threading.Event()))
        assert stats is not None and stats.new_tokens == n, stats
        return time.perf_counter() - t0
    return run


def _endpoint(engine, client) -> Measure:
    def run(n: int) -> float:
        engine.load().prefix_cache.clear()
        t0 = time.perf_counter()
        stream = client.chat.completions.create(
            model="bench", max_tokens=n, stream=True, temperature=0, stream_options={"include_usage": True},
            messages=[{"role": "system", "content": BENCH_SYSTEM}, {"role": "user", "content": BENCH_QUESTION}])
        usage = [c.usage for c in stream if c.usage][-1]
        assert usage.completion_tokens == n, usage
        return time.perf_counter() - t0
    return run


def api_rows(engine, settings, n: int, runs: int) -> list[str]:
    """The report's table: time to first text and tokens/s, direct and through the endpoint."""
    from openai import OpenAI

    from phi_demo.server import api_context, mount_api

    forced = ForcedLength(engine)
    demo = launch_app(settings, forced)
    # ForcedLength forwards everything else to the engine, which is a ChatEngine.
    ctx = api_context(cast("ChatEngine", forced), settings, demo.phi_api.segments.__self__)  # pyright: ignore[reportAttributeAccessIssue] - set by create()
    mount_api(demo, ctx)
    client = OpenAI(base_url=str(demo.local_url).rstrip("/") + "/v1", api_key="none", max_retries=0)
    paths = {"engine.stream (in process)": _direct(forced),
             "/v1/chat/completions (openai client, SSE)": _endpoint(forced, client)}
    try:
        for fn in paths.values():
            fn(n)  # warm-up
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
        for _ in range(runs):
            for name, fn in paths.items():
                samples[name].append((fn(1), fn(n)))
    finally:
        demo.close()
    med = {name: (statistics.median(s[0] for s in rs), statistics.median(s[1] for s in rs))
           for name, rs in samples.items()}
    (d_one, d_all), (e_one, _e_all) = med.values()
    rows = ["| path | first token: a 1-token answer (ms) | tok/s, " f"{n}-token answer | ratio |",
            "| --- | --- | --- | --- |"]
    rows += [f"| {name} | {one * 1000:.1f} | {n / whole:.1f} | {d_all / whole:.3f} |"
             for name, (one, whole) in med.items()]
    return rows + ["", f"The endpoint adds {(e_one - d_one) * 1000:.1f} ms before the first token "
                       f"(median of {runs}; {n} tokens forced for tok/s).", ""]
