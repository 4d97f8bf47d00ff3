"""--quantize int4 on the CPU (decoder and LM head over torch's int4 kernel), the checkpoint
writer, and the choice of weights that fit the machine."""

import dataclasses
import threading

import pytest
import torch

from phi_demo.chat.messages import Turn
from phi_demo.chat.request import build_request
from phi_demo.contract import collect
from phi_demo.engine.int4 import PREFILL_ROWS, Int4Linear, Int8Embedding, check_kernel, quantized_modules
from phi_demo.engine.local import Engine
from phi_demo.engine.runtime import Machine, device_for, dtype_for, quantize_for
from phi_demo.errors import ModelUnavailable
from phi_demo.settings import AppSettings, GenerationSettings
from tests.helpers import ROOT

IMAGE, AUDIO = str(ROOT / "assets" / "example_image.png"), str(ROOT / "assets" / "example_question.wav")
GEN = GenerationSettings(max_new_tokens=12, min_new_tokens=12)


def test_the_kernel_runs_here_and_its_layout_is_understood():
    assert check_kernel() is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int4_layer_matches_its_dequantized_weights_for_short_and_long_inputs(dtype):
    torch.manual_seed(0)
    w = torch.randn(200, 384)  # 200 rows: padded to the kernel's blocks of 64
    layer = Int4Linear.from_weight(w, torch.randn(200), dtype)
    dense_w = layer.dequantized_t()[:, :200].float()
    assert float((dense_w.T - w).norm() / w.norm()) < 0.12  # group-wise int4 on Gaussian weights
    for rows in (1, PREFILL_ROWS, PREFILL_ROWS + 1, 300):  # the kernel, then the dequantized path
        x = torch.randn(rows, 384)
        got = layer(x.to(dtype)).float()
        want = x.to(dtype).float() @ dense_w + layer.bias.float()
        assert got.shape == (rows, 200)
        assert float((got - want).norm() / want.norm()) < (1e-5 if dtype == torch.float32 else 2e-2), rows


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_folder):
    from phi_demo_dev.checkpoint import write_tiny

    return write_tiny(tmp_path_factory.mktemp("ckpt") / "tiny")


def test_the_checkpoint_writer_uses_the_hub_layout_and_answers_as_the_tiny_model(checkpoint, engine):
    names = {p.name for p in checkpoint.iterdir()}
    assert {"config.json", "model.safetensors.index.json", "tokenizer.json", "chat_template.jinja",
            "processor_config.json", "vision-lora", "speech-lora"} <= names
    assert len([n for n in names if n.startswith("model-0")]) > 1  # sharded
    from_disk = Engine(AppSettings(model=str(checkpoint), dtype="float32"))  # as the built-in tiny runs
    try:
        for files in ((), (IMAGE,), (AUDIO,)):
            request = build_request([Turn("user", "Describe", files)], "Be brief.")
            assert collect(from_disk.stream(request, GEN, threading.Event()))[0] == \
                collect(engine.stream(request, GEN, threading.Event()))[0], files
    finally:
        from_disk.cache.release()


@pytest.fixture(scope="module")
def int4_engine(checkpoint):
    e = Engine(AppSettings(model=str(checkpoint), quantize="int4", dtype="bfloat16"))
    e.load()
    yield e
    e.cache.release()


def test_only_the_decoder_lm_head_and_token_embedding_are_quantized(int4_engine):
    loaded = int4_engine.load()
    names = quantized_modules(loaded.model)
    assert "lm_head" in names and len(names) == 2 + 4 * loaded.model.config.num_hidden_layers
    assert all(n in ("lm_head", "model.embed_tokens") or n.startswith("model.layers.") for n in names), names
    assert not any("embed_tokens_extend" in n for n in names)  # the vision and audio encoders stay whole
    assert loaded.adapters == ["vision", "speech"]
    assert "int4 (decoder and LM head" in int4_engine.status().facts.quantized


