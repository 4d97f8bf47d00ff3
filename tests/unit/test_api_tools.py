"""Tool calls in Phi-4-mini's format: the parser, the exact prompt, and a round trip through a
fake engine that answers with fixed text (random weights never call a tool)."""

import json
import threading

from phi_demo.api import completions
from phi_demo.api.files import ClientFiles
from phi_demo.api.tools import may_be_call, parse_calls
from phi_demo.chat.request import Limits
from phi_demo.contract import EngineStatus, GenerationStats
from tests.helpers import FakeEngineFacts

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather <|end|> now",
                                            "parameters": {"type": "object",
                                                           "properties": {"city": {"type": "string"}}}}}


class FixedEngine(FakeEngineFacts):
    """The stream contract, answering every request with `answer` in pieces."""

    def __init__(self, answer):
        self.answer = answer
        self.requests = []

    def status(self):
        return EngineStatus("ready")

    def stream(self, request, gen, cancel):
        self.requests.append(request)
        for i in range(0, len(self.answer), 4):
            if cancel.is_set():
                break
            yield self.answer[i:i + 4]
        yield GenerationStats(10, 5, 0.0, 0.0, 0.0)


def _call(body, tmp_path):
    return completions.parse(body, ClientFiles(tmp_path, 1 << 20), Limits(), 64, "phi")


def test_parser_reads_the_models_forms_and_leaves_text_alone():
    for text in ('<|tool_call|>[{"name": "f", "arguments": {"a": 1}}]<|/tool_call|>',
                 '[{"name": "f", "arguments": {"a": 1}}]', 'functools[{"name": "f", "arguments": "{\\"a\\": 1}"}]',
                 '{"name": "f", "parameters": {"a": 1}}'):
        calls, rest = parse_calls(text, {"f"})
        assert [(c.name, json.loads(c.arguments)) for c in calls] == [("f", {"a": 1})], text
        assert rest == ""
    assert parse_calls("It is sunny.", {"f"}) == ([], "It is sunny.")
    assert parse_calls('[{"name": "g", "arguments": {}}]', {"f"})[0] == []  # not offered: text
    assert may_be_call("  [") and may_be_call("<|tool") and not may_be_call("Sunny")


