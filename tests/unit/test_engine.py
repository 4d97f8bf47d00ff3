import shutil
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from phi_demo.chat.messages import Turn
from phi_demo.chat.request import build_request
from phi_demo.contract import Notice, collect
from phi_demo.engine.cache import ModelCache, ModelKey
from phi_demo.engine.generation import GenerationStats, stream_generate
from phi_demo.engine.loader import fix_vision_attention, load_model
from phi_demo.engine.local import Engine
from phi_demo.errors import ModelUnavailable, UserInputError
from phi_demo.settings import AppSettings, GenerationSettings


class FakeModel:
    def __init__(self, key, log):
        self.key, self.log, self.released = key, log, False

    def set_attention(self, attn):
        if attn == "flash_attention_2":
            raise RuntimeError("cannot switch in place")
        self.log.append(("switch", attn))

    def release(self):
        self.released = True
        self.log.append(("release", self.key))


def fake_cache():
    log = []

    def load(key):
        time.sleep(0.05)
        log.append(("load", key))
        return FakeModel(key, log)

    return ModelCache(load), log


KEY = ModelKey("m", None, "cpu", "float32", "sdpa")


def test_same_key_same_object_no_reload():
    cache, log = fake_cache()
    a = cache.get(KEY)
    b = cache.get(ModelKey("m", None, "cpu", "float32", "sdpa"))
    assert a is b and cache.loads == 1 and log == [("load", KEY)]


def test_new_key_releases_old_before_loading_new():
    cache, log = fake_cache()
    a = cache.get(KEY)
    other = ModelKey("m", None, "cpu", "bfloat16", "sdpa")
    b = cache.get(other)
    assert a is not b and a.released
    assert log == [("load", KEY), ("release", KEY), ("load", other)]


def test_attention_change_switches_in_place_then_falls_back_to_reload():
    cache, log = fake_cache()
    a = cache.get(KEY)
    eager = ModelKey("m", None, "cpu", "float32", "eager")
    assert cache.get(eager) is a and cache.loads == 1 and log[-1] == ("switch", "eager")
    flash = ModelKey("m", None, "cpu", "float32", "flash_attention_2")
    assert cache.get(flash) is not a and cache.loads == 2


def test_concurrent_requests_load_once():
    cache, log = fake_cache()
    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get(KEY))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.loads == 1 and len({id(g) for g in got}) == 1


def test_engine_reuses_loaded_model_and_switches_attention_in_place(engine):
    first = engine.load()
    assert engine.load() is first and engine.cache.loads == 1
    try:
        assert engine.set_attention("eager") == "eager"
        assert engine.load() is first and first.attn == "eager"
        assert engine.cache.loads == 1
    finally:
        engine.set_attention("sdpa")
    facts = engine.status().facts
    assert facts.device == "cpu" and facts.dtype == "float32" and facts.adapters == ("vision", "speech")


def test_local_folder_loads_with_chat_template(tiny_folder):
    e = Engine(AppSettings(model=str(tiny_folder)))
    loaded = e.load()
    assert e.key().revision is None
    assert loaded.processor.chat_template  # re-attached from the tokenizer
    e.cache.release()


def test_hub_model_offline_explains_how_to_fix():
    e = Engine(AppSettings(offline=True))
    with pytest.raises(ModelUnavailable) as err:
        e.load()
    msg = str(err.value)
    assert "microsoft/Phi-4-multimodal-instruct" in msg and "--model" in msg and "tiny-random" in msg
    assert e.status().state == "error"


def test_wrong_path_and_corrupt_weights(tiny_folder, tmp_path):
    with pytest.raises(ModelUnavailable, match="does not hold a model"):
        Engine(AppSettings(model=str(tmp_path / "nothing-here"))).load()
    broken = tmp_path / "broken"
    shutil.copytree(tiny_folder, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 3])
    e = Engine(AppSettings(model=str(broken)))
    with pytest.raises(ModelUnavailable, match="could not be loaded"):
        e.load()
    assert e.status().state == "error"


