"""The full-size random stand-in has the real checkpoint's shape: its small files (written without
the 12 GB of weights) against the real values, each row with where it comes from.

Sources: "TRT" = NVIDIA/TensorRT-LLM tests/unittest/_torch/modeling/test_modeling_phi4mm.py
(PHI4MM_CONFIG: main's config.json, layer counts cut, originals in comments); "convert" =
transformers' phi4_multimodal/convert_phi4_multimodal_weights_to_hf.py (convert_config, what
refs/pr/70 was made with); "FACTS" = /work/shared/FACTS.md, "The real model's shape"."""

import json

import pytest
import torch

from phi_demo_dev.checkpoint import STAND_IN_FILE, write_full

LONG_FACTOR = [  # TRT rope_scaling.long_factor, all 48
    1, 1.118320672, 1.250641126, 1.398617824, 1.564103225, 1.74916897, 1.956131817, 2.187582649,
    2.446418898, 2.735880826, 3.059592084, 3.421605075, 3.826451687, 4.279200023, 4.785517845,
    5.351743533, 5.984965424, 6.693110555, 7.485043894, 8.370679318, 9.36110372, 10.4687158,
    11.70738129, 13.09260651, 14.64173252, 16.37415215, 18.31155283, 20.47818807, 22.90118105,
    25.61086418, 28.64115884, 32.03, 32.1, 32.13, 32.23, 32.6, 32.61, 32.64, 32.66, 32.7, 32.71,
    32.93, 32.97, 33.28, 33.49, 33.5, 44.16, 47.77,
]

REAL = [
    # (key path in config.json, value)  # source
    ("architectures", ["Phi4MultimodalForCausalLM"]),  # convert: save_pretrained of the native class
    ("model_type", "phi4_multimodal"),  # convert: native config (main's is "phi4mm")
    ("dtype", "bfloat16"),  # TRT torch_dtype
    ("vocab_size", 200064),  # TRT
    ("hidden_size", 3072),  # TRT
    ("intermediate_size", 8192),  # TRT
    ("num_hidden_layers", 32),  # TRT ("original: 32")
    ("num_attention_heads", 24),  # TRT; FACTS: head size 128
    ("num_key_value_heads", 8),  # TRT
    ("hidden_act", "silu"),  # TRT
    ("max_position_embeddings", 131072),  # TRT
    ("original_max_position_embeddings", 4096),  # TRT
    ("rms_norm_eps", 1e-05),  # TRT
    ("sliding_window", 262144),  # TRT; FACTS
    ("tie_word_embeddings", True),  # TRT; convert calls model.tie_weights()
    ("bos_token_id", 199999),  # TRT
    ("eos_token_id", 199999),  # TRT (main's generation_config has [200020, 199999]; not carried over)
    ("pad_token_id", 199999),  # TRT
    ("partial_rotary_factor", 0.75),  # TRT; kept at the top by 5.24 as well as in rope_parameters
    ("resid_pdrop", 0.0),  # TRT
    ("embd_pdrop", 0.0),  # TRT
    ("attention_dropout", 0.0),  # TRT
    ("initializer_range", 0.02),  # TRT
    ("use_cache", True),  # TRT
    ("attention_bias", False),  # TRT, passed through by convert (unread)
    ("mlp_bias", False),  # TRT, passed through (unread)
    ("lm_head_bias", False),  # TRT, passed through (unread)
    ("full_attn_mod", 1),  # TRT, passed through (unread)
    ("interpolate_factor", 1),  # TRT, passed through (unread)
    # rope: TRT rope_scaling {type longrope, short/long factors} + rope_theta + partial_rotary_factor,
    # folded by 5.24's convert_rope_params_to_dict / standardize_rope_params
    ("rope_parameters.rope_type", "longrope"),
    ("rope_parameters.type", "longrope"),  # the legacy key stays in the dict
    ("rope_parameters.rope_theta", 10000.0),  # TRT rope_theta
    ("rope_parameters.partial_rotary_factor", 0.75),  # TRT
    ("rope_parameters.original_max_position_embeddings", 4096),  # TRT, copied in by standardize
    ("rope_parameters.short_factor", [1.0] * 48),  # TRT
    ("rope_parameters.long_factor", LONG_FACTOR),  # TRT
    # audio: TRT audio_processor.config, renamed by convert
    ("audio_config.model_type", "phi4_multimodal_audio"),  # convert
    ("audio_config.hidden_size", 1024),  # TRT attention_dim
    ("audio_config.num_attention_heads", 16),  # TRT attention_heads
    ("audio_config.intermediate_size", 1536),  # TRT linear_units
    ("audio_config.num_blocks", 24),  # TRT ("original: 24")
    ("audio_config.nemo_conv_channels", 1024),  # TRT nemo_conv_settings.conv_channels
    ("audio_config.bias_max_distance", 500),  # TRT relative_attention_bias_args.t5_bias_max_distance
    ("audio_config.input_size", 80),  # TRT
    ("audio_config.kernel_size", 3),  # TRT
    ("audio_config.time_reduction", 8),  # TRT
    ("audio_config.left_chunk", 18),  # TRT
    ("audio_config.chunk_size", -1),  # TRT
    ("audio_config.ext_pw_out_channel", 1024),  # TRT
    ("audio_config.depthwise_separable_out_channel", 1024),  # native default; TRT spells it "seperable"
    ("audio_config.depthwise_seperable_out_channel", 1024),  # TRT, passed through as spelled
    ("audio_config.depthwise_multiplier", 1),  # TRT
    ("audio_config.activation", "swish"),  # TRT
    ("audio_config.conv_activation", "swish"),  # TRT
    ("audio_config.conv_glu_type", "swish"),  # TRT
    ("audio_config.dropout_rate", 0.0),  # TRT
    ("audio_config.downsample_rate", 1),  # TRT embd_layer.audio_embd_layer, kept by convert
    ("audio_config.batch_norm", False),  # TRT, passed through (unread)
    ("audio_config.bias_in_glu", True),  # TRT, passed through (unread)
    ("audio_config.causal", True),  # TRT, passed through (unread)
    ("audio_config.ext_pw_kernel_size", 1),  # TRT, passed through (unread)
    ("audio_config.audio_token_id", 200011),  # FACTS: audio placeholder
    ("audio_config.nemo_final_size", 10),  # computed by the native config from input_size / time_reduction
    # vision: convert keeps crop_size, use_hd_transform, hd_transform_order of TRT image_embd_layer
    ("vision_config.model_type", "phi4_multimodal_vision"),  # convert
    ("vision_config.crop_size", 448),  # TRT
    ("vision_config.use_hd_transform", True),  # TRT
    ("vision_config.hd_transform_order", "sub_glb"),  # TRT
    ("vision_config.image_token_id", 200010),  # FACTS: image placeholder
    ("vision_config.hidden_size", 1152),  # native default = FACTS (SigLIP 1152 x 27)
    ("vision_config.num_hidden_layers", 27),  # native default = FACTS
    ("vision_config.image_size", 448),  # native default; the processor needs it
    ("vision_config.patch_size", 14),  # native default; the processor needs it
]
# What no source has and so must not be there: the keys convert pops from main's config.json.
POPPED = ["embd_layer", "audio_processor", "auto_map", "_name_or_path", "rope_scaling", "torch_dtype",
          "vision_lora", "speech_lora"]


