"""The per-image processor cache gives exactly what the processor gives, and does the work
once per image."""

import numpy as np
import pytest
import torch
from PIL import Image

from phi_demo.caches import ByteLRU
from phi_demo.engine.image_cache import CachedImageProcessor, _nbytes


@pytest.fixture(scope="module")
def processors(tiny_folder):
    from transformers import AutoProcessor

    from phi_demo.engine.loader import load_processor

    return load_processor(tiny_folder), AutoProcessor.from_pretrained(tiny_folder)


def image(w, h, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


IMAGES = {"small": image(448, 448, 1), "wide": image(896, 672, 2), "large": image(1344, 1008, 3), "tall": image(300, 900, 4)}


@pytest.mark.parametrize("names", [["small"], ["wide", "small"], ["large", "small", "wide"], ["small", "large"],
                                   ["tall", "tall"], ["small", "wide", "large", "tall"]])
def test_same_as_the_processor(processors, names):
    cached, plain = processors
    assert isinstance(cached.image_processor, CachedImageProcessor)
    text = "<|user|>" + "<|image|>" * len(names) + "What is here?<|end|><|assistant|>"
    got = cached(text=text, images=[IMAGES[n] for n in names], return_tensors="pt")
    want = plain(text=text, images=[IMAGES[n] for n in names], return_tensors="pt")
    assert sorted(got.keys()) == sorted(want.keys())
    for key in want.keys():
        assert torch.equal(got[key], want[key]), key


def test_each_image_is_processed_once(processors):
    inner = processors[1].image_processor
    memo = CachedImageProcessor(inner, ByteLRU(256 << 20, _nbytes))
    a, b = image(640, 480, 10), image(480, 640, 11)
    memo([a])
    memo([a, b])
    memo([a, b])
    memo([image(640, 480, 10)])  # the same pixels in a new object
    assert memo.misses == 2


def test_memory_stays_within_budget(processors):
    inner = processors[1].image_processor
    one = inner([IMAGES["small"]], return_tensors="pt")
    size = one["image_pixel_values"].nbytes + one["image_attention_mask"].nbytes
    memo = CachedImageProcessor(inner, ByteLRU(2 * size, _nbytes))
    for seed in range(5):
        memo([image(448, 448, 100 + seed)])
    assert memo._memo.bytes <= 2 * size and len(memo._memo) == 2
    memo([image(448, 448, 104)])  # the most recent is still there
    assert memo.misses == 5
