"""The real shape of microsoft/Phi-4-multimodal-instruct, in one place: the config a converted
checkpoint (transformers' native classes) has, its token ids, and its adapters' ranks. The
full-size random checkpoint (`python -m phi_demo_dev.checkpoint DIR --size full`) and the
benchmark's in-memory model (`--model full-random`) are both built from here.

Sources (docs/REAL_MODEL.md has them value by value): main's config.json as carried by
NVIDIA/TensorRT-LLM `tests/unittest/_torch/modeling/test_modeling_phi4mm.py` (PHI4MM_CONFIG,
only layer counts cut), passed through transformers'
`models/phi4_multimodal/convert_phi4_multimodal_weights_to_hf.py` (`convert_config`), which is
what the native checkpoint on the hub (refs/pr/70) was made with."""

from __future__ import annotations

from phi_demo.engine.tiny import CHAT_TEMPLATE, HUB_LORA_TARGETS

VOCAB_SIZE = 200064
ENDOFTEXT_ID = 199999
# main's rope_scaling.long_factor (TRT-LLM's PHI4MM_CONFIG), one per rotary pair: 128 * 0.75 / 2 = 48.
LONG_FACTOR = [
    1, 1.118320672, 1.250641126, 1.398617824, 1.564103225, 1.74916897, 1.956131817, 2.187582649,
    2.446418898, 2.735880826, 3.059592084, 3.421605075, 3.826451687, 4.279200023, 4.785517845,
    5.351743533, 5.984965424, 6.693110555, 7.485043894, 8.370679318, 9.36110372, 10.4687158,
    11.70738129, 13.09260651, 14.64173252, 16.37415215, 18.31155283, 20.47818807, 22.90118105,
    25.61086418, 28.64115884, 32.03, 32.1, 32.13, 32.23, 32.6, 32.61, 32.64, 32.66, 32.7, 32.71,
    32.93, 32.97, 33.28, 33.49, 33.5, 44.16, 47.77,
]
SHORT_FACTOR = [1.0] * 48

# The adapters: (rank, alpha). Ranks from main's vision-lora/speech-lora (FACTS.md; vLLM serves
# them with --max-lora-rank 320); alpha is twice the rank in both.
ADAPTERS = {"vision": (256, 512), "speech": (320, 640)}
ADAPTER_FOLDERS = {"vision": "vision-lora", "speech": "speech-lora"}

# Special tokens at their real ids. "confirmed": seen in public code that uses the real ids
# (tiktoken's o200k_base for 199999/200018; vLLM, TensorRT-LLM and mlx ports of Phi-4-MM for
# 200010/200011, which main's tokenizer names <|endoftext10|>/<|endoftext11|> and the converted
# one <|image|>/<|audio|>, the strings the native processor expands; Phi-4-mini-instruct
# tooling for the chat tokens). "brief": the id was given to us as public but not found here.
SPECIAL_TOKENS = {
    199999: "<|endoftext|>",  # confirmed (o200k_base; bos = eos = pad in config.json)
    200010: "<|image|>",  # confirmed (id); the converted tokenizer's name
    200011: "<|audio|>",  # confirmed (id); the converted tokenizer's name
    200018: "<|endofprompt|>",  # confirmed (o200k_base)
    200019: "<|assistant|>",  # confirmed (Phi-4-mini tooling)
    200020: "<|end|>",  # confirmed (Phi-4-mini tooling; main's generation_config eos)
    200021: "<|user|>",  # confirmed (Phi-4-mini tooling)
    200022: "<|system|>",  # confirmed (a Phi-4-mini tokenizer fixture)
    200023: "<|tool|>",  # confirmed (Phi-4-mini tooling)
    200024: "<|/tool|>",  # brief
    200025: "<|tool_call|>",  # brief
    200026: "<|/tool_call|>",  # brief
    200027: "<|tool_response|>",  # brief
    200028: "<|tag|>",  # brief
}
# Every other id from 199998 up is filler, `<|reserved_ID|>` (special, so it prints nothing): o200k
# has no token there, and what the real tokenizer names them (if anything) is not known here.
FIRST_SPECIAL_ID = 199998
# o200k_base's pre-tokenizer pattern (tiktoken), so text splits into words, numbers of up to three
# digits, punctuation runs and whitespace as the real tokenizer splits it.
O200K_PATTERN = "|".join([
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"\p{N}{1,3}",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"\s*[\r\n]+",
    r"\s+(?!\S)",
    r"\s+",
])


