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
    out = completions.complete(engine, _call(body, tmp_path), threading.Event())
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
    assert completions.complete(engine, call, threading.Event())["choices"][0]["message"]["content"] == engine.answer


def test_streamed_calls_are_held_back_then_sent_whole(tmp_path):
    engine = FixedEngine('<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Oslo"}}]<|/tool_call|>')
    call = _call({"messages": [{"role": "user", "content": "Oslo?"}], "tools": [WEATHER], "stream": True}, tmp_path)
    chunks = list(completions.stream_chunks(engine, call, threading.Event()))
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert not any(d.get("content") for d in deltas)
    assert deltas[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_text_streams_when_tools_are_offered_but_not_called(tmp_path):
    engine = FixedEngine("Sunny all day.")
    call = _call({"messages": [{"role": "user", "content": "?"}], "tools": [WEATHER], "stream": True}, tmp_path)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in
                   completions.stream_chunks(engine, call, threading.Event()))
    assert text == "Sunny all day."


def test_a_stop_string_cuts_the_answer_and_stops_the_model(tmp_path):
    engine = FixedEngine("one two STOP three four five six")
    cancel = threading.Event()
    call = _call({"messages": [{"role": "user", "content": "?"}], "stop": ["STOP"]}, tmp_path)
    out = completions.complete(engine, call, cancel)
    assert out["choices"][0]["message"]["content"] == "one two "
    assert out["choices"][0]["finish_reason"] == "stop" and cancel.is_set()


class LoadingEngine(FixedEngine):
    def status(self):
        return EngineStatus("loading", "Loading microsoft/Phi-4-multimodal-instruct: 3 of 4 shards…")


def test_while_the_model_loads_a_client_gets_503_with_retry_after(tmp_path):
    """Through the real router: an OpenAI client retries on 503 and reads when from Retry-After;
    the message says what the server is doing."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from phi_demo.api.routes import ApiContext, router

    engine = LoadingEngine("never")
    ctx = ApiContext(engine, ClientFiles(tmp_path, 1 << 20), Limits(), "phi", 64, 60.0,
                     segments=lambda audio: [])  # type: ignore[arg-type] - never reached while loading
    app = FastAPI()
    app.include_router(router(ctx))
    reply = TestClient(app).post("/v1/chat/completions", json={"model": "phi", "messages": [
        {"role": "user", "content": "Hi"}]})
    assert reply.status_code == 503 and reply.headers["Retry-After"] == "5"
    assert reply.json()["error"]["message"] == "Loading microsoft/Phi-4-multimodal-instruct: 3 of 4 shards…"
    assert reply.json()["error"]["code"] == "model_loading" and engine.requests == []
