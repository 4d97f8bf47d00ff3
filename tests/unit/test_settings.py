"""A bad setting value is one line that names the setting, the value and what is allowed."""

import json
import os
import subprocess
import sys

import pytest

from phi_demo.errors import SettingError
from phi_demo.settings import AppSettings
from tests.helpers import ROOT


@pytest.mark.parametrize("env,words", [
    ({"PHI_DEMO_MAX_IMAGES": "lots"}, "PHI_DEMO_MAX_IMAGES = 'lots': max_images must be a whole number"),
    ({"PHI_DEMO_MAX_IMAGES": "2.5"}, "max_images must be a whole number"),
    ({"PHI_DEMO_MAX_IMAGES": "-1"}, "max_images must be zero or more"),
    ({"PHI_DEMO_MAX_AUDIO_SECONDS": "nan"}, "max_audio_seconds must be a finite number"),
    ({"PHI_DEMO_KV_REUSE": "maybe"}, "kv_reuse must be true or false"),
    ({"PHI_DEMO_ATTN": "fast"}, "attn must be one of auto, eager, sdpa, flash_attention_2"),
])
def test_bad_environment_values(env, words):
    with pytest.raises(SettingError, match=words.replace("(", r"\(")):
        AppSettings.load([], env)


@pytest.mark.parametrize("value,words", [
    ({"max_images": "x"}, "max_images in .*settings.json = .x.: max_images must be a whole number"),
    ({"max_images": True}, "max_images must be a number"),
    ({"max_audio_seconds": [1]}, "max_audio_seconds must be a number"),
    ({"kv_reuse": "maybe"}, "kv_reuse must be true or false"),
    ({"model": 3}, "model must be text"),
    ({"nonsense": 1}, "unknown settings: nonsense"),
])
def test_wrong_types_in_the_config_file(tmp_path, value, words):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(value))
    with pytest.raises(SettingError, match=words):
        AppSettings.load(["--config", str(path)], {})


def test_good_values_still_parse(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('max-images = 3\nkv_reuse = false\nmax_audio_seconds = 30\n')
    s = AppSettings.load(["--config", str(path), "--max-audio-clips", "2"], {"PHI_DEMO_OFFLOAD": "yes"})
    assert (s.max_images, s.kv_reuse, s.max_audio_seconds, s.max_audio_clips, s.offload) == (3, False, 30.0, 2, True)


@pytest.mark.parametrize("command", [["app.py"], ["-m", "phi_demo", "ask", "hi"]])
def test_programs_exit_2_with_one_line(command):
    env = {**os.environ, "PHI_DEMO_MAX_IMAGES": "lots"}
    r = subprocess.run([sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr[-2000:]
    assert "PHI_DEMO_MAX_IMAGES = 'lots': max_images must be a whole number" in lines[0]
