"""Random-weight checkpoints in the hub's layout: what the app reads from
microsoft/Phi-4-multimodal-instruct at refs/pr/70 — config.json, sharded safetensors with
their index, processor and tokenizer files with the chat template, and the vision-lora/
and speech-lora/ adapters. `python app.py --model DIR` then loads one through the normal
path, so the real size can be measured where the real weights cannot be downloaded.

    python -m phi_demo.checkpoint DIR --size tiny|full

The full size has the real dimensions (Phi4MultimodalConfig's defaults: 5.57 B parameters,
200,064-entry vocabulary, LongRoPE) in bfloat16, about 11.1 GB plus 2 GB of adapters, with
the tiny model's tokenizer: output rows past its vocabulary are zeroed, so greedy decoding
only picks tokens it can print."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from .engine.tiny import LORA_TARGETS, longrope

# The real adapters' ranks.
FULL_LORA_RANKS = {"vision": 256, "speech": 320}
ADAPTER_FOLDERS = {"vision": "vision-lora", "speech": "speech-lora"}


def full_random_model(processor, device: str = "cpu", dtype: str = "bfloat16", attn: str = "sdpa", seed: int = 0):
    """The real dimensions with random weights, built in memory on `device` in `dtype`."""
    import torch
    from transformers import Phi4MultimodalConfig, Phi4MultimodalForCausalLM

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
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    return model


def _save_adapter(model, name: str, rank: int, folder: Path) -> None:
    """Add a LoRA adapter of `rank` with random (non-zero) weights to `model` and save it as
    peft does: adapter_config.json + adapter_model.safetensors in folder/<name>-lora."""
    import torch
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
    from safetensors.torch import save_file

    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=LORA_TARGETS, init_lora_weights=False)
    inject_adapter_in_model(config, model, adapter_name=name)
    state = get_peft_model_state_dict(model, adapter_name=name)
    out = folder / ADAPTER_FOLDERS[name]
    out.mkdir(parents=True, exist_ok=True)
    dtype = next(iter(model.parameters())).dtype
    save_file({f"base_model.model.{k}": v.to(dtype).contiguous() for k, v in state.items()},
              str(out / "adapter_model.safetensors"))
    config.save_pretrained(str(out))
    del state
    with torch.no_grad():  # take the adapter out again: the next one is saved on the bare model
        from peft.tuners.tuners_utils import BaseTunerLayer

        for module in model.modules():
            if isinstance(module, BaseTunerLayer) and name in module.lora_A:
                module.delete_adapter(name)


def write_full(folder: str | Path, seed: int = 0, shard_size: str = "5GB", log=print) -> Path:
    from transformers import AutoProcessor

    from .engine.sources import tiny_folder

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    processor = AutoProcessor.from_pretrained(tiny_folder())  # the plain one: it is saved as it is
    model = full_random_model(processor, "cpu", "bfloat16", seed=seed)
    log(f"built the full-size model in {time.perf_counter() - t:.0f} s")
    model.save_pretrained(folder, max_shard_size=shard_size)
    processor.save_pretrained(folder)
    log(f"wrote the weights in {time.perf_counter() - t:.0f} s")
    for name, rank in FULL_LORA_RANKS.items():
        _save_adapter(model, name, rank, folder)
    log(f"wrote the adapters in {time.perf_counter() - t:.0f} s")
    return folder


def write_tiny(folder: str | Path, shard_size: str = "300KB") -> Path:
    """The tiny model in the same layout, sharded (so the index is exercised): loads and
    answers exactly as `--model tiny-random` does."""
    from transformers import Phi4MultimodalForCausalLM

    from .engine.sources import tiny_folder

    src = tiny_folder()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    Phi4MultimodalForCausalLM.from_pretrained(src).save_pretrained(folder, max_shard_size=shard_size)
    for item in src.iterdir():
        if item.name in ("model.safetensors", "config.json", "generation_config.json", "tiny_random.json"):
            continue
        copy = shutil.copytree if item.is_dir() else shutil.copy2
        copy(item, folder / item.name)
    return folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m phi_demo.checkpoint", description=__doc__.split("\n\n")[0])
    p.add_argument("folder")
    p.add_argument("--size", choices=("tiny", "full"), default="tiny")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    folder = Path(args.folder)
    if folder.exists() and any(folder.iterdir()):
        p.error(f"{folder} is not empty")
    if args.size == "full":
        write_full(folder, args.seed, log=lambda m: print(m, file=sys.stderr))
    else:
        write_tiny(folder)
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
