import dataclasses
import os
import threading
from pathlib import Path

import pytest

from tests.helpers import ROOT, free_port


def pytest_configure(config):
    # One tiny model for the whole run, built on first use, outside the user's cache.
    cache = Path(os.environ.get("PHI_DEMO_TEST_CACHE", ROOT / "test-output" / "cache"))
    os.environ["PHI_DEMO_CACHE"] = str(cache)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


SLOW_ROOMS = ("server", "browser", "api", "process")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The quick lane (`-m "not slow"`) is every test that runs in the test's own process: no
    server, no browser, no process of its own. Whatever runs in tests/server, tests/browser,
    tests/api and tests/process is slow."""
    for item in items:
        if item.path.parent.name in SLOW_ROOMS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_folder():
    from phi_demo.engine.sources import tiny_folder

    return tiny_folder()


@pytest.fixture(scope="session")
def engine(tiny_folder):
    from phi_demo.engine.local import Engine
    from phi_demo.settings import AppSettings

    e = Engine(AppSettings(model="tiny-random"))
    e.load()
    return e


@pytest.fixture
def assets():
    return ROOT / "assets"


class RecordingEngine:
    """The real engine, with each request (and finished answer) noted so tests can see what the
    model was given and what it said.
    `force_length` makes the tiny model produce exactly max_new_tokens (no early EOS).

    A session's servers share one recorder, but each test gets its own record: before every
    test, `fresh()` waits until no earlier test's answer is streaming, then empties the lists
    and turns `force_length` off, so `requests[-1]` is this test's and no setting leaks on."""

    made: list["RecordingEngine"] = []

    def __init__(self, engine):
        self._engine = engine
        self.requests = []
        self.answers = []  # each finished answer's text, as the engine streamed it
        self.stats = []  # and its GenerationStats
        self.force_length = False
        self.pieces = 0  # everything any stream has yielded: a count that stands still once all are closed
        self._streaming = 0
        self._changed = threading.Condition()
        RecordingEngine.made.append(self)

    def _idle(self) -> bool:
        return self._streaming == 0

    def wait_idle(self, timeout: float) -> bool:
        """True once no stream is open (each one closed or finished), without polling."""
        with self._changed:
            return self._changed.wait_for(self._idle, timeout)

    def fresh(self, timeout: float = 120) -> None:
        # One hold of the lock for the wait and the clearing: no stream starts in between.
        with self._changed:
            if not self._changed.wait_for(self._idle, timeout):
                raise AssertionError(f"an earlier test's answer still streams after {timeout:.0f} s")
            self.requests.clear()
            self.answers.clear()
            self.stats.clear()
            self.force_length = False

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def stream(self, request, gen, cancel):
        with self._changed:
            self._streaming += 1
        try:
            yield from self._recorded(request, gen, cancel)
        finally:
            with self._changed:
                self._streaming -= 1
                self._changed.notify_all()

    def _recorded(self, request, gen, cancel):
        self.requests.append((request, gen, self._engine.attn))
        if self.force_length and not request.urgent:  # the chat answers, not the live view's windows
            gen = dataclasses.replace(gen, min_new_tokens=gen.max_new_tokens)
        inner = self._engine.stream(request, gen, cancel)
        text = []
        try:
            for piece in inner:
                if isinstance(piece, str):
                    text.append(piece)
                elif hasattr(piece, "new_tokens"):  # the stats: the answer is complete
                    self.answers.append("".join(text))
                    self.stats.append(piece)
                self.pieces += 1
                yield piece
        finally:
            inner.close()  # Stop closes this generator: the engine must hear it at once


@pytest.fixture(autouse=True)
def _a_record_of_its_own():
    for recorder in RecordingEngine.made:
        recorder.fresh()


@pytest.fixture(scope="session")
def server(engine, tmp_path_factory):
    from gradio_client import Client

    from phi_demo.server import create, launch_kwargs
    from phi_demo.settings import AppSettings
    from tests.badinputs import LIMITS

    feedback = tmp_path_factory.mktemp("feedback") / "feedback.jsonl"
    settings = AppSettings(model="tiny-random", host="127.0.0.1", port=free_port(), feedback_file=str(feedback),
                           **LIMITS)
    recorder = RecordingEngine(engine)
    _, demo = create(settings, engine=recorder)
    demo.launch(prevent_thread_lock=True, **launch_kwargs(settings))
    url = f"http://127.0.0.1:{settings.port}/"
    client = Client(url, verbose=False)
    yield dataclasses.make_dataclass("Server", ["url", "client", "engine", "demo", "settings"])(
        url, client, recorder, demo, settings)
    demo.close()
