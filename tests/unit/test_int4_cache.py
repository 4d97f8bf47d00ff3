"""--int4-cache: the int4 model is quantized once and written to disk; later loads read that
entry (and not the checkpoint's weight files) and answer exactly as the first; a damaged,
partial or foreign entry is rebuilt with a notice; the folder keeps to its byte budget."""

import json
import logging
import os
import shutil
import threading

import pytest
import torch

from phi_demo.engine import int4, int4_cache
from phi_demo.engine.int4 import load_int4
from phi_demo.engine.int4_cache import MANIFEST, WEIGHTS, Int4Cache, cache_key, checkpoint_identity
from phi_demo.settings import AppSettings

IDS = torch.tensor([[5, 17, 42, 8, 99, 3, 61, 27]])


@pytest.fixture(scope="module")
def source(tmp_path_factory, tiny_folder):
    from phi_demo_dev.checkpoint import write_tiny

    return write_tiny(tmp_path_factory.mktemp("int4cache") / "tiny")


@pytest.fixture
def checkpoint(source, tmp_path):
    """A copy of the sharded tiny checkpoint that a test may change (copytree keeps mtimes:
    the same key as `source`, as a moved folder keeps its entry)."""
    return shutil.copytree(source, tmp_path / "ckpt")


@pytest.fixture(scope="module")
def reference(source):
    """Logits and greedy tokens of the tiny model quantized straight from the checkpoint."""
    return answer(load_int4(source, torch.bfloat16, "sdpa"))


def answer(model, generate: bool = True):
    """(logits, greedy tokens); `generate` costs ~0.4 s here, so most tests compare logits
    (bit for bit) and the greedy token of each position."""
    with torch.inference_mode():
        logits = model(input_ids=IDS).logits
        tokens = model.generate(input_ids=IDS, max_new_tokens=6, min_new_tokens=6, do_sample=False) \
            if generate else None
    return logits, None if tokens is None else tokens[0, IDS.shape[1]:].tolist()


def load(checkpoint, cache, notices=None):
    return load_int4(checkpoint, torch.bfloat16, "sdpa", cache, (notices if notices is not None else []).append)


def shards(checkpoint):
    return sorted(checkpoint.glob("model-*.safetensors"))


def only_entry(cache):
    entries = cache.entries()
    assert len(entries) == 1, entries
    return entries[0].path


def assert_same(model, reference, generate: bool = False):
    logits, tokens = answer(model, generate)
    assert torch.equal(logits, reference[0])
    assert torch.equal(logits.argmax(-1), reference[0].argmax(-1))
    if generate:
        assert tokens == reference[1]


def test_a_cold_load_writes_the_entry_and_a_warm_load_answers_exactly_the_same(checkpoint, tmp_path, reference):
    cache = Int4Cache(tmp_path / "int4", 1 << 30)
    cold = load(checkpoint, cache)
    entry = only_entry(cache)
    assert {p.name for p in entry.iterdir()} == {WEIGHTS, MANIFEST}
    manifest = json.loads((entry / MANIFEST).read_text())
    assert manifest["key"] == entry.name and manifest["quantizer_version"] == int4.QUANTIZER_VERSION
    assert manifest["files"][WEIGHTS]["bytes"] == (entry / WEIGHTS).stat().st_size
    assert manifest["parts"]["torch"] == torch.__version__ and manifest["parts"]["dtype"] == "torch.bfloat16"
    assert "wrote" in cold.int4_cache_note
    assert_same(cold, reference, generate=True)
    warm = load(checkpoint, cache)
    assert warm.int4_cache_note.startswith("read from the int4 cache")
    assert_same(warm, reference, generate=True)
    a, b = cold.state_dict(), warm.state_dict()
    assert a.keys() == b.keys()
    assert all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
    assert {type(m).__name__ for m in (warm.lm_head, warm.model.embed_tokens)} == {"Int4Linear", "Int8Embedding"}


def test_a_warm_load_does_not_read_the_checkpoints_weight_files(checkpoint, tmp_path, reference, monkeypatch):
    cache = Int4Cache(tmp_path / "int4", 1 << 30)
    load(checkpoint, cache)

    def no_reading(path):
        raise AssertionError(f"the warm load read {path}")

    monkeypatch.setattr(int4, "read_safetensors", no_reading)
    # Garbage of the same size with the same mtimes: the key is unchanged, so only a load
    # that never reads these bytes can still answer right.
    for shard in shards(checkpoint):
        st = shard.stat()
        shard.write_bytes(os.urandom(st.st_size))
        os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert_same(load(checkpoint, cache), reference)


