"""Prefill cost per input: text, images of three sizes, two lengths of audio."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np

from .common import BENCH_SYSTEM, sync


def prefill_rows(engine, loaded, runs) -> list[tuple[str, int, float]]:
    """(input, prompt tokens, prefill ms) for text, images of three sizes and two audio lengths."""
    import soundfile as sf
    from PIL import Image

    from ..conversation import Limits, Turn, build_request
    from ..engine.generation import prepare_inputs

    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "phi-demo-bench"
    tmp.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    cases = [("text only", ())]
    for side in (448, 896, 1344):
        p = tmp / f"img{side}.png"
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(p)
        cases.append((f"image {side}x{side}", (str(p),)))
    for seconds in (5, 30):
        p = tmp / f"audio{seconds}.wav"
        sf.write(p, (0.1 * rng.standard_normal(16000 * seconds)).astype(np.float32), 16000)
        cases.append((f"audio {seconds} s", (str(p),)))
    rows = []
    for name, files in cases:
        request = build_request([Turn("user", "Describe this.", files)], BENCH_SYSTEM, Limits(max_audio_seconds=60))
        engine.activate_adapter(loaded, request.modality)
        tokens = int(prepare_inputs(loaded, request)["input_ids"].shape[1])
        ms = statistics.median(raw_generate_prefill(loaded, request) for _ in range(runs)) * 1000
        rows.append((name, tokens, ms))
    engine.activate_adapter(loaded, "text")
    return rows


def raw_generate_prefill(loaded, request) -> float:
    """Processor + one forward pass over the prompt (the first token's cost)."""
    import torch

    from ..engine.generation import prepare_inputs

    sync(loaded.device)
    t = time.perf_counter()
    inputs = prepare_inputs(loaded, request)
    with torch.inference_mode():
        loaded.model(**inputs, logits_to_keep=1)
    sync(loaded.device)
    return time.perf_counter() - t