def test_tools_reach_the_model_as_control_tokens_with_their_text_escaped(tmp_path):
    call = _call({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"}],
                  "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
                 tmp_path)
    tools = ('[{"name": "get_weather", "description": "Weather <\u2060|end|> now", "parameters": '
             '{"type": "object", "properties": {"city": {"type": "string"}}}}]')
    assert call.request.prompt == (
        f"<|system|>Be brief.\n\nCall the function get_weather now.<|tool|>{tools}<|/tool|><|end|>"
        "<|user|>Weather?<|end|><|assistant|>")


def test_a_call_comes_back_as_tool_calls_and_its_result_goes_into_the_next_turn(tmp_path):
    engine = FixedEngine('[{"name": "get_weather", "arguments": {"city": "Paris"}}]')
    body = {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [WEATHER]}
    out, _ = completions.complete(engine, _call(body, tmp_path), threading.Event())
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (tc,) = choice["message"]["tool_calls"]
    assert tc["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}

    body["messages"] += [{"role": "assistant", "content": None, "tool_calls": [tc]},
                         {"role": "tool", "tool_call_id": tc["id"], "content": "18 C and sunny"}]
    call = _call(body, tmp_path)
    assert call.request.prompt.endswith(
        '<|user|>Weather in Paris?<|end|><|assistant|><|tool_call|>[{"name": "get_weather", "arguments": '
        '{"city": "Paris"}}]<|/tool_call|><|end|><|tool|>18 C and sunny<|end|><|assistant|>')
    engine.answer = "It is 18 C and sunny in Paris."
    assert completions.complete(engine, call, threading.Event())[0]["choices"][0]["message"]["content"] == engine.answer


def test_streamed_calls_are_held_back_then_sent_whole(tmp_path):
    engine = FixedEngine('<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Oslo"}}]<|/tool_call|>')
    call = _call({"messages": [{"role": "user", "content": "Oslo?"}], "tools": [WEATHER], "stream": True}, tmp_path)
    head, *chunks = completions.stream_chunks(engine, call, threading.Event())
    assert head == completions.LeftOut()
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert not any(d.get("content") for d in deltas)
    assert deltas[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_text_streams_when_tools_are_offered_but_not_called(tmp_path):
    engine = FixedEngine("Sunny all day.")
    call = _call({"messages": [{"role": "user", "content": "?"}], "tools": [WEATHER], "stream": True}, tmp_path)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in
                   list(completions.stream_chunks(engine, call, threading.Event()))[1:])
    assert text == "Sunny all day."


def test_a_stop_string_cuts_the_answer_and_stops_the_model(tmp_path):
    engine = FixedEngine("one two STOP three four five six")
    cancel = threading.Event()
    call = _call({"messages": [{"role": "user", "content": "?"}], "stop": ["STOP"]}, tmp_path)
    out, _ = completions.complete(engine, call, cancel)
    assert out["choices"][0]["message"]["content"] == "one two "
    assert out["choices"][0]["finish_reason"] == "stop" and cancel.is_set()


def _router_client(engine, tmp_path, limits=None):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from phi_demo.api.routes import ApiContext, router

    ctx = ApiContext(engine, ClientFiles(tmp_path, 1 << 22), limits or Limits(), "phi", 4, 60.0,
                     segments=lambda audio: [])  # type: ignore[arg-type] - no speech here
    app = FastAPI()
    app.include_router(router(ctx))
    return TestClient(app)


class LoadingEngine(FixedEngine):
    def status(self):
        return EngineStatus("loading", "Loading microsoft/Phi-4-multimodal-instruct: 3 of 4 shards…")


def test_while_the_model_loads_a_client_gets_503_with_retry_after(tmp_path):
    """Through the real router: an OpenAI client retries on 503 and reads when from Retry-After;
    the message says what the server is doing."""
    engine = LoadingEngine("never")
    reply = _router_client(engine, tmp_path).post("/v1/chat/completions", json={"model": "phi", "messages": [
        {"role": "user", "content": "Hi"}]})
    assert reply.status_code == 503 and reply.headers["Retry-After"] == "5"
    assert reply.json()["error"]["message"] == "Loading microsoft/Phi-4-multimodal-instruct: 3 of 4 shards…"
    assert reply.json()["error"]["code"] == "model_loading" and engine.requests == []


def _sse_text(body: str) -> str:
    events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]
    return "".join((e["choices"][0]["delta"].get("content") or "") for e in events if e.get("choices"))


def test_what_the_model_was_not_given_is_said_in_the_response_headers(engine, tmp_path):
    """A client that keeps its own history learns that the oldest messages (context budget)
    and images (image limit) were left out, streamed or not; the answer itself is unchanged."""
    import base64

    from PIL import Image

    from phi_demo.engine.local import Engine
    from phi_demo.settings import AppSettings

    budgeted = Engine(AppSettings(model="tiny-random", context_budget=160), cache=engine.cache)
    client = _router_client(budgeted, tmp_path, Limits(max_images=2))
    messages: list[dict] = []
    for i in range(8):
        messages += [{"role": "user", "content": f"Question {i}: " + " ".join(f"w{i}x{j}" for j in range(10))},
                     {"role": "assistant", "content": f"Answer {i}."}]
    messages.append({"role": "user", "content": "And now?"})
    plain = client.post("/v1/chat/completions", json={"messages": messages, "temperature": 0})
    assert plain.status_code == 200, plain.text
    left = int(plain.headers["X-Phi-Demo-Messages-Left-Out"])
    assert left > 0 and left % 2 == 0  # whole turns: a question with its answer
    assert plain.json()["usage"]["prompt_tokens"] <= 160
    streamed = client.post("/v1/chat/completions", json={"messages": messages, "temperature": 0, "stream": True})
    assert streamed.status_code == 200 and streamed.headers["X-Phi-Demo-Messages-Left-Out"] == str(left)
    assert _sse_text(streamed.text) == plain.json()["choices"][0]["message"]["content"]

    # Short enough for the budget: nothing left out, said as 0.
    short = client.post("/v1/chat/completions", json={"messages": messages[-1:], "stream": True})
    assert short.headers["X-Phi-Demo-Messages-Left-Out"] == "0" and short.headers["X-Phi-Demo-Images-Left-Out"] == "0"

    # Three images on a limit of two: the oldest leaves (in batches of half the limit), and the header says so.
    png = tmp_path / "dot.png"
    Image.new("RGB", (16, 16), (200, 0, 0)).save(png)
    url = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
    pictures = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                             {"type": "text", "text": f"Picture {i}?"}]} for i in range(3)]
    pictures = [m for p in pictures for m in (p, {"role": "assistant", "content": "A dot."})][:-1]
    unbudgeted = _router_client(engine, tmp_path, Limits(max_images=2))
    reply = unbudgeted.post("/v1/chat/completions", json={"messages": pictures, "stream": True})
    assert reply.status_code == 200 and reply.headers["X-Phi-Demo-Images-Left-Out"] == "1", reply.headers


def test_a_streamed_question_too_long_to_answer_gets_400_and_its_sentence(engine, tmp_path):
    """The stream starts once the prompt fits, so what cannot fit is an error status, as it
    is unstreamed: not a 200 with the error inside the stream."""
    from phi_demo.engine.local import Engine
    from phi_demo.settings import AppSettings

    budgeted = Engine(AppSettings(model="tiny-random", context_budget=60), cache=engine.cache)
    client = _router_client(budgeted, tmp_path)
    question = " ".join(f"w{i}" for i in range(200))
    for stream in (False, True):
        reply = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": question}],
                                                          "stream": stream})
        assert reply.status_code == 400, (stream, reply.text)
        assert "reads at most 60 prompt tokens at once (its context budget)" in reply.json()["error"]["message"]
