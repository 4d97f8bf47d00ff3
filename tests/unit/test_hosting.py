"""Hugging Face Space (front matter, ZeroGPU, CPU-only) and the Deta Spacefile."""

import os
import subprocess
import sys

import yaml

from phi_demo.settings import DEFAULT_MODEL, DEFAULT_REVISION, AppSettings
from tests.helpers import ROOT


def front_matter() -> dict:
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def pinned(name: str) -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.lower().startswith(name + "=="):
            return line.split("==")[1].strip()
    raise AssertionError(f"{name} is not pinned in requirements.txt")


def test_space_front_matter_agrees_with_the_project():
    fm = front_matter()
    assert fm["sdk"] == "gradio" and fm["sdk_version"] == pinned("gradio")
    assert (ROOT / fm["app_file"]).is_file()
    assert str(fm["python_version"]) == "3.11"
    assert DEFAULT_MODEL in fm["models"]
    assert len(fm["short_description"]) <= 60
    preload = fm["preload_from_hub"][0].split()
    assert preload[0] == DEFAULT_MODEL and preload[-1] == DEFAULT_REVISION
    for key in ("title", "emoji", "suggested_hardware"):
        assert fm[key]


def test_the_space_preloads_what_the_app_reads_and_no_samples_or_remote_code():
    from huggingface_hub.utils import filter_repo_objects

    from tests.unit.test_download import NEEDED, REPO

    patterns = front_matter()["preload_from_hub"][0].split()[1].split(",")
    preloaded = set(filter_repo_objects(REPO, allow_patterns=patterns))
    assert NEEDED <= preloaded, sorted(NEEDED - preloaded)
    # Only names can be matched here: a branch's older shards named like the new ones would
    # come too (the app itself fetches only the indexed ones).
    assert {f for f in preloaded - NEEDED if not f.startswith("model-0000")} == set()


def test_spacefile_is_a_valid_deta_manifest():
    spec = yaml.safe_load((ROOT / "Spacefile").read_text())
    assert spec["v"] == 0
    (micro,) = spec["micros"]
    assert micro["engine"] == "python3.9" and micro["primary"] is True and micro["src"] == "."
    assert micro["run"].split()[:2] == ["python", "app.py"]
    names = {e["name"] for e in micro["presets"]["env"]}
    assert "PHI_DEMO_MODEL" in names and names <= {"PHI_DEMO_" + n.upper() for n in AppSettings.model_fields}


def test_space_binds_all_interfaces_elsewhere_loopback():
    assert AppSettings.load([], {"SPACE_ID": "me/phi"}).host == "0.0.0.0"
    assert AppSettings.load([], {}).host == "127.0.0.1"
    assert AppSettings.load([], {"GRADIO_SERVER_NAME": "10.0.0.5"}).host is None  # Gradio reads it itself
    assert AppSettings.load(["--host", "0.0.0.0"], {}).host == "0.0.0.0"
    assert AppSettings.load([], {}).share is False


ZERO_GPU_CHECK = r"""
import pickle
import spaces  # as app.py does, before torch
from phi_demo.server import create
from phi_demo.settings import AppSettings
from phi_demo.engine import zerogpu
from phi_demo.engine.generation import GenerationStats
from phi_demo.chat.messages import Turn
from phi_demo.chat.request import build_request
from phi_demo.settings import GenerationSettings

settings = AppSettings.load(["--model", "tiny-random"])
engine, demo = create(settings)
assert settings.host == "0.0.0.0", settings.host
assert engine.status().state == "ready", engine.status()  # loaded at import, as ZeroGPU asks
assert engine.cache.current.model.device.type == "cuda"
handlers = {f.fn.__name__: f.fn for f in demo.fns.values() if getattr(f.fn, "__self__", None) is not None}
wrapped = handlers["api_chat"].__self__.engine
assert isinstance(wrapped, zerogpu.ZeroGpuEngine), type(wrapped)
assert handlers["sync_attention"].__self__.engine is wrapped  # the page's handlers share it
from phi_demo.contract import ChatEngine
assert isinstance(wrapped, ChatEngine)
assert hasattr(wrapped.gpu_generate, "zerogpu"), "not wrapped by spaces.GPU"
# The views that call the model outside a chat answer call it from the request's own thread:
owners = {type(f.fn.__self__).__name__: f.fn.__self__ for f in demo.fns.values()
          if getattr(f.fn, "__self__", None) is not None}
live = owners["LiveHandlers"].transcriber("en", "transcribe", "en")
assert live.inline, "the live view would recognise from a worker thread of its own"
assert owners["RecordingHandlers"].engine is wrapped  # the Audio file tab: a generator, in its request
assert owners["VoiceHandlers"].chat.engine is wrapped  # voice turns: the chat's own answer path
request = build_request([Turn("user", "hi", ("assets/example_image.png", "assets/example_question.wav"))])
gen = GenerationSettings(max_new_tokens=300)
pickle.loads(pickle.dumps((request, gen)))
pickle.loads(pickle.dumps(GenerationStats(10, 5, 0.1, 0.5, 12.0)))
print("duration", zerogpu.duration(request, gen))
print("OK")
"""


def test_zerogpu_build_wraps_handlers_and_pickles():
    env = {**os.environ, "SPACES_ZERO_GPU": "true", "SPACES_ZERO_DEVICE_API_URL": "http://127.0.0.1:9",
           "SPACE_ID": "me/phi-demo"}
    env.pop("GRADIO_SERVER_NAME", None)
    r = subprocess.run([sys.executable, "-c", ZERO_GPU_CHECK], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]
    seconds = int(r.stdout.split("duration")[1].split()[0])
    assert 15 + 300 / 20 <= seconds <= 240


def test_zerogpu_is_off_without_the_variable(monkeypatch):
    from phi_demo.engine import zerogpu

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    sentinel = object()
    assert not zerogpu.enabled() and zerogpu.wrap(sentinel) is sentinel


def test_cpu_only_space_says_the_full_model_is_too_slow(monkeypatch):
    from phi_demo.engine.local import Engine
    from phi_demo.ui.sidebar import SidebarHandlers

    monkeypatch.setenv("SPACE_ID", "me/phi-demo")
    settings = AppSettings(offline=True)
    banner = SidebarHandlers(Engine(settings), settings).banner_markdown()
    assert "no GPU" in banner and "PHI_DEMO_MODEL=tiny-random" in banner and "int4 weights" in banner
