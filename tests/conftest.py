import os
from pathlib import Path

import pytest

from tests.helpers import ROOT


def pytest_configure(config):
    # One tiny model for the whole run, built on first use, outside the user's cache.
    cache = Path(os.environ.get("PHI_DEMO_TEST_CACHE", ROOT / "test-output" / "cache"))
    os.environ["PHI_DEMO_CACHE"] = str(cache)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="session")
def tiny_folder():
    from phi_demo.engine.sources import tiny_folder

    return tiny_folder()


@pytest.fixture(scope="session")
def engine(tiny_folder):
    from phi_demo.engine import Engine
    from phi_demo.settings import AppSettings

    e = Engine(AppSettings(model="tiny-random"))
    e.load()
    return e


@pytest.fixture
def assets():
    return ROOT / "assets"
