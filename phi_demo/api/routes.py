"""The HTTP side of the API: `/v1/models`, `/v1/chat/completions`, `/v1/audio/*`, the key,
and OpenAI's error JSON. Work runs in threads (the event loop stays free) and waits for the
model in arrival order with the page's answers, inside the engine."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from phi_demo.api import completions, speech
from phi_demo.api.errors import ApiError
from phi_demo.api.files import ClientFiles, TooLarge
from phi_demo.chat.request import Limits
from phi_demo.contract import ChatEngine
from phi_demo.errors import UserInputError

log = logging.getLogger("phi_demo.api")


@dataclass
class ApiContext:
    engine: ChatEngine
    files: ClientFiles
    limits: Limits
    model: str
    max_tokens: int
    max_recording_seconds: float
    segments: speech.Segmenter
    key: str | None = None


def _error_response(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers())


def _as_api_error(e: Exception) -> ApiError:
    if isinstance(e, ApiError):
        return e
    if isinstance(e, TooLarge):
        return ApiError(413, str(e))
    if isinstance(e, UserInputError):
        return ApiError(400, str(e))
    log.exception("API request failed")
    return ApiError(503, f"The model could not answer: {type(e).__name__}. Try again; the server log has details.",
                    code="engine_error")


def _check_key(ctx: ApiContext, request: Request) -> None:
    if ctx.key is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    # Compared in constant time: the time taken says nothing about how much of the key matched.
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), ctx.key.encode()):
        raise ApiError(401, "This server needs an API key: send it as 'Authorization: Bearer <key>'.",
                       code="invalid_api_key")


async def _body(request: Request, limit: int) -> object:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"The request is {int(declared) / 1e6:.1f} MB; the limit is {limit / 1e6:.0f} MB.")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise ApiError(413, f"The request is larger than the {limit / 1e6:.0f} MB limit.")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "The request body is not valid JSON.") from None


async def _watch(request: Request, cancel: threading.Event) -> None:
    """A client that goes away sets `cancel`: the model stops within a token (or the request
    leaves the queue) and the next waiter is served."""
    while not cancel.is_set():
        if await request.is_disconnected():
            cancel.set()
            return
        await asyncio.sleep(0.05)


async def _streamed(chunks: Iterator[dict[str, Any] | completions.LeftOut], request: Request,
                    cancel: threading.Event) -> Response:
    """The answer as server-sent events. The response starts once the engine has fitted the
    prompt: its headers then say what was left out, and a question that cannot be answered
    at all (too long, unreadable media) still gets its own status and error JSON."""
    watcher = asyncio.create_task(_watch(request, cancel))
    items = _pumped(chunks, cancel)
    try:
        head = await anext(items)
    except BaseException:
        cancel.set()
        watcher.cancel()
        await items.aclose()
        raise
    headers = {"Cache-Control": "no-cache", **(head.headers() if isinstance(head, completions.LeftOut) else {})}
    return StreamingResponse(_sse(items, cancel, watcher), media_type="text/event-stream", headers=headers)


async def _sse(items: AsyncIterator[dict[str, Any] | completions.LeftOut], cancel: threading.Event,
               watcher: asyncio.Task[None]) -> AsyncIterator[str]:
    """Server-sent events, then [DONE]."""
    try:
        async for chunk in items:
            yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"
    except Exception as e:  # noqa: BLE001 - after the first byte the status is sent: the error goes in the stream
        yield f"data: {json.dumps(_as_api_error(e).body(), ensure_ascii=False)}\n\n"
    finally:
        cancel.set()
        watcher.cancel()


_END = object()


async def _pumped(chunks: Iterator[Any], cancel: threading.Event) -> AsyncGenerator[Any, None]:
    """The chunks, made on a thread of their own that always closes the generator: a generator
    left suspended would keep holding the model (its turn in the queue) after a client left."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()

    def put(item: object) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the server's loop has closed: nobody is listening
            cancel.set()

    def work() -> None:
        try:
            # Read to the end even after a disconnect: cancel has stopped the model, and what is
            # left (the finish, the usage) costs nothing.
            for chunk in chunks:
                put(chunk)
        except Exception as e:  # noqa: BLE001 - handed to the reader, which sends it as an error event
            put(e)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
            put(_END)

    threading.Thread(target=work, name="api-stream", daemon=True).start()
    while (item := await queue.get()) is not _END:
        if isinstance(item, Exception):
            raise item
        yield item


def router(ctx: ApiContext) -> APIRouter:
    r = APIRouter(prefix="/v1")

    async def guarded(request: Request, work: Callable[[], Any]) -> Response:
        try:
            _check_key(ctx, request)
            return await work()
        except Exception as e:  # noqa: BLE001 - a client sees OpenAI's error JSON, never a traceback
            return _error_response(_as_api_error(e))

    @r.get("/models")
    async def models(request: Request) -> Response:
        async def work() -> Response:
            return JSONResponse({"object": "list", "data": [
                {"id": ctx.model, "object": "model", "created": 0, "owned_by": "phi-demo"}]})
        return await guarded(request, work)

    @r.post("/chat/completions")
    async def chat(request: Request) -> Response:
        async def work() -> Response:
            body = await _body(request, ctx.files.max_bytes)
            completions.engine_ready(ctx.engine)
            call = await run_in_threadpool(completions.parse, body, ctx.files, ctx.limits, ctx.max_tokens, ctx.model)
            cancel = threading.Event()
            if call.stream:
                return await _streamed(completions.stream_chunks(ctx.engine, call, cancel), request, cancel)
            watcher = asyncio.create_task(_watch(request, cancel))
            try:
                answer, left_out = await run_in_threadpool(completions.complete, ctx.engine, call, cancel)
            finally:
                cancel.set()
                watcher.cancel()
            return JSONResponse(answer, headers=left_out.headers())
        return await guarded(request, work)

    async def audio(request: Request, task: str) -> Response:
        async def work() -> Response:
            try:
                form = await request.form(max_files=1, max_fields=20)
            except Exception:  # noqa: BLE001 - starlette's own errors for a malformed form
                raise ApiError(400, "The request must be a multipart form with the audio as 'file'.") from None
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "The form has no audio file: send it as the field 'file'.", param="file")
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            call = speech.check(task, fields)
            data = await upload.read(ctx.files.max_bytes + 1)
            name = upload.filename or ""
            suffix = "." + name.rsplit(".", 1)[-1][:8].lower() if "." in name else ""
            call.path = await run_in_threadpool(ctx.files.put_bytes, data, suffix if suffix[1:].isalnum() else "")
            completions.engine_ready(ctx.engine)
            cancel = threading.Event()
            text, media_type = await run_in_threadpool(speech.run, ctx.engine, call, ctx.segments,
                                                       ctx.max_recording_seconds, cancel)
            return Response(text, media_type=media_type)
        return await guarded(request, work)

    @r.post("/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        return await audio(request, "transcribe")

    @r.post("/audio/translations")
    async def translations(request: Request) -> Response:
        return await audio(request, "translate")

    return r
