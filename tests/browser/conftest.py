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
