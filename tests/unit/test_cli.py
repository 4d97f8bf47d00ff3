"""`python -m phi_demo ask|transcribe`, and URL fetching for it.

The commands run in this process through `main(argv)`, as `python -m phi_demo` calls it, with
stdout and stderr captured: a process per call spent 7 s importing torch for a 0.1 s tiny
model. tests/process/test_cli_process.py runs the real `python -m phi_demo` once."""

import http.server
import json
import threading
import time
from types import SimpleNamespace

import pytest
import soundfile as sf

from phi_demo.cli import main
from phi_demo.errors import UserInputError
from phi_demo.media import fetch as fetch_mod
from phi_demo.speech.tasks import instruction
from tests.helpers import ROOT

IMAGE = ROOT / "assets" / "example_image.png"
AUDIO = ROOT / "assets" / "example_question.wav"


@pytest.fixture
def cli(capsys, tiny_folder):
    def run(*args):
        code = main(list(args))
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    return run


def test_ask_with_image_and_audio_writes_json(cli, tmp_path):
    out = tmp_path / "run.json"
    r = cli("ask", "What is this?", "--image", str(IMAGE), "--audio", str(AUDIO), "--model", "tiny-random",
            "--max-new-tokens", "6", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert "tok/s" in r.stderr and "Traceback" not in r.stderr
    rec = json.loads(out.read_text())
    assert rec["prompt"].endswith("<|user|><|image|><|audio|>What is this?<|end|><|assistant|>")
    assert rec["answer"] == r.stdout.rstrip("\n")
    assert rec["settings"]["adapter"] == "vision" and rec["settings"]["generation"]["max_new_tokens"] == 6
    assert rec["timings"]["new_tokens"] >= 1 and rec["timings"]["ttft_s"] > 0


def test_transcribe_uses_speech_adapter_and_language(cli, tmp_path):
    out = tmp_path / "t.json"
    r = cli("transcribe", str(AUDIO), "--language", "fr", "--model", "tiny-random", "--max-new-tokens", "5",
            "--json", str(out), "--format", "srt")
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())
    assert rec["settings"]["adapter"] == "speech" and rec["detector"] == "silero-vad"
    assert "The speech is in French." in rec["prompt"]
    assert r.stdout.startswith("1\n00:00:00,000 --> 00:00:02,") and rec["segments"][0]["text"] in r.stdout
    assert "real-time factor" in r.stderr


def test_transcribe_long_file_formats_translation_and_summary(cli, tmp_path):
    """A recording of four sentences with pauses: progress per chunk on stderr, each format
    on stdout, translation into another language, and a summary."""
    from phi_demo_dev.bench.vad import SENTENCES, synth_recording

    audio, _truth = synth_recording(SENTENCES[:4], pause_s=1.5)
    wav = tmp_path / "talk.wav"
    sf.write(wav, audio, 16000)
    base = ["--model", "tiny-random", "--max-new-tokens", "4"]
    r = cli("transcribe", str(wav), "--format", "json", "--task", "translate", "--to", "de",
            "--max-chunk-seconds", "4", *base)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["task"] == "translate" and data["to"] == "de" and len(data["segments"]) >= 3
    assert all(s["end"] - s["start"] <= 4 for s in data["segments"])
    assert len([l for l in r.stderr.splitlines() if " · chunk " in l]) == len(data["segments"])
    r = cli("transcribe", str(wav), "--format", "vtt", "--quiet", *base)
    assert r.returncode == 0 and r.stdout.startswith("WEBVTT\n\n00:00:0") and "chunk" not in r.stderr
    r = cli("summarize", str(wav), "--summary-part-seconds", "6", *base)
    assert r.returncode == 0, r.stderr
    assert "[combining the parts]" in r.stderr and r.stdout.strip()


def test_config_file_env_and_flags_precedence(cli, tmp_path, monkeypatch):
    cfg = tmp_path / "s.toml"
    cfg.write_text('model = "tiny-random"\nmax-new-tokens = 3\nsystem_prompt = "From the file."\n')
    out = tmp_path / "o.json"
    monkeypatch.setenv("PHI_DEMO_SYSTEM_PROMPT", "From the environment.")
    r = cli("ask", "hi", "--config", str(cfg), "--json", str(out))
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())
    assert rec["settings"]["generation"]["max_new_tokens"] == 3
    assert rec["prompt"].startswith("<|system|>From the environment.<|end|>")
    r = cli("ask", "hi", "--config", str(cfg), "--max-new-tokens", "2", "--json", str(out))
    assert json.loads(out.read_text())["settings"]["generation"]["max_new_tokens"] == 2


@pytest.mark.parametrize("args,code,expected", [
    (["ask", "x", "--image", "/no/such.png"], 2, "/no/such.png: no such file."),
    (["ask", "x", "--image", "http://127.0.0.1:9/a.png"], 2, "loopback, private or reserved address"),
    (["ask", "x", "--image", "file:///etc/passwd"], 2, "Only http and https URLs can be fetched"),
    (["ask", "   "], 2, "The question is empty."),
    (["ask", "x", "--image", str(AUDIO).replace(".wav", ".txt")], 2, "no such file"),
    (["transcribe", str(AUDIO), "--language", "klingon"], 2, "Unknown speech language 'klingon'"),
    (["transcribe", str(AUDIO), "--task", "translate", "--to", "auto"], 2, "which language to translate into"),
    (["transcribe", str(AUDIO), "--max-recording-seconds", "1"], 2, "the limit is 1 s"),
    (["summarize", "/no/such.wav"], 2, "/no/such.wav: no such file."),
    (["ask", "x", "--model", "/does/not/exist"], 3, "does not hold a model"),
])
def test_bad_input_is_one_line_and_non_zero(cli, args, code, expected):
    r = cli(*args, *([] if "--model" in args else ["--model", "tiny-random"]))
    assert r.returncode == code, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith("phi-demo:")]
    assert len(lines) == 1 and expected in lines[0]
    assert "Traceback" not in r.stderr


