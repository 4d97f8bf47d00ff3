"""KV reuse across chat turns: the next turn's prompt starts with the last turn's prompt and
answer, so only what is new needs a prefill.

A few recent (token ids, KV cache, adapter) entries are kept. A request takes the entry
sharing its longest prefix, crops that cache to the prefix and prefills only the rest.
Anything else — an edited or undone history, a retry, another adapter — falls back by
itself to a shorter prefix or to none."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from transformers import Cache, PretrainedConfig

from phi_demo.contract import MediaItem


@dataclass(eq=False)  # compared by identity: comparing the tensors would be wrong and slow
class Entry:
    ids: torch.Tensor  # 1-D, on the CPU: prompt + generated tokens the cache covers (and maybe one more)
    cache: Cache
    adapter: str | None
    items: list[str]  # content keys of the images and clips inside `ids`, in order


@dataclass
class Reuse:
    cache: Cache
    length: int  # tokens already in the cache
    images_done: int  # images whose tokens are all inside the reused prefix
    audios_done: int


def rope_switch(config: PretrainedConfig) -> int | None:
    """Length past which Phi-4 switches to its long RoPE factors, or None. generate() then
    drops a cache that stops at or before this point and recomputes everything (see
    Phi4MultimodalForCausalLM.prepare_inputs_for_generation), so such a cache is no use to a
    longer prompt."""
    original = getattr(config, "original_max_position_embeddings", None)
    return int(original) if original and getattr(config, "rope_parameters", None) else None


def media_runs(ids: torch.Tensor, media: list[MediaItem], image_id: int,
               audio_id: int) -> list[tuple[int, int, str, int]]:
    """(start, end, kind, count) for each run of media tokens, in order. Adjacent slots of
    one kind become one run of tokens; the request's media items (their slot groups) say
    how many items each run holds."""
    is_media = (ids == image_id) | (ids == audio_id)
    runs: list[tuple[int, int, str]] = []
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
    groups: list[tuple[int, str]] = []  # (count, kind) per slot group
    for m in media:
        if len(groups) == m.group:
            groups.append((0, m.kind))
        groups[m.group] = (groups[m.group][0] + 1, m.kind)
    if len(groups) != len(runs) or any(k != g[1] for (_, _, k), g in zip(runs, groups)):
        return []  # unexpected layout: callers then do not reuse
    return [(s, e, k, g[0]) for (s, e, k), g in zip(runs, groups)]


class PrefixCache:
    def __init__(self, slots: int = 2, min_reuse: int = 8) -> None:
        self.slots = slots
        self.min_reuse = min_reuse
        self.entries: list[Entry] = []

    def clear(self) -> None:
        self.entries.clear()

    def discard(self, cache: Cache) -> None:
        """Forget the entry holding `cache` (its owner is about to overwrite it)."""
        self.entries = [e for e in self.entries if e.cache is not cache]

    def take(self, ids: torch.Tensor, media: list[MediaItem], adapter: str | None, image_id: int, audio_id: int,
             accept: Callable[[Cache, int], bool] | None = None) -> Reuse | None:
        """The best reusable cache for `ids` (removed from the store), cropped; or None.

        `media` is the request's MediaItems in prompt order: equal token ids do not mean
        equal media, since every image of a size has the same placeholder ids.
        `accept(cache, n)` says whether the caller can use `cache` for its first n tokens
        (fast decode needs its own static cache; see also rope_switch)."""
        ids = ids.detach().to("cpu")
        runs = media_runs(ids, media, image_id, audio_id)
        if not runs and ((ids == image_id) | (ids == audio_id)).any():
            return None
        items = [m.key for m in media]
        best_entry: Entry | None = None
        best = (0, 0, 0)
        for entry in self.entries:
            if entry.adapter != adapter:
                continue
            m = min(len(entry.ids), len(ids))
            same = (entry.ids[:m] == ids[:m]).tolist()
            n = same.index(False) if False in same else m
            n = min(n, int(entry.cache.get_seq_length()), len(ids) - 1)  # at least one token to prefill
            images_done = audios_done = used = 0
            for start, end, kind, count in runs:
                # Never split a media item between cache and prefill, nor reuse another one's keys.
                if n < end or entry.items[used:used + count] != items[used:used + count]:
                    n = min(n, start)
                    break
                used += count
                if kind == "image":
                    images_done += count
                else:
                    audios_done += count
            if n > best[0] and (accept is None or accept(entry.cache, n)):
                best_entry, best = entry, (n, images_done, audios_done)
        n, images_done, audios_done = best
        if best_entry is None or n < self.min_reuse:
            return None
        self.entries = [e for e in self.entries if e is not best_entry]
        surplus = int(best_entry.cache.get_seq_length()) - n
        if surplus:
            with torch.inference_mode():  # a static cache crops in place, and its tensors are inference tensors
                best_entry.cache.crop(-surplus)  # transformers 5: a negative count of tokens to drop
        return Reuse(best_entry.cache, n, images_done, audios_done)

    def put(self, ids: torch.Tensor, cache: Cache, adapter: str | None, items: list[str] | None = None) -> None:
        self.entries.append(Entry(ids.detach().to("cpu"), cache, adapter, list(items or [])))
        del self.entries[: max(0, len(self.entries) - self.slots)]


def slice_media(inputs: Mapping[str, Any], reuse: Reuse) -> dict[str, Any]:
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