@pytest.mark.parametrize("files,adapter", [((), None), ((IMAGE,), "vision"), ((AUDIO,), "speech"),
                                           ((IMAGE, AUDIO), "vision")])
def test_int4_answers_with_the_right_adapter(int4_engine, files, adapter):
    from peft.tuners.lora import LoraLayer

    request = build_request([Turn("user", "What is this?", files)])
    text, stats = collect(int4_engine.stream(request, GEN, threading.Event()))
    assert stats.new_tokens == 12 and text
    loaded = int4_engine.load()
    layer = next(m for m in loaded.model.modules() if isinstance(m, LoraLayer))
    assert (layer.active_adapters or [None])[0] == adapter or (adapter is None and not layer.active_adapters)


def test_int4_answers_are_the_same_with_and_without_kv_reuse(int4_engine):
    history = [Turn("user", "Look", (IMAGE,))]
    answers = {}
    for reuse in (True, False):
        int4_engine.kv_reuse = reuse
        int4_engine.load().prefix_cache.clear()
        turns, got = list(history), []
        for q in ("And now?", "Once more?"):
            text, stats = collect(int4_engine.stream(build_request(turns), GEN, threading.Event()))
            got.append((text, stats.cached_tokens > 0))
            turns += [Turn("assistant", text), Turn("user", q)]
        answers[reuse] = got
    int4_engine.kv_reuse = True
    assert [t for t, _ in answers[True]] == [t for t, _ in answers[False]]
    assert answers[True][1][1] and not answers[False][1][1]


def test_int8_embedding_reads_the_rows_it_was_given():
    torch.manual_seed(0)
    w = torch.randn(300, 64) * torch.rand(300, 1)  # rows of different sizes: one scale each
    emb = Int8Embedding.from_weight(w, None, torch.bfloat16)
    ids = torch.tensor([[0, 5, 299], [7, 7, 1]])
    got = emb(ids)
    assert got.dtype == torch.bfloat16 and got.shape == (2, 3, 64)
    assert float((got.float() - w[ids]).norm() / w[ids].norm()) < 0.01  # int8 per row, then bf16


def test_a_checkpoint_with_tied_embeddings_loads_in_int4(checkpoint, tmp_path):
    """Phi-4's LM head shares the embedding (tie_word_embeddings): its checkpoint has no
    lm_head.weight, and the int4 head is made from the embedding."""
    import shutil

    from safetensors import safe_open
    from transformers import Phi4MultimodalForCausalLM

    model = Phi4MultimodalForCausalLM.from_pretrained(checkpoint)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    tied = tmp_path / "tied"
    model.save_pretrained(tied, max_shard_size="300KB")
    for item in checkpoint.iterdir():
        if not item.name.startswith("model") and item.name not in ("config.json", "generation_config.json"):
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, tied / item.name)
    shards = list(tied.glob("model-*.safetensors"))
    names = {n for f in shards for n in safe_open(f, "pt").keys()}
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names
    embedding = next(safe_open(f, "pt").get_tensor("model.embed_tokens.weight") for f in shards
                     if "model.embed_tokens.weight" in safe_open(f, "pt").keys()).float()

    settings = AppSettings(model=str(tied), quantize="int4", dtype="bfloat16", int4_cache=str(tmp_path / "int4"))
    request = build_request([Turn("user", "Describe", (IMAGE,))])
    answers = []
    for start in ("cold", "warm"):  # the second start reads the int4 cache the first one wrote
        e = Engine(settings)
        try:
            loaded = e.load()
            assert ("read from the int4 cache" in e.status().facts.quantized) == (start == "warm")
            base = loaded.model.get_base_model() if hasattr(loaded.model, "get_base_model") else loaded.model
            head = base.lm_head
            assert isinstance(head, Int4Linear) and isinstance(base.model.embed_tokens, Int8Embedding)
            head_w = head.dequantized_t()[:, : head.out_features].float().T
            assert float((head_w - embedding).norm() / embedding.norm()) < 0.12  # int4 of the same weights
            text, stats = collect(e.stream(request, GEN, threading.Event()))
            assert stats.new_tokens == GEN.max_new_tokens
            answers.append(text)
        finally:
            e.cache.release()
    assert answers[0] == answers[1]


