"""What the engine must do whatever the checkpoint's small files say: stop at <|end|>, and add
LoRA only where an adapter file has weights."""

import json
import logging
import threading
from types import SimpleNamespace

import pytest
import torch

from phi_demo.chat.messages import Turn
from phi_demo.chat.request import build_request
from phi_demo.contract import collect
from phi_demo.engine.loader import stop_token_ids
from phi_demo.engine.local import Engine
from phi_demo.engine.tiny import HUB_LORA_TARGETS, LORA_TARGETS
from phi_demo.settings import AppSettings, GenerationSettings
from phi_demo_dev.checkpoint import write_tiny


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The tiny model in the hub's layout, with config and generation config naming only
    <|endoftext|> as eos, as a converted checkpoint's may."""
    folder = write_tiny(tmp_path_factory.mktemp("converted") / "ckpt")
    for name in ("config.json", "generation_config.json"):
        data = json.loads((folder / name).read_text())
        assert data["eos_token_id"] == [0], data["eos_token_id"]  # <|endoftext|> only
    return folder


def forced_end_after(loaded, steps: int):
    """Make <|end|> the greedy token from new token `steps + 1` on (the prefill is call 1)."""
    end = loaded.processor.tokenizer.convert_tokens_to_ids("<|end|>")
    calls = {"n": 0}

    def hook(module, args, output):
        calls["n"] += 1
        if calls["n"] <= steps:
            return None
        forced = torch.full_like(output, -1e4)
        forced[..., end] = 1e4
        return forced

    return loaded.model.lm_head.register_forward_hook(hook)


def test_an_answer_stops_at_end_of_turn_when_the_checkpoint_names_only_endoftext(converted):
    engine = Engine(AppSettings(model=str(converted)))
    loaded = engine.load()
    handle = forced_end_after(loaded, 3)
    try:
        text, stats = collect(engine.stream(build_request([Turn("user", "Hello")]),
                                            GenerationSettings(max_new_tokens=64), threading.Event()))
    finally:
        handle.remove()
        engine.cache.release()
    # Three tokens of its own, then <|end|>, and nothing after it.
    assert stats.new_tokens == 4 and not stats.cancelled, stats
    assert "<|end|>" not in text


def test_stop_ids_add_end_of_turn_to_what_the_checkpoint_names():
    vocab = {"<|endoftext|>": 199999, "<|end|>": 200020, "hello": 5}
    tokenizer = SimpleNamespace(unk_token_id=None, get_vocab=lambda: vocab)
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=199999),
                            config=SimpleNamespace(eos_token_id=199999))
    assert stop_token_ids(model, tokenizer) == [199999, 200020]
    # main's generation config already names both: nothing twice.
    model.generation_config.eos_token_id = [200020, 199999]
    assert stop_token_ids(model, tokenizer) == [200020, 199999]
    # A tokenizer without the Phi-4 tokens adds nothing.
    assert stop_token_ids(model, SimpleNamespace(unk_token_id=0, get_vocab=lambda: {"a": 1})) == [200020, 199999]


def lora_modules(model):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {name for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)}


def test_a_hub_style_adapter_config_adds_lora_only_where_the_file_has_weights(converted, caplog):
    config = json.loads((converted / "vision-lora" / "adapter_config.json").read_text())
    assert config["target_modules"] == HUB_LORA_TARGETS  # names, which the audio encoder also has
    with caplog.at_level(logging.INFO, logger="phi_demo.engine.loader"):
        loaded = Engine(AppSettings(model=str(converted))).load()
    tuned = lora_modules(loaded.model)
    assert tuned and all(name.startswith("model.layers.") for name in tuned), sorted(tuned)[:5]
    skipped = [r.getMessage() for r in caplog.records if "no weights for" in r.getMessage()]
    assert len(skipped) == 2 and all("audio_embed.encoder" in m for m in skipped), skipped  # once per adapter


def test_the_file_decides_not_the_names(converted, tmp_path):
    """Loaded by the file's keys or by the real adapters' regex, the model is the same: the
    same LoRA modules and the same logits for an audio request with the speech adapter."""
    import shutil

    regex = tmp_path / "regex"
    shutil.copytree(converted, regex)
    for sub in ("vision-lora", "speech-lora"):
        path = regex / sub / "adapter_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "target_modules": LORA_TARGETS}))
    by_file = Engine(AppSettings(model=str(converted)))
    by_regex = Engine(AppSettings(model=str(regex)))
    a, b = by_file.load(), by_regex.load()
    assert lora_modules(a.model) == lora_modules(b.model)
    from phi_demo.engine.generation import prepare_inputs
    from tests.helpers import ROOT

    request = build_request([Turn("user", "Transcribe", (str(ROOT / "assets" / "example_question.wav"),))])
    logits = []
    for engine, loaded in ((by_file, a), (by_regex, b)):
        engine.activate_adapter(loaded, "speech")
        with torch.inference_mode():
            logits.append(loaded.model(**prepare_inputs(loaded, request)).logits)
    assert torch.equal(logits[0], logits[1])


def test_an_adapter_file_missing_a_weight_is_refused_not_left_uninitialised(converted, tmp_path):
    """LoRA weights are not initialised before the file fills them (that cost ~5 s per adapter
    at full size), so a file that lacks one must be refused."""
    import shutil

    from safetensors.torch import load_file, save_file

    from phi_demo.errors import ModelUnavailable

    broken = tmp_path / "broken"
    shutil.copytree(converted, broken)
    path = broken / "speech-lora" / "adapter_model.safetensors"
    weights = load_file(str(path))
    dropped = next(k for k in weights if "lora_B" in k)
    del weights[dropped]
    save_file(weights, str(path))
    with pytest.raises(ModelUnavailable, match="speech adapter .* lacks weights"):
        Engine(AppSettings(model=str(broken))).load()
