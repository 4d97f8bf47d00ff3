"""The real Phi-4-multimodal dimensions with random weights, built in memory: what the
benchmark measures real-size speed on (the real checkpoint cannot be downloaded everywhere)."""

from __future__ import annotations

from pathlib import Path

from ..engine.tiny import LORA_TARGETS, longrope


def build_full_random(device: str, dtype: str, attn: str = "sdpa", seed: int = 0):
    """The real Phi-4-multimodal dimensions (Phi4MultimodalConfig defaults) with random weights,
    built in memory on `device`, with LoRA adapters of the real ranks; for speed measurements.

    It uses the tiny model's tokenizer and processor: the real 200,064-entry vocabulary (and
    so the real LM-head cost) is kept, but output rows past the tiny vocabulary are zeroed, so
    greedy decoding only picks tokens the tokenizer can print."""
    import time

    import torch
    from peft import LoraConfig, inject_adapter_in_model
    from transformers import Phi4MultimodalConfig, Phi4MultimodalForCausalLM

    from ..engine.loader import LoadedModel, fix_vision_attention, load_processor
    from ..engine.sources import tiny_folder

    start = time.perf_counter()
    processor = load_processor(tiny_folder())
    tok = processor.tokenizer
    defaults = Phi4MultimodalConfig()
    config = Phi4MultimodalConfig(
        rope_parameters=longrope(defaults.hidden_size // defaults.num_attention_heads),
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=[tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|end|>")],
    )
    config.vision_config.image_token_id = processor.image_token_id
    config.audio_config.audio_token_id = processor.audio_token_id
    torch.manual_seed(seed)
    with torch.device(device):
        model = Phi4MultimodalForCausalLM._from_config(config, dtype=getattr(torch, dtype),
                                                       attn_implementation=attn).eval()
    with torch.no_grad():
        model.lm_head.weight[len(tok):].zero_()
    fix_vision_attention(model)
    for name, rank in (("vision", 256), ("speech", 320)):
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=LORA_TARGETS), model, adapter_name=name)
    model.to(device=device, dtype=getattr(torch, dtype))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return LoadedModel(model, processor, Path("(in memory)"), device, dtype, attn,
                       time.perf_counter() - start, ["vision", "speech"])
