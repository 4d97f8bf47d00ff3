"""Saved chats in the sidebar: new, open, rename, delete, export and import. Gradio only.

The list lives in the browser (gr.BrowserState, encrypted with a key the app keeps), so it
survives a reload and a server restart and is never shared between browsers; the files a
chat refers to live in the app's MediaStore."""

from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from phi_demo.chat.messages import normalize_history
from phi_demo.chat.store import (
    MediaStore,
    export_zip,
    from_saved,
    import_zip,
    state_secret,
    title_of,
    to_markdown,
    to_saved,
)
from phi_demo.errors import SettingError, UserInputError
from phi_demo.media.audio import load_audio
from phi_demo.media.image import load_image
from phi_demo.media.kinds import kind_of
from phi_demo.settings import AppSettings, parse_size
from phi_demo.ui.chat import History

EMPTY = {"chats": {}}
# The current chat when there is none yet (a new chat). Not None: gr.BrowserState does not
# store a false value, so the browser would reopen the chat before it after a reload.
NO_CHAT = "new"
MAX_SAVED = 200  # chats per browser; the oldest go first (localStorage holds ~5 MB)


def _chats(saved: Any) -> dict[str, Any]:
    chats = saved.get("chats") if isinstance(saved, dict) else None
    return chats if isinstance(chats, dict) else {}


def _titles(saved: Any) -> list[tuple[str, str]]:
    """The list's (title, id) pairs, the chat changed last first."""
    chats = _chats(saved)
    order = sorted(chats, key=lambda k: chats[k].get("updated", 0), reverse=True)
    return [(str(chats[k].get("title") or "Chat"), k) for k in order]


class ChatsHandlers:
    def __init__(self, settings: AppSettings):
        try:
            budget = parse_size(settings.chats_budget)
        except ValueError:
            raise SettingError(f"chats_budget = {settings.chats_budget!r}: must be a size such as 500mb or 2gb.") from None
        self.folder = settings.chats_folder
        self.store = MediaStore(self.folder / "media", budget)
        self.max_audio_seconds = settings.max_audio_seconds
        self.max_import_bytes = parse_size(settings.max_file_size) * 8 if settings.max_file_size else 400 << 20

    def secret(self) -> str:
        return state_secret(self.folder)

    # --- the list -----------------------------------------------------------------
    def listing(self, saved: Any, current: str | None = None) -> gr.Dropdown:
        return gr.Dropdown(choices=_titles(saved), value=current if current in _chats(saved) else None)

    def save(self, history, saved, current):
        """After each answer (and edit, undo, retry): the chat as it now is, media copied in."""
        if not history:
            return gr.skip(), gr.skip(), gr.skip()
        try:
            messages = to_saved(history, self.store)
        except (UserInputError, OSError) as e:
            gr.Warning(f"This chat could not be saved: {e}")
            return gr.skip(), gr.skip(), gr.skip()
        chats = dict(_chats(saved))
        known = current in chats
        current = current if known else uuid.uuid4().hex[:12]
        old = chats.get(current, {})
        chats[current] = {"title": old.get("title") if old.get("renamed") else title_of(history),
                          "renamed": bool(old.get("renamed")), "messages": messages, "updated": time.time()}
        for k in sorted(chats, key=lambda k: chats[k].get("updated", 0))[:-MAX_SAVED]:
            del chats[k]
        saved = {"chats": chats}
        if known:
            # The page already points at this chat, or has moved on (New chat pressed while this
            # step waited): saying which chat is current here could take the page back to it,
            # and its next answer would overwrite this chat. The list gets the new order only.
            return saved, gr.skip(), gr.update(choices=_titles(saved))
        return saved, current, self.listing(saved, current)

    def _history(self, chat_id: str, saved: Any) -> History:
        try:
            history, missing = from_saved(_chats(saved)[chat_id].get("messages"), self.store)
        except UserInputError as e:
            raise gr.Error(str(e), print_exception=False) from None
        if missing:
            note = (f"The app no longer holds {', '.join(missing)} (files are kept while there is room). "
                    "The rest of the chat is as it was.")
            gr.Warning(note)
            history = [{"role": "assistant", "content": note, "metadata": {"title": "⚠️ Files missing"}}] + history
        return history

    def open(self, chat_id: Any, saved: Any) -> tuple[Any, Any, Any]:
        """A chat picked in the list: (chat, current, message box emptied)."""
        if not chat_id or chat_id not in _chats(saved):
            return gr.skip(), gr.skip(), gr.skip()
        return self._history(chat_id, saved), chat_id, gr.update(value=None)

    def reopen(self, saved: Any, current: Any) -> tuple[Any, Any, Any]:
        """The page (re)loads: the chat this browser was in is open again and selected in
        the list, as it was left; none (or one deleted since) starts a new chat."""
        if not isinstance(current, str) or current not in _chats(saved):
            return gr.skip(), NO_CHAT, self.listing(saved)
        return self._history(current, saved), current, self.listing(saved, current)

    def new(self) -> tuple[History, str, dict[str, Any], dict[str, Any]]:
        """(empty chat, no current chat, nothing picked in the list, message box emptied)."""
        return [], NO_CHAT, gr.update(value=None), gr.update(value=None)

    def delete(self, current, saved):
        chats = dict(_chats(saved))
        if current not in chats:
            raise gr.Error("Open a saved chat to delete it.", print_exception=False)
        del chats[current]
        saved = {"chats": chats}
        return saved, NO_CHAT, self.listing(saved), []

    def rename(self, current, title, saved):
        chats = dict(_chats(saved))
        title = " ".join(str(title or "").split())[:80]
        if current not in chats:
            raise gr.Error("Send a message first: only a saved chat can be renamed.", print_exception=False)
        if not title:
            raise gr.Error("A chat's name cannot be empty.", print_exception=False)
        chats[current] = {**chats[current], "title": title, "renamed": True}
        saved = {"chats": chats}
        return saved, self.listing(saved, current), gr.update(value="")

    # --- export / import ----------------------------------------------------------
    def export(self, history, current, saved):
        if not history:
            raise gr.Error("There is no chat to export yet.", print_exception=False)
        normalize_history(history)
        title = _chats(saved).get(current, {}).get("title") or title_of(history)
        folder = Path(tempfile.mkdtemp(prefix="phi-demo-export-"))
        stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in title)[:40].strip("-") or "chat"
        md = folder / f"{stem}.md"
        md.write_text(to_markdown(title, history), encoding="utf-8")
        archive = export_zip(title, history, folder / f"{stem}.zip")
        return gr.update(value=str(md), visible=True), gr.update(value=str(archive), visible=True)

    def import_(self, file, saved):
        if not file:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        path = file if isinstance(file, str) else getattr(file, "name", None) or file.get("path")

        def check(p: str) -> None:  # the checks an upload gets: type by content, then decodable
            kind = kind_of(p)
            if kind == "image":
                load_image(p)
            elif kind == "audio":
                load_audio(p, self.max_audio_seconds)

        try:
            title, history = import_zip(path, self.store, check, self.max_import_bytes)
        except UserInputError as e:
            raise gr.Error(str(e), title="Cannot import", print_exception=False) from None
        chats = dict(_chats(saved))
        chat_id = uuid.uuid4().hex[:12]
        chats[chat_id] = {"title": title, "renamed": True, "messages": history, "updated": time.time()}
        saved = {"chats": chats}
        gr.Info(f"Imported “{title}”.")
        return history, saved, chat_id, self.listing(saved, chat_id)


