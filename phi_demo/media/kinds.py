"""What a file is, by its content, not its name; content keys for caches."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from phi_demo.caches import ByteLRU, register
from phi_demo.errors import UserInputError
from phi_demo.media.video import probe

# What one probe costs to remember: its key (a path and two numbers) and a short word.
_PROBE_ENTRY_BYTES = 256
_probed: ByteLRU[tuple[str, int, int], str] = register(
    "container probes", ByteLRU(1 << 20, lambda kind: _PROBE_ENTRY_BYTES))
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


def kind_of(path: str | os.PathLike[str], mime_type: str | None = None) -> str:
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


def content_key(x: Image.Image | np.ndarray) -> str:
    """A hash of an image's pixels (or an audio clip's samples): what KV reuse and the
    image-processor cache tell media apart by."""

    if isinstance(x, Image.Image):
        # Hashing a large image takes tens of ms: remember its key on it.
        if "phi_demo_key" not in x.info:
            x.info["phi_demo_key"] = hashlib.sha1(x.tobytes() + f"{x.size}{x.mode}".encode()).hexdigest()
        return x.info["phi_demo_key"]
    return hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()
