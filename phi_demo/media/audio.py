"""Audio: open, check, convert to 16 kHz mono float32 (SAMPLE_RATE is defined here, once); loudness per frame."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from phi_demo.errors import UserInputError
from phi_demo.media.files import check_nonempty

SAMPLE_RATE = 16_000
# Anything shorter than one 25 ms analysis window has no speech in it.
MIN_AUDIO_SECONDS = 0.025
# Digital silence (below -80 dBFS everywhere): the model would only invent an answer.
SILENCE_PEAK = 1e-4


def to_mono_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Samples shaped (n,) or (n, channels), any numeric dtype, to mono float32 at 16 kHz."""
    arr = np.asarray(samples)
    if arr.dtype.kind in "iu":
        info = np.iinfo(arr.dtype)
        # Unsigned PCM (8-bit wav) is centred on the middle of its range.
        mid = (int(info.max) + int(info.min) + 1) / 2
        arr = (arr.astype(np.float32) - mid) / (info.max - mid)
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim == 2:
        arr = arr.mean(axis=1)
    elif arr.ndim != 1:
        raise UserInputError(f"Audio must be one- or two-dimensional, not shaped {arr.shape}.")
    if sample_rate != SAMPLE_RATE and arr.size:
        # soxr is what librosa.resample uses by default ("soxr_hq"), called directly: going
        # through librosa, the first call in a process loads its numba functions for 2 s
        # (far longer beside a running answer), and in a live view's first chunk that left
        # the recording with no audio for 20 s.

        arr = soxr.resample(arr, sample_rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(arr, dtype=np.float32)


def load_audio(path: str | os.PathLike[str], max_seconds: float = 300.0) -> np.ndarray:
    """Decode an audio file (wav, flac, ogg, mp3 via libsndfile; webm, m4a via ffmpeg) to 16 kHz mono."""

    path = Path(path)
    check_nonempty(path)
    try:
        info = sf.info(str(path))
    except Exception:  # noqa: BLE001 - libsndfile refuses in several ways; each means "try ffmpeg"
        info = None
    if info is not None:
        if info.duration > max_seconds:
            raise UserInputError(
                f"{path.name}: the clip is {info.duration:.1f} s long; the limit is {max_seconds:g} s."
            )
        try:
            data, sr = sf.read(str(path), always_2d=True, dtype="float32")
        except Exception as e:  # noqa: BLE001 - a damaged file fails in libsndfile's many ways
            raise UserInputError(f"{path.name}: the audio is damaged or truncated ({e}).") from None
    else:
        data, sr = _decode_with_ffmpeg(path, max_seconds)
    seconds = len(data) / sr if sr else 0.0
    if seconds > max_seconds:
        raise UserInputError(f"{path.name}: the clip is {seconds:.1f} s long; the limit is {max_seconds:g} s.")
    if seconds < MIN_AUDIO_SECONDS:
        raise UserInputError(f"{path.name}: the clip is empty or too short ({seconds * 1000:.0f} ms).")
    if not np.isfinite(data).all():
        raise UserInputError(f"{path.name}: the audio holds invalid samples (NaN or infinity).")
    if float(np.abs(data).max()) < SILENCE_PEAK:
        raise UserInputError(f"{path.name}: the clip is silent; nothing can be heard in it.")
    return to_mono_16k(data, sr)


def _decode_with_ffmpeg(path: Path, max_seconds: float) -> tuple[np.ndarray, int]:
    """Containers libsndfile cannot read (webm, m4a, aac) go through the ffmpeg binary."""

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise UserInputError(f"{path.name}: this audio format needs ffmpeg, which is not installed on the server.")
    cmd = [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-t", str(max_seconds + 1),
           "-f", "f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-"]
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        raise UserInputError(f"{path.name}: decoding the audio took too long.") from None
    if out.returncode != 0 or not out.stdout:
        raise UserInputError(f"{path.name}: this is not audio that can be read (unknown or corrupt format).")
    data = np.frombuffer(out.stdout, dtype=np.float32).reshape(-1, 1)
    return data, SAMPLE_RATE


def frame_db(x: np.ndarray, sr: int = SAMPLE_RATE, frame_s: float = 0.03) -> np.ndarray:
    """Level of each frame in dBFS."""
    n = max(1, int(sr * frame_s))
    frames = len(x) // n
    if frames == 0:
        return np.zeros(0)
    rms = np.sqrt(np.mean(np.square(x[: frames * n].reshape(frames, n), dtype=np.float64), axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-10))
