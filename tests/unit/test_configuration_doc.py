"""docs/CONFIGURATION.md is generated from the settings model and stays current."""

import subprocess
import sys

from phi_demo.settings import AppSettings, configuration_markdown, env_name, flag_name
from tests.helpers import ROOT

DOC = ROOT / "docs" / "CONFIGURATION.md"


def test_the_file_is_what_the_generator_writes():
    assert DOC.read_text() == configuration_markdown(), (
        "docs/CONFIGURATION.md is out of date: python -m phi_demo.settings --markdown > docs/CONFIGURATION.md")


def test_every_setting_has_a_row_and_a_meaning():
    text = configuration_markdown()
    for name, field in AppSettings.model_fields.items():
        assert f"| `{flag_name(name)}`" in text and f"`{env_name(name)}`" in text
        assert field.description, f"{name} has no description"


def test_the_command_prints_the_same_text():
    r = subprocess.run([sys.executable, "-m", "phi_demo.settings", "--markdown"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == configuration_markdown()