def real_config():
    """The native Phi4MultimodalConfig of the real checkpoint: what `convert_config` makes of
    main's config.json, so `save_pretrained` writes the same config.json. Values that the
    native model never reads are kept too (the converter passes them through)."""
    import torch
    from transformers import Phi4MultimodalAudioConfig, Phi4MultimodalConfig, Phi4MultimodalVisionConfig

    audio = Phi4MultimodalAudioConfig(
        # Renamed by the converter: attention_dim, attention_heads, linear_units,
        # nemo_conv_settings.conv_channels, relative_attention_bias_args.t5_bias_max_distance.
        hidden_size=1024,
        num_attention_heads=16,
        intermediate_size=1536,
        nemo_conv_channels=1024,
        bias_max_distance=500,  # the native default is 1000
        num_blocks=24,
        activation="swish",
        chunk_size=-1,
        left_chunk=18,
        dropout_rate=0.0,
        ext_pw_out_channel=1024,
        depthwise_separable_out_channel=1024,
        depthwise_multiplier=1,
        kernel_size=3,
        conv_activation="swish",
        conv_glu_type="swish",
        input_size=80,
        time_reduction=8,
        downsample_rate=1,  # embd_layer.audio_embd_layer, the one key the converter keeps from it
        audio_token_id=200011,
        # Passed through unread by the native model. main spells the separable-conv width
        # "seperable", so the converted config holds both spellings.
        batch_norm=False,
        bias_in_glu=True,
        causal=True,
        ext_pw_kernel_size=1,
        depthwise_seperable_out_channel=1024,
    )
    vision = Phi4MultimodalVisionConfig(
        # The converter keeps these three of embd_layer.image_embd_layer; the SigLIP tower's
        # dimensions are the native defaults (1152 wide, 27 layers, 448 px, patch 14).
        crop_size=448,
        use_hd_transform=True,
        hd_transform_order="sub_glb",
        image_token_id=200010,
    )
    config = Phi4MultimodalConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=3072,
        intermediate_size=8192,
        num_hidden_layers=32,
        num_attention_heads=24,  # head size 3072 / 24 = 128 (the native default, 32, gives 96)
        num_key_value_heads=8,
        hidden_act="silu",
        max_position_embeddings=131072,
        original_max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        initializer_range=0.02,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attention_dropout=0.0,
        use_cache=True,
        # main's legacy rope_scaling + rope_theta + partial_rotary_factor, as 5.24 folds them into
        # rope_parameters: "type" is the legacy key, kept beside rope_type; the partial factor is
        # in both places. LongRoPE turns on 3/4 of each head: 96 of 128 dims, 48 factors.
        rope_parameters={
            "type": "longrope",
            "rope_type": "longrope",
            "rope_theta": 10000.0,
            "partial_rotary_factor": 0.75,
            "original_max_position_embeddings": 4096,
            "short_factor": list(SHORT_FACTOR),
            "long_factor": list(LONG_FACTOR),
        },
        partial_rotary_factor=0.75,
        # Longer than the context: it never slides, but transformers builds sliding-window
        # masks and cache layers because it is set.
        sliding_window=262144,
        tie_word_embeddings=True,
        # main's config.json names <|endoftext|> for all three; <|end|> (200020) is only in its
        # generation_config, which a converted checkpoint does not carry over.
        bos_token_id=ENDOFTEXT_ID,
        eos_token_id=ENDOFTEXT_ID,
        pad_token_id=ENDOFTEXT_ID,
        # Passed through unread by the native model.
        attention_bias=False,
        mlp_bias=False,
        lm_head_bias=False,
        full_attn_mod=1,
        interpolate_factor=1,
        vision_config=vision,
        audio_config=audio,
    )
    # What save_pretrained of the converted (bf16) model adds.
    config.architectures = ["Phi4MultimodalForCausalLM"]
    config.dtype = torch.bfloat16
    return config


