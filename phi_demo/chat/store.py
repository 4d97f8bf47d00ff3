"""Saved chats: their media kept by content hash in the app's data folder, and chats as
Markdown or a .zip (chat.json + media) that restores exactly. No gradio, no torch.

The chats themselves live in the browser (the page's BrowserState); what the browser sends
back is not trusted: every file it names must be one this store holds."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypedDict, cast

from phi_demo.caches import ByteLRU
from phi_demo.chat.messages import content_parts, file_path, normalize_history
from phi_demo.errors import UserInputError

FORMAT = "phi-demo-chat/1"
MAX_ZIP_ENTRIES = 200
MAX_CHAT_JSON = 20 << 20  # the text of a chat, not its media

# A Chatbot message as Gradio sends and takes it: {"role", "content", "metadata"?}. Its
# values come from the browser, so they are whatever JSON it sent until checked.
Message = dict[str, object]


class ChatFile(TypedDict):
    """chat.json in an exported .zip."""

    format: str  # FORMAT
    title: str
    exported: str  # the day, YYYY-MM-DD
    messages: list[Message]  # files as "media/<name>" paths inside the archive


def _as_table(value: object) -> dict[str, object] | None:
    """A JSON object as a table of named values, or None for anything else."""
    return cast("dict[str, object]", value) if isinstance(value, dict) else None


def _as_list(value: object) -> list[object] | None:
    return cast("list[object]", value) if isinstance(value, list) else None


class MediaStore:
    """Files by content hash (`<sha256><suffix>`) under `folder`, least recently used out
    first once they pass `budget_bytes`. Gradio empties its upload cache after a day; this
    keeps the media of saved chats for as long as the budget allows."""

    def __init__(self, folder: str | os.PathLike[str], budget_bytes: int):
        self.folder = Path(folder)
        self.budget_bytes = budget_bytes
        self._lock = threading.Lock()
        # (path, mtime, size) -> its stored copy; counted per entry, the count is the bound
        self._hashed: ByteLRU[tuple[str, int, int], str] = ByteLRU(1 << 20, lambda target: 1, max_items=4096)
        self.hashes = 0  # files read and hashed

    def put(self, path: str | os.PathLike[str]) -> str:
        """Copy a file in (once per content); returns its path in the store. A chat is saved
        after every answer with all its files: a file seen before (same path, size and
        modification time) is not read and hashed again."""
        src = Path(path)
        st = src.stat()
        seen = (str(src), st.st_mtime_ns, st.st_size)
        known = self._hashed.get(seen)
        if known is not None and os.path.exists(known):
            self.touch(known)  # recently used
            return known
        self.hashes += 1
        digest = hashlib.sha256()
        with open(src, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        suffix = re.sub(r"[^a-z0-9.]", "", src.suffix.lower())[:8]
        target = self.folder / (digest.hexdigest() + suffix)
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            if target.exists():
                os.utime(target)  # recently used
            else:
                tmp = target.with_name(target.name + f".{secrets.token_hex(4)}.part")
                shutil.copyfile(src, tmp)
                os.replace(tmp, target)
                self._evict(keep=target)
        self._hashed.put(seen, str(target))
        return str(target)

    def holds(self, path: str) -> bool:
        try:
            real = Path(os.path.realpath(path))
        except ValueError:
            return False
        return real.parent == Path(os.path.realpath(self.folder)) and real.is_file()

    def touch(self, path: str) -> None:
        try:
            os.utime(path)
        except OSError:
            pass

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("*") if p.is_file()) if self.folder.exists() else 0

    def _evict(self, keep: Path) -> None:
        files = sorted((p for p in self.folder.glob("*") if p.is_file() and not p.name.endswith(".part")),
                       key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for p in files:
            if total <= self.budget_bytes:
                break
            if p != keep:
                total -= p.stat().st_size
                p.unlink(missing_ok=True)


def state_secret(folder: Path) -> str:
    """The key the browser's saved chats are encrypted with: made once and kept, so saved
    chats survive a restart (PHI_DEMO_STATE_SECRET overrides it, e.g. on a Space)."""
    if os.environ.get("PHI_DEMO_STATE_SECRET"):
        return os.environ["PHI_DEMO_STATE_SECRET"]
    path = folder / "browser-state.secret"
    try:
        return path.read_text().strip()
    except OSError:
        folder.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value)
        return value


# --- chats <-> what is saved --------------------------------------------------------

def _map_files(content: object, fn: Callable[[str], str | None]) -> object:
    """The same message content with every file replaced by {"path": fn(path)} (None drops
    it). The plain shape matters: Gradio moves anything shaped like its FileData (with its
    "meta" marker) in a component's value into its upload cache, which it empties daily."""
    parts = _as_list(content)
    items = [content] if parts is None else parts
    out: list[object] = []
    for item in items:
        path = None if isinstance(item, str) else file_path(item)
        if path is None:
            out.append(item)
            continue
        new = fn(path)
        if new is not None:
            out.append({"path": new})
    return out if parts is not None else (out[0] if out else "")


def _plain(message: Mapping[str, object]) -> Message:
    """A Chatbot message as JSON: role, content, and the metadata that marks display-only
    lines (metadata that is not a table means nothing, as in normalize_history)."""
    keep: Message = {"role": message.get("role"), "content": message.get("content")}
    metadata = _as_table(message.get("metadata"))
    if metadata:
        keep["metadata"] = {k: v for k, v in metadata.items() if k in ("title", "status")}
    return keep


