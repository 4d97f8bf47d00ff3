"""The real Phi-4-multimodal shape with random weights, built in memory: what the benchmark
measures real-size speed on (the real checkpoint cannot be downloaded everywhere)."""

from __future__ import annotations

from pathlib import Path


def build_full_random(device: str, dtype: str, attn: str = "sdpa", seed: int = 0):
    """The real shape (phi_demo_dev/realshape.py: 24 heads of 128, LongRoPE, tied LM head, sliding
    window) with random weights, built in memory on `device`, with LoRA adapters of the real
    ranks on the decoder; for speed measurements. It has the stand-in tokenizer with the real
    200,064 ids, so every id the random model picks prints, and the LM head is the real one."""
    import tempfile
    import time
    import warnings

    import torch
    from peft import inject_adapter_in_model

    from phi_demo.engine.loader import LoadedModel, fix_vision_attention, load_processor, skip_vision_pooling
    from phi_demo_dev.checkpoint import full_random_model
    from phi_demo_dev.realshape import ADAPTERS, adapter_config, build_processor

    start = time.perf_counter()
    # Saved and read back as the app reads a checkpoint's processor (the loader's fix-ups apply).
    with tempfile.TemporaryDirectory(prefix="phi-demo-processor-") as tmp:
        build_processor().save_pretrained(tmp)
        processor = load_processor(Path(tmp))
    model = full_random_model(device, dtype, attn, seed)
    fix_vision_attention(model)
    skip_vision_pooling(model)
    with warnings.catch_warnings():
        # peft warns that a second adapter joins the first: that is the point here.
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        for name in ADAPTERS:
            inject_adapter_in_model(adapter_config(name, decoder_only=True), model, adapter_name=name)
    model.to(device=device, dtype=getattr(torch, dtype))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return LoadedModel(model, processor, Path("(in memory)"), device, dtype, attn,
                       time.perf_counter() - start, list(ADAPTERS))