def at(config: dict, path: str):
    for key in path.split("."):
        config = config[key]
    return config


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return write_full(tmp_path_factory.mktemp("real") / "full", weights=False, log=lambda m: None)


def test_config_json_holds_the_real_values(written):
    config = json.loads((written / "config.json").read_text())
    wrong = {path: (at(config, path) if _has(config, path) else "(missing)", value)
             for path, value in REAL if not _has(config, path) or at(config, path) != value}
    assert not wrong, wrong
    assert not set(POPPED) & set(config)
    assert "dtype" not in config["audio_config"] and "dtype" not in config["vision_config"]  # as convert writes


def _has(config: dict, path: str) -> bool:
    try:
        at(config, path)
    except KeyError:
        return False
    return True


def test_no_weights_were_written_and_the_folder_says_what_it_is(written):
    assert not list(written.rglob("*.safetensors")) and not (written / "model.safetensors.index.json").exists()
    assert json.loads((written / STAND_IN_FILE).read_text())["weights"] is False


def test_generation_config_names_only_endoftext(written):
    """As save_pretrained of the converted config writes it: main's [200020, 199999] is not carried
    over, so the app must stop at <|end|> by itself."""
    generation = json.loads((written / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 199999
    assert generation["bos_token_id"] == generation["pad_token_id"] == 199999


@pytest.mark.parametrize("name, rank, alpha", [("vision", 256, 512), ("speech", 320, 640)])  # FACTS
def test_adapter_configs_are_in_the_hubs_style(written, name, rank, alpha):
    config = json.loads((written / f"{name}-lora" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["peft_type"]) == (rank, alpha, "LORA")
    # Bare module names (FACTS), not a regex: they also name audio-encoder modules.
    assert config["target_modules"] == ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]


@pytest.fixture(scope="module")
def processor(written):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(written)


def test_the_tokenizer_has_the_real_ids(processor):
    tok = processor.tokenizer
    assert len(tok) == 200064
    real = {"<|endoftext|>": 199999, "<|image|>": 200010, "<|audio|>": 200011, "<|endofprompt|>": 200018,
            "<|assistant|>": 200019, "<|end|>": 200020, "<|user|>": 200021, "<|system|>": 200022,
            "<|tool|>": 200023, "<|/tool|>": 200024, "<|tool_call|>": 200025, "<|/tool_call|>": 200026,
            "<|tool_response|>": 200027, "<|tag|>": 200028}
    assert {t: tok.convert_tokens_to_ids(t) for t in real} == real
    assert (processor.image_token, processor.image_token_id) == ("<|image|>", 200010)
    assert (processor.audio_token, processor.audio_token_id) == ("<|audio|>", 200011)
    assert tok.eos_token == tok.bos_token == tok.pad_token == "<|endoftext|>"
    # A random model picks any id: every regular one (sampled) must print.
    assert all(tok.decode([i]).strip() for i in [*range(256, 199998, 499), 199997])
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    assert prompt == "<|user|>Hi<|end|><|assistant|>"
    ids = tok(prompt)["input_ids"]
    assert ids[0] == 200021 and ids[-2:] == [200020, 200019]


def test_image_and_audio_token_counts_are_the_real_ones(processor):
    """The tokenizer's merges are made up, but media tokens come from the real processors (FACTS:
    a 448x448 image is 545 tokens, audio 12.5 tokens a second)."""
    import numpy as np
    from PIL import Image

    out = processor(text="<|user|><|image|><|audio|>Hi<|end|><|assistant|>", images=[Image.new("RGB", (448, 448))],
                    audio=[np.zeros(16000 * 4, dtype=np.float32)], sampling_rate=16000, return_tensors="pt")
    ids = out["input_ids"][0]
    assert int((ids == 200010).sum()) == 545
    assert int((ids == 200011).sum()) == 50


def test_a_model_from_the_written_config_has_the_real_shape(written):
    from transformers import DynamicCache, Phi4MultimodalConfig, Phi4MultimodalForCausalLM

    config = Phi4MultimodalConfig.from_pretrained(written)
    with torch.device("meta"):
        model = Phi4MultimodalForCausalLM(config)
    attn = model.model.layers[0].self_attn
    assert attn.head_dim == 128 and attn.qkv_proj.out_features == 24 * 128 + 2 * 8 * 128 == 5120
    assert model.model.rotary_emb.inv_freq.shape == (48,)  # 3/4 of 128 dims, in pairs
    assert model.lm_head.weight is model.model.embed_tokens.weight
    # Base parameters (FACTS: about 4.74 B; the tied head counts once).
    assert sum(p.numel() for p in model.parameters()) == 4_743_988_032
    # The sliding window makes every cache layer a sliding-window one, though it never slides.
    cache = DynamicCache(config=config)
    assert len(cache.layers) == 32
    assert {type(layer).__name__ for layer in cache.layers} == {"DynamicSlidingWindowLayer"}
    assert {layer.sliding_window for layer in cache.layers} == {262144}


@pytest.mark.filterwarnings("ignore:Already found a")  # peft: the writer's emptied wrappers remain
def test_adapter_files_are_keyed_as_load_adapter_reads_them(tmp_path):
    """The adapter writer, run on the tiny model: decoder weights only, keyed as peft saves them,
    and transformers' load_adapter puts them back in place."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from safetensors.torch import load_file
    from transformers import Phi4MultimodalForCausalLM

    from phi_demo.engine.sources import tiny_folder
    from phi_demo_dev.checkpoint import _save_adapter
    from phi_demo_dev.realshape import adapter_config

    model = Phi4MultimodalForCausalLM.from_pretrained(tiny_folder())
    _save_adapter(model, "speech", tmp_path)
    # Taken out again (peft leaves an empty wrapper): the next adapter is made on the bare model.
    assert not any(m.lora_A for m in model.modules() if isinstance(m, BaseTunerLayer))
    saved = load_file(str(tmp_path / "speech-lora" / "adapter_model.safetensors"))
    assert saved and all(k.startswith("base_model.model.model.layers.") for k in saved)
    assert {k.rsplit(".", 2)[-2] for k in saved} == {"lora_A", "lora_B"}
    assert saved["base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight"].shape[0] == 320

    model.load_adapter(str(tmp_path / "speech-lora"), adapter_name="speech",
                       peft_config=adapter_config("speech", decoder_only=True))
    qkv = model.model.layers[0].self_attn.qkv_proj
    assert torch.equal(qkv.lora_B["speech"].weight, saved["base_model.model.model.layers.0.self_attn.qkv_proj.lora_B.weight"])