def test_instruction_prompts():
    assert instruction() == "Transcribe the audio clip into text. Give only the transcript."
    assert instruction("de", "translate") == ("Translate the audio to English. The speech is in German. "
                                              "Give only the English translation.")
    # Into any of the eight speech languages, in the model card's form; the source may be automatic.
    assert instruction("auto", "translate", to="ja") == "Translate the audio to Japanese. Give only the Japanese translation."
    assert instruction("en", "translate", to="Portuguese").startswith("Translate the audio to Portuguese.")
    with pytest.raises(UserInputError, match="which language to translate into"):
        instruction("en", "translate", to="auto")
    with pytest.raises(UserInputError, match="Unknown speech language 'klingon'"):
        instruction("en", "translate", to="klingon")
    with pytest.raises(UserInputError, match="choose transcribe or translate"):
        instruction("en", "summarise")


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path in ("/image.png", "/clip.mp4"):
            body = (IMAGE if self.path == "/image.png" else ROOT / "assets" / "example_clip.mp4").read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/big.bin":
            self.send_response(200)
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"\0" * 65536)
        elif self.path == "/slow.png":
            time.sleep(3)
            self.send_response(200)
            self.end_headers()
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/image.png")
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()


@pytest.fixture(scope="module")
def http_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()


def test_ask_about_a_video_by_url_and_a_pdf(cli, http_server, tmp_path):
    out = tmp_path / "v.json"
    r = cli("ask", "Compare the clip with page 2", "--video", f"{http_server}/clip.mp4", "--allow-private-urls",
            "--pdf", str(ROOT / "assets" / "example_report.pdf"), "--model", "tiny-random", "--max-new-tokens", "4",
            "--json", str(out))
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())
    # The clip's 4 frames and its sound, then page 2 only (the question names it), then the text.
    assert "<|user|>" + "<|image|>" * 4 + "<|audio|><|image|>[Video " in rec["prompt"]
    assert ".mp4: 4 frames at 1.0, 3.0, 5.0, 7.0 s of a 8.0 s clip, then its sound]" in rec["prompt"]
    assert "[Text of example_report.pdf, page 2]" in rec["prompt"] and "page 1]" not in rec["prompt"]
    assert rec["inputs"]["files"][0].endswith("/clip.mp4") and rec["settings"]["adapter"] == "vision"


def test_ask_refuses_a_bad_video_in_one_line(cli, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    r = cli("ask", "x", "--video", str(bad), "--model", "tiny-random")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "broken.mp4: the video or audio file is damaged or truncated" in r.stderr


def test_fetch_downloads_and_caches_by_content_hash(http_server, tmp_path):
    p = fetch_mod.fetch(f"{http_server}/image.png", tmp_path, allow_private=True)
    assert p.read_bytes() == IMAGE.read_bytes() and p.suffix == ".png" and len(p.stem) == 64
    assert fetch_mod.fetch(f"{http_server}/image.png", tmp_path, allow_private=True) == p


def test_fetch_refuses_loopback_by_default(http_server, tmp_path):
    with pytest.raises(UserInputError, match="loopback, private or reserved"):
        fetch_mod.fetch(f"{http_server}/image.png", tmp_path)


def test_fetch_size_cap_timeout_status(http_server, tmp_path):
    with pytest.raises(UserInputError, match="larger than the 1 MB limit"):
        fetch_mod.fetch(f"{http_server}/big.bin", tmp_path, max_bytes=1_000_000, allow_private=True)
    with pytest.raises(UserInputError, match="no answer within 0.5 s"):
        fetch_mod.fetch(f"{http_server}/slow.png", tmp_path, timeout=0.5, allow_private=True)
    with pytest.raises(UserInputError, match="HTTP 404"):
        fetch_mod.fetch(f"{http_server}/missing.png", tmp_path, allow_private=True)


def test_redirect_hops_are_checked_too(http_server, tmp_path, monkeypatch):
    checked = []

    def only_localhost(host, allow_private):
        checked.append(host)
        if host != "localhost":
            raise UserInputError(f"Refusing to fetch from {host}")

    monkeypatch.setattr(fetch_mod, "_check_host", only_localhost)
    url = http_server.replace("127.0.0.1", "localhost") + "/redirect"
    with pytest.raises(UserInputError, match="Refusing to fetch from 127.0.0.1"):
        fetch_mod.fetch(url, tmp_path)
    assert checked == ["localhost", "127.0.0.1"]


def test_version_is_the_package_version(capsys):
    from phi_demo import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"phi-demo {__version__}"
    assert __version__ == "0.4.0"


@pytest.mark.parametrize("args,expected", [
    (["ask", "x", "--sample", "--temperature", "hot"], "phi-demo: The setting temperature must be a number, not 'hot'."),
    (["ask", "x", "--top-k", "5000"], "phi-demo: The setting top_k must be between 0 and 1000; it was 5000."),
    (["ask", "x", "--max-new-tokens", "0"], "phi-demo: --max-new-tokens = '0': max_new_tokens must be between 1 and 8192."),
    (["doctor", "--max-new-tokens", "lots"], "phi-demo: The setting max_new_tokens must be a number, not 'lots'."),
])
def test_generation_flags_are_checked_by_the_same_model(capsys, args, expected):
    """The page, /chat and the CLI refuse a value with the same sentence, before any model loads."""
    from phi_demo.cli import EXIT_BAD_INPUT

    assert main([*args, "--model", "tiny-random"]) == EXIT_BAD_INPUT
    assert capsys.readouterr().err.strip() == expected
