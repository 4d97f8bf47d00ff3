"""Which attention implementations can run here, and why not when they cannot."""

from __future__ import annotations

import importlib.util

from phi_demo.contract import AttentionOption


def attention_options(device: str) -> list[AttentionOption]:
    on_cuda = device.startswith("cuda")
    if not on_cuda:
        flash = AttentionOption("flash_attention_2", False, "needs a CUDA GPU")
    elif importlib.util.find_spec("flash_attn") is None:
        flash = AttentionOption("flash_attention_2", False, "flash-attn is not installed (pip install flash-attn)")
    else:
        flash = AttentionOption("flash_attention_2", True)
    return [AttentionOption("eager", True), AttentionOption("sdpa", True), flash]


def resolve_attention(spec: str, device: str) -> str:
    """'auto' -> the fastest that runs here; an explicit choice that cannot run is refused."""
    options = {o.name: o for o in attention_options(device)}
    if spec == "auto":
        return "flash_attention_2" if options["flash_attention_2"].available else "sdpa"
    if spec not in options:
        raise ValueError(f"Unknown attention implementation {spec!r}; choose one of {', '.join(options)}.")
    if not options[spec].available:
        raise ValueError(f"{spec} cannot be used here: {options[spec].reason}.")
    return spec
