"""bf16 beside each quantized option, loaded from a checkpoint on disk through the app's own
path, each in a process of its own (so that its peak memory is its own): load time,
resident and peak memory, decode speed, prefill of text, images and audio with the peak
memory of each, and how close its logits and greedy tokens stay to bf16's.

    python -m phi_demo_dev.bench --model full-random --sections quant

With random weights the error figures check the kernels, not the quality of answers."""

from __future__ import annotations

import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from phi_demo_dev.bench.common import BENCH_QUESTION, BENCH_SYSTEM, ROOT
from phi_demo_dev.soak import rss_mb

GREEDY_TOKENS = 64
PREFILL_RUNS = 2


def rss_bytes() -> float:
    return rss_mb() * 1024 * 1024  # the app's one reader of /proc


def peak_rss_bytes() -> float:
    """This process's own peak resident memory: VmHWM, the high-water mark of its address
    space, which exec starts afresh. Not getrusage's ru_maxrss: Linux carries the spawning
    process's high-water mark into it across exec, so a worker started by a bench that had
    just written the full checkpoint in-process reported the writer's peak as its own "peak
    while loading": 12.8 GB against 7.27 GB the run after, with the checkpoint already on
    disk. Reproduced with the real-shaped writer: 11.60 GB by ru_maxrss, 6.69 GB by VmHWM;
    6.68 GB by both from a parent that wrote nothing."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # no /proc: macOS counts bytes, Linux KiB
    return float(peak) if sys.platform == "darwin" else peak * 1024.0


class PeakSampler:
    """The highest resident memory while a block runs (sampled every 20 ms)."""

    def __enter__(self):
        self.peak = self.start = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def media_files(tmp: Path) -> dict[str, tuple[str, ...]]:
    import soundfile as sf
    from PIL import Image

    rng = np.random.default_rng(0)
    out = {"text": ()}
    out["image 448 (example)"] = (str(ROOT / "assets" / "example_image.png"),)
    big = tmp / "img1344.png"
    Image.fromarray(rng.integers(0, 255, (1344, 1344, 3), dtype=np.uint8)).save(big)
    out["image 1344"] = (str(big),)
    for seconds in (5, 30):
        p = tmp / f"audio{seconds}.wav"
        sf.write(p, (0.1 * rng.standard_normal(16000 * seconds)).astype(np.float32), 16000)
        out[f"audio {seconds} s"] = (str(p),)
    out["video clip (example)"] = (str(ROOT / "assets" / "example_clip.mp4"),)  # 8 s: 4 frames and its sound
    out["PDF (example)"] = (str(ROOT / "assets" / "example_report.pdf"),)
    return out


def worker(folder: str, quantize: str, new_tokens: int, out: str) -> int:
    """One variant, in this process: what `quant_rows` compares."""
    import torch

    from phi_demo.chat.messages import Turn
    from phi_demo.chat.request import Limits, build_request
    from phi_demo.contract import collect
    from phi_demo.engine.generation import generation_kwargs, prepare_inputs
    from phi_demo.engine.local import Engine
    from phi_demo.settings import AppSettings, GenerationSettings

    result: dict = {"quantize": quantize}
    # The int4 cache off: "load" is then always the quantization from the checkpoint, not a
    # read of what an earlier run left (scripts/full_size_check.py measures both starts).
    engine = Engine(AppSettings(model=folder, quantize=quantize, dtype="bfloat16", attn="sdpa", device="cpu",
                                kv_reuse=False, int4_cache="off"))
    t = time.perf_counter()
    loaded = engine.load()
    result["load_s"] = time.perf_counter() - t
    result["peak_load"] = peak_rss_bytes()
    text = build_request([Turn("user", BENCH_QUESTION)], BENCH_SYSTEM)
    gen = GenerationSettings(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    limits = Limits(max_audio_seconds=60)
    # Warm-up with text, an image and audio: every weight has been read once (bf16 weights are
    # memory-mapped and count as resident only from then on), every adapter has run.
    tmp = tempfile.mkdtemp(prefix="phi-demo-quant-")
    files = media_files(Path(tmp))
    for warm in ((), files["image 448 (example)"], files["audio 5 s"]):
        collect(engine.stream(build_request([Turn("user", "Hi", warm)], BENCH_SYSTEM, limits),
                              GenerationSettings(max_new_tokens=2, min_new_tokens=2), threading.Event()))
    gc.collect()
    result["resident"] = rss_bytes()
    _, stats = collect(engine.stream(text, gen, threading.Event()))
    result["decode_tok_s"] = stats.decode_tok_s
    prefill = {}
    for name, these in files.items():
        request = build_request([Turn("user", "Describe this.", these)], BENCH_SYSTEM, limits)
        times, peak = [], 0.0
        for _ in range(1 if name == "image 1344" else PREFILL_RUNS):  # the shortest: least disturbed by the machine
            with PeakSampler() as mem:
                _, st = collect(engine.stream(request, GenerationSettings(max_new_tokens=1), threading.Event()))
            times.append(st.ttft_s)
            peak = max(peak, mem.peak - mem.start)
        prefill[name] = {"tokens": st.prompt_tokens, "ttft_s": min(times), "peak_over_resident": peak}
    result["prefill"] = prefill
    # Closeness to bf16: the last position's logits, and greedy tokens, on three prompts.
    closeness = {}
    for name in ("text", "image 448 (example)", "audio 5 s"):
        request = build_request([Turn("user", "Describe this.", files[name])], BENCH_SYSTEM, limits)
        engine.activate_adapter(loaded, request.modality)
        inputs = prepare_inputs(loaded, request)
        with torch.inference_mode():
            logits = loaded.model(**inputs, logits_to_keep=1).logits[0, -1].float()
            ids = loaded.model.generate(**inputs, **generation_kwargs(
                GenerationSettings(max_new_tokens=GREEDY_TOKENS, min_new_tokens=GREEDY_TOKENS), loaded.processor))
        path = Path(out).with_suffix(f".{name.split()[0]}.pt")
        torch.save(logits, path)
        closeness[name] = {"logits": str(path), "tokens": ids[0, inputs["input_ids"].shape[1]:].tolist()}
    result["closeness"] = closeness
    if quantize == "int4":  # the kernel against the same int4 weights dequantized, end to end
        from phi_demo.engine import int4

        # A prompt of at most PREFILL_ROWS tokens, so the first pass runs the kernel itself.
        inputs = prepare_inputs(loaded, build_request([Turn("user", "Describe this.")], BENCH_SYSTEM))
        assert inputs["input_ids"].shape[1] <= int4.PREFILL_ROWS
        engine.activate_adapter(loaded, "text")
        with torch.inference_mode():
            kernel = loaded.model(**inputs, logits_to_keep=1).logits[0, -1].float()
            rows, int4.PREFILL_ROWS = int4.PREFILL_ROWS, 0
            try:
                dense = loaded.model(**inputs, logits_to_keep=1).logits[0, -1].float()
            finally:
                int4.PREFILL_ROWS = rows
        result["kernel_vs_dequantized"] = float((kernel - dense).norm() / dense.norm())
    shutil.rmtree(tmp, ignore_errors=True)
    result["peak_total"] = peak_rss_bytes()
    Path(out).write_text(json.dumps(result))
    return 0


def quant_rows(folder: str, variants: list[str], new_tokens: int, label: str) -> tuple[list[str], str]:
    """(report lines, the summary line), running each variant in a process of its own."""
    import torch

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in variants:
            out = str(Path(tmp) / f"{kind}.json")
            r = subprocess.run([sys.executable, "-m", "phi_demo_dev.bench", "--quant-worker", folder, "--quantize", kind,
                                "--new-tokens", str(new_tokens), "--worker-out", out], cwd=ROOT, text=True,
                               capture_output=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            if r.returncode != 0:
                raise RuntimeError(f"the {kind} run failed:\n{r.stderr[-3000:]}")
            results[kind] = json.loads(Path(out).read_text())
            for c in results[kind]["closeness"].values():
                c["logits"] = torch.load(c["logits"])
    base = results["none"]
    name = {"none": "bf16"}
    gb = 1e9
    lines = ["| weights | load (s) | peak while loading (GB) | resident after an answer (GB) | decode tok/s | ratio |",
             "| --- | --- | --- | --- | --- | --- |"]
    for kind, r in results.items():
        lines.append(f"| {name.get(kind, kind)} | {r['load_s']:.1f} | {r['peak_load'] / gb:.2f} | "
                     f"{r['resident'] / gb:.2f} | {r['decode_tok_s']:.2f} | {r['decode_tok_s'] / base['decode_tok_s']:.2f} |")
    lines += ["", "| prefill input | prompt tokens | " + " | ".join(
        f"{name.get(k, k)}: first token (s) | {name.get(k, k)}: peak over resident (GB)" for k in results) + " |",
        "| --- | --- | " + " | ".join("--- | ---" for _ in results) + " |"]
    for inp, p in base["prefill"].items():
        cells = " | ".join(f"{r['prefill'][inp]['ttft_s']:.2f} | {r['prefill'][inp]['peak_over_resident'] / gb:.2f}"
                           for r in results.values())
        lines.append(f"| {inp} | {p['tokens']} | {cells} |")
    lines += ["", "| weights | prompt | logits: relative error vs bf16 | greedy tokens equal to bf16's "
              f"(of {GREEDY_TOKENS}) | same first N tokens |", "| --- | --- | --- | --- | --- |"]
    for kind, r in results.items():
        if kind == "none":
            continue
        for prompt, c in r["closeness"].items():
            ref = base["closeness"][prompt]
            err = float((c["logits"] - ref["logits"]).norm() / ref["logits"].norm())
            same = sum(a == b for a, b in zip(c["tokens"], ref["tokens"]))
            prefix = next((i for i, (a, b) in enumerate(zip(c["tokens"], ref["tokens"])) if a != b), len(ref["tokens"]))
            lines.append(f"| {name.get(kind, kind)} | {prompt} | {err:.3f} | {same} | {prefix} |")
    summary = ""
    if "int4" in results:
        q = results["int4"]
        image = "image 448 (example)"
        summary = (f"int4/bf16 decode ratio: {q['decode_tok_s'] / base['decode_tok_s']:.2f} ({label}); "
                   f"image prefill ratio {q['prefill'][image]['ttft_s'] / base['prefill'][image]['ttft_s']:.2f}; "
                   f"resident int4 {q['resident'] / gb:.1f} GB, bf16 {base['resident'] / gb:.1f} GB; "
                   f"peak load int4 {q['peak_load'] / gb:.1f} GB")
    if "int4" in results and "kernel_vs_dequantized" in results["int4"]:
        lines += ["", "int4 kernel against the same int4 weights dequantized to bf16 (text prompt, last logits): "
                  f"relative error {results['int4']['kernel_vs_dequantized']:.4f}."]
    ratio = [f"{inp}: {results['int4']['prefill'][inp]['ttft_s'] / p['ttft_s']:.2f}"
             for inp, p in base["prefill"].items()] if "int4" in results else []
    if ratio:
        lines += ["", "int4/bf16 time to first token: " + ", ".join(ratio) + "."]
    return lines, summary


def checkpoint_for(model: str) -> str:
    """A checkpoint on disk for `model`: full-random and tiny-random are written once into
    the cache; a folder is used as it is. The writer runs in a process of its own: the full
    size builds the whole bf16 model in memory (13 GB), which this process — the parent of
    every variant's worker — should neither keep nor pass on (see peak_rss_bytes)."""
    from phi_demo.settings import cache_root

    if model not in ("full-random", "tiny-random"):
        return model
    from phi_demo_dev.checkpoint import STAND_IN_FILE, STAND_IN_VERSION

    folder = cache_root() / f"{model}-checkpoint"
    done = folder / "speech-lora" / "adapter_config.json"
    marker = folder / STAND_IN_FILE
    # A full checkpoint left by an older writer (another shape) is written again.
    current = model == "tiny-random" or (marker.is_file() and json.loads(marker.read_text()).get("version")
                                         == STAND_IN_VERSION)
    if not done.is_file() or not current:
        shutil.rmtree(folder, ignore_errors=True)
        size = "full" if model == "full-random" else "tiny"
        subprocess.run([sys.executable, "-m", "phi_demo_dev.checkpoint", str(folder), "--size", size], cwd=ROOT,
                       check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return str(folder)