def test_unavailable_attention_is_refused_with_reason(engine):
    opts = {o.name: o for o in engine.attention_options()}
    assert opts["eager"].available and opts["sdpa"].available
    assert not opts["flash_attention_2"].available and "CUDA" in opts["flash_attention_2"].reason
    before = engine.attn
    with pytest.raises(ValueError, match="flash_attention_2 cannot be used here: needs a CUDA GPU"):
        engine.set_attention("flash_attention_2")
    assert engine.attn == before and engine.cache.current.attn == before


def _active(model):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {tuple(m.active_adapters) for m in model.modules() if isinstance(m, BaseTunerLayer)}


@pytest.mark.parametrize("modality,adapter", [("vision", "vision"), ("speech", "speech"), ("text", None)])
def test_adapter_per_request(engine, modality, adapter):
    loaded = engine.load()
    assert engine.activate_adapter(loaded, modality) == adapter
    assert _active(loaded.model) == {(adapter,) if adapter else ()}


def test_adapters_change_the_logits(engine):
    loaded = engine.load()
    inputs = loaded.processor(text="<|user|>hi<|end|><|assistant|>", return_tensors="pt")
    logits = {}
    for modality in ("text", "vision", "speech"):
        engine.activate_adapter(loaded, modality)
        with torch.no_grad():
            logits[modality] = loaded.model(**inputs).logits[0, -1]
    assert not torch.allclose(logits["text"], logits["vision"])
    assert not torch.allclose(logits["vision"], logits["speech"])


def _vision_features(model, pixel_values, mask):
    tower = model.model.embed_tokens_extend.image_embed.img_processor
    with torch.no_grad():
        return tower(pixel_values, patch_attention_mask=mask).last_hidden_state


def test_sdpa_vision_matches_eager_on_448_image(tiny_folder):
    eager = load_model(tiny_folder, "cpu", "float32", "eager")
    sdpa = load_model(tiny_folder, "cpu", "float32", "sdpa")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (448, 448, 3), dtype=np.uint8))
    feats = eager.processor.image_processor(img, return_tensors="pt")
    pv = feats["image_pixel_values"][0, :1]
    mask = torch.ones(1, 32, 32, dtype=torch.bool)
    ref = _vision_features(eager.model, pv, mask)
    ours = _vision_features(sdpa.model, pv, mask)
    assert torch.allclose(ref, ours, atol=1e-4)
    # Without the fix, sdpa runs the vision tower causally; the check above would catch it.
    for m in sdpa.model.modules():
        if type(m).__name__ == "Phi4MultimodalVisionAttention":
            m.is_causal = True
    assert not torch.allclose(ref, _vision_features(sdpa.model, pv, mask), atol=1e-2)
    assert fix_vision_attention(sdpa.model) > 0


def _request(assets, files=()):
    return build_request([Turn("user", "Describe it", tuple(str(assets / f) for f in files))], "sys")


def _run(engine, request, gen, cancel=None):
    pieces = list(engine.stream(request, gen, cancel or threading.Event()))
    # The stream's shape: perhaps a Notice first, then text, then exactly one GenerationStats.
    assert isinstance(pieces[-1], GenerationStats)
    assert all(isinstance(p, str) for p in pieces[1:-1]) and isinstance(pieces[0], (str, Notice, GenerationStats))
    return collect(pieces)


@pytest.mark.parametrize("files", [(), ("example_image.png",), ("example_question.wav",),
                                   ("example_image.png", "example_question.wav")])
def test_streams_text_image_audio(engine, assets, files):
    text, stats = _run(engine, _request(assets, files), GenerationSettings(max_new_tokens=12, min_new_tokens=12))
    assert stats.new_tokens == 12 and text and stats.ttft_s > 0 and stats.decode_tok_s > 0


def test_greedy_is_deterministic_and_seed_reproduces_sampling(engine, assets):
    req = _request(assets, ("example_image.png",))
    g = GenerationSettings(max_new_tokens=16)
    assert _run(engine, req, g)[0] == _run(engine, req, g)[0]
    s = GenerationSettings(max_new_tokens=16, do_sample=True, temperature=1.0, seed=7)
    assert _run(engine, req, s)[0] == _run(engine, req, s)[0]


