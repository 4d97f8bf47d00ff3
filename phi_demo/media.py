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
from .lru import ByteLRU

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

# Phi-4's image processor tiles at most 36 crops of 448 px; past 36:1 its resize leaves the
# short side under 10 px and it refuses the image ("the aspect ratio is very extreme").
MAX_ASPECT = 36

_probed = ByteLRU(1 << 20, lambda kind: 1, max_items=4096)

# What the app takes, for the sentence that refuses anything else.
IMAGE_FORMATS = "PNG, JPEG, GIF, WebP, BMP, TIFF"
AUDIO_FORMATS = "WAV, FLAC, MP3, Ogg/Opus, WebM, M4A/MP4, AAC"
VIDEO_FORMATS = "MP4, WebM, MOV, MKV"
# The first bytes of each format, so that a file is typed by what it is: the official JS
# client uploads a Blob as "blob", with no extension, and a name can lie either way.
_SIGNATURES = [
    (0, b"\x89PNG\r\n\x1a\n", "image"), (0, b"\xff\xd8\xff", "image"), (0, b"GIF87a", "image"),
    (0, b"GIF89a", "image"), (0, b"BM", "image"), (0, b"II*\x00", "image"), (0, b"MM\x00*", "image"),
    (0, b"RIFF", "riff"), (0, b"fLaC", "audio"), (0, b"OggS", "audio"), (0, b"ID3", "audio"),
    (0, b"FORM", "audio"), (0, b"%PDF-", "pdf"),
    # Containers that hold sound, pictures or both (webm/mkv, mp4/m4a/mov): PyAV looks inside.
    (0, b"\x1a\x45\xdf\xa3", "container"), (4, b"ftyp", "container"), (4, b"moov", "container"),
    (4, b"mdat", "container"), (4, b"wide", "container"), (4, b"free", "container"),
]
_MIME_KINDS = {"image/": "image", "audio/": "audio", "video/": "video", "application/pdf": "pdf"}


def sniff(head: bytes) -> str | None:
    """'image', 'audio', 'pdf', 'container' (look inside) or None from a file's first bytes."""
    for offset, magic, kind in _SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            if kind == "riff":  # RIFF holds WAVE audio, WebP images or AVI video
                return {b"WAVE": "audio", b"WEBP": "image", b"AVI ": "container"}.get(head[8:12])
            return kind
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:
        return "audio"  # an MPEG audio frame (MP3 without a tag) or AAC in ADTS
    return None


def kind_of(path: str | os.PathLike, mime_type: str | None = None) -> str:
    """'image', 'audio', 'video' or 'pdf', decided by the file's content (then by the upload's
    mime type), never by its name; raises a UserInputError for anything else. A container
    with pictures is a video; one with sound only (m4a, a webm voice note) is audio."""
    name = Path(path).name or str(path)
    try:
        if not os.path.isfile(path):  # a folder, a device or a pipe (reading one could block)
            raise OSError
        with open(path, "rb") as fh:
            head = fh.read(16)
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: a path with a NUL byte in it
        raise UserInputError(f"{name}: the file could not be read; please attach it again.") from None
    if not head:
        raise UserInputError(f"{name}: the file is empty (0 bytes).")
    kind = sniff(head)
    if kind == "container":
        from .video import probe

        # Every turn types its whole history again; opening a container costs milliseconds.
        kind = _probed.get_or_make((str(path), st.st_mtime_ns, st.st_size), lambda: probe(path))
        if kind == "nothing":
            raise UserInputError(f"{name}: the file holds neither a picture nor sound.")
        if kind == "damaged":
            raise UserInputError(f"{name}: the video or audio file is damaged or truncated and cannot be read.")
    if kind is None and mime_type:
        kind = next((k for prefix, k in _MIME_KINDS.items() if str(mime_type).startswith(prefix)), None)
    if kind is None:
        raise UserInputError(f"{name}: this is not an image, audio, a video or a PDF the app can read. "
                             f"Send images ({IMAGE_FORMATS}), audio ({AUDIO_FORMATS}), "
                             f"videos ({VIDEO_FORMATS}) or PDFs.")
    return kind


def content_key(x) -> str:
    """A hash of an image's pixels (or an audio clip's samples): what KV reuse and the
    image-processor cache tell media apart by."""
    import hashlib

    if hasattr(x, "tobytes") and hasattr(x, "mode"):  # PIL image
        # Hashing a large image takes tens of ms: remember its key on it.
        if "phi_demo_key" not in x.info:
            x.info["phi_demo_key"] = hashlib.sha1(x.tobytes() + f"{x.size}{x.mode}".encode()).hexdigest()
        return x.info["phi_demo_key"]
    return hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()


def fit_aspect(img: Image.Image, max_aspect: float = MAX_ASPECT) -> Image.Image:
    """Pad a very wide or tall image (banner, receipt, scrolling screenshot) with white to
    at most `max_aspect`:1, as the processor itself pads its crops: nothing is cut or squeezed."""
    w, h = img.size
    if max(w, h) <= max_aspect * min(w, h):
        return img
    size = (w, -(-w // max_aspect)) if w > h else (-(-h // max_aspect), h)
    padded = Image.new("RGB", size, (255, 255, 255))
    padded.paste(img, (0, 0))
    return padded


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
    return fit_aspect(rgb)


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
        import soxr

        arr = soxr.resample(arr, sample_rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(arr, dtype=np.float32)


def load_audio(path: str | os.PathLike, max_seconds: float = 300.0) -> np.ndarray:
    """Decode an audio file (wav, flac, ogg, mp3 via libsndfile; webm, m4a via ffmpeg) to 16 kHz mono."""
    import soundfile as sf

    path = Path(path)
    _check_nonempty(path)
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
