"""A tiny random-weight Phi-4-multimodal, built offline.

It has the real architecture (text decoder, SigLIP vision tower, conformer audio
encoder, vision/speech LoRA adapters) at toy sizes, and a byte-level BPE tokenizer
trained in-process that knows every Phi-4 control token. Its answers are noise; it
exists so that every code path can run without the 12.9 GB checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    Phi4MultimodalAudioConfig,
    Phi4MultimodalConfig,
    Phi4MultimodalFeatureExtractor,
    Phi4MultimodalForCausalLM,
    Phi4MultimodalImageProcessor,
    Phi4MultimodalProcessor,
    Phi4MultimodalVisionConfig,
    PreTrainedTokenizerFast,
)

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
    "<|image|>",
    "<|audio|>",
]
# Phi-4's own chat template (as in the hub's tokenizer_config), so the tiny model
# renders conversations exactly like the real one.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and 'tools' in message and message['tools'] is not none %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|tool|>' + message['tools'] + '<|/tool|>' + '<|end|>' }}"
    "{% else %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)
_CORPUS = (
    "The quick brown fox jumps over the lazy dog. A picture shows a cat on a red sofa. "
    "What is in this image? Please transcribe the audio clip. Hello, how are you today? "
    "Phi-4 multimodal answers questions about text, images and speech. "
    "Bonjour, wie geht es dir? ¿Qué tal? こんにちは 你好 0123456789 "
)
TINY_VERSION = 3
# The real adapters' modules. They only touch the decoder: the audio encoder has
# o_proj/down_proj too.
LORA_TARGETS = r"model\.layers\.\d+\.(self_attn\.(qkv_proj|o_proj)|mlp\.(gate_up_proj|down_proj))"
# How the hub's adapter configs name them: by their last part, which matches audio-encoder
# modules as well; the files hold decoder weights only (the loader adds LoRA only there).
HUB_LORA_TARGETS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
# The real config's sliding window: longer than the context, so it never slides, but it makes
# transformers build sliding-window cache layers and masks, which the tiny model should share.
SLIDING_WINDOW = 262144


def longrope(head_dim: int, partial: float = 0.75) -> dict:
    """RoPE as the real checkpoint has it: LongRoPE on 3/4 of each head, switching from the
    short to the long factors past 4,096 tokens (the factors here are made up: only the
    mechanism matters, e.g. that generate() rebuilds the cache at the switch)."""
    n = int(head_dim * partial) // 2
    return {"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": partial,
            "short_factor": [1.0 + i / n for i in range(n)], "long_factor": [1.0 + 4.0 * i for i in range(n)]}


def _train_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image|>", "audio_token": "<|audio|>"},
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
    )
    return fast


def build_tiny(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Build the tiny model, processor and adapters and save them in `folder`."""

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = _train_tokenizer()
    vocab = tokenizer.get_vocab()
    ids = {t: vocab[t] for t in SPECIAL_TOKENS}
    config = Phi4MultimodalConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        original_max_position_embeddings=4096,
        rope_parameters=longrope(64 // 4),
        # As a converted checkpoint's config.json: <|endoftext|> for all three, <|end|> not
        # named. The eos is a one-item list: the tiny <|endoftext|> is id 0, and the config
        # replaces a falsy eos with the real ids. The LM head stays untied (the real one is
        # tied): a tied random model's greedy answer repeats its last prompt token,
        # <|assistant|>, which prints nothing, and the tests need visible text.
        bos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|endoftext|>"]],
        sliding_window=SLIDING_WINDOW,
        vision_config=Phi4MultimodalVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_token_id=ids["<|image|>"],
        ),
        audio_config=Phi4MultimodalAudioConfig(
            hidden_size=32,
            intermediate_size=64,
            num_blocks=2,
            num_attention_heads=4,
            ext_pw_out_channel=32,
            depthwise_separable_out_channel=32,
            nemo_conv_channels=32,
            audio_token_id=ids["<|audio|>"],
        ),
    )
    model = Phi4MultimodalForCausalLM(config).eval()
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(str(folder))

    processor = Phi4MultimodalProcessor(
        image_processor=Phi4MultimodalImageProcessor(),
        audio_processor=Phi4MultimodalFeatureExtractor(),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(folder)

    for name, rank in (("vision-lora", 4), ("speech-lora", 8)):
        base = Phi4MultimodalForCausalLM(config)
        base.load_state_dict(model.state_dict())
        peft_model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=LORA_TARGETS, init_lora_weights=False))
        peft_model.save_pretrained(str(folder / name))
        adapter_json = folder / name / "adapter_config.json"
        written = json.loads(adapter_json.read_text())
        written["target_modules"] = HUB_LORA_TARGETS
        adapter_json.write_text(json.dumps(written, indent=2, sort_keys=True))
    (folder / "tiny_random.json").write_text(json.dumps({"version": TINY_VERSION, "seed": seed}))
    return folder
