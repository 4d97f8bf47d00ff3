"""`python -m phi_demo` as a person runs it: a process of its own, its exit codes and streams.
Everything else about the commands is tested in this process (tests/unit/test_cli.py)."""

import json
import subprocess
import sys

from tests.helpers import ROOT


def cli(*args):
    return subprocess.run([sys.executable, "-m", "phi_demo", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_ask_answers_on_stdout_with_stats_on_stderr(tmp_path):
    out = tmp_path / "run.json"
    r = cli("ask", "What is this?", "--image", str(ROOT / "assets" / "example_image.png"), "--model", "tiny-random",
            "--max-new-tokens", "6", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "tok/s" in r.stderr and "Traceback" not in r.stderr
    assert json.loads(out.read_text())["answer"] == r.stdout.rstrip("\n")


def test_bad_input_is_one_line_and_exit_2():
    r = cli("ask", "x", "--image", "/no/such.png", "--model", "tiny-random")
    assert r.returncode == 2
    assert r.stderr.strip() == "phi-demo: /no/such.png: no such file."
