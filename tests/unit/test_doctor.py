"""`python -m phi_demo doctor`: a fake engine that answers like the real model passes, each
kind of bad answer fails its own row, and the tiny model checks the plumbing only."""

import json
from types import SimpleNamespace

import pytest

from phi_demo import cli, doctor
from phi_demo.contract import AttentionOption, ChatEngine, EngineStatus, GenerationStats
from phi_demo.errors import ModelUnavailable
from tests.helpers import FakeEngineFacts

RIGHT = {
    "image": "The main thing in this picture is a red house with a brown roof.",
    "audio": "What is the capital city of France?",
    "pdf": "March had the most units sold.",
    "video": "A red square slides from left to right, and then a blue ball bounces twice.",
}


class FakeEngine(FakeEngineFacts):
    """The stream contract with canned answers, keyed by which check's question it is asked.
    `runaway` names checks whose answer fills max_new_tokens instead of ending."""

    def __init__(self, answers=None, runaway=(), crash=()):
        self.answers = {**RIGHT, **(answers or {})}
        self.runaway, self.crash = set(runaway), set(crash)
        self.requests = []

    def key(self):
        return SimpleNamespace(revision="fake")

    def status(self):
        return EngineStatus("ready")

    def attention_options(self):
        return [AttentionOption("eager", True)]

    def load(self):
        return SimpleNamespace(device=self.device, dtype="bfloat16", attn=self.attn)

    def load_in_background(self):
        raise NotImplementedError

    def set_attention(self, name):
        return self.attn

    def stream(self, request, gen, cancel):
        name = next(c.name for c in doctor.CHECKS if c.question in request.prompt)
        self.requests.append((name, request, gen))
        if name in self.crash:
            raise RuntimeError("CUDA out of memory")
        answer = self.answers[name]
        words = answer.split(" ")
        for i, w in enumerate(words):
            yield w if i == 0 else " " + w
        n = gen.max_new_tokens if name in self.runaway else len(words) + 1
        yield GenerationStats(len(request.prompt), n, 0.05, 0.3, 40.0)


def doctor_cli(monkeypatch, capsys, engine, *flags):
    monkeypatch.setattr(cli, "_engine", lambda settings: (engine, engine.load(), 0.5))
    rc = cli.main(["doctor", "--quiet", *flags])
    out, err = capsys.readouterr()
    return rc, out, err


def row(out, name):
    return next(line for line in out.splitlines() if line.startswith(name + " "))


def test_fake_engine_keeps_the_contract():
    assert isinstance(FakeEngine(), ChatEngine)


def test_right_answers_pass_and_the_json_holds_the_table(monkeypatch, capsys, tmp_path):
    engine = FakeEngine()
    rc, out, err = doctor_cli(monkeypatch, capsys, engine, "--json", str(tmp_path / "d.json"))
    assert rc == 0, out + err
    assert "All 4 checks passed." in out and "FAIL" not in out and doctor.TINY_NOTE not in out
    for check in doctor.CHECKS:
        assert row(out, check.name).endswith("pass")
    assert "yes: house" in row(out, "image") and "yes (" in row(out, "image")
    # the same request path as the page: each example decoded into the request, greedy, bounded
    kinds = {name: (len(r.images), len(r.audios)) for name, r, _ in engine.requests}
    assert kinds == {"image": (1, 0), "audio": (0, 1), "pdf": (2, 0), "video": (kinds["video"][0], 1)}
    assert kinds["video"][0] > 1
    assert all(g.max_new_tokens == doctor.DEFAULT_BOUND and not g.do_sample for _, _, g in engine.requests)
    rec = json.loads((tmp_path / "d.json").read_text())
    assert rec["passed"] is True and rec["tiny"] is False and rec["settings"]["max_new_tokens"] == 256
    first = rec["checks"][0]
    assert first["name"] == "image" and first["result"] == "pass" and first["stopped_by_itself"] is True
    assert first["found"] == ["house"] and first["answer"] == RIGHT["image"]