def _with_files(message: Mapping[str, object], fn: Callable[[str], str | None]) -> Message:
    return {**_plain(message), "content": _map_files(message.get("content"), fn)}


def to_saved(history: Sequence[Mapping[str, object]], store: MediaStore) -> list[Message]:
    """Chatbot messages with their files copied into the store (uploads vanish after a day)."""
    normalize_history(history)  # refuses what is not a chat
    return [_with_files(m, store.put) for m in history]


def from_saved(messages: object, store: MediaStore) -> tuple[list[Message], list[str]]:
    """Saved messages back to Chatbot messages. A file the store does not hold (evicted, or a
    path the browser made up) is left out and named in the returned list."""
    saved = _as_list(messages)
    if saved is None:
        raise UserInputError("This saved chat is damaged: its messages are not a list.")
    missing: list[str] = []

    def check(path: str) -> str | None:
        if store.holds(path):
            store.touch(path)
            return path
        missing.append(os.path.basename(path))
        return None

    out: list[Message] = []
    for item in saved:
        m = _as_table(item)
        if m is None or m.get("role") not in ("user", "assistant"):
            raise UserInputError("This saved chat is damaged: a message has no role.")
        out.append(_with_files(m, check))
    normalize_history(out)
    return out, missing


def title_of(history: Sequence[object]) -> str:
    turns = normalize_history(history)
    first = next((t for t in turns if t.role == "user"), None)
    if first is None:
        return "New chat"
    text = " ".join(first.text.split()) or ", ".join(os.path.basename(f) for f in first.files) or "Chat"
    return text[:60] + ("…" if len(text) > 60 else "")


# --- export / import -----------------------------------------------------------------

def to_markdown(title: str, history: Sequence[Mapping[str, object]]) -> str:
    """For reading: each turn under its speaker, files as links to their names, stats as notes."""
    lines = [f"# {title}", ""]
    for m in history:
        meta = _as_table(m.get("metadata")) or {}
        if meta.get("title"):
            lines += [f"> {meta['title']}", ""]
            continue
        texts, files = content_parts(m.get("content"))
        lines.append("**You:**" if m.get("role") == "user" else "**Phi-4:**")
        lines += [f"📎 `{os.path.basename(f)}`" for f in files]
        lines += ["", "\n".join(texts), ""]
    return "\n".join(lines).rstrip() + "\n"


def export_zip(title: str, history: Sequence[Mapping[str, object]], out: Path) -> Path:
    """chat.json (format, title, messages with media/<name> paths) plus each file once."""
    names: dict[str, str] = {}

    def rename(path: str) -> str:
        if path not in names:
            names[path] = f"media/{len(names):03d}-{re.sub(r'[^A-Za-z0-9._-]', '_', os.path.basename(path))[-100:]}"
        return names[path]

    chat: ChatFile = {"format": FORMAT, "title": title, "exported": time.strftime("%Y-%m-%d"),
                      "messages": [_with_files(m, rename) for m in history]}
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("chat.json", json.dumps(chat, ensure_ascii=False, indent=1))
        for path, name in names.items():
            z.write(path, name)
    return out


def import_zip(path: str | os.PathLike[str], store: MediaStore, check_file: Callable[[str], None],
               max_bytes: int) -> tuple[str, list[Message]]:
    """A chat .zip back to (title, Chatbot messages with files in the store). Each file goes
    through `check_file(path)` (the upload checks: type by content, readable) first."""

    name = Path(path).name
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise UserInputError(f"{name}: this is not a chat exported from this app (not a zip file).") from None
    with z:
        infos = z.infolist()
        if len(infos) > MAX_ZIP_ENTRIES:
            raise UserInputError(f"{name}: the archive holds {len(infos)} files; a chat has at most {MAX_ZIP_ENTRIES}.")
        total = sum(i.file_size for i in infos)
        if total > max_bytes:
            raise UserInputError(f"{name}: the archive unpacks to {total / 1e6:.0f} MB; the limit is "
                                 f"{max_bytes / 1e6:.0f} MB.")
        try:
            meta = z.getinfo("chat.json")
        except KeyError:
            raise UserInputError(f"{name}: there is no chat.json in it: not a chat exported from this app.") from None
        if meta.file_size > MAX_CHAT_JSON:
            raise UserInputError(f"{name}: its chat.json is too large.")
        try:
            data: object = json.loads(z.read(meta).decode("utf-8"))
        except (ValueError, UnicodeDecodeError, zipfile.BadZipFile):
            raise UserInputError(f"{name}: its chat.json is damaged.") from None
        chat = _as_table(data)
        saved = _as_list(chat.get("messages")) if chat is not None and chat.get("format") == FORMAT else None
        if chat is None or saved is None:
            raise UserInputError(f"{name}: its chat.json is not in this app's format ({FORMAT}).")
        members = {i.filename for i in infos if not i.is_dir()}
        with tempfile.TemporaryDirectory() as tmp:
            def restore(member: str) -> str:
                if member not in members or not member.startswith("media/") or "/" in member[6:] or ".." in member:
                    raise UserInputError(f"{name}: the chat refers to {member!r:.60}, which is not in the archive.")
                target = Path(tmp) / member[6:]
                with z.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                check_file(str(target))
                return store.put(target)

            messages = [_with_files(m, restore) for m in map(_as_table, saved) if m is not None]
    normalize_history(messages)
    title = str(chat.get("title") or title_of(messages))[:80]
    return title, messages
