"""The app in front of a real OpenAI-compatible server (`transformers serve` on loopback,
serving a tiny random Phi-3 text model made here), not a mock."""

import os
import shutil
import subprocess
import sys
import time

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from tests.helpers import ROOT, free_port

pytestmark = pytest.mark.server

MAKE_PHI3 = r"""
import json, os, sys, torch
from transformers import Phi3Config, Phi3ForCausalLM
from phi_demo.engine.tiny import _train_tokenizer
out = sys.argv[1]
tok = _train_tokenizer()
torch.manual_seed(0)
end = tok.convert_tokens_to_ids("<|end|>")
cfg = Phi3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                 pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=[tok.eos_token_id, end])
model = Phi3ForCausalLM(cfg)
model.generation_config.eos_token_id = cfg.eos_token_id
model.save_pretrained(out)
tok.save_pretrained(out)
# `transformers serve` would look for a processor otherwise.
path = os.path.join(out, "tokenizer_config.json")
conf = json.load(open(path)); conf.pop("processor_class", None); json.dump(conf, open(path, "w"))
"""


@pytest.fixture(scope="module")
def model_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phi3") / "tiny-phi3"
    subprocess.run([sys.executable, "-c", MAKE_PHI3, str(folder)], cwd=ROOT, check=True, timeout=120)
    port = free_port()
    exe = shutil.which("transformers", path=os.path.dirname(sys.executable)) or "transformers"
    proc = subprocess.Popen([exe, "serve", str(folder), "--port", str(port), "--device", "cpu"],
                            cwd=str(folder.parent), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    end = time.time() + 120
    while time.time() < end:
        try:
            if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
        assert proc.poll() is None, proc.stdout.read()
    yield url, str(folder)
    proc.terminate()
    proc.wait(15)


@pytest.fixture(scope="module")
def app(model_server):
    from phi_demo.server import create, launch_kwargs
    from phi_demo.settings import AppSettings

    url, _ = model_server
    settings = AppSettings(backend="openai", base_url=url, host="127.0.0.1", port=free_port())
    engine, demo = create(settings)
    demo.launch(prevent_thread_lock=True, **launch_kwargs(settings))
    yield engine, Client(f"http://127.0.0.1:{settings.port}/", verbose=False)
    demo.close()


def test_the_backend_never_imports_torch(model_server):
    url, _ = model_server
    code = ("import sys; from phi_demo.server import create; from phi_demo.settings import AppSettings; "
            f"create(AppSettings(backend='openai', base_url='{url}'), load=False); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_answer_streams_from_the_server(app):
    engine, client = app
    job = client.submit({"text": "Tell me a story", "files": []}, [], api_name="/chat", max_new_tokens=60)
    outputs = list(job)
    assert len(outputs) >= 3 and all(b.startswith(a) for a, b in zip(outputs, outputs[1:]))
    status = engine.status()
    assert status.state == "ready" and status.facts.server.endswith("/v1")
    from phi_demo.settings import AppSettings
    from phi_demo.ui.sidebar import SidebarHandlers

    sidebar = SidebarHandlers(engine, AppSettings()).status_markdown()
    assert "OpenAI-compatible server" in sidebar and "decided by the server" in sidebar


def test_history_and_settings_map_to_the_request(app, monkeypatch):
    engine, client = app
    sent = []
    real = engine.payload
    monkeypatch.setattr(engine, "payload", lambda request, gen: sent.append(real(request, gen)) or sent[-1])
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    client.predict({"text": "And now?", "files": []}, history, api_name="/chat", max_new_tokens=7, do_sample=True,
                   temperature=0.5, seed=3, system_prompt="Be brief.")
    body = sent[-1]
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["messages"][0]["content"] == "Be brief." and body["messages"][-1]["content"] == "And now?"
    assert body["max_tokens"] == 7 and body["temperature"] == 0.5 and body["seed"] == 3 and body["stream"]


def test_media_go_as_standard_content_parts(app, monkeypatch):
    engine, client = app
    sent = []
    real = engine.payload
    monkeypatch.setattr(engine, "payload", lambda request, gen: sent.append(real(request, gen)) or sent[-1])
    files = [handle_file(str(ROOT / "assets" / "example_image.png")), handle_file(str(ROOT / "assets" / "example_question.wav"))]
    try:
        client.predict({"text": "What is this?", "files": files}, [], api_name="/chat", max_new_tokens=4)
    except AppError as e:  # a text-only model may refuse media: then the user reads why
        assert "model server answered HTTP" in str(e)
    parts = sent[-1]["messages"][-1]["content"]
    assert parts[0]["type"] == "image_url" and parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[1]["type"] == "input_audio" and parts[1]["input_audio"]["format"] == "wav"
    assert parts[2] == {"type": "text", "text": "What is this?"}


def test_stop_closes_the_request(app):
    import threading

    from phi_demo.chat.messages import Turn
    from phi_demo.chat.request import build_request
    from phi_demo.settings import GenerationSettings

    engine, _ = app
    cancel = threading.Event()
    stream = engine.stream(build_request([Turn("user", "Go on and on")]), GenerationSettings(max_new_tokens=2000), cancel)
    assert isinstance(next(stream), str)
    cancel.set()
    start = time.time()
    rest = list(stream)
    assert time.time() - start < 2 and rest[-1].cancelled


def test_server_down_gives_a_clear_message_and_the_app_stays_up():
    from phi_demo.server import create, launch_kwargs
    from phi_demo.settings import AppSettings

    settings = AppSettings(backend="openai", base_url=f"http://127.0.0.1:{free_port()}/v1", host="127.0.0.1",
                           port=free_port())
    engine, demo = create(settings)
    demo.launch(prevent_thread_lock=True, **launch_kwargs(settings))
    try:
        client = Client(f"http://127.0.0.1:{settings.port}/", verbose=False)
        for _ in range(2):
            with pytest.raises(Exception, match="cannot be reached"):
                client.predict({"text": "hi", "files": []}, [], api_name="/chat")
        assert engine.status().state == "error"
    finally:
        demo.close()


def test_server_error_is_reported(app):
    from phi_demo.settings import AppSettings

    engine, client = app
    engine.settings = AppSettings(**{**engine.settings.__dict__, "served_model": "no-such/model"})
    try:
        with pytest.raises(Exception, match="model server answered HTTP"):
            client.predict({"text": "hi", "files": []}, [], api_name="/chat", max_new_tokens=3)
    finally:
        engine.settings = AppSettings(**{**engine.settings.__dict__, "served_model": None})
    assert isinstance(client.predict({"text": "hi", "files": []}, [], api_name="/chat", max_new_tokens=3), str)


def test_live_transcription_goes_through_the_backend(app, monkeypatch):
    import numpy as np

    from phi_demo.speech.live import engine_recognizer

    engine, _ = app
    sent = []
    real = engine.payload
    monkeypatch.setattr(engine, "payload", lambda request, gen: sent.append(real(request, gen)) or sent[-1])
    recognize = engine_recognizer(engine, "de", "transcribe", max_new_tokens=4)
    try:
        text = recognize((0.2 * np.sin(np.arange(16000) / 5)).astype(np.float32))
        assert isinstance(text, str)
    except RuntimeError as e:  # a text-only server may refuse audio; the page then shows this
        assert "model server answered HTTP" in str(e)
    (part_audio, part_text) = sent[-1]["messages"][0]["content"]
    assert part_audio["type"] == "input_audio" and part_audio["input_audio"]["format"] == "wav"
    assert "German" in part_text["text"]
