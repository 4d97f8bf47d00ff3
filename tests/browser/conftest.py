import os
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("PHI_DEMO_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def playwright():
    """One for all browser tests: a second sync_playwright() in a process refuses to start."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as p:
        yield p


BASE_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run"]


def launch_with_microphone(playwright, wav):
    """Chromium whose fake microphone plays `wav` (in a loop) and needs no permission prompt."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=BASE_ARGS + [
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}"])


def start_recording(page, mic: str, attempts: int = 3) -> None:
    """Press Record on the streaming microphone `mic` until it records.

    Gradio's streaming gr.Audio loads its WAV encoder when it mounts (when its tab or panel
    first opens). A click before that load finishes does nothing but raise "ge is not a
    constructor" in the page: the button stays Record, so a person clicks again, and so does
    this. Any other failure to start fails the test."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    errors = []

    def note(error):  # a Python function: Playwright tags its listeners with an attribute
        errors.append(error)

    page.on("pageerror", note)
    try:
        for _ in range(attempts):
            page.click(f"{mic} button.record-button")
            try:
                page.locator(mic).get_by_text("Stop").wait_for(timeout=5_000)
                return
            except PlaywrightTimeout:
                if not any("is not a constructor" in str(e) for e in errors):
                    raise AssertionError(f"{mic} did not start recording; page errors: {errors}") from None
        raise AssertionError(f"{mic} never started recording in {attempts} clicks: {errors}")
    finally:
        page.remove_listener("pageerror", note)
