"""One real server (the page and /v1 on one port, the tiny model) for each API test module."""

import dataclasses

import pytest

from tests.conftest import RecordingEngine
from tests.helpers import free_port

KEY = "test-server-key"


@pytest.fixture(scope="module")
def api_server(engine):
    from openai import OpenAI

    from phi_demo.server import api_context, create, launch_kwargs, mount_api
    from phi_demo.settings import AppSettings

    settings = AppSettings(model="tiny-random", host="127.0.0.1", port=free_port(), feedback_file="off",
                           server_api_key=KEY, max_new_tokens=24, max_images=2, max_file_size="2mb")
    recorder = RecordingEngine(engine)
    _, demo = create(settings, engine=recorder)
    demo.launch(prevent_thread_lock=True, **launch_kwargs(settings))
    ctx = api_context(recorder, settings, demo.phi_api.segments.__self__)
    mount_api(demo, ctx)
    base = f"http://127.0.0.1:{settings.port}"
    client = OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0)
    yield dataclasses.make_dataclass("ApiServer", ["base", "client", "engine", "demo", "ctx"])(
        base, client, recorder, demo, ctx)
    demo.close()