def test_unsupported_combinations_get_one_clear_line(checkpoint):
    offloaded = Engine(AppSettings(model=str(checkpoint), quantize="int4", offload=True))
    assert "int4 is the CPU path" in offloaded.config_error
    with pytest.raises(ModelUnavailable, match="int4 is the CPU path"):
        offloaded.load()
    e = Engine(AppSettings(model=str(checkpoint), quantize="int4", device="cuda"))
    assert e.config_error  # no GPU here, or int4 refused on it: either way nothing loads
    fast = Engine(AppSettings(model=str(checkpoint), quantize="int4", dtype="bfloat16", fast_decode=True))
    try:
        fast.load()
        assert fast.status().facts.fast_decode == \
            "off: not with --quantize or --offload (transformers does not compile those)"
    finally:
        fast.cache.release()


@pytest.mark.parametrize("spec,device,tiny,space,available,kind", [
    ("auto", "cpu", False, False, 8e9, "int4"),     # a 16 GB laptop with 8 GB free
    ("auto", "cpu", False, False, 64e9, "none"),    # plenty of memory: bf16
    ("auto", "cpu", False, True, 64e9, "int4"),     # a CPU-only Space
    ("auto", "cuda", False, True, 1e9, "none"),     # GPUs: bf16 (or 4bit when asked)
    ("auto", "cpu", True, True, 1e9, "none"),       # the tiny model never needs it
    ("none", "cpu", False, True, 1e9, "none"),      # --quantize none overrides
    ("4bit", "cuda", False, False, 1e9, "4bit"),
])
def test_auto_quantize_fits_the_machine(spec, device, tiny, space, available, kind):
    machine = Machine(cuda=device == "cuda", on_space=space, available_bytes=available, model_bf16_bytes=14.8e9)
    got, why = quantize_for(spec, device, tiny, machine)
    assert got == kind
    if spec == "auto" and kind == "int4" and not space:
        assert why == "int4 to fit this machine: bf16 needs 14.8 GB, 8.0 GB is available"


def test_engine_picks_int4_for_a_big_model_on_a_small_machine(checkpoint):
    small = dataclasses.replace(Machine.detect(str(checkpoint)), available_bytes=1e6)  # "has" 1 MB free
    e = Engine(AppSettings(model=str(checkpoint)), machine=small)
    assert e.quantize == "int4" and e.quantize_reason.startswith("int4 to fit this machine")
    assert e.status().state == "idle" and not e.config_error
    assert Engine(AppSettings(model=str(checkpoint), quantize="none"), machine=small).quantize == "none"


def test_mps_is_picked_when_torch_reports_it():
    """Untested on a Mac: only the choice is checked here."""
    mac = Machine(mps=True)
    assert device_for("auto", mac)[0] == "mps" and device_for("mps", mac)[0] == "mps"
    assert dtype_for("auto", "mps", False, mac)[0] == "float16"
    assert device_for("auto", Machine())[0] == "cpu"
    with pytest.raises(ModelUnavailable, match="mps device"):
        device_for("mps", Machine())


def test_packing_in_chunks_of_rows_equals_packing_at_once(monkeypatch):
    from phi_demo.engine import int4

    torch.manual_seed(1)
    w = torch.randn(300, 256)
    whole = int4.quantize_weight(w, 128, torch.bfloat16)
    monkeypatch.setattr(int4, "CHUNK_ROWS", 128)  # 128, 128 and a padded 44
    chunked = int4.quantize_weight(w, 128, torch.bfloat16)
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])
