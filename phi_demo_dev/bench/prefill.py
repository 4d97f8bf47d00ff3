"""Prefill cost per input: text, images of three sizes, two lengths of audio, a video clip
and a PDF."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np

from phi_demo_dev.bench.common import BENCH_SYSTEM, sync


def prefill_rows(engine, loaded, runs) -> list[tuple[str, int, float, float]]:
    """(input, prompt tokens, file decoding ms, prefill ms) for text, images of three sizes,
    two audio lengths, a video and a PDF."""
    import soundfile as sf
    from PIL import Image

    from phi_demo.chat import request as conversation
    from phi_demo.chat.messages import Turn
    from phi_demo.chat.request import Limits, build_request
    from phi_demo.engine.generation import prepare_inputs

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
    cases.append(("video 16 s 720p: 8 frames + 10 s sound", (str(_clip(tmp)),)))
    cases.append(("PDF 3 A4 pages (scans, no text layer)", (str(_document(tmp)),)))
    rows = []
    for name, files in cases:
        turns = [Turn("user", "Describe this.", files)]
        limits = Limits(max_audio_seconds=60, max_video_frames=8)
        decode = []
        for _ in range(runs):  # opening and decoding the files, paid once per file (then cached)
            conversation.decoded_media.clear()
            t = time.perf_counter()
            request = build_request(turns, BENCH_SYSTEM, limits)
            decode.append(time.perf_counter() - t)
        engine.activate_adapter(loaded, request.modality)
        tokens = int(prepare_inputs(loaded, request)["input_ids"].shape[1])
        ms = statistics.median(raw_generate_prefill(loaded, request) for _ in range(runs)) * 1000
        rows.append((name, tokens, statistics.median(decode) * 1000, ms))
    engine.activate_adapter(loaded, "text")
    return rows


def raw_generate_prefill(loaded, request) -> float:
    """Processor + one forward pass over the prompt (the first token's cost)."""
    import torch

    from phi_demo.engine.generation import prepare_inputs

    sync(loaded.device)
    t = time.perf_counter()
    inputs = prepare_inputs(loaded, request)
    with torch.inference_mode():
        loaded.model(**inputs, logits_to_keep=1)
    sync(loaded.device)
    return time.perf_counter() - t


def _clip(tmp: Path) -> Path:
    """16 s of 1280x720 test pattern (8 frames at one per 2 s) with 10 s of tone and noise."""
    import subprocess

    out = tmp / "clip16s.mp4"
    if not out.exists():
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-nostdin", "-f", "lavfi", "-i",
                        "testsrc2=size=1280x720:rate=25:duration=16", "-f", "lavfi", "-i",
                        "sine=frequency=300:duration=10", "-c:v", "libx264", "-preset", "ultrafast",
                        "-pix_fmt", "yuv420p", "-c:a", "aac", str(out)], check=True)
    return out


def _document(tmp: Path) -> Path:
    """Three A4 pages at 150 dpi covered in lines of text, as a scanner makes them."""
    from PIL import Image, ImageDraw

    out = tmp / "scan3.pdf"
    if not out.exists():
        pages = []
        for n in range(3):
            page = Image.new("RGB", (1240, 1754), "white")
            draw = ImageDraw.Draw(page)
            for line in range(60):
                draw.text((100, 100 + 25 * line), f"Page {n + 1}, line {line + 1}: the quick brown fox "
                          "jumps over the lazy dog, 0123456789.", fill="black")
            pages.append(page)
        pages[0].save(out, save_all=True, append_images=pages[1:], resolution=150)
    return out