def test_a_wrong_answer_fails_its_row(monkeypatch, capsys):
    rc, out, _ = doctor_cli(monkeypatch, capsys, FakeEngine({"pdf": "February had the fewest; the bars are blue."}))
    assert rc == cli.EXIT_FAILED
    assert row(out, "pdf").endswith("FAIL") and "no: march|mar" in row(out, "pdf")
    assert row(out, "image").endswith("pass")
    assert "FAIL pdf: does not mention march or mar" in out and "February had the fewest" in out
    assert "1 of 4 checks failed." in out


def test_an_answer_that_never_stops_fails(monkeypatch, capsys):
    rc, out, _ = doctor_cli(monkeypatch, capsys, FakeEngine(runaway={"video"}), "--max-new-tokens", "64")
    assert rc == cli.EXIT_FAILED
    assert "no: hit 64/64" in row(out, "video") and row(out, "video").endswith("FAIL")
    assert "did not stop within 64 new tokens" in out
    assert row(out, "audio").endswith("pass")


@pytest.mark.parametrize("bad, problem", [
    ("What is the capital city of France?<|end|>", "control tokens <|end|>"),
    ("What is the capital city of Fran\ufffd\ufffd?", "2 replacement characters"),
    ("What is the capital\x1b[0m city of France?", "control characters U+001B"),
    ("  \n", "empty"),
])
def test_unprintable_text_fails(monkeypatch, capsys, bad, problem):
    rc, out, _ = doctor_cli(monkeypatch, capsys, FakeEngine({"audio": bad}))
    assert rc == cli.EXIT_FAILED
    assert f"no: {problem}" in row(out, "audio") and row(out, "audio").endswith("FAIL")


def test_a_crash_fails_one_row_and_the_others_still_run(monkeypatch, capsys):
    rc, out, _ = doctor_cli(monkeypatch, capsys, FakeEngine(crash={"image"}))
    assert rc == cli.EXIT_FAILED
    assert row(out, "image").endswith("FAIL") and "RuntimeError: CUDA out of memory" in out
    assert all(row(out, n).endswith("pass") for n in ("audio", "pdf", "video"))


def test_no_model_and_bad_bound_use_the_cli_exit_codes(monkeypatch, capsys):
    def unavailable(settings):
        raise ModelUnavailable("no weights here")

    monkeypatch.setattr(cli, "_engine", unavailable)
    assert cli.main(["doctor"]) == cli.EXIT_NO_MODEL
    assert "no weights here" in capsys.readouterr().err
    assert cli.main(["doctor", "--max-new-tokens", "0"]) == cli.EXIT_BAD_INPUT


def test_words_match_whole_and_case_blind():
    assert doctor.content_match("It was Mar. 2024", [("march", "mar")]) == (["mar"], [])
    assert doctor.content_match("The market grew", [("march", "mar")])[1] == [("march", "mar")]
    assert doctor.content_match("Two HOUSES.", [("house",)])[0] == ["house"]


def test_every_check_names_an_example_that_exists():
    names = [c.name for c in doctor.CHECKS]
    assert len(set(names)) == len(names)
    for c in doctor.CHECKS:
        assert (doctor.ASSETS / c.asset).is_file() and c.expect and all(c.expect) and c.why


def test_tiny_model_checks_the_plumbing_only(capsys, tmp_path):
    rc = cli.main(["doctor", "--model", "tiny-random", "--max-new-tokens", "8", "--quiet",
                   "--json", str(tmp_path / "t.json")])
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    assert doctor.TINY_NOTE in out and "Traceback" not in err
    for check in doctor.CHECKS:
        line = row(out, check.name)
        assert line.endswith("plumbing ok") and "skipped" in line
    rec = json.loads((tmp_path / "t.json").read_text())
    assert rec["tiny"] is True and rec["passed"] is True
    assert all(c["new_tokens"] >= 1 and c["ttft_s"] > 0 and not c["content_judged"] for c in rec["checks"])
