"""--mcp: the tools through the mcp SDK over streamable HTTP, against a real server."""

import base64
import functools
import http.server
import threading

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from phi_demo.api.mcp import TOOL_NAMES
from tests.helpers import ROOT, free_port, run_async

ASSETS = ROOT / "assets"
FILES = {"image": ("example_image.png", "image/png"), "audio": ("example_question.wav", "audio/wav"),
         "pdf": ("example_report.pdf", "application/pdf")}


@pytest.fixture(scope="module")
def mcp_server(engine):
    from phi_demo.server import create, launch_kwargs, mount_api
    from phi_demo.settings import AppSettings

    settings = AppSettings(model="tiny-random", host="127.0.0.1", port=free_port(), feedback_file="off",
                           mcp=True, max_new_tokens=8)
    _, demo = create(settings, engine=engine)
    demo.phi_api.files.allow_private_urls = True  # this test's file server is on loopback
    demo.launch(prevent_thread_lock=True, **launch_kwargs(settings))
    mount_api(demo, demo.phi_api, mcp=True)
    files = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(ASSETS)))
    threading.Thread(target=files.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{settings.port}/mcp/", f"http://127.0.0.1:{files.server_port}"
    files.shutdown()
    demo.close()


def _session(url, work):
    async def run():
        async with streamable_http_client(url) as (read, write, *_), ClientSession(read, write) as session:
            await session.initialize()
            return await work(session)
    return run_async(run())


def _data_url(kind):
    name, mime = FILES[kind]
    return f"data:{mime};base64," + base64.b64encode((ASSETS / name).read_bytes()).decode()


def test_only_the_chosen_tools_are_listed_with_typed_parameters(mcp_server):
    listed = _session(mcp_server[0], lambda s: s.list_tools())
    tools = {t.name: t for t in listed.tools}
    assert sorted(tools) == sorted(TOOL_NAMES)  # the raw /chat is not among them
    assert tools["read_pdf"].input_schema["properties"]["pages"]["type"] == "string"
    assert "Transcribe speech" in tools["transcribe"].description
    assert set(tools["ask"].input_schema["properties"]) == {"question", "files"}


def test_each_tool_takes_files_as_urls_and_data_urls(mcp_server):
    url, files = mcp_server
    calls = [("ask", {"question": "What is this?", "files": [f"{files}/example_image.png"]}),
             ("ask", {"question": "What is this?", "files": [_data_url("image")]}),
             ("transcribe", {"audio": f"{files}/example_question.wav", "format": "srt"}),
             ("transcribe", {"audio": _data_url("audio")}),
             ("translate_speech", {"audio": _data_url("audio"), "target_language": "fr"}),
             ("summarize_audio", {"audio": f"{files}/example_question.wav"}),
             ("describe_image", {"image": f"{files}/example_image.png"}),
             ("read_pdf", {"pdf": _data_url("pdf"), "question": "What is the title?", "pages": "1"}),
             ("read_pdf", {"pdf": f"{files}/example_report.pdf"})]

    async def work(session):
        return [await session.call_tool(name, args) for name, args in calls]

    for (name, _), result in zip(calls, _session(url, work)):
        assert not result.is_error, (name, result.content)


def test_a_bad_file_is_a_tool_error_with_the_sentence(mcp_server):
    bad = "data:image/png;base64," + base64.b64encode(b"not an image").decode()
    result = _session(mcp_server[0], lambda s: s.call_tool("describe_image", {"image": bad}))
    assert result.is_error
    assert "this is not an image, audio, a video or a PDF" in result.content[0].text
