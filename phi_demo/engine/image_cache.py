"""Phi-4's image processor, remembering each image's result across chat turns."""

from __future__ import annotations

import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_utils import make_flat_list_of_images

from phi_demo.caches import ByteLRU
from phi_demo.media.kinds import content_key


def _nbytes(out) -> int:
    return out["image_pixel_values"].nbytes + out["image_attention_mask"].nbytes


class CachedImageProcessor:
    """Wraps Phi4MultimodalImageProcessor; every other attribute is the wrapped one's.

    Each turn of a chat sends all of its earlier images again, and the processor crops,
    resizes and normalises each one anew: 4 ms for a 448 px image, 19 ms at 1344 px and
    135 ms at 2000 px on 2 CPU cores, paid before the first token even when KV reuse then
    skips the image's features. Results are kept per image (by content) up to
    `budget_bytes`, least recently used first out, and a batch is put together with the
    processor's own padding, so it equals what the processor gives for the whole batch."""

    def __init__(self, inner, budget_bytes: int = 256 << 20):
        self._inner = inner
        self._memo = ByteLRU(budget_bytes, _nbytes)

    @property
    def misses(self) -> int:
        return self._memo.misses

    @staticmethod
    def applies_to(image_processor) -> bool:
        return all(hasattr(image_processor, a) for a in ("pad_to_max_num_crops", "pad_mask_to_max_num_crops"))

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __call__(self, images, **kwargs):
        flat = make_flat_list_of_images(images)
        settings = repr(sorted((k, repr(v)) for k, v in kwargs.items() if k != "return_tensors"))
        parts = [self._one(image, settings, kwargs) for image in flat]
        crops = max(p["image_pixel_values"].shape[1] for p in parts)
        data = {
            "image_pixel_values": torch.stack([self._inner.pad_to_max_num_crops(p["image_pixel_values"][0], crops)
                                               for p in parts]),
            "image_sizes": torch.cat([p["image_sizes"] for p in parts]),
            "image_attention_mask": torch.stack([self._inner.pad_mask_to_max_num_crops(p["image_attention_mask"][0], crops)
                                                 for p in parts]),
            "num_img_tokens": [int(n) for p in parts for n in p["num_img_tokens"]],
        }
        return BatchFeature(data=data, tensor_type=kwargs.get("return_tensors"))

    def _one(self, image, settings: str, kwargs: dict):
        return self._memo.get_or_make((content_key(image), settings),
                                      lambda: self._inner([image], **{**kwargs, "return_tensors": "pt"}))
