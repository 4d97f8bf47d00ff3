"""Saved chats: the media store, what is saved and restored, Markdown and .zip export, and
import's checks (an archive is an upload like any other)."""

import json
import os
import zipfile

import pytest

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
from phi_demo.errors import UserInputError
from phi_demo.media.audio import load_audio
from phi_demo.media.image import load_image
from phi_demo.media.kinds import kind_of
from phi_demo.settings import parse_size
from tests.helpers import ROOT

IMAGE = str(ROOT / "assets" / "example_image.png")
AUDIO = str(ROOT / "assets" / "example_question.wav")


def filedata(path):  # the shape the page sends back: Gradio's FileData with its marker
    return {"type": "file", "file": {"path": path, "orig_name": os.path.basename(path),
                                     "meta": {"_type": "gradio.FileData"}}}


def chat():
    return [
        {"role": "user", "content": [filedata(IMAGE), {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A house, $x^2$."}]},
        {"role": "assistant", "content": "Prompt: 9 tokens", "metadata": {"title": "📊 9 tokens", "status": "done",
                                                                          "id": "x"}},
        {"role": "user", "content": [{"path": AUDIO}, "And this?"]},
        {"role": "assistant", "content": "A question."},
    ]


def check(path):
    kind = kind_of(path)
    load_image(path) if kind == "image" else load_audio(path)


@pytest.fixture
def store(tmp_path):
    return MediaStore(tmp_path / "media", 50 << 20)


def test_saved_chats_keep_their_media_in_the_store_in_a_plain_shape(store):
    saved = to_saved(chat(), store)
    paths = [item["path"] for m in saved for item in (m["content"] if isinstance(m["content"], list) else [])
             if isinstance(item, dict) and "path" in item]
    assert len(paths) == 2 and all(store.holds(p) for p in paths)
    assert all(set(item) == {"path"} for m in saved for item in m["content"] if isinstance(item, dict) and "path" in item)
    assert saved[2]["metadata"] == {"title": "📊 9 tokens", "status": "done"}
    assert json.loads(json.dumps(saved)) == saved  # what the browser stores
    restored, missing = from_saved(saved, store)
    assert missing == [] and restored == saved


def test_the_same_file_is_stored_once(store):
    assert store.put(IMAGE) == store.put(IMAGE) and len(os.listdir(store.folder)) == 1


def test_saving_after_every_answer_hashes_each_file_once(store, tmp_path):
    for _ in range(3):
        to_saved(chat(), store)
    assert store.hashes == 2  # the image and the clip, the first time only
    changed = tmp_path / "changed.png"
    changed.write_bytes(open(IMAGE, "rb").read())
    first = store.put(changed)
    os.utime(changed, ns=(1, 1))  # touched: read again, same content, same stored copy
    assert store.put(changed) == first and store.hashes == 4
    os.unlink(first)  # evicted: copied in again
    assert store.put(changed) == first and os.path.exists(first)


def test_the_least_recently_used_media_leave_first(tmp_path):
    store = MediaStore(tmp_path / "m", budget_bytes=400_000)
    files = []
    for i in range(4):
        p = tmp_path / f"f{i}.bin"
        p.write_bytes(bytes([i]) * 90_000)
        files.append(store.put(p))
        os.utime(files[-1], (1000 + i, 1000 + i))
    store.touch(files[1])  # opened again: recently used
    p = tmp_path / "f4.bin"
    p.write_bytes(b"\x04" * 90_000)
    store.put(p)
    left = {os.path.join(store.folder, n) for n in os.listdir(store.folder)}
    assert files[1] in left and files[0] not in left and files[2] in left and store.size() <= 400_000


def test_a_chat_whose_files_are_gone_opens_and_names_them(store):
    saved = to_saved(chat(), store)
    gone = saved[0]["content"][0]["path"]
    os.unlink(gone)
    restored, missing = from_saved(saved, store)
    assert missing == [os.path.basename(gone)]
    assert restored[0]["content"] == [{"type": "text", "text": "What is this?"}]  # the text stays


def test_a_path_the_browser_made_up_is_not_opened(store):
    saved = [{"role": "user", "content": [{"path": "/etc/passwd"}, "hi"]}]
    restored, missing = from_saved(saved, store)
    assert missing == ["passwd"] and restored == [{"role": "user", "content": ["hi"]}]
    with pytest.raises(UserInputError, match="damaged"):
        from_saved([{"role": "hacker", "content": "x"}], store)
    with pytest.raises(UserInputError, match="damaged"):
        from_saved("not a list", store)


def test_metadata_that_is_not_a_table_means_nothing(store):
    """As in normalize_history: the browser's state is not trusted, and metadata of another
    shape once made opening or exporting the chat fail with an error no one could read."""
    messages = [{"role": "user", "content": "Hi", "metadata": "stats"},
                {"role": "assistant", "content": "Hello.", "metadata": ["title"]}]
    history, missing = from_saved(messages, store)
    assert history == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    assert missing == []
    assert to_markdown("T", messages) == "# T\n\n**You:**\n\nHi\n\n**Phi-4:**\n\nHello.\n"


def test_titles_and_markdown():
    assert title_of(chat()) == "What is this?"
    assert title_of([]) == "New chat"
    md = to_markdown("My chat", chat())
    assert md.startswith("# My chat\n") and "**You:**\n📎 `example_image.png`\n\nWhat is this?" in md
    assert "**Phi-4:**\n\nA house, $x^2$." in md and "> 📊 9 tokens" in md


def test_export_then_import_gives_the_same_chat(store, tmp_path):
    original = from_saved(to_saved(chat(), store), store)[0]
    archive = export_zip("My chat", original, tmp_path / "chat.zip")
    title, restored = import_zip(archive, store, check, 50 << 20)
    assert title == "My chat" and restored == original  # the same files come back to the same store paths
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == ["chat.json", "media/000-" + os.path.basename(original[0]["content"][0]["path"]),
                                        "media/001-" + os.path.basename(original[3]["content"][0]["path"])]


def _zip(tmp_path, name, chat_json=None, files=()):
    p = tmp_path / name
    with zipfile.ZipFile(p, "w") as z:
        if chat_json is not None:
            z.writestr("chat.json", chat_json if isinstance(chat_json, str) else json.dumps(chat_json))
        for member, data in files:
            z.writestr(member, data)
    return p


def _doc(*messages):
    return {"format": "phi-demo-chat/1", "title": "t", "messages": list(messages)}


@pytest.mark.parametrize("make, expected", [
    (lambda d: d / "x.zip", "not a chat exported from this app (not a zip file)"),
    (lambda d: _zip(d, "a.zip"), "there is no chat.json in it"),
    (lambda d: _zip(d, "b.zip", "{not json"), "its chat.json is damaged"),
    (lambda d: _zip(d, "c.zip", {"format": "other"}), "not in this app's format"),
    (lambda d: _zip(d, "d.zip", _doc({"role": "user", "content": [{"path": "media/../../etc/passwd"}]})),
     "which is not in the archive"),
    (lambda d: _zip(d, "e.zip", _doc({"role": "user", "content": [{"path": "/etc/passwd"}]})),
     "which is not in the archive"),
    (lambda d: _zip(d, "f.zip", _doc({"role": "user", "content": [{"path": "media/x.png"}]}),
                    [("media/x.png", b"this is not a picture")]), "x.png: this is not an image"),
    (lambda d: _zip(d, "g.zip", _doc(), [(f"media/{i}", b"") for i in range(201)]), "a chat has at most 200"),
    (lambda d: _zip(d, "h.zip", _doc({"role": "robot", "content": "x"})), "unknown role"),
])
def test_import_refuses_what_is_not_a_chat_of_this_app(store, tmp_path, make, expected):
    path = make(tmp_path)
    if path.name == "x.zip":
        path.write_text("plain text")
    with pytest.raises(UserInputError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        import_zip(path, store, check, 50 << 20)
    assert not os.path.exists(store.folder) or all(store.holds(str(p)) for p in store.folder.iterdir())


def test_an_archive_that_unpacks_too_large_is_refused(store, tmp_path):
    big = _zip(tmp_path, "big.zip", _doc(), [("media/zeros", b"\0" * 2_000_000)])
    with pytest.raises(UserInputError, match="unpacks to 2 MB; the limit is 1 MB"):
        import_zip(big, store, check, 1_000_000)


def test_the_browser_state_key_is_kept_across_restarts(tmp_path, monkeypatch):
    monkeypatch.delenv("PHI_DEMO_STATE_SECRET", raising=False)
    first = state_secret(tmp_path)
    assert state_secret(tmp_path) == first and len(first) >= 24
    assert (os.stat(tmp_path / "browser-state.secret").st_mode & 0o777) == 0o600
    monkeypatch.setenv("PHI_DEMO_STATE_SECRET", "from-env")
    assert state_secret(tmp_path) == "from-env"


def test_sizes():
    assert parse_size("2gb") == 2 << 30 and parse_size("500MB") == 500 << 20 and parse_size("123") == 123
    with pytest.raises(ValueError):
        parse_size("lots")
