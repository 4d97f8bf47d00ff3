"""Fast decode (static cache + torch.compile) beside raw generate, and the bandwidth ceiling."""

from __future__ import annotations

import time

from phi_demo_dev.bench.common import engine_stream, interleaved_medians, raw_generate

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

    from phi_demo.engine.generation import prepare_inputs

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
