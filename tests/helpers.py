import asyncio
import socket
import threading
import time
from pathlib import Path

from phi_demo.engine.worker import busy_workers

ROOT = Path(__file__).resolve().parents[1]


def run_async(coroutine, name: str = "run-async"):
    """asyncio.run in a thread of its own: Playwright's sync API, once the browser tests have
    run, leaves its event loop marked as running in pytest's thread for the whole session,
    and asyncio.run refuses to start there."""
    out = {}

    def work():
        try:
            out["value"] = asyncio.run(coroutine)
        except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
            out["error"] = e

    t = threading.Thread(target=work, name=name)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generate_threads():
    """Whatever is generating right now: the busy generation workers of every loaded model
    (empty when none is). Existing callers only ask whether it is empty."""
    return busy_workers()


def wait_until(cond, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def tone(seconds: float, amp: float = 0.3, sr: int = 16_000):
    """A voiced-sounding test signal: 220 Hz, its loudness swinging at 3 Hz like syllables."""
    import numpy as np

    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def silence(seconds: float, sr: int = 16_000):
    import numpy as np

    return np.zeros(int(seconds * sr), np.float32)


class FakeEngineFacts:
    """What a test's fake engine says of itself: the ChatEngine attributes, as a loaded
    full-size model on the CPU would have them."""

    is_tiny = False
    on_space = False
    device = "cpu"
    attn = "eager"
    quantize = "none"
    attn_changes = 0
    request_thread_only = False
    config_error = None
