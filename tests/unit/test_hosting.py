"""Hugging Face Space (front matter, ZeroGPU, CPU-only) and the Deta Spacefile."""


import yaml

from phi_demo.settings import DEFAULT_MODEL, DEFAULT_REVISION, AppSettings
from tests.helpers import ROOT


def front_matter() -> dict:
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def pinned(name: str) -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.lower().startswith(name + "=="):
            return line.split("==")[1].strip()
    raise AssertionError(f"{name} is not pinned in requirements.txt")


def test_space_front_matter_agrees_with_the_project():
    fm = front_matter()
    assert fm["sdk"] == "gradio" and fm["sdk_version"] == pinned("gradio")
    assert (ROOT / fm["app_file"]).is_file()
    assert str(fm["python_version"]) == "3.11"
    assert DEFAULT_MODEL in fm["models"]
    assert len(fm["short_description"]) <= 60
    preload = fm["preload_from_hub"][0].split()
    assert preload[0] == DEFAULT_MODEL and preload[-1] == DEFAULT_REVISION
    for key in ("title", "emoji", "suggested_hardware"):
        assert fm[key]


def test_the_space_preloads_what_the_app_reads_and_no_samples_or_remote_code():
    from huggingface_hub.utils import filter_repo_objects

    from tests.unit.test_download import NEEDED, REPO

    patterns = front_matter()["preload_from_hub"][0].split()[1].split(",")
    preloaded = set(filter_repo_objects(REPO, allow_patterns=patterns))
    assert NEEDED <= preloaded, sorted(NEEDED - preloaded)
    # Only names can be matched here: a branch's older shards named like the new ones would
    # come too (the app itself fetches only the indexed ones).
    assert {f for f in preloaded - NEEDED if not f.startswith("model-0000")} == set()


def test_spacefile_is_a_valid_deta_manifest():
    spec = yaml.safe_load((ROOT / "Spacefile").read_text())
    assert spec["v"] == 0
    (micro,) = spec["micros"]
    assert micro["engine"] == "python3.9" and micro["primary"] is True and micro["src"] == "."
    assert micro["run"].split()[:2] == ["python", "app.py"]
    names = {e["name"] for e in micro["presets"]["env"]}
    assert "PHI_DEMO_MODEL" in names and names <= {"PHI_DEMO_" + n.upper() for n in AppSettings.model_fields}


def test_space_binds_all_interfaces_elsewhere_loopback():
    assert AppSettings.load([], {"SPACE_ID": "me/phi"}).host == "0.0.0.0"
    assert AppSettings.load([], {}).host == "127.0.0.1"
    assert AppSettings.load([], {"GRADIO_SERVER_NAME": "10.0.0.5"}).host is None  # Gradio reads it itself
    assert AppSettings.load(["--host", "0.0.0.0"], {}).host == "0.0.0.0"
    assert AppSettings.load([], {}).share is False


def test_zerogpu_is_off_without_the_variable(monkeypatch):
    from phi_demo.engine import zerogpu

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    sentinel = object()
    assert not zerogpu.enabled() and zerogpu.wrap(sentinel) is sentinel


def test_cpu_only_space_says_the_full_model_is_too_slow(monkeypatch):
    from phi_demo.engine.local import Engine
    from phi_demo.ui.sidebar import SidebarHandlers

    monkeypatch.setenv("SPACE_ID", "me/phi-demo")
    settings = AppSettings(offline=True)
    banner = SidebarHandlers(Engine(settings), settings).banner_markdown()
    assert "no GPU" in banner and "PHI_DEMO_MODEL=tiny-random" in banner and "int4 weights" in banner
