"""A client's files (data URLs, base64 audio, http(s) URLs) as files on disk, so that they
enter the page's request path (chat/request.py) and get every check and sentence it has."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import threading
from pathlib import Path

from phi_demo.errors import UserInputError
from phi_demo.media import fetch

_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(?:;[\w-]+=[^;,]*)*(;base64)?,", re.I)
_SUFFIXES = {"wav": ".wav", "mp3": ".mp3", "flac": ".flac", "ogg": ".ogg", "webm": ".webm", "m4a": ".m4a",
             "png": ".png", "jpeg": ".jpg", "jpg": ".jpg", "gif": ".gif", "webp": ".webp", "pdf": ".pdf",
             "mp4": ".mp4", "mpeg": ".mp3", "x-wav": ".wav", "wave": ".wav"}


class TooLarge(UserInputError):
    """A file over the upload limit: the API answers 413."""


def _suffix(mime_or_format: str | None) -> str:
    sub = (mime_or_format or "").rsplit("/", 1)[-1].lower()
    return _SUFFIXES.get(sub, "")


class ClientFiles:
    """Files by content hash (`<sha256><suffix>`) under `folder`; the oldest go once the
    folder passes `budget_bytes`. The folder is the only place the API's requests may read."""

    def __init__(self, folder: str | os.PathLike[str], max_bytes: int, budget_bytes: int = 1 << 30,
                 allow_private_urls: bool = False) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.budget_bytes = budget_bytes
        self.allow_private_urls = allow_private_urls
        self._lock = threading.Lock()

    def _too_large(self, size: int) -> TooLarge:
        return TooLarge(f"The file is {size / 1e6:.1f} MB; the limit is {self.max_bytes / 1e6:.0f} MB.")

    def put_bytes(self, data: bytes, suffix: str = "") -> str:
        if len(data) > self.max_bytes:
            raise self._too_large(len(data))
        if not data:
            raise UserInputError("The file is empty.")
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / (hashlib.sha256(data).hexdigest() + suffix)
        with self._lock:
            if not path.exists():
                tmp = path.with_name(path.name + f".{threading.get_ident()}.part")
                tmp.write_bytes(data)
                tmp.replace(path)
                self._evict(keep=path)
            else:
                path.touch()  # recently used
        return str(path)

    def _evict(self, keep: Path) -> None:
        files = [(p.stat(), p) for p in self.folder.iterdir() if p.is_file() and p != keep]
        total = sum(st.st_size for st, _ in files) + keep.stat().st_size
        for st, p in sorted(files, key=lambda f: f[0].st_mtime_ns):
            if total <= self.budget_bytes:
                break
            p.unlink(missing_ok=True)
            total -= st.st_size

    def put_base64(self, text: str, suffix: str = "") -> str:
        # Four base64 characters carry three bytes: refuse an oversized file before decoding it.
        if len(text) * 3 // 4 > self.max_bytes + 3:
            raise self._too_large(len(text) * 3 // 4)
        try:
            data = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise UserInputError("The file's base64 data is not valid base64.") from None
        return self.put_bytes(data, suffix)

    def put_url(self, url: str, hint: str | None = None) -> str:
        """A data URL or an http(s) URL (through the fetch guard: no private addresses)."""
        m = _DATA_URL.match(url)
        if m:
            if not m.group(2):
                raise UserInputError("A data URL must carry base64 data (data:<type>;base64,...).")
            return self.put_base64(url[m.end():], _suffix(m.group(1)) or _suffix(hint))
        if not url.lower().startswith(("http://", "https://")):
            shown = url if len(url) <= 60 else url[:57] + "..."
            raise UserInputError(f"A file must be given as a data URL or an http(s) URL, not {shown!r}.")
        try:
            path = fetch.fetch(url, self.folder / "downloads", max_bytes=self.max_bytes,
                               allow_private=self.allow_private_urls)
        except UserInputError as e:
            if "limit" in str(e):
                raise TooLarge(str(e)) from None
            raise
        return str(path)
