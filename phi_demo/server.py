"""Wiring: settings -> engine -> page -> server. The only module that sees both sides."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

from phi_demo.engine.remote import OpenAIEngine
from phi_demo.errors import ModelUnavailable, SettingError
from phi_demo.settings import AppSettings
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
    # Requests wait in Gradio's queue (and see their position) while one answer is generated.
    demo.queue(default_concurrency_limit=1, max_size=64)
    return engine, demo


def launch_kwargs(settings: AppSettings) -> dict:
    from phi_demo.ui import CSS  # noqa: PLC0415 - gradio loads only for the page

    # Saved chats show their media from the app's own store.
    return dict(server_name=settings.host, server_port=settings.port, share=settings.share,
                max_file_size=settings.max_file_size, css=CSS, allowed_paths=[str(settings.chats_folder / "media")])


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
    demo.launch(**launch_kwargs(settings))
