"""Process-wide state is listed in one place (phi_demo/caches.py), every cache there has a
byte budget, and releasing the model empties the caches tied to it."""

import threading

import torch
from PIL import Image

from phi_demo import caches
from phi_demo.caches import ByteLRU
from phi_demo.chat import request as conversation
from phi_demo.chat.messages import Turn
from phi_demo.engine import image_cache, int4
from phi_demo.engine.loader import load_model
from phi_demo.engine.worker import GenerationWorker, busy_workers
from phi_demo.media import kinds

EVERY_CACHE = {"decoded media": False, "file digests": False, "container probes": False, "image crops": True,
               "int4 dequantization buffers": True, "clip transcripts": True}


def test_every_process_wide_cache_is_listed_with_a_byte_budget():
    listed = {entry.name: entry for entry in caches.all_caches()}
    assert set(EVERY_CACHE) <= set(listed), sorted(listed)
    for entry in listed.values():
        assert isinstance(entry.budget_bytes, int) and 0 < entry.budget_bytes <= 1 << 30, entry
        assert entry.cache.bytes <= entry.budget_bytes
    assert {name: listed[name].model_tied for name in EVERY_CACHE} == EVERY_CACHE
    # The registered objects are the ones the code uses.
    assert listed["decoded media"].cache is conversation.decoded_media.cache
    assert listed["file digests"].cache is conversation.decoded_media.digests
    assert listed["container probes"].cache is kinds._probed
    assert listed["image crops"].cache is image_cache.CROPS
    assert listed["int4 dequantization buffers"].cache is int4._scratch


def test_releasing_the_model_empties_the_caches_tied_to_it(tiny_folder, tmp_path):
    picture = tmp_path / "p.png"
    Image.new("RGB", (64, 48), (200, 10, 10)).save(picture)
    conversation.build_request([Turn("user", "What is it?", (str(picture),))])  # decodes the file
    loaded = load_model(tiny_folder, "cpu", "float32", "sdpa")
    loaded.processor(text="<|user|><|image|>?<|end|><|assistant|>", images=[Image.open(picture).convert("RGB")],
                     return_tensors="pt")  # crops, through the cached image processor
    layer = int4.Int4Linear.from_weight(torch.randn(64, 256), None, torch.float32)
    layer(torch.randn(int4.PREFILL_ROWS + 1, 256))  # a long input: dequantized into a scratch buffer
    assert len(image_cache.CROPS) and len(int4._scratch) and len(conversation.decoded_media.cache)

    loaded.release()
    assert len(image_cache.CROPS) == 0 and image_cache.CROPS.bytes == 0
    assert len(int4._scratch) == 0 and int4._scratch.bytes == 0
    assert len(conversation.decoded_media.cache)  # not the model's: the next model reads the same files


def test_byte_lru_counts_hits_and_misses_and_may_bound_the_count():
    lru = ByteLRU(100, len, max_items=2)
    assert lru.get_or_make("a", lambda: b"x") == b"x" and (lru.hits, lru.misses) == (0, 1)
    assert lru.get_or_make("a", lambda: b"y") == b"x" and (lru.hits, lru.misses) == (1, 1)
    lru.put("b", b"xx")
    lru.put("c", b"xxx")
    assert len(lru) == 2 and lru.get("a") is None and lru.bytes == 5


def test_the_worker_says_when_it_generates():
    worker, started, gate = GenerationWorker(), threading.Event(), threading.Event()
    try:
        done = worker.submit(lambda: (started.set(), gate.wait(5)) and None)
        assert started.wait(5)
        assert worker.busy.is_set() and worker in busy_workers()
        assert (worker.submitted, worker.started, worker.finished) == (1, 1, 0)
        assert not worker.wait_idle(0.05)
        gate.set()
        assert worker.wait_idle(5) and done.is_set()
        assert not worker.busy.is_set() and worker not in busy_workers() and worker.finished == 1
    finally:
        gate.set()
        worker.stop()
