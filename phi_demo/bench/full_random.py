"""The real Phi-4-multimodal dimensions with random weights, built in memory: what the
benchmark measures real-size speed on (the real checkpoint cannot be downloaded everywhere)."""

from __future__ import annotations

from pathlib import Path

from ..engine.tiny import LORA_TARGETS


def build_full_random(device: str, dtype: str, attn: str = "sdpa", seed: int = 0):
    """The real Phi-4-multimodal dimensions (Phi4MultimodalConfig defaults) with random weights,
    built in memory on `device`, with LoRA adapters of the real ranks; for speed measurements.

    It uses the tiny model's tokenizer and processor: the real 200,064-entry vocabulary (and
    so the real LM-head cost) is kept, but output rows past the tiny vocabulary are zeroed, so
    greedy decoding only picks tokens the tokenizer can print."""
    import time

    import torch
    from peft import LoraConfig, inject_adapter_in_model

    from ..checkpoint import FULL_LORA_RANKS, full_random_model
    from ..engine.loader import LoadedModel, fix_vision_attention, load_processor, skip_vision_pooling
    from ..engine.sources import tiny_folder

    start = time.perf_counter()
    processor = load_processor(tiny_folder())
    model = full_random_model(processor, device, dtype, attn, seed)
    fix_vision_attention(model)
    skip_vision_pooling(model)
    for name, rank in FULL_LORA_RANKS.items():
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=LORA_TARGETS), model,
                                adapter_name=name)
    model.to(device=device, dtype=getattr(torch, dtype))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return LoadedModel(model, processor, Path("(in memory)"), device, dtype, attn,
                       time.perf_counter() - start, ["vision", "speech"])