def test_cancel_stops_the_model_not_just_the_reader(engine, assets):
    cancel = threading.Event()
    gen = GenerationSettings(max_new_tokens=4000, min_new_tokens=4000)
    stream = engine.stream(_request(assets), gen, cancel)
    got = [next(stream) for _ in range(3)]
    assert all(isinstance(p, str) for p in got)
    assert engine.generating
    started = engine.answers_finished
    stream.close()  # what Gradio does on Stop or a closed tab
    assert cancel.is_set()
    assert engine.wait_idle(5) and not engine.generating
    assert engine.answers_finished == started + 1


def test_exception_inside_generate_reaches_the_reader(engine, assets, monkeypatch):
    loaded = engine.load()

    def boom(**kwargs):
        kwargs["streamer"].put(torch.tensor([[1, 2]]))  # the prompt
        raise RuntimeError("injected failure")

    monkeypatch.setattr(loaded.model, "generate", boom)
    start = time.time()
    with pytest.raises(RuntimeError, match="injected failure"):
        list(engine.stream(_request(assets), GenerationSettings(max_new_tokens=5), threading.Event()))
    assert time.time() - start < 5


def test_prompt_beyond_context_window_says_the_numbers(engine, assets):
    long = build_request([Turn("user", "word " * 9000)])
    with pytest.raises(UserInputError, match=r"tokens long and 512 new tokens were asked for; the model's context window is 8192"):
        list(engine.stream(long, GenerationSettings(max_new_tokens=512), threading.Event()))


def test_generation_settings_validation():
    g = GenerationSettings.from_values(max_new_tokens="64", do_sample=1, temperature="0.5", seed=-1)
    assert g.max_new_tokens == 64 and g.do_sample and g.temperature == 0.5 and g.seed is None
    with pytest.raises(UserInputError, match="temperature must be between 0.01 and 2.0"):
        GenerationSettings.from_values(temperature=5)
    with pytest.raises(UserInputError, match="must be a number"):
        GenerationSettings.from_values(top_k="many")


def test_a_generated_media_token_cannot_crash_generation(tiny_folder, assets):
    """A model that 'wants' to emit <|audio|> (the random tiny one sometimes does) must not
    make the next step re-embed the clip into one position."""

    loaded = load_model(tiny_folder, "cpu", "float32", "sdpa")
    audio_id = loaded.processor.audio_token_id
    with torch.no_grad():
        loaded.model.lm_head.weight[audio_id] = loaded.model.lm_head.weight.abs().max() * 1000
    request = build_request([Turn("user", "Transcribe", (str(assets / "example_question.wav"),))])
    pieces = list(stream_generate(loaded, request, GenerationSettings(max_new_tokens=5), threading.Event()))
    assert pieces[-1].new_tokens == 5


def test_the_unused_vision_pooling_head_is_not_run(tiny_folder):
    """Phi-4 reads the vision tower's hidden states; its pooling head (4-5 s and 5.4 GB per image
    at full size on the CPU) is skipped, and the model's output is exactly the same."""
    from transformers import Phi4MultimodalForCausalLM

    from phi_demo.engine.generation import prepare_inputs
    from phi_demo.engine.loader import skip_vision_pooling

    loaded = load_model(tiny_folder, "cpu", "float32", "sdpa")
    tower = loaded.model.model.embed_tokens_extend.image_embed.img_processor
    assert not skip_vision_pooling(loaded.model)  # the loader already did it
    reference = Phi4MultimodalForCausalLM.from_pretrained(tiny_folder, dtype=torch.float32, attn_implementation="sdpa").eval()
    fix_vision_attention(reference)
    calls = []
    reference.model.embed_tokens_extend.image_embed.img_processor.head.register_forward_hook(
        lambda *a: calls.append(1))
    request = build_request([Turn("user", "What is this?", ("assets/example_image.png",))])
    inputs = prepare_inputs(loaded, request)
    from peft.functional import set_adapter

    set_adapter(loaded.model, [])  # the reference has no adapters
    with torch.inference_mode():
        ours = loaded.model(**inputs).logits
        theirs = reference(**inputs).logits
    assert calls == [1] and type(tower.head).__name__ == "_NoPooling"
    assert torch.equal(ours, theirs)
