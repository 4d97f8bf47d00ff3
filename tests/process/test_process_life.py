"""What can only be seen in a Python process of its own: which modules an import loads, how a
process ends, how its resident memory moves, and what a ZeroGPU Space's process pickles. Each
test starts one, so they run in the full suite, not the quick lane."""

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT


@pytest.mark.parametrize("imports,absent", [
    ("phi_demo.ui.layout, phi_demo.chat.turn, phi_demo.media.kinds, phi_demo.settings, phi_demo.engine.remote, "
     "phi_demo.speech.live, phi_demo.speech.vad", ("torch", "transformers")),
    ("phi_demo.engine.local", ("gradio",)),
])
def test_what_loads_at_run_time(imports, absent):
    """The same rules at run time: importing the page, the request path, the transcription and
    the OpenAI-compatible backend loads no model; the engine loads no gradio."""
    code = f"import sys, {imports}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert not set(absent) & set(out.stdout.split())


CANCEL_STORM = r"""
import gc, threading
from phi_demo.chat.messages import Turn
from phi_demo.chat.request import build_request
from phi_demo.engine.local import Engine
from phi_demo.settings import AppSettings, GenerationSettings
from phi_demo_dev.soak import rss_mb
from tests.helpers import generate_threads, wait_until

engine = Engine(AppSettings(model="tiny-random"))
engine.load()
request = build_request([Turn("user", "Talk", ("assets/example_image.png",))])
gen = GenerationSettings(max_new_tokens=4000, min_new_tokens=4000)

def one():
    stream = engine.stream(request, gen, threading.Event())
    next(stream), next(stream)
    stream.close()

for _ in range(50):  # warm-up: allocator pools and caches settle
    one()
gc.collect()
before = rss_mb()
for _ in range(50):
    one()
assert wait_until(lambda: not generate_threads(), 5), "a generation thread is still alive"
gc.collect()
after_50 = rss_mb()
for _ in range(150):
    one()
gc.collect()
print(f"grown {after_50 - before:.1f} {rss_mb() - before:.1f}")
"""


def test_fifty_cancellations_in_a_row_leave_nothing_running():
    # A process of its own, so that nothing else the test session runs moves the figure.
    r = subprocess.run([sys.executable, "-c", CANCEL_STORM], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    after_50, after_200 = (float(x) for x in r.stdout.split("grown")[1].split())
    # Resident memory wobbles by about 20 MB here as the allocator returns pages; a leak of
    # 150 KB per cancellation would add 30 MB over 200.
    assert after_50 < 30, f"memory grew by {after_50:.0f} MB over 50 cancellations"
    assert after_200 < 30, f"memory grew by {after_200:.0f} MB over 200 cancellations"


def test_process_exits_cleanly_after_a_model_is_released(tiny_folder):
    """A worker thread ending while the model is freed and the process exits used to abort
    it (exit code 134, 'terminate called without an active exception')."""
    script = (
        "import threading\n"
        "from phi_demo.engine.local import Engine\n"
        "from phi_demo.settings import AppSettings, GenerationSettings\n"
        "from phi_demo.chat.messages import Turn\nfrom phi_demo.chat.request import build_request\n"
        "e = Engine(AppSettings(model='tiny-random'))\n"
        "list(e.stream(build_request([Turn('user', 'hi')], ''), GenerationSettings(max_new_tokens=4), threading.Event()))\n"
        "e.cache.release()\n"
        "print('released')\n")
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "released" in proc.stdout, (proc.returncode, proc.stderr[-2000:])


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