def _truncate(entry):
    path = entry / WEIGHTS
    os.truncate(path, path.stat().st_size - 100)


def _header_bytes(entry):
    with open(entry / WEIGHTS, "r+b") as fh:
        fh.seek(20)
        fh.write(b"\x00garbage\xff")


def _tensor_bytes(entry):
    path = entry / WEIGHTS
    with open(path, "r+b") as fh:
        fh.seek(path.stat().st_size - 5000)
        fh.write(os.urandom(64))


def _no_manifest(entry):
    (entry / MANIFEST).unlink()


def _garbled_manifest(entry):
    (entry / MANIFEST).write_text('{"key": ')


def _other_version(entry):
    manifest = json.loads((entry / MANIFEST).read_text())
    manifest["quantizer_version"] = int4.QUANTIZER_VERSION + 1
    (entry / MANIFEST).write_text(json.dumps(manifest))


def _no_weights(entry):
    (entry / WEIGHTS).unlink()


def _shapes_from_elsewhere(entry):
    """A well-formed file whose tensors are not this model's (another model under this key)."""
    from safetensors.torch import save_file

    path = entry / WEIGHTS
    save_file({"model.norm.weight": torch.ones(3)}, str(path))
    manifest = json.loads((entry / MANIFEST).read_text())
    manifest["files"][WEIGHTS]["bytes"] = path.stat().st_size
    (entry / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage,why", [
    (_truncate, "bytes"), (_header_bytes, "header"), (_tensor_bytes, "checksum"), (_no_manifest, "manifest is missing"),
    (_garbled_manifest, "manifest is unreadable"), (_other_version, "quantizer version"), (_no_weights, "missing"),
    (_shapes_from_elsewhere, "do not match the model"),
])
def test_a_damaged_entry_is_rebuilt_with_a_notice_and_answers_the_same(checkpoint, tmp_path, reference, caplog,
                                                                       damage, why):
    cache = Int4Cache(tmp_path / "int4", 1 << 30)
    load(checkpoint, cache)
    damage(only_entry(cache))
    notices = []
    with caplog.at_level(logging.WARNING, logger="phi_demo.engine.int4"):
        rebuilt = load(checkpoint, cache, notices)
    assert any("could not be used" in n and why in n and "quantizing again" in n for n in notices), notices
    assert any("could not be used" in r.getMessage() for r in caplog.records)
    assert "rebuilt" in rebuilt.int4_cache_note and "wrote" in rebuilt.int4_cache_note
    assert_same(rebuilt, reference)
    again = load(checkpoint, cache)  # the rebuilt entry is whole
    assert again.int4_cache_note.startswith("read from the int4 cache")