def _regular_tokens() -> list[str]:
    """FIRST_SPECIAL_ID regular tokens in the byte-level alphabet, each but the 256 single bytes
    made of letters, digits and a leading space: every id prints as text."""
    import itertools
    import string

    alphabet = _byte_chars()
    space = alphabet[ord(" ")]
    lower, letters, digits = string.ascii_lowercase, string.ascii_letters, string.digits
    tokens = list(alphabet)  # ids 0-255: byte b is id b
    tiers = [
        (space + a for a in letters),
        ("".join(p) for p in itertools.product(letters, lower)),
        ("".join(p) for p in itertools.product(digits, repeat=2)),
        (space + "".join(p) for p in itertools.product(letters, lower)),
        ("".join(p) for p in itertools.product(letters, lower, lower)),
        ("".join(p) for p in itertools.product(digits, repeat=3)),
        (space + "".join(p) for p in itertools.product(letters, lower, lower)),
        (space + "".join(p) for p in itertools.product(lower, repeat=4)),  # the rest, up to the size
    ]
    for tier in tiers:
        tokens.extend(itertools.islice(tier, FIRST_SPECIAL_ID - len(tokens)))
    return tokens


def _byte_chars() -> list[str]:
    """The byte-level alphabet by byte value (GPT-2's bytes_to_unicode): printable bytes stand
    for themselves, the others for the characters from U+0100 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def build_tokenizer():
    """A byte-level BPE tokenizer with the real vocabulary size (200,064) and the real special
    tokens at their real ids, built in a few seconds, offline and always the same. Its merges
    are made up (letter pairs, then triples, then words of four letters), so English takes
    about 1.5-2x the real number of tokens; the special tokens, and so image and audio token
    counts, are exact."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    regular = _regular_tokens()
    vocab = {t: i for i, t in enumerate(regular)}
    # Each longer token is its prefix plus one character. Longer results rank first, so once a
    # word's first pair is merged the token grows left to right; among pairs, one after a space
    # or a capital starts first. Words then split like " quick" -> " quic" "k", not "qu" "ick".
    space = regular[ord(" ")]
    built = sorted(regular[256:], key=lambda t: (-len(t), t[0] != space, not t[0].isupper()))
    merges = [(t[:-1], t[-1]) for t in built]
    specials = [SPECIAL_TOKENS.get(i, f"<|reserved_{i}|>") for i in range(FIRST_SPECIAL_ID, VOCAB_SIZE)]
    for i, name in enumerate(specials, start=FIRST_SPECIAL_ID):
        vocab[name] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(O200K_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    # Already in the vocabulary, so they keep these ids; added, so text containing them maps to them.
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image|>", "audio_token": "<|audio|>"},
        chat_template=CHAT_TEMPLATE,
        model_max_length=131072,
    )


def build_processor():
    """The real processor: default image/audio processors (the real ones' settings: 448 px crops,
    up to 36 of them, 80 mel bins at 16 kHz, compression 8) and the stand-in tokenizer."""
    from transformers import (
        Phi4MultimodalFeatureExtractor,
        Phi4MultimodalImageProcessor,
        Phi4MultimodalProcessor,
    )

    tokenizer = build_tokenizer()
    return Phi4MultimodalProcessor(
        image_processor=Phi4MultimodalImageProcessor(),
        audio_processor=Phi4MultimodalFeatureExtractor(),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def adapter_config(name: str, decoder_only: bool = False):
    """The LoraConfig of one adapter. As written to disk (the hub's style) its target_modules
    are bare module names, which also match the audio encoder's o_proj/gate_up_proj/down_proj;
    `decoder_only` gives the regex used to make the weights, which exist for the decoder only
    (as in the real files)."""
    from peft import LoraConfig

    from phi_demo.engine.tiny import LORA_TARGETS

    rank, alpha = ADAPTERS[name]
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias="none",
                      target_modules=LORA_TARGETS if decoder_only else list(HUB_LORA_TARGETS),
                      init_lora_weights=not decoder_only)  # made weights: random, not the B = 0 start
