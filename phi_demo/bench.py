"""Speed, measured side by side in one run: raw `model.generate` vs our streaming engine vs a
full request through the running Gradio server, plus prefill costs, KV reuse across chat
turns, each attention implementation, and peak memory.

    python -m phi_demo.bench --quick                       # tiny model, under a minute
    python -m phi_demo.bench --model full-random --device cuda --dtype bfloat16

Ends with one line: `stream/raw tok/s ratio: R (model, device, attention)`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

FULL_RANDOM = "full-random"
ROOT = Path(__file__).resolve().parents[1]


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

    def stream(self, request, gen, cancel, attn=None):
        gen = dataclasses.replace(gen, min_new_tokens=gen.max_new_tokens)
        return self._engine.stream(request, gen, cancel, attn=attn)


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

    from .engine.generation import generation_kwargs, prepare_inputs
    from .settings import GenerationSettings

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
    from .settings import GenerationSettings

    engine.load().prefix_cache.clear()  # a fresh prompt each run, as raw generate sees it
    gen = GenerationSettings(max_new_tokens=n, min_new_tokens=n)
    t = time.perf_counter()
    stats = list(engine.stream(request, gen, threading.Event()))[-1]
    end = time.perf_counter()
    assert stats.new_tokens == n, stats
    return stats.ttft_s, stats.decode_tok_s, n / (end - t)


class RemoteClient:
    """gradio_client in a process of its own, as a real client is. In the benchmark's own
    process its result iterator, which polls every millisecond, would compete with the
    server's generation thread for the GIL (2 CPU cores), and slow the very thing measured."""

    def __init__(self, url: str):
        import subprocess

        self.proc = subprocess.Popen([sys.executable, "-m", "phi_demo.bench", "--client-for", url],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self._ask({"n": 0})  # wait until it is connected

    def _ask(self, msg: dict) -> dict:
        import json

        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark's client process ended")
        return json.loads(line)

    def chat(self, n: int) -> tuple[float, float]:
        """(seconds to the first text, seconds to the end) of one /chat request of n tokens."""
        r = self._ask({"n": n})
        return r["first"], r["end"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def client_loop(url: str) -> int:
    """The client process: one /chat request per line of stdin, timings on stdout."""
    import json

    from gradio_client import Client

    client = Client(url, verbose=False)
    for line in sys.stdin:
        n = json.loads(line)["n"]
        first = end = 0.0
        if n:
            t = time.perf_counter()
            job = client.submit({"text": BENCH_QUESTION, "files": []}, [], api_name="/chat", max_new_tokens=n,
                                system_prompt=BENCH_SYSTEM)
            for _ in job:
                if not first:
                    first = time.perf_counter() - t
            end = time.perf_counter() - t
        print(json.dumps({"first": first or end, "end": end}), flush=True)
    return 0


def server_stream(client: RemoteClient, engine, n: int) -> tuple[float, float, float]:
    """Through HTTP, the queue and the page's coalesced updates. Decode speed cannot be seen
    from the client (updates are batched), so only the first text and the end are timed."""
    engine.load().prefix_cache.clear()
    first, end = client.chat(n)
    return first, float("nan"), n / end


BENCH_SYSTEM = "You are a helpful assistant."
BENCH_QUESTION = "Write a long story about a lighthouse keeper who finds a message in a bottle."


def interleaved_medians(paths: dict, runs: int) -> dict:
    """Each round runs every path once, so slow drifts of a shared machine hit all alike."""
    samples = {name: [] for name in paths}
    for _ in range(runs):
        for name, fn in paths.items():
            samples[name].append(fn())
    return {name: tuple(statistics.median(r[i] for r in rs) for i in range(len(rs[0])))
            for name, rs in samples.items()}


def prefill_rows(engine, loaded, runs) -> list[tuple[str, int, float]]:
    """(input, prompt tokens, prefill ms) for text, images of three sizes and two audio lengths."""
    import soundfile as sf
    from PIL import Image

    from .conversation import Limits, Turn, build_request
    from .engine.generation import prepare_inputs

    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "phi-demo-bench"
    tmp.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    cases = [("text only", ())]
    for side in (448, 896, 1344):
        p = tmp / f"img{side}.png"
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(p)
        cases.append((f"image {side}x{side}", (str(p),)))
    for seconds in (5, 30):
        p = tmp / f"audio{seconds}.wav"
        sf.write(p, (0.1 * rng.standard_normal(16000 * seconds)).astype(np.float32), 16000)
        cases.append((f"audio {seconds} s", (str(p),)))
    rows = []
    for name, files in cases:
        request = build_request([Turn("user", "Describe this.", files)], BENCH_SYSTEM, Limits(max_audio_seconds=60))
        engine.activate_adapter(loaded, request.modality)
        tokens = int(prepare_inputs(loaded, request)["input_ids"].shape[1])
        ms = statistics.median(raw_generate_prefill(loaded, request) for _ in range(runs)) * 1000
        rows.append((name, tokens, ms))
    engine.activate_adapter(loaded, "text")
    return rows


def raw_generate_prefill(loaded, request) -> float:
    """Processor + one forward pass over the prompt (the first token's cost)."""
    import torch

    from .engine.generation import prepare_inputs

    sync(loaded.device)
    t = time.perf_counter()
    inputs = prepare_inputs(loaded, request)
    with torch.inference_mode():
        loaded.model(**inputs, logits_to_keep=1)
    sync(loaded.device)
    return time.perf_counter() - t


def reuse_rows(engine, turns: int, new_tokens: int) -> list[tuple[int, float, float, int]]:
    """A chat with an image in turn 1 and a same-size question each turn:
    (turn, TTFT with reuse, TTFT without, cached tokens)."""
    from .conversation import Turn, build_request
    from .settings import GenerationSettings

    image = str(ROOT / "assets" / "example_image.png")
    gen = GenerationSettings(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    out = []
    for reuse in (True, False):
        engine.kv_reuse = reuse
        engine.load().prefix_cache.clear()
        history: list = []
        for t in range(1, turns + 1):
            history.append(Turn("user", f"Question {t}: what do you see in the picture now?", (image,) if t == 1 else ()))
            pieces = list(engine.stream(build_request(history, BENCH_SYSTEM), gen, threading.Event()))
            stats = pieces[-1]
            history.append(Turn("assistant", "".join(pieces[:-1])))
            if reuse:
                out.append([t, stats.ttft_s, None, stats.cached_tokens])
            else:
                out[t - 1][2] = stats.ttft_s
    engine.kv_reuse = True
    return [tuple(r) for r in out]


def live_rows(engine, minutes: float) -> tuple[list[tuple[str, float, float, int]], float, float]:
    """Feed a long recording (the example question, a pause, again) in 0.5 s chunks through
    the live-transcription policy, recognising synchronously whenever it asks.
    Returns rows (part, median compute s per recognition, median window s, recognitions),
    the real-time factor and the mean committed-text lag."""
    import soundfile as sf

    from .media import to_mono_16k
    from .transcription import StreamingTranscript, engine_recognizer

    speech, sr = sf.read(ROOT / "assets" / "example_question.wav", dtype="float32")
    speech = to_mono_16k(speech, sr)
    pattern = np.concatenate([speech, np.zeros(16000, np.float32), speech, speech, np.zeros(12000, np.float32)])
    total = int(minutes * 60 * 16000)
    audio = np.tile(pattern, total // len(pattern) + 1)[:total]
    recognize = engine_recognizer(engine, "en", "transcribe", max_new_tokens=48)
    policy = StreamingTranscript()
    samples, lags = [], []
    chunk = 8000
    t_all = 0.0
    for i in range(0, len(audio), chunk):
        policy.add_audio(audio[i:i + chunk])
        if policy.needs_recognition():
            window, end = policy.snapshot()
            t = time.perf_counter()
            text = recognize(window)
            dt = time.perf_counter() - t
            t_all += dt
            policy.apply(text, end)
            samples.append((end, dt, len(window) / 16000))
        lags.append(policy.lag_s)
    length = len(audio) / 16000
    rows = []
    for name, lo, hi in (("start (first minute)", 0, 60), ("middle", length / 2 - 30, length / 2 + 30),
                         ("end (last minute)", length - 60, length)):
        part = [(dt, w) for end, dt, w in samples if lo <= end <= hi]
        if part:
            rows.append((name, statistics.median(d for d, _ in part), statistics.median(w for _, w in part), len(part)))
    return rows, t_all / length, statistics.mean(lags)


# Peak memory bandwidth (bytes/s) of GPUs a demo like this runs on, from their data sheets.
BANDWIDTH = [("H100 PCIe", 2.0e12), ("H100 NVL", 3.9e12), ("H100", 3.35e12), ("H200", 4.8e12), ("GH200", 4.0e12),
             ("A100-SXM4-80GB", 2.04e12), ("A100 80GB PCIe", 1.94e12), ("A100", 1.56e12), ("L40S", 0.864e12),
             ("A10G", 0.6e12), ("A10", 0.6e12), ("L4", 0.3e12), ("T4", 0.32e12)]


def gpu_bandwidth(name: str) -> float | None:
    for key, value in BANDWIDTH:
        if key.lower() in name.lower():
            return value
    return None


def decode_bytes(model) -> int:
    """Bytes one decode step must read: the text decoder and the LM head (the embedding
    only when tied to it: otherwise a step reads one row of it), without LoRA weights (a text prompt runs no adapter) nor the vision and
    audio encoders, which a decode step does not touch."""
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    reads = ("model.layers.", "model.norm", "lm_head") + (("model.embed_tokens.",) if tied else ())
    total = 0
    for name, p in model.named_parameters():  # tied weights are listed once
        if "lora_" not in name and name.startswith(reads):
            total += p.numel() * p.element_size()
    return total


def fast_rows(engine, loaded, request, n: int, runs: int, device: str, bandwidth: float | None) -> list[str]:
    """Fast decode beside raw generate with a dynamic cache and raw generate with
    transformers' own static cache + compile; compile time; the fraction of the ceiling."""
    engine.settings.fast_decode = True
    engine.load()  # compiles (text, and each adapter)
    fast = loaded.fast
    if fast is None:
        return [f"Fast decode could not be used here: {loaded.fast_error}.", ""]
    import torch
    from transformers import StaticCache

    from .engine.generation import prepare_inputs

    # transformers' own path, given a static cache of the length the engine picks for this
    # request (its default would size the cache to the request, which the engine does not
    # do so as to compile few graphs): the ratio then shows the engine's own overhead.
    prompt = int(prepare_inputs(loaded, request)["input_ids"].shape[1])
    length = fast.cache_length(loaded.model.config, prompt + n)
    own = StaticCache(config=loaded.model.config, max_cache_len=length)

    def raw_static(tokens: int):
        with torch.inference_mode():
            own.reset()
        return raw_generate(loaded, request, tokens, cache=own, compile_config=fast.compile_config(device))

    t = time.perf_counter()
    raw_static(min(n, 8))
    raw_static_compile_s = time.perf_counter() - t
    engine_stream(engine, request, min(n, 8))
    paths = {"raw model.generate (dynamic cache)": lambda: raw_generate(loaded, request, n),
             f"raw model.generate, static cache ({length}) + torch.compile": lambda: raw_static(n),
             "engine stream, fast decode": lambda: engine_stream(engine, request, n)}
    results = interleaved_medians(paths, runs)
    base = results["raw model.generate (dynamic cache)"]
    lines = [f"Fast decode ({fast.compile_config(device).mode} mode, {fast.backend}): compiling at load took "
             f"{fast.warmup_s:.1f} s (text and each adapter at the {min(fast.caches)}-token cache length); "
             f"transformers' own path with its own cache took {raw_static_compile_s:.1f} s for its first call.", "",
             "| path | time to first token (s) | decode tok/s | ratio | end-to-end tok/s | ratio |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, (ttft, tps, e2e) in results.items():
        lines.append(f"| {name} | {ttft:.3f} | {tps:.1f} | {tps / base[1]:.3f} | {e2e:.1f} | {e2e / base[2]:.3f} |")
    lines.append("")
    if bandwidth:
        weights = decode_bytes(loaded.model)
        ceiling = bandwidth / weights
        ours = results["engine stream, fast decode"][1]
        lines += [f"Ceiling for batch-1 decode: {bandwidth / 1e12:.2f} TB/s ÷ {weights / 1e9:.2f} GB read per token "
                  f"= {ceiling:.0f} tok/s. Fast decode: {ours:.1f} tok/s = {ours / ceiling:.0%} of it; "
                  f"the ordinary path: {base[1] / ceiling:.0%}.", ""]
    loaded.drop_compiled()
    engine.settings.fast_decode = False
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model, few runs: under a minute")
    p.add_argument("--model", default="tiny-random", help=f"tiny-random, {FULL_RANDOM}, a folder or a hub id")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--attn", default="all", help="implementations (comma-separated), or 'all' that can run here")
    p.add_argument("--runs", type=int, default=None, help="runs per measurement (median)")
    p.add_argument("--new-tokens", type=int, default=None)
    p.add_argument("--turns", type=int, default=5, help="chat turns for the KV-reuse measurement")
    p.add_argument("--no-server", action="store_true", help="skip the Gradio server path")
    p.add_argument("--sections", default=None,
                   help="measurements besides the three paths: prefill, reuse, live, fast (comma-separated; "
                        "'' for none; default all, --quick: all but fast)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend for the fast section")
    p.add_argument("--bandwidth-gbs", type=float, default=None,
                   help="GPU memory bandwidth in GB/s for the decode ceiling (default: known GPUs by name)")
    p.add_argument("--live-minutes", type=float, default=None, help="length of the live-transcription stream")
    p.add_argument("--out", default=None, help="append the report (markdown) to this file")
    p.add_argument("--client-for", default=None, help=argparse.SUPPRESS)  # the client process (RemoteClient)
    args = p.parse_args(argv)
    if args.client_for:
        return client_loop(args.client_for)
    runs = args.runs or (3 if args.quick else 5)
    if args.sections is None:
        args.sections = "prefill,reuse,live" if args.quick else "prefill,reuse,live,fast"
    sections = set(args.sections.split(","))
    n = args.new_tokens or (64 if args.quick else 256)

    import torch

    from .engine import Engine, ModelCache
    from .engine.attention import attention_options, resolve_attention
    from .engine.loader import resolve_device, resolve_dtype
    from .engine.tiny import build_full_random
    from .settings import AppSettings

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device, tiny=args.model == "tiny-random")
    if args.attn == "all":
        names = [o.name for o in attention_options(device) if o.available]
    else:
        try:
            names = [resolve_attention(a.strip(), device) for a in args.attn.split(",")]
        except ValueError as e:
            p.error(str(e))
    report = [f"## {args.model} on {device} ({dtype})", "",
              f"Machine: {machine()}; {versions()}.  ",
              f"Command: `python -m phi_demo.bench {' '.join(argv if argv is not None else sys.argv[1:])}`  ",
              f"Runs: median of {runs}; {n} new tokens forced (EOS ignored); date {time.strftime('%Y-%m-%d')}.", ""]
    summary = None
    for attn in names:
        settings = AppSettings(model=args.model, device=device, dtype=dtype, attn=attn, host="127.0.0.1",
                               compile_backend=args.compile_backend)
        if args.model == FULL_RANDOM:
            built = build_full_random(device, dtype, attn)
            engine = Engine(settings, cache=ModelCache(lambda key, b=built: b))
        else:
            engine = Engine(settings)
        t0 = time.perf_counter()
        loaded = engine.load()
        load_s = loaded.load_seconds if args.model == FULL_RANDOM else time.perf_counter() - t0
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()

        from .conversation import Turn, build_request

        request = build_request([Turn("user", BENCH_QUESTION)], BENCH_SYSTEM)
        engine.activate_adapter(loaded, "text")
        # Warm-up: first calls pay for lazy initialisation (kernels, allocator).
        raw_generate(loaded, request, min(n, 8))
        engine_stream(engine, request, min(n, 8))
        paths = {"raw model.generate": lambda: raw_generate(loaded, request, n),
                 "engine stream (thread + streamer)": lambda: engine_stream(engine, request, n)}
        if not args.no_server:
            from .server import create, launch_kwargs
            forced = ForcedLength(engine)
            _, demo = create(settings, engine=forced, load=False)
            kw = launch_kwargs(settings)
            kw["server_port"] = None
            demo.launch(prevent_thread_lock=True, quiet=True, **kw)
            client = RemoteClient(demo.local_url)
            server_stream(client, engine, min(n, 8))
            paths["Gradio server via gradio_client"] = lambda: server_stream(client, engine, n)
        results = interleaved_medians(paths, runs)
        if not args.no_server:
            client.close()
            demo.close()
        rows = [(name, *r) for name, r in results.items()]
        raw, ours = results["raw model.generate"], results["engine stream (thread + streamer)"]
        srv = results.get("Gradio server via gradio_client")
        report += [f"### Attention: {attn} (load {load_s:.2f} s)", "",
                   "| path | time to first token (s) | decode tok/s | ratio | end-to-end tok/s | ratio |",
                   "| --- | --- | --- | --- | --- | --- |"]
        for name, ttft, tps, e2e in rows:
            decode = f"{tps:.1f} | {tps / raw[1]:.3f}" if tps == tps else "— | —"  # NaN: not observable
            report.append(f"| {name} | {ttft:.3f} | {decode} | {e2e:.1f} | {e2e / raw[2]:.3f} |")
        report.append("")
        if "prefill" in sections:
            prefill = prefill_rows(engine, loaded, runs)
            report += ["| prefill input | prompt tokens | processor + prefill (ms) |", "| --- | --- | --- |"]
            report += [f"| {name} | {tokens} | {ms:.1f} |" for name, tokens, ms in prefill]
            report.append("")
        if "reuse" in sections:
            reuse = reuse_rows(engine, args.turns, min(n, 32))
            report += ["| chat turn (image in turn 1) | TTFT with KV reuse (s) | TTFT without (s) | cached prompt tokens |",
                       "| --- | --- | --- | --- |"]
            report += [f"| {t} | {a:.3f} | {b:.3f} | {c} |" for t, a, b, c in reuse]
            report.append("")
            report.append(f"Turn {args.turns} TTFT / turn 1 TTFT with reuse: {reuse[-1][1] / reuse[0][1]:.2f} "
                          f"(without: {reuse[-1][2] / reuse[0][2]:.2f}).")
        if "live" in sections:
            minutes = args.live_minutes or (2.0 if args.quick else 10.0)
            live, rtf, lag = live_rows(engine, minutes)
            report += ["", f"Live transcription of a {minutes:g}-minute stream in 0.5 s chunks:", "",
                       "| part of the stream | compute per recognition (s, median) | window (s, median) | recognitions |",
                       "| --- | --- | --- | --- |"]
            report += [f"| {name} | {dt:.3f} | {w:.1f} | {k} |" for name, dt, w, k in live]
            report += ["", f"Real-time factor {rtf:.3f} (compute / audio); committed text lagged the audio by "
                       f"{lag:.1f} s on average.", ""]
        if "fast" in sections:
            bandwidth = args.bandwidth_gbs * 1e9 if args.bandwidth_gbs else (
                gpu_bandwidth(torch.cuda.get_device_name(0)) if device.startswith("cuda") else None)
            report += fast_rows(engine, loaded, request, n, runs, device, bandwidth)
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        mem = f"Peak memory: CPU RSS {peak_rss:.0f} MB"
        if device.startswith("cuda"):
            mem += f", CUDA {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
        report += ["", mem + ".", ""]
        ratio = ours[1] / raw[1]
        line = f"stream/raw tok/s ratio: {ratio:.2f} ({args.model}, {device}, {attn})"
        if not args.no_server:
            line += f"; server/raw end-to-end: {srv[2] / raw[2]:.2f}"
        if summary is None or attn == engine.attn:
            summary = line
        engine.cache.release()
    text = "\n".join(report)
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(text + "\n")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
