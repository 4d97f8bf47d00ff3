"""`python app.py` as a user runs it, in its own process."""

import os
import subprocess
import sys
import time

import httpx
import pytest
from gradio_client import Client

from tests.helpers import ROOT, free_port

pytestmark = pytest.mark.server


def start(args, env_extra=None):
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    proc = subprocess.Popen([sys.executable, "app.py", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    end = time.time() + 120
    while time.time() < end:
        if proc.poll() is not None:
            raise AssertionError(f"app.py exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError("app.py did not start in 120 s")


def stop(proc):
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def test_tiny_model_app_answers_over_the_api():
    proc, url = start(["--model", "tiny-random", "--max-new-tokens", "16"])
    try:
        answer = Client(url, verbose=False).predict({"text": "Hello", "files": []}, [], api_name="/chat")
        assert isinstance(answer, str) and answer
    finally:
        stop(proc)


def test_default_model_offline_still_starts_and_says_why():
    proc, url = start([])
    try:
        with pytest.raises(Exception) as err:
            Client(url, verbose=False).predict({"text": "Hello", "files": []}, [], api_name="/chat")
        msg = str(err.value)
        assert "microsoft/Phi-4-multimodal-instruct" in msg and "--model" in msg and "tiny-random" in msg
        assert proc.poll() is None, "the app died"
    finally:
        out = stop(proc)
    assert "Traceback" not in out, out
    assert "microsoft/Phi-4-multimodal-instruct (revision" in out and "tiny-random" in out, out  # the terminal says why