@dataclass
class ChatsPanel:
    """The sidebar's Chats section, for the page's wiring."""

    chat_list: gr.Dropdown
    new: gr.Button
    delete: gr.Button
    rename: gr.Textbox
    export: gr.Button
    importer: gr.UploadButton
    md_file: gr.File
    zip_file: gr.File
    saved: gr.BrowserState  # every chat of this browser, kept in its localStorage
    current: gr.BrowserState  # the chat shown: a reload opens it again


def build_chats_panel(h: ChatsHandlers) -> ChatsPanel:
    """The sidebar's Chats section; call inside the gr.Sidebar."""
    gr.Markdown("### Chats")
    chat_list = gr.Dropdown([], value=None, label="Saved chats (in this browser)", elem_id="chat-list",
                            allow_custom_value=False)
    with gr.Row():
        new = gr.Button("➕ New chat", size="sm", elem_id="new-chat")
        delete = gr.Button("🗑️ Delete", size="sm", elem_id="delete-chat")
    rename = gr.Textbox(label="Rename this chat", placeholder="New name, then Enter", elem_id="rename-chat",
                        max_lines=1)
    with gr.Row():
        export = gr.Button("⬇️ Export", size="sm", elem_id="export-chat")
        importer = gr.UploadButton("⬆️ Import .zip", file_types=[".zip"], size="sm", elem_id="import-chat")
    md_file = gr.File(label="Markdown (for reading)", visible=False, interactive=False, elem_id="export-md")
    zip_file = gr.File(label="Archive (import restores it)", visible=False, interactive=False, elem_id="export-zip")
    saved = gr.BrowserState(EMPTY, storage_key="phi-demo-chats", secret=h.secret())
    current = gr.BrowserState(NO_CHAT, storage_key="phi-demo-current-chat", secret=h.secret())
    return ChatsPanel(chat_list, new, delete, rename, export, importer, md_file, zip_file, saved, current)
