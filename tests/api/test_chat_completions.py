"""/v1/chat/completions and /v1/models through the official openai client, against a real server."""

import base64
import json
import threading

import httpx
import pytest
from openai import AuthenticationError, BadRequestError, OpenAI

from tests.api.conftest import KEY
from tests.helpers import ROOT, generate_threads, wait_until

IMAGE = ROOT / "assets" / "example_image.png"
AUDIO = ROOT / "assets" / "example_question.wav"


def data_url(path, mime):
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def test_models_lists_the_served_model(api_server):
    assert [m.id for m in api_server.client.models.list()] == ["tiny-random"]


def test_a_text_answer_with_usage(api_server):
    out = api_server.client.chat.completions.create(
        model="tiny-random", messages=[{"role": "user", "content": "Hello there"}], max_tokens=5)
    choice = out.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert out.usage.prompt_tokens > 0 and 0 < out.usage.completion_tokens <= 5


def test_streaming_with_usage_and_a_second_request_reuses_the_prefix(api_server):
    messages = [{"role": "system", "content": "You are terse. " * 20},
                {"role": "user", "content": "Count to three."}]
    stream = api_server.client.chat.completions.create(
        model="tiny-random", messages=messages, stream=True, stream_options={"include_usage": True},
        max_tokens=6, temperature=0)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    again = api_server.client.chat.completions.create(
        model="tiny-random", max_tokens=4,
        messages=messages + [{"role": "assistant", "content": text}, {"role": "user", "content": "Again."}])
    assert again.usage.prompt_tokens_details.cached_tokens > 0


def test_an_image_and_audio_reach_the_model_with_their_adapter(api_server):
    for part, modality in (
            ({"type": "image_url", "image_url": {"url": data_url(IMAGE, "image/png")}}, "vision"),
            ({"type": "input_audio", "input_audio": {"data": base64.b64encode(AUDIO.read_bytes()).decode(),
                                                      "format": "wav"}}, "speech")):
        out = api_server.client.chat.completions.create(
            model="tiny-random", max_tokens=3,
            messages=[{"role": "user", "content": [part, {"type": "text", "text": "What is this?"}]}])
        assert out.choices[0].message.content is not None
        assert api_server.engine.requests[-1][0].modality == modality


def test_the_key_is_required_and_compared(api_server):
    stranger = OpenAI(base_url=f"{api_server.base}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(AuthenticationError) as e:
        stranger.models.list()
    assert "Authorization: Bearer" in e.value.body["message"]
    assert httpx.get(f"{api_server.base}/v1/models").status_code == 401
    assert httpx.get(f"{api_server.base}/").status_code == 200  # the page is not affected


@pytest.mark.parametrize(("body", "sentence"), [
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "data:image/png;base64," + base64.b64encode(b"not an image at all").decode()}}]}]},
     "this is not an image, audio, a video or a PDF"),
    ({"messages": [{"role": "user", "content": [{"type": "mystery"}]}]}, "unknown content part type"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(IMAGE, "image/png")}}] * 3}]}, "the limit is 2"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, "Only n=1"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": 9}, "temperature must be between"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "http://127.0.0.1:1/x.png"}}]}]}, "loopback, private or reserved"),
    ({"messages": []}, "messages must be a non-empty list"),
])
def test_bad_input_gets_the_pages_sentence_as_openai_error(api_server, body, sentence):
    with pytest.raises(BadRequestError) as e:
        api_server.client.chat.completions.create(model="tiny-random", **body)
    assert sentence.lower() in e.value.body["message"].lower()
    assert e.value.body["type"] == "invalid_request_error"


def test_too_large_is_413_and_bad_json_400(api_server):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    big = httpx.post(f"{api_server.base}/v1/chat/completions", headers=headers, content=b"x" * (3 << 20))
    assert big.status_code == 413 and "limit is 2 MB" in big.json()["error"]["message"]
    bad = httpx.post(f"{api_server.base}/v1/chat/completions", headers=headers, content=b"{nope")
    assert bad.status_code == 400 and bad.json()["error"]["message"] == "The request body is not valid JSON."


def test_a_dropped_stream_frees_the_model_within_a_token(api_server):
    api_server.engine.force_length = True
    try:
        headers = {"Authorization": f"Bearer {KEY}"}
        body = {"messages": [{"role": "user", "content": "Go on."}], "stream": True, "max_tokens": 4000}
        with httpx.stream("POST", f"{api_server.base}/v1/chat/completions", headers=headers, json=body) as r:
            for line in r.iter_lines():
                if '"content"' in line and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    break
        assert wait_until(lambda: not generate_threads(), 5)
    finally:
        api_server.engine.force_length = False
    # The model is free again: the next client is served (a stream left suspended held its turn).
    after = api_server.client.with_options(timeout=30).chat.completions.create(
        model="tiny-random", messages=[{"role": "user", "content": "Next"}], max_tokens=2)
    assert after.usage.completion_tokens > 0


def test_round_trip_a_second_app_with_backend_openai_answers_through_this_server(api_server):
    from phi_demo.chat.messages import Turn
    from phi_demo.chat.request import build_request
    from phi_demo.contract import collect
    from phi_demo.engine.remote import OpenAIEngine
    from phi_demo.settings import AppSettings, GenerationSettings

    client = OpenAIEngine(AppSettings(backend="openai", base_url=f"{api_server.base}/v1", api_key=KEY))
    client.load()
    gen = GenerationSettings(max_new_tokens=4)
    for files, modality in (((), "text"), ((str(IMAGE),), "vision"), ((str(AUDIO),), "speech")):
        request = build_request([Turn("user", "What is this?", files)])
        text, stats = collect(client.stream(request, gen, threading.Event()))
        assert stats is not None and stats.new_tokens > 0 and text
        assert api_server.engine.requests[-1][0].modality == modality
