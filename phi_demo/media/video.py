"""Video clips -> a few evenly spaced frames and one 16 kHz sound track (PyAV, no model).

Phi-4-multimodal has no video input of its own: a clip goes in as images followed by audio
in one user turn. Each frame is shrunk to fit 448 x 448, the size of one crop of the image
processor, so a frame costs one crop plus the global view (about 430 tokens for 16:9, 545
for a square frame) instead of up to 36 crops: 16 frames of a 1080p clip stay near 7 k
tokens instead of 65 k.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.error import FFmpegError
from av.stream import Disposition
from PIL import Image

from phi_demo.errors import UserInputError
from phi_demo.media.audio import MIN_AUDIO_SECONDS, SAMPLE_RATE, SILENCE_PEAK

FRAME_SIDE = 448  # one crop of Phi4MultimodalImageProcessor
# One frame per this many seconds of clip, up to the frame cap: a 5 s clip gets 3 frames,
# a 20 s one the cap. Motion is rarely faster than this in what people ask about.
SECONDS_PER_FRAME = 2.0
# Decoding forward from a keyframe to a target frame: past this many frames the nearest
# decoded one is taken. Bounds the cost of long keyframe intervals at 4K 60 fps.
MAX_DECODE_PER_TARGET = 600


@dataclass(frozen=True)
class Clip:
    frames: tuple[Image.Image, ...]  # RGB, in time order
    times: tuple[float, ...]  # seconds, one per frame
    audio: np.ndarray | None  # 16 kHz mono float32, None when the clip has no (audible) sound
    seconds: float



def _is_picture(stream) -> bool:
    """A real video stream, not the cover art an audio file carries as a one-frame 'video'."""
    return stream.type == "video" and not (stream.disposition & Disposition.attached_pic)


def probe(path: str | os.PathLike[str]) -> str:
    """'video' when the container holds moving pictures, 'audio' when it holds sound only,
    'nothing' when it holds neither, 'damaged' when it cannot be opened."""
    try:
        with av.open(str(path), metadata_errors="ignore") as c:
            if any(_is_picture(s) for s in c.streams.video):
                return "video"
            return "audio" if c.streams.audio else "nothing"
    except (FFmpegError, OSError, ValueError):
        return "damaged"


def frame_count(seconds: float, max_frames: int) -> int:
    return max(1, min(max_frames, math.ceil(seconds / SECONDS_PER_FRAME)))


def frame_times(seconds: float, n: int) -> list[float]:
    """The middle of each of n equal parts: never the first black frame or the cut-off last one."""
    return [(i + 0.5) * seconds / n for i in range(n)]


def fit_frame(width: int, height: int, side: int = FRAME_SIDE) -> tuple[int, int]:
    scale = min(1.0, side / max(width, height))
    return max(2, round(width * scale)), max(2, round(height * scale))


def load_video(path: str | os.PathLike[str], max_frames: int = 8, max_seconds: float = 600.0) -> Clip:
    path = Path(path)
    name = path.name
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (FFmpegError, OSError, ValueError):
        raise UserInputError(f"{name}: this is not a video that can be read (unknown or corrupt format).") from None
    with container:
        pictures = [s for s in container.streams.video if _is_picture(s)]
        if not pictures:
            raise UserInputError(f"{name}: the file holds no picture.")
        vs = pictures[0]
        header = container.duration / av.time_base if container.duration else None
        if header and header > max_seconds + 1:
            raise UserInputError(f"{name}: the video is {_clock(header)} long; the limit is {_clock(max_seconds)}.")
        try:
            times = _packet_times(container, vs, max_seconds)
        except FFmpegError:
            raise UserInputError(f"{name}: the video is damaged and cannot be read.") from None
        if not times:
            raise UserInputError(f"{name}: the video has no frames.")
        start = times[0][0]
        seconds = max(times[-1][0] - start, 0.0)
        if seconds > max_seconds:
            raise UserInputError(f"{name}: the video is longer than the limit of {_clock(max_seconds)}.")
        targets = [start + t for t in frame_times(seconds, frame_count(seconds, max_frames))]
        try:
            frames, got = _frames_at(container, vs, targets, times)
        except FFmpegError:
            frames, got = [], []
        if not frames:
            raise UserInputError(f"{name}: the video is damaged: no frame of it could be decoded.")
        audio = _sound(container, max_seconds) if container.streams.audio else None
    return Clip(tuple(frames), tuple(round(t - start, 3) for t in got), audio, seconds)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}" if m else f"{s} s"


def _packet_times(container, vs, max_seconds: float) -> list[tuple[float, bool]]:
    """(time, is keyframe) of every picture, from the packets alone (no decoding): right for
    variable frame rates and for files whose header has no duration (MediaRecorder's webm)."""
    tb = vs.time_base
    out: list[tuple[float, bool]] = []
    for packet in container.demux(vs):
        if packet.pts is None or packet.size == 0:
            continue
        out.append((float(packet.pts * tb), bool(packet.is_keyframe)))
        if out[-1][0] - out[0][0] > max_seconds + 1:  # hours long with no duration in its header
            break
    return sorted(out)


def _frames_at(container, vs, targets: list[float],
               times: list[tuple[float, bool]]) -> tuple[list[Image.Image], list[float]]:
    """Decode the picture nearest each target time in one forward pass, seeking only when
    the next target lies beyond a keyframe that has not been reached yet."""
    vs.thread_type = "AUTO"
    tb = vs.time_base
    w, h = fit_frame(vs.codec_context.width or FRAME_SIDE, vs.codec_context.height or FRAME_SIDE)
    keys = [t for t, key in times if key] or [times[0][0]]
    frames: list[Image.Image] = []
    got: list[float] = []
    decoder, position = None, -math.inf
    for target in targets:
        want = min((t for t, _ in times), key=lambda t: abs(t - target))  # an existing picture
        key = max((k for k in keys if k <= want), default=keys[0])
        if decoder is None or key > position:
            container.seek(int(key / tb), stream=vs, backward=True)
            decoder = container.decode(vs)
        best = None
        for n, frame in enumerate(decoder):
            if frame.time is None:
                continue
            best, position = frame, float(frame.time)
            if position >= want - 1e-6 or n >= MAX_DECODE_PER_TARGET:
                break
        if best is None:
            break  # the stream ended early: a truncated file
        image = best.to_image(width=w, height=h).convert("RGB")
        # A phone's portrait clip is stored landscape with a display rotation, which ffmpeg's
        # player applies and PyAV does not: PIL's counter-clockwise angle matches ffmpeg's.
        rotation = int(getattr(best, "rotation", 0) or 0)
        frames.append(image.rotate(rotation, expand=True) if rotation % 360 else image)
        got.append(position)
    return frames, got


def _sound(container, max_seconds: float) -> np.ndarray | None:
    """The first audio track as one 16 kHz mono clip, or None when it is silent or empty."""

    stream = container.streams.audio[0]
    container.seek(0)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks, total, limit = [], 0, int((max_seconds + 1) * SAMPLE_RATE)
    try:
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
                total += chunks[-1].size
            if total > limit:
                break
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    except FFmpegError:
        pass  # a damaged tail: keep the sound up to it
    if not chunks:
        return None
    audio = np.ascontiguousarray(np.concatenate(chunks)[:limit], dtype=np.float32)
    if audio.size < MIN_AUDIO_SECONDS * SAMPLE_RATE or not np.isfinite(audio).all():
        return None
    if float(np.abs(audio).max()) < SILENCE_PEAK:
        return None
    return audio


def describe(name: str, clip: Clip) -> str:
    """What the model is told about a clip's images: that they are one video's frames, when."""
    times = ", ".join(f"{t:.1f}" for t in clip.times)
    sound = ", then its sound" if clip.audio is not None else " (it has no sound)"
    return f"[Video {name}: {len(clip.frames)} frames at {times} s of a {clip.seconds:.1f} s clip{sound}]"
