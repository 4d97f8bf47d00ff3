"""MCP tools (`--mcp`), served at `/mcp` over streamable HTTP by the `mcp` SDK: a few clean
functions with typed parameters and docstrings. Files are http(s) URLs or data URLs and enter
the page's request path; a problem comes back as the page's sentence, as a tool error.

Gradio's own MCP server (`launch(mcp_server=True)`) fails to start with the installed mcp 2.x
("'Server' object has no attribute 'call_tool'"), and would list the page's raw /chat too."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from starlette.types import ASGIApp, Receive, Scope, Send

from phi_demo.api import speech
from phi_demo.api.routes import ApiContext
from phi_demo.chat.messages import Turn
from phi_demo.chat.request import build_request
from phi_demo.contract import collect
from phi_demo.errors import UserInputError
from phi_demo.settings import GenerationSettings
from phi_demo.speech.longaudio import SUMMARY_PROMPT

TOOL_NAMES = ("ask", "transcribe", "translate_speech", "summarize_audio", "describe_image", "read_pdf")


def _in_thread(work: Callable[[], str]) -> Any:
    """Run the model's work off the event loop (the page shares it); a sentence is a tool error."""
    async def run() -> str:
        try:
            return await anyio.to_thread.run_sync(work)
        except UserInputError as e:
            raise ToolError(str(e)) from None
    return run()


def build(ctx: ApiContext) -> MCPServer:
    """The tools, bound to the app's engine, limits and file folder."""
    server = MCPServer("phi-4-multimodal", instructions="Phi-4-multimodal: text, images, audio, PDFs.")

    def answer(text: str, urls: list[str]) -> str:
        files = tuple(ctx.files.put_url(u) for u in urls if u)
        request = build_request([Turn("user", text, files)], "", ctx.limits)
        gen = GenerationSettings(max_new_tokens=ctx.max_tokens)
        reply, _stats = collect(ctx.engine.stream(request, gen, threading.Event()))
        return reply.strip()

    def speech_text(url: str, task: str, language: str, to: str, response_format: str) -> str:
        call = speech.check(task, {"language": language, "to_language": to, "response_format": response_format})
        call.path = ctx.files.put_url(url)
        return speech.run(ctx.engine, call, ctx.segments, ctx.max_recording_seconds, threading.Event())[0]

    @server.tool()
    async def ask(question: str, files: list[str] | None = None) -> str:
        """Ask Phi-4-multimodal a question, optionally about files (images, audio, video, PDFs).

        Args:
            question: the question, in words.
            files: the files it is about, each an http(s) URL or a data URL (data:<type>;base64,...).
        """
        return await _in_thread(lambda: answer(question, list(files or [])))

    @server.tool()
    async def transcribe(audio: str, language: str = "auto", format: str = "text") -> str:  # noqa: A002 - the tool's parameter name
        """Transcribe speech (any length up to the upload limit) into text.

        Args:
            audio: the recording, an http(s) URL or a data URL.
            language: the spoken language (en, zh, de, fr, it, ja, es, pt) or auto.
            format: text, json, srt, vtt or verbose_json.
        """
        return await _in_thread(lambda: speech_text(audio, "transcribe", language, "en", format))

    @server.tool()
    async def translate_speech(audio: str, target_language: str = "en") -> str:
        """Translate speech into another language (en, zh, de, fr, it, ja, es, pt).

        Args:
            audio: the recording, an http(s) URL or a data URL.
            target_language: the language to translate into.
        """
        return await _in_thread(lambda: speech_text(audio, "translate", "auto", target_language, "text"))

    @server.tool()
    async def summarize_audio(audio: str) -> str:
        """Summarize a recording: what is said.

        Args:
            audio: the recording, an http(s) URL or a data URL.
        """
        return await _in_thread(lambda: answer(SUMMARY_PROMPT, [audio]))

    @server.tool()
    async def describe_image(image: str) -> str:
        """Describe an image in detail.

        Args:
            image: the image, an http(s) URL or a data URL.
        """
        return await _in_thread(lambda: answer("Describe this image in detail.", [image]))

    @server.tool()
    async def read_pdf(pdf: str, question: str = "Summarize this document.", pages: str = "") -> str:
        """Answer a question about a PDF, reading its pages as images and its text.

        Args:
            pdf: the PDF, an http(s) URL or a data URL.
            question: what to find out.
            pages: which pages, e.g. "2-3" (empty: the first pages, up to the image limit).
        """
        text = f"{question}\n\npages {pages}" if pages.strip() else question
        return await _in_thread(lambda: answer(text, [pdf]))

    return server


class McpApp:
    """The SDK's streamable-HTTP app, mounted inside the page's server. A mounted app's
    lifespan never runs, so its session manager is started on the server's loop at the first
    request and runs as long as the process does."""

    def __init__(self, server: MCPServer) -> None:
        self.app: ASGIApp = server.streamable_http_app(streamable_http_path="/", stateless_http=True)
        self.manager = server.session_manager
        self._ready: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def _keep_running(self, ready: asyncio.Event) -> None:
        async with self.manager.run():
            ready.set()
            await anyio.sleep_forever()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._ready is None:
            self._ready = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._keep_running(self._ready))
        await self._ready.wait()
        await self.app(scope, receive, send)
