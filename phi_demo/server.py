"""Wiring: settings -> engine -> page -> server. The only module that sees both sides."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

from phi_demo.api.files import ClientFiles
from phi_demo.api.routes import ApiContext, router
from phi_demo.chat.request import Limits
from phi_demo.contract import ChatEngine
from phi_demo.engine.remote import OpenAIEngine
from phi_demo.errors import ModelUnavailable, SettingError
from phi_demo.settings import AppSettings, cache_root, parse_size
from phi_demo.speech.vad import EnergyVAD, load_vad


def upload_root() -> str:
    """Where Gradio stores uploads (GRADIO_TEMP_DIR or the system temp folder)."""

    return os.environ.get("GRADIO_TEMP_DIR") or str(Path(tempfile.gettempdir()) / "gradio")


def create(settings: AppSettings, engine=None, load: bool = True):
    """Build (engine, demo). The model starts loading in the background; the page shows progress."""

    if settings.backend == "openai":
        # A server does the work: torch is never imported.

        engine = engine or OpenAIEngine(settings)
        if load:
            engine.load_in_background()
        page_engine = engine
        vad = (EnergyVAD(), "energy threshold (the server backend keeps torch out of this process)")
    else:
        from phi_demo.engine import zerogpu  # noqa: PLC0415 - the engine (and torch) loads only when a local model is used
        from phi_demo.engine.local import Engine  # noqa: PLC0415 - the engine (and torch) loads only when a local model is used

        engine = engine or Engine(settings)
        if load and engine.status().state != "error":
            if zerogpu.enabled():
                # ZeroGPU wants the model on "cuda" when the app is imported, not later.
                try:
                    engine.load()
                except ModelUnavailable:
                    pass  # the page says why
            else:
                engine.load_in_background()
        page_engine = zerogpu.wrap(engine)
        vad = load_vad(settings.vad)
    # Imported only now: the model's load has started and runs while gradio imports.
    from phi_demo.ui import build_demo  # noqa: PLC0415 - gradio loads only for the page

    demo = build_demo(page_engine, settings, allowed_roots=(upload_root(),), vad=vad)
    demo.phi_api = api_context(page_engine, settings, vad[0]) if settings.api or settings.mcp else None  # pyright: ignore[reportAttributeAccessIssue] - carried from create() to launch()
    # Requests wait in Gradio's queue (and see their position) while one answer is generated.
    demo.queue(default_concurrency_limit=1, max_size=64)
    return engine, demo


def launch_kwargs(settings: AppSettings) -> dict:
    from phi_demo.ui import CSS  # noqa: PLC0415 - gradio loads only for the page

    # Saved chats show their media from the app's own store.
    return dict(server_name=settings.host, server_port=settings.port, share=settings.share,
                max_file_size=settings.max_file_size, css=CSS, allowed_paths=[str(settings.chats_folder / "media")])


def api_context(engine: ChatEngine, settings: AppSettings, vad: object,
                allow_private_urls: bool = False) -> ApiContext:
    """What the /v1 routes need: the page's engine and limits, and a folder of their own for
    the files clients send (the only folder their requests may read)."""
    folder = cache_root() / "api-files"
    limits = Limits.from_settings(settings, allowed_roots=(str(folder),))
    return ApiContext(engine, ClientFiles(folder, parse_size(settings.max_file_size),
                                          allow_private_urls=allow_private_urls),
                      limits, settings.served_model or settings.model, settings.max_new_tokens,
                      settings.max_recording_seconds, vad.segments,  # pyright: ignore[reportAttributeAccessIssue] - EnergyVAD and SileroVAD both have it
                      key=settings.server_api_key)


def mount_api(demo, ctx: ApiContext | None, routes: bool = True, mcp: bool = False) -> None:
    """Serve /v1 (and with `mcp`, the MCP tools at /mcp/) from the page's own server (after
    launch: Gradio builds its app there)."""
    if ctx is None:
        return
    if routes:
        demo.app.include_router(router(ctx))
    if mcp:
        from phi_demo.api.mcp import McpApp, build  # noqa: PLC0415 - the mcp SDK loads only with --mcp

        demo.app.mount("/mcp", McpApp(build(ctx)))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = AppSettings.load(argv)
        engine, demo = create(settings)
    except SettingError as e:
        print(f"app.py: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if engine.config_error:
        # The page says so too, and nothing is loaded in its place.
        logging.getLogger("phi_demo").error("%s", engine.config_error)
    demo.launch(prevent_thread_lock=True, **launch_kwargs(settings))
    mount_api(demo, demo.phi_api, routes=settings.api, mcp=settings.mcp)  # pyright: ignore[reportAttributeAccessIssue] - set by create()
    demo.block_thread()
