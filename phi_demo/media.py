"""Open, check and convert what users upload: images to RGB PIL, audio to 16 kHz mono float32.

No model here. Every failure is a UserInputError whose message names the file and says
what is wrong in words a person understands.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserInputError

SAMPLE_RATE = 16_000
# Phi-4's image processor tiles into at most 36 crops of 448 px; beyond this side
# length detail is discarded anyway, so larger images are downscaled first.
MAX_IMAGE_SIDE = 4096
# Refuse decompression bombs well before PIL's own hard limit (2 x 89 MP).
MAX_IMAGE_PIXELS = 64_000_000
# Anything shorter than one 25 ms analysis window has no speech in it.
MIN_AUDIO_SECONDS = 0.025
# Digital silence (below -80 dBFS everywhere): the model would only invent an answer.
SILENCE_PEAK = 1e-4

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
AUDIO_EXTENSIONS = {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".webm", ".m4a", ".aac", ".mp4"}


def kind_of(path: str | os.PathLike) -> str:
    """'image' or 'audio', from the file name; raises for anything else."""
    ext = Path(path).suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in AUDIO_EXTENSIONS:
        return "audio"
    raise UserInputError(
        f"{Path(path).name}: unsupported file type {ext or '(none)'}. "
        f"Send images ({', '.join(sorted(IMAGE_EXTENSIONS))}) or audio ({', '.join(sorted(AUDIO_EXTENSIONS))})."
    )


def _check_nonempty(path: Path) -> None:
    try:
        size = path.stat().st_size
    except OSError:
        raise UserInputError(f"{path.name}: the file could not be read.") from None
    if size == 0:
        raise UserInputError(f"{path.name}: the file is empty (0 bytes).")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to RGB; transparency is composited onto white, as a viewer shows it."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() or 1.0
        img = Image.fromarray((arr / hi * 255.0).clip(0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = arr.min(), arr.max()
        img = Image.fromarray(((arr - lo) / ((hi - lo) or 1.0) * 255.0).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as RGB, first frame of animations, EXIF rotation applied."""
    path = Path(path)
    _check_nonempty(path)
    try:
        with warnings.catch_warnings():
            # Our own, lower limit below gives the numbers; PIL still raises past 2x its limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise UserInputError(
                        f"{path.name}: the image is {w}x{h} = {w * h / 1e6:.0f} megapixels; "
                        f"the limit is {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels."
                    )
                img.seek(0)
                img.load()
                rgb = to_rgb(img)
    except UserInputError:
        raise
    except Image.DecompressionBombError:
        raise UserInputError(f"{path.name}: the image is too large to open safely (decompression bomb).") from None
    except UnidentifiedImageError:
        raise UserInputError(f"{path.name}: this is not an image that can be read (unknown or corrupt format).") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UserInputError(f"{path.name}: the image is damaged or truncated ({e}).") from None
    if max(rgb.size) > MAX_IMAGE_SIDE:
        rgb.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE), Image.Resampling.LANCZOS)
    return rgb


def to_mono_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Samples shaped (n,) or (n, channels), any numeric dtype, to mono float32 at 16 kHz."""
    import librosa

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
        arr = librosa.resample(arr, orig_sr=sample_rate, target_sr=SAMPLE_RATE)
    return np.ascontiguousarray(arr, dtype=np.float32)


def load_audio(path: str | os.PathLike, max_seconds: float = 300.0) -> np.ndarray:
    """Decode an audio file (wav, flac, ogg, mp3 via libsndfile; webm, m4a via ffmpeg) to 16 kHz mono."""
    import soundfile as sf

    path = Path(path)
    _check_nonempty(path)
    try:
        info = sf.info(str(path))
    except Exception:
        info = None
    if info is not None:
        if info.duration > max_seconds:
            raise UserInputError(
                f"{path.name}: the clip is {info.duration:.1f} s long; the limit is {max_seconds:g} s."
            )
        try:
            data, sr = sf.read(str(path), always_2d=True, dtype="float32")
        except Exception as e:
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
    import shutil
    import subprocess

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
