"""What every section shares: the machine, the paths measured side by side, medians."""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import threading
import time
from pathlib import Path

from phi_demo.contract import collect

FULL_RANDOM = "full-random"
ROOT = Path(__file__).resolve().parents[2]
BENCH_SYSTEM = "You are a helpful assistant."
BENCH_QUESTION = "Write a long story about a lighthouse keeper who finds a message in a bottle."


def machine() -> str:
    import torch

    cpu = platform.processor() or "cpu"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores"
    if torch.cuda.is_available():
        text += f"; GPU {torch.cuda.get_device_name(0)}"
    return text


def versions() -> str:
    import torch
    import transformers

    try:  # not needed with --no-server (a GPU box may lack it)
        import gradio
    except ImportError:
        gradio = None
    text = f"torch {torch.__version__}, transformers {transformers.__version__}"
    return text + (f", gradio {gradio.__version__}" if gradio else "")


class ForcedLength:
    """The engine with every answer forced to exactly max_new_tokens (EOS ignored), so that
    all three paths produce the same number of tokens."""

    def __init__(self, engine):
        self._engine = engine

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def stream(self, request, gen, cancel):
        gen = dataclasses.replace(gen, min_new_tokens=gen.max_new_tokens)
        return self._engine.stream(request, gen, cancel)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


class StepClock:
    """A StoppingCriteria that only notes when each new token exists: generate() calls it
    once per step, right where a streamer would get the token."""

    def __init__(self):
        self.times: list[float] = []

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def raw_generate(loaded, request, n: int, **extra) -> tuple[float, float, float]:
    """(time to first token, decode tok/s, end-to-end tok/s) of plain model.generate: no
    streamer, no thread. `extra` goes to generate (e.g. a static cache and compile config)."""
    import torch
    from transformers import StoppingCriteriaList

    from phi_demo.engine.generation import generation_kwargs, prepare_inputs
    from phi_demo.settings import GenerationSettings

    clock = StepClock()
    sync(loaded.device)
    t = time.perf_counter()
    inputs = prepare_inputs(loaded, request)
    with torch.inference_mode():
        loaded.model.generate(**inputs, **generation_kwargs(GenerationSettings(max_new_tokens=n, min_new_tokens=n),
                                                           loaded.processor),
                              stopping_criteria=StoppingCriteriaList([clock]), **extra)
    sync(loaded.device)
    end = time.perf_counter()
    first, last = clock.times[0], clock.times[-1]
    return first - t, (n - 1) / max(last - first, 1e-9), n / (end - t)


def engine_stream(engine, request, n: int) -> tuple[float, float, float]:
    from phi_demo.settings import GenerationSettings

    engine.load().prefix_cache.clear()  # a fresh prompt each run, as raw generate sees it
    gen = GenerationSettings(max_new_tokens=n, min_new_tokens=n)
    t = time.perf_counter()
    _text, stats = collect(engine.stream(request, gen, threading.Event()))
    end = time.perf_counter()
    assert stats.new_tokens == n, stats
    return stats.ttft_s, stats.decode_tok_s, n / (end - t)


def interleaved_medians(paths: dict, runs: int) -> dict:
    """Each round runs every path once, so slow drifts of a shared machine hit all alike."""
    samples = {name: [] for name in paths}
    for _ in range(runs):
        for name, fn in paths.items():
            samples[name].append(fn())
    return {name: tuple(statistics.median(r[i] for r in rs) for i in range(len(rs[0])))
            for name, rs in samples.items()}


def launch_app(settings, engine):
    """The app's page (and /chat) around `engine`, on a free port, not loading a model of its
    own; the caller closes it."""
    from phi_demo.server import create, launch_kwargs

    _, demo = create(settings, engine=engine, load=False)
    kw = launch_kwargs(settings)
    kw["server_port"] = None
    demo.launch(prevent_thread_lock=True, quiet=True, **kw)
    return demo
