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
