"""--quantize (bitsandbytes, decoder only) and --offload, on the CPU with the tiny model.
bitsandbytes 0.50 runs both 4-bit and 8-bit on the CPU, so the loading path is real here."""

import threading

import pytest

from phi_demo.chat.messages import Turn
from phi_demo.chat.request import build_request
from phi_demo.engine.generation import stream_generate
from phi_demo.engine.loader import load_model
from phi_demo.engine.local import Engine
from phi_demo.errors import ModelUnavailable
from phi_demo.settings import AppSettings, GenerationSettings
from tests.helpers import ROOT

IMG = str(ROOT / "assets" / "example_image.png")
WAV = str(ROOT / "assets" / "example_question.wav")


def bnb_layers(model):
    return {name: type(m).__name__ for name, m in model.named_modules()
            if type(m).__name__ in ("Linear4bit", "Linear8bitLt")}


@pytest.mark.parametrize("kind,layer", [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_decoder_quantized_encoders_and_adapters_kept(tiny_folder, kind, layer):
    loaded = load_model(tiny_folder, "cpu", "bfloat16", "sdpa", quantize=kind)
    quantized = bnb_layers(loaded.model)
    assert quantized and set(quantized.values()) == {layer}
    assert all(name.startswith("model.layers.") for name in quantized), "an encoder or the LM head was quantized"
    assert loaded.adapters == ["vision", "speech"]
    engine = Engine(AppSettings(model="tiny-random"))
    for files, modality in (((IMG,), "vision"), ((WAV,), "speech"), ((IMG, WAV), "vision"), ((), "text")):
        engine.activate_adapter(loaded, modality)
        request = build_request([Turn("user", "What is this?", files)])
        stats = list(stream_generate(loaded, request, GenerationSettings(max_new_tokens=4, min_new_tokens=4),
                                     threading.Event()))[-1]
        assert stats.new_tokens == 4


def test_quantize_without_bitsandbytes_says_what_to_install(tiny_folder, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ModelUnavailable, match="pip install bitsandbytes"):
        load_model(tiny_folder, "cpu", "bfloat16", "sdpa", quantize="4bit")


def test_offload_places_with_accelerate_and_says_where(tiny_folder):
    # Without a GPU, accelerate's "auto" placement puts everything in CPU memory.
    engine = Engine(AppSettings(model="tiny-random", offload=True, quantize="8bit", dtype="bfloat16"))
    loaded = engine.load()
    assert bnb_layers(loaded.model)
    info = engine.status().facts
    assert info.placement == "cpu" and info.quantized.startswith("8bit")
    pieces = list(engine.stream(build_request([Turn("user", "hi")]), GenerationSettings(max_new_tokens=3),
                                threading.Event()))
    assert pieces[-1].new_tokens >= 1
    engine.cache.release()


def test_flags():
    s = AppSettings.load(["--quantize", "4bit", "--offload"], {})
    assert s.quantize == "4bit" and s.offload
    with pytest.raises(SystemExit):
        AppSettings.load(["--quantize", "2bit"], {})
