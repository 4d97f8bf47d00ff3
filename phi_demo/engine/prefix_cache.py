"""KV reuse across chat turns: the next turn's prompt starts with the last turn's prompt and
answer, so only what is new needs a prefill.

A few recent (token ids, KV cache, adapter) entries are kept. A request takes the entry
sharing its longest prefix, crops that cache to the prefix and prefills only the rest.
Anything else — an edited or undone history, a retry, another adapter — falls back by
itself to a shorter prefix or to none."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

_SLOT_GROUPS = re.compile(r"(?:<\|image\|>)+|(?:<\|audio\|>)+")


@dataclass(eq=False)  # compared by identity: comparing the tensors would be wrong and slow
class Entry:
    ids: torch.Tensor  # 1-D, on the CPU: prompt + generated tokens the cache covers (and maybe one more)
    cache: object  # transformers Cache
    adapter: str | None


@dataclass
class Reuse:
    cache: object
    length: int  # tokens already in the cache
    images_done: int  # images whose tokens are all inside the reused prefix
    audios_done: int


def media_runs(ids: torch.Tensor, prompt: str, image_id: int, audio_id: int) -> list[tuple[int, int, str, int]]:
    """(start, end, kind, count) for each run of media tokens, in order. Adjacent slots of
    one kind become one run of tokens; the prompt text says how many items each run holds."""
    is_media = (ids == image_id) | (ids == audio_id)
    runs = []
    i, n = 0, len(ids)
    flags = is_media.tolist()
    values = ids.tolist()
    while i < n:
        if flags[i]:
            j = i
            while j < n and values[j] == values[i]:
                j += 1
            runs.append((i, j, "image" if values[i] == image_id else "audio"))
            i = j
        else:
            i += 1
    groups = [(m.group(0).count("<|"), "image" if m.group(0).startswith("<|image") else "audio")
              for m in _SLOT_GROUPS.finditer(prompt)]
    if len(groups) != len(runs) or any(k != g[1] for (_, _, k), g in zip(runs, groups)):
        return []  # unexpected layout: callers then do not reuse
    return [(s, e, k, g[0]) for (s, e, k), g in zip(runs, groups)]


class PrefixCache:
    def __init__(self, slots: int = 2, min_reuse: int = 8):
        self.slots = slots
        self.min_reuse = min_reuse
        self.entries: list[Entry] = []

    def clear(self) -> None:
        self.entries.clear()

    def take(self, ids: torch.Tensor, prompt: str, adapter: str | None, image_id: int, audio_id: int) -> Reuse | None:
        """The best reusable cache for `ids` (removed from the store), cropped; or None."""
        ids = ids.detach().to("cpu")
        best, best_len = None, 0
        for entry in self.entries:
            if entry.adapter != adapter:
                continue
            m = min(len(entry.ids), len(ids))
            same = (entry.ids[:m] == ids[:m]).tolist()
            n = same.index(False) if False in same else m
            n = min(n, entry.cache.get_seq_length(), len(ids) - 1)  # at least one token to prefill
            if n > best_len:
                best, best_len = entry, n
        if best is None or best_len < self.min_reuse:
            return None
        runs = media_runs(ids, prompt, image_id, audio_id)
        if not runs and ((ids == image_id) | (ids == audio_id)).any():
            return None
        images_done = audios_done = 0
        for start, end, kind, count in runs:
            if best_len < end:
                best_len = min(best_len, start)  # never split a media item between cache and prefill
                break
            if kind == "image":
                images_done += count
            else:
                audios_done += count
        if best_len < self.min_reuse:
            return None
        self.entries.remove(best)
        surplus = best.cache.get_seq_length() - best_len
        if surplus:
            best.cache.crop(-surplus)  # transformers 5: a negative count of tokens to drop
        return Reuse(best.cache, best_len, images_done, audios_done)

    def put(self, ids: torch.Tensor, cache, adapter: str | None) -> None:
        self.entries.append(Entry(ids.detach().to("cpu"), cache, adapter))
        del self.entries[: max(0, len(self.entries) - self.slots)]


def slice_media(inputs: dict, reuse: Reuse) -> dict:
    """Drop the pixel values and audio features of items already inside the cache."""
    out = dict(inputs)
    if reuse.images_done and "image_pixel_values" in out:
        # Zero images left still counts as 'an image request' for the audio projection,
        # exactly as in the full prefill.
        for key in ("image_pixel_values", "image_sizes", "image_attention_mask"):
            if key in out:
                out[key] = out[key][reuse.images_done:]
    if reuse.audios_done and "audio_input_features" in out:
        remaining = out["audio_input_features"].shape[0] - reuse.audios_done
        for key in ("audio_input_features", "audio_embed_sizes", "audio_attention_mask"):
            if key in out and out[key] is not None:
                out[key] = out[key][reuse.audios_done:] if remaining else None
    return out
