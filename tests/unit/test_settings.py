"""A bad setting value is one line that names the setting, the value and what is allowed; the\ngeneration settings are one model whose refusals are sentences."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from phi_demo.errors import SettingError, UserInputError
from phi_demo.settings import AppSettings, GenerationSettings
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


def test_precedence_flags_then_environment_then_file_then_default(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"max_images": 1, "max_audio_clips": 1, "max_video_frames": 1}))
    env = {"PHI_DEMO_MAX_IMAGES": "2", "PHI_DEMO_MAX_AUDIO_CLIPS": "2", "PHI_DEMO_CONFIG": str(path)}
    s = AppSettings.load(["--max-images", "3"], env)
    assert (s.max_images, s.max_audio_clips, s.max_video_frames, s.max_video_seconds) == (3, 2, 1, 300.0)
    # A flag's error names the flag; the same value from the file names the file.
    with pytest.raises(SettingError, match="^--max-images = 'x': max_images must be a whole number.$"):
        AppSettings.load(["--max-images", "x"], env)


def test_an_answer_length_the_page_would_refuse_is_refused_at_start():
    # It used to start, and then every question was refused ("must be between 1 and 8192").
    with pytest.raises(SettingError, match="PHI_DEMO_MAX_NEW_TOKENS = '0': max_new_tokens must be between 1 and 8192"):
        AppSettings.load([], {"PHI_DEMO_MAX_NEW_TOKENS": "0"})


@pytest.mark.parametrize("text,value", [("", False), (" yes ", True), ("OFF", False), ("1", True)])
def test_switches_read_from_variables(text, value):
    assert AppSettings.load([], {"PHI_DEMO_KV_REUSE": text}).kv_reuse is value


def test_settings_file_problems_are_sentences(tmp_path):
    with pytest.raises(SettingError, match=r"Cannot read the settings file .*missing.toml: No such file"):
        AppSettings.load(["--config", str(tmp_path / "missing.toml")], {})
    bad = tmp_path / "bad.toml"
    bad.write_text("max_images = \n")
    with pytest.raises(SettingError, match="bad.toml is not valid"):
        AppSettings.load(["--config", str(bad)], {})
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(SettingError, match="must hold a table of settings"):
        AppSettings.load(["--config", str(listed)], {})


def test_a_settings_object_built_in_code_reads_no_environment(monkeypatch):
    monkeypatch.setenv("PHI_DEMO_MAX_IMAGES", "1")
    assert AppSettings(model="tiny-random").max_images == 8
    assert AppSettings.load([]).max_images == 1


# --- generation settings: one model for the page, /chat and the CLI -------------------------

def test_limits_are_the_fields_constraints():
    assert GenerationSettings.LIMITS == {
        "max_new_tokens": (1, 8192), "temperature": (0.01, 2.0), "top_p": (0.01, 1.0), "top_k": (0, 1000),
        "repetition_penalty": (0.5, 2.0), "min_new_tokens": (0, 8192), "seed": (0, 2**32 - 1)}
    with pytest.raises(ValidationError):
        GenerationSettings(max_new_tokens=0)
    with pytest.raises(ValidationError):
        GenerationSettings(max_tokens=5)  # extra="forbid": a misspelt name is not ignored
    g = dataclasses.replace(GenerationSettings(max_new_tokens=9), min_new_tokens=9)
    assert (g.max_new_tokens, g.min_new_tokens) == (9, 9) and g.as_dict()["min_new_tokens"] == 9


def test_loose_values_from_the_page_and_the_api():
    g = GenerationSettings.from_values(max_new_tokens="64", do_sample=1, temperature="0.5", top_k=3.0, seed=-1)
    assert (g.max_new_tokens, g.do_sample, g.temperature, g.top_k, g.seed) == (64, True, 0.5, 3, None)
    assert GenerationSettings.from_values(seed="").seed is None and GenerationSettings.from_values(seed="7").seed == 7
    assert GenerationSettings.from_values(top_p=None).top_p == 0.95


@pytest.mark.parametrize("values,sentence", [
    ({"temperature": 5}, "The setting temperature must be between 0.01 and 2.0; it was 5."),
    ({"top_k": "many"}, "The setting top_k must be a number, not 'many'."),
    ({"max_new_tokens": 3.5}, "The setting max_new_tokens must be a number, not 3.5."),
    ({"max_new_tokens": True}, "The setting max_new_tokens must be a number, not True."),
    ({"top_p": [1]}, "The setting top_p must be a number, not [1]."),
    ({"do_sample": "false"}, "The setting do_sample must be true or false, not 'false'."),
    ({"seed": 2**40}, "The setting seed must be between 0 and 4294967295; it was 1099511627776."),
    ({"max_new_tokens": 10**5000}, "The setting max_new_tokens must be between 1 and 8192; it was a number too"),
    ({"min_new_tokens": 3}, "Unknown settings: min_new_tokens; known are max_new_tokens, do_sample,"),
    ({"tempreature": 1}, "Unknown settings: tempreature; known are"),
])
def test_refused_generation_values_are_sentences(values, sentence):
    with pytest.raises(UserInputError) as e:
        GenerationSettings.from_values(**values)
    assert str(e.value).startswith(sentence)