def test_a_write_that_dies_halfway_leaves_no_entry(checkpoint, tmp_path, reference, monkeypatch):
    cache = Int4Cache(tmp_path / "int4", 1 << 30)
    real = int4_cache._write_safetensors

    def dies(path, header, tensors):
        real(path, header, tensors[: len(tensors) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(int4_cache, "_write_safetensors", dies)
    model = load(checkpoint, cache)
    assert "not written" in model.int4_cache_note
    assert_same(model, reference)
    assert list(cache.root.iterdir()) == []  # nothing under the key, no temporary folder left
    # A process killed while writing leaves its temporary folder: the next write removes it.
    monkeypatch.setattr(int4_cache, "_write_safetensors", real)
    dead = cache.root / f".tmp-{'0' * 24}-{2 ** 22 + 12345}-abcd"
    dead.mkdir()
    (dead / WEIGHTS).write_bytes(b"partial")
    load(checkpoint, cache)
    assert not dead.exists()
    assert len(cache.entries()) == 1


def test_the_key_follows_the_shards_size_and_mtime_and_nothing_is_hashed(checkpoint):
    files = [p.name for p in shards(checkpoint)]

    def key():
        return cache_key(checkpoint_identity(checkpoint, files), quantizer_version=1)[0]

    first = key()
    assert key() == first
    shard = shards(checkpoint)[0]
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
    touched = key()
    assert touched != first
    with open(shard, "ab") as fh:
        fh.write(b"\0")
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
    assert key() not in (first, touched)  # same mtime, another size
    assert cache_key(checkpoint_identity(checkpoint, files), quantizer_version=2)[0] != key()


def test_a_hub_snapshot_is_known_by_its_commit(tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "models--microsoft--Phi-4-multimodal-instruct" / "snapshots" / commit
    snapshot.mkdir(parents=True)  # no files at all: nothing is read or stat'ed
    assert checkpoint_identity(snapshot, ["model-00001-of-00003.safetensors"]) == {
        "hub": "models--microsoft--Phi-4-multimodal-instruct", "commit": commit}


def test_a_new_quantizer_version_quantizes_again_and_says_why(checkpoint, tmp_path, reference, monkeypatch):
    cache = Int4Cache(tmp_path / "int4", 1 << 30)
    load(checkpoint, cache)
    monkeypatch.setattr(int4, "QUANTIZER_VERSION", int4.QUANTIZER_VERSION + 1)
    notices = []
    model = load(checkpoint, cache, notices)
    assert any(f"quantizer version {int4.QUANTIZER_VERSION - 1} -> {int4.QUANTIZER_VERSION}" in n for n in notices)
    assert_same(model, reference)
    assert len(cache.entries()) == 2  # the old one goes by the budget, like any other


def test_the_budget_evicts_the_least_recently_used_entry(source, tmp_path):
    copies = [shutil.copytree(source, tmp_path / f"ckpt{i}") for i in range(3)]
    for i, copy in enumerate(copies):  # copytree keeps mtimes, and so would the key: three checkpoints
        for shard in shards(copy):
            os.utime(shard, ns=(0, 10**18 + i))
    probe = Int4Cache(tmp_path / "probe", 1 << 30)
    load(copies[0], probe)
    cache = Int4Cache(tmp_path / "int4", int(probe.entries()[0].bytes * 2.5))  # room for two
    (cache.root / "not-ours").mkdir(parents=True)  # a folder the cache did not make is never touched
    load(copies[0], cache)
    first = only(names(cache))
    load(copies[1], cache)
    second = only(names(cache) - {first})
    os.utime(cache.root / first / MANIFEST, (1, 1))  # an unambiguous order on a coarse clock
    os.utime(cache.root / second / MANIFEST, (2, 2))
    assert load(copies[0], cache).int4_cache_note.startswith("read")  # the first is now the most recent
    load(copies[2], cache)
    assert first in names(cache) and second not in names(cache) and len(names(cache)) == 2
    assert (cache.root / "not-ours").is_dir()


def names(cache):
    return {e.path.name for e in cache.entries()}


def only(items):
    (item,) = items
    return item


def test_an_entry_over_the_budget_is_not_written(checkpoint, tmp_path, reference, caplog):
    cache = Int4Cache(tmp_path / "int4", 1000)
    with caplog.at_level(logging.INFO, logger="phi_demo.engine.int4"):
        model = load(checkpoint, cache)
    assert "over the budget" in model.int4_cache_note
    assert any("over the budget" in r.getMessage() for r in caplog.records)
    assert cache.entries() == []
    assert_same(model, reference)


def test_the_settings_and_the_engine(checkpoint, tmp_path, monkeypatch):
    from phi_demo.engine.local import Engine

    settings = AppSettings.load(["--model", str(checkpoint), "--quantize", "int4", "--dtype", "bfloat16",
                                 "--int4-cache", str(tmp_path / "int4"), "--int4-cache-budget", "200mb"], environ={})
    engine = Engine(settings)
    assert engine.int4_cache.root == tmp_path / "int4" and engine.int4_cache.budget == 200 << 20
    assert Engine(AppSettings(model=str(checkpoint), quantize="int4", int4_cache="off")).int4_cache is None
    default = Engine(AppSettings(model=str(checkpoint), quantize="int4")).int4_cache
    assert default.root.name == "int4" and default.budget == 10 << 30
    bad = Engine(AppSettings(model=str(checkpoint), quantize="int4", int4_cache_budget="lots"))
    assert bad.config_error and "int4_cache_budget" in bad.config_error

    states = []
    real = Engine._set_state

    def record(self, state, message=""):
        states.append((state, message))
        real(self, state, message)

    monkeypatch.setattr(Engine, "_set_state", record)
    engine.load()
    engine.cache.release()
    assert any("Quantizing the weights to int4" in m for _, m in states)
    (only_entry(engine.int4_cache) / MANIFEST).unlink()
    again = Engine(settings)
    try:
        again.load()
        assert any(s == "loading" and "could not be used" in m for s, m in states)
        assert "rebuilt" in again.status().facts.quantized
    finally:
        again.cache.release()
    third = Engine(settings)
    try:
        from phi_demo.chat.messages import Turn
        from phi_demo.chat.request import build_request
        from phi_demo.contract import collect
        from phi_demo.settings import GenerationSettings

        text, stats = collect(third.stream(build_request([Turn("user", "Hi")]),
                                           GenerationSettings(max_new_tokens=4, min_new_tokens=4), threading.Event()))
        assert stats.new_tokens == 4
        assert "read from the int4 cache" in third.status().facts.quantized
    finally:
        third.cache.release()
