"""Flows against the real Gradio server, driven by gradio_client."""

import pytest
from gradio_client import handle_file

from tests.helpers import ROOT, generate_threads, wait_until

pytestmark = pytest.mark.server
IMAGE = str(ROOT / "assets" / "example_image.png")
AUDIO = str(ROOT / "assets" / "example_question.wav")


def chat(server, text, files=(), history=(), **settings):
    server.engine.requests.clear()
    job = server.client.submit({"text": text, "files": [handle_file(f) for f in files]}, list(history),
                               api_name="/chat", **settings)
    outputs = list(job)
    return outputs, server.engine.requests[-1][0] if server.engine.requests else None


def test_text_turn_streams_several_partial_updates(server):
    server.engine.force_length = True
    try:
        outputs, request = chat(server, "Tell me a story", max_new_tokens=300)
    finally:
        server.engine.force_length = False
    assert len(outputs) >= 3
    assert all(b.startswith(a) for a, b in zip(outputs, outputs[1:]))  # each update grows the answer
    assert request.modality == "text" and request.prompt.endswith("<|user|>Tell me a story<|end|><|assistant|>")


@pytest.mark.parametrize("files,modality,n_img,n_aud", [((IMAGE,), "vision", 1, 0), ((AUDIO,), "speech", 0, 1),
                                                        ((IMAGE, AUDIO), "vision", 1, 1)])
def test_media_turns(server, files, modality, n_img, n_aud):
    outputs, request = chat(server, "What is this?", files, max_new_tokens=8)
    assert outputs and outputs[-1]
    assert request.modality == modality and len(request.images) == n_img and len(request.audios) == n_aud
    assert request.prompt.count("<|image|>") == n_img and request.prompt.count("<|audio|>") == n_aud


def test_second_turn_still_sees_first_turns_image(server):
    history = [
        {"role": "user", "content": [{"type": "file", "file": handle_file(IMAGE)}, {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": "A house."},
    ]
    outputs, request = chat(server, "What colour is its roof?", history=history, max_new_tokens=8)
    assert outputs
    assert len(request.images) == 1 and request.modality == "vision"
    assert request.prompt.startswith("<|system|>")
    assert "<|user|><|image|>What is this?<|end|><|assistant|>A house.<|end|><|user|>What colour is its roof?" in request.prompt


CLIP = str(ROOT / "assets" / "example_clip.mp4")
REPORT = str(ROOT / "assets" / "example_report.pdf")


def test_a_video_then_a_follow_up_about_it(server):
    """The server's limits take 2 frames of the 8 s clip, then its sound; the follow-up sends
    the clip again as history and is answered from the same frames."""
    outputs, first = chat(server, "What happens?", (CLIP,), max_new_tokens=6)
    assert outputs and [m.kind for m in first.media] == ["image"] * 2 + ["audio"]
    history = [{"role": "user", "content": [{"type": "file", "file": handle_file(CLIP)},
                                            {"type": "text", "text": "What happens?"}]},
               {"role": "assistant", "content": outputs[-1]}]
    outputs, second = chat(server, "And the voice?", history=history, max_new_tokens=6)
    assert outputs and [m.key for m in second.media] == [m.key for m in first.media]


def test_a_pdf_page_named_in_the_question(server):
    outputs, request = chat(server, "What does the chart on page 2 show?", (REPORT,), max_new_tokens=6)
    assert outputs and len(request.images) == 1 and request.modality == "vision"
    assert "[Text of example_report.pdf, page 2]\nUnits sold per month" in request.prompt


def test_stop_mid_answer_ends_generation(server):
    server.engine.force_length = True
    try:
        job = server.client.submit({"text": "Go on forever", "files": []}, [], api_name="/chat", max_new_tokens=8000)
        assert wait_until(lambda: len(job.outputs()) >= 3, 60)
        assert generate_threads()
        job.cancel()
        assert wait_until(lambda: not generate_threads(), 10), "the model kept generating after Stop"
    finally:
        server.engine.force_length = False
    # The server keeps serving.
    outputs, _ = chat(server, "Still there?", max_new_tokens=4)
    assert outputs


@pytest.mark.parametrize("message,expected", [
    ({"text": "   ", "files": []}, "The message is empty"),
    ({"text": "", "files": []}, "The message is empty"),
])
def test_bad_message_gets_a_sentence(server, message, expected):
    with pytest.raises(Exception, match=expected):
        server.client.predict(message, [], api_name="/chat")


def test_too_many_images_states_the_limit(server):
    with pytest.raises(Exception, match="4 images; the limit is 3"):
        server.client.predict({"text": "x", "files": [handle_file(IMAGE)] * 4}, [], api_name="/chat")


def test_history_path_that_was_never_uploaded_is_refused(server):
    history = [{"role": "user", "content": [{"type": "file", "file": {"path": "/etc/passwd.png"}}]},
               {"role": "assistant", "content": "ok"}]
    with pytest.raises(Exception, match="not uploaded to this app"):
        server.client.predict({"text": "and now?", "files": []}, history, api_name="/chat")


def test_settings_reach_the_engine(server):
    _, _ = chat(server, "hi", max_new_tokens=5, do_sample=True, temperature=0.3, seed=11,
                system_prompt="Answer in French.")
    request, gen, attn = server.engine.requests[-1]
    assert gen.max_new_tokens == 5 and gen.do_sample and gen.temperature == 0.3 and gen.seed == 11
    assert request.prompt.startswith("<|system|>Answer in French.<|end|>")
    assert attn == "sdpa"
