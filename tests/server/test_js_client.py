"""The official JavaScript client (npm @gradio/client) against the running app."""

import json
import shutil
import subprocess

import pytest

from tests.helpers import ROOT

JS = ROOT / "tests" / "js"


def chat_with_blob(server, path, text="What is this?"):
    if shutil.which("node") is None or not (JS / "node_modules" / "@gradio" / "client").is_dir():
        pytest.fail("the JS client is not installed: run `npm ci --prefix tests/js` (the README's test command does)")
    r = subprocess.run(["node", str(JS / "chat_with_blob.mjs"), server.url, str(path), text], capture_output=True,
                       text=True, timeout=120, cwd=JS)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_an_image_sent_as_a_blob_is_answered(server):
    """The client names an uploaded Blob "blob": no extension, no type. The image is typed
    by its content and answered."""
    out = chat_with_blob(server, ROOT / "assets" / "example_image.png")
    assert out["ok"], out
    request, _gen, _attn = server.engine.requests[-1]
    assert len(request.images) == 1 and request.modality == "vision"


def test_audio_sent_as_a_blob_is_answered(server):
    out = chat_with_blob(server, ROOT / "assets" / "example_question.wav", "Answer the question.")
    assert out["ok"], out
    request, _gen, _attn = server.engine.requests[-1]
    assert len(request.audios) == 1 and request.modality == "speech"


def test_text_sent_as_a_blob_gets_a_sentence(server, tmp_path):
    notes = tmp_path / "notes"
    notes.write_text("not a picture")
    out = chat_with_blob(server, notes)
    assert not out["ok"] and "this is not an image, audio, a video or a PDF the app can read" in out["error"], out
