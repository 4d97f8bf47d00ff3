"""Random-weight checkpoints in the hub's layout: what the app reads from
microsoft/Phi-4-multimodal-instruct at refs/pr/70 — config.json and generation_config.json,
sharded safetensors with their index, the processor's and tokenizer's files with the chat
template, and the vision-lora/ and speech-lora/ adapters. `python app.py --model DIR` then
loads one through the normal path, so the real size can be measured where the real weights
cannot be downloaded.

    python -m phi_demo_dev.checkpoint DIR --size tiny|full [--no-weights]

The full size is the real shape (phi_demo_dev/realshape.py; docs/REAL_MODEL.md): the converted
checkpoint's config.json, 4.74 B parameters in bfloat16 with the LM head tied to the
embedding (about 9.5 GB), adapters of rank 256 and 320 on the decoder (1.66 GB), and a
tokenizer with the real 200,064 ids and special tokens. Only the weights are random, and the
tokenizer's merges made up. `--no-weights` writes everything but the weight files (seconds)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from pathlib import Path

from phi_demo.engine.tiny import HUB_LORA_TARGETS
from phi_demo_dev.realshape import ADAPTER_FOLDERS, ADAPTERS, adapter_config, build_processor, real_config

# Bumped when what write_full writes changes; stored in the folder, so a cached stand-in of an
# older shape can be told apart.
STAND_IN_VERSION = 2
STAND_IN_FILE = "random_stand_in.json"


def full_random_model(device: str = "cpu", dtype: str = "bfloat16", attn: str = "sdpa", seed: int = 0):
    """The real shape with random weights, built on `device` ("meta" for the shapes alone)."""
    import torch
    from transformers import Phi4MultimodalForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = Phi4MultimodalForCausalLM._from_config(real_config(), dtype=getattr(torch, dtype),
                                                       attn_implementation=attn).eval()
    # The LM head is the embedding (tie_word_embeddings); at this size the random decoder layers
    # swamp the input embedding in the last hidden state, so greedy answers are arbitrary
    # printable tokens, not the prompt's last token repeated (as a tied tiny model's are).
    assert model.lm_head.weight is model.model.embed_tokens.weight
    return model


def _save_adapter(model, name: str, folder: Path, weights: bool = True) -> None:
    """Save adapter `name` as the hub has it in folder/<name>-lora: adapter_config.json naming
    bare module names, and (if `weights`) adapter_model.safetensors with random (non-zero) LoRA
    weights for the decoder layers only, keyed as peft saves them
    (base_model.model.<module>.lora_A.weight), which is what load_adapter reads."""
    out = folder / ADAPTER_FOLDERS[name]
    out.mkdir(parents=True, exist_ok=True)
    if weights:
        import torch
        from peft import get_peft_model_state_dict, inject_adapter_in_model
        from peft.tuners.tuners_utils import BaseTunerLayer
        from safetensors.torch import save_file

        with warnings.catch_warnings():
            # peft warns that the model had an adapter before: the previous one, already taken out.
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            inject_adapter_in_model(adapter_config(name, decoder_only=True), model, adapter_name=name)
        state = get_peft_model_state_dict(model, adapter_name=name)
        dtype = model.model.embed_tokens.weight.dtype
        save_file({f"base_model.model.{k}": v.to(dtype).contiguous() for k, v in state.items()},
                  str(out / "adapter_model.safetensors"))
        del state
        with torch.no_grad():  # take the adapter out again: the next one is saved on the bare model
            for module in model.modules():
                if isinstance(module, BaseTunerLayer) and name in module.lora_A:
                    module.delete_adapter(name)
    hub = adapter_config(name)
    hub.save_pretrained(str(out))
    written = out / "adapter_config.json"
    data = json.loads(written.read_text())
    data["target_modules"] = list(HUB_LORA_TARGETS)  # peft writes a set, in no fixed order
    written.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_full(folder: str | Path, seed: int = 0, shard_size: str = "5GB", log=print, weights: bool = True) -> Path:
    """The real shape with random weights in `folder`; with `weights=False`, every file but the
    weights (the model is then built on the meta device: seconds, no memory)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    processor = build_processor()
    model = full_random_model("cpu" if weights else "meta", "bfloat16", seed=seed)
    log(f"built the full-size model{'' if weights else ' (meta)'} in {time.perf_counter() - t:.0f} s")
    for sub in (model.config.audio_config, model.config.vision_config):
        sub.dtype = None  # _from_config sets it; the converter's config.json has it at the top only
    if weights:
        model.save_pretrained(folder, max_shard_size=shard_size)
    else:  # what save_pretrained writes besides the weights
        model.config.save_pretrained(folder)
        model.generation_config.save_pretrained(folder)
    # generation_config.json is made from config.json, as in a converted checkpoint: eos is
    # <|endoftext|> (199999) alone, not main's [200020, 199999]. The app must stop at <|end|>
    # (200020) by itself (generation.stop_token_ids); this stand-in keeps it honest about that.
    processor.save_pretrained(folder)
    log(f"wrote the {'weights' if weights else 'small files'} in {time.perf_counter() - t:.0f} s")
    for name in ADAPTERS:
        _save_adapter(model, name, folder, weights)
    (folder / STAND_IN_FILE).write_text(json.dumps({"version": STAND_IN_VERSION, "seed": seed,
                                                    "weights": weights}) + "\n")
    log(f"wrote the adapters in {time.perf_counter() - t:.0f} s")
    return folder


def write_tiny(folder: str | Path, shard_size: str = "300KB") -> Path:
    """The tiny model in the same layout, sharded (so the index is exercised): loads and
    answers exactly as `--model tiny-random` does."""
    from transformers import Phi4MultimodalForCausalLM

    from phi_demo.engine.sources import tiny_folder

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
    p = argparse.ArgumentParser(prog="python -m phi_demo_dev.checkpoint", description=__doc__.split("\n\n")[0])
    p.add_argument("folder")
    p.add_argument("--size", choices=("tiny", "full"), default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-weights", action="store_true",
                   help="full size only: write config, tokenizer, processor and adapter configs, no weights")
    args = p.parse_args(argv)
    folder = Path(args.folder)
    if folder.exists() and any(folder.iterdir()):
        p.error(f"{folder} is not empty")
    if args.size == "full":
        write_full(folder, args.seed, log=lambda m: print(m, file=sys.stderr), weights=not args.no_weights)
    else:
        if args.no_weights:
            p.error("--no-weights is for --size full")
        write_tiny(folder)
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
