"""Whatever JSON a client sends as message, history and settings, the request path answers
or says in a sentence what is wrong: the only error that comes out is UserInputError."""

import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from phi_demo.chat.request import Limits
from phi_demo.chat.turn import REQUEST_SETTINGS, prepare
from phi_demo.errors import UserInputError

UPLOADS = Path(tempfile.mkdtemp(prefix="phi-demo-fuzz-"))
Image.new("RGB", (40, 30), (200, 10, 10)).save(UPLOADS / "image.png")
Image.new("RGB", (4000, 2), (10, 10, 10)).save(UPLOADS / "banner", "PNG")  # no extension, extreme shape
sf.write(UPLOADS / "clip.wav", (0.2 * np.sin(np.arange(8000) / 5)).astype(np.float32), 16000)
(UPLOADS / "notes.png").write_text("not a picture")
LIMITS = Limits(max_images=3, max_audio_clips=2, max_audio_seconds=5, allowed_roots=(str(UPLOADS),))

paths = st.sampled_from([str(UPLOADS / n) for n in ("image.png", "banner", "clip.wav", "notes.png", "gone.png")]
                        + ["/etc/passwd", "", "a\x00b", str(UPLOADS), "../../etc/hosts"])
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | paths
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
file_dicts = st.fixed_dictionaries({}, optional={"type": st.sampled_from(["file", "text", "image"]) | json_values,
                                                 "path": paths | json_values, "file": paths | json_values,
                                                 "text": json_values, "mime_type": json_values})
parts = json_values | file_dicts
messages = st.fixed_dictionaries({}, optional={
    "role": st.sampled_from(["user", "assistant", "system", "tool"]) | json_values,
    "content": parts | st.lists(parts, max_size=4), "metadata": json_values})
histories = json_values | st.lists(messages | json_values, max_size=5)
new_messages = json_values | st.fixed_dictionaries({}, optional={
    "text": st.text(max_size=40) | json_values, "files": st.lists(paths | file_dicts, max_size=3) | json_values})
request_settings = st.dictionaries(st.sampled_from(REQUEST_SETTINGS) | st.text(max_size=6), json_values, max_size=4)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(new_messages, histories, request_settings)
def test_only_user_input_errors_come_out(message, history, values):
    try:
        prepared = prepare(LIMITS, message, history, values)
    except UserInputError as e:
        assert str(e).strip(), "a refusal must say why"
        return
    assert prepared.request.prompt.endswith("<|assistant|>")
    assert len(prepared.request.media) == len(prepared.request.images) + len(prepared.request.audios)


def test_the_request_settings_are_checked_by_one_model():
    """/chat's and the page's settings: system_prompt, then GenerationSettings refuses what is
    unknown or out of range, in a sentence."""
    message = {"text": "hi", "files": []}
    for values, sentence in [
        ({"max_tokens": 5}, "Unknown settings: max_tokens; known are max_new_tokens"),
        ({"min_new_tokens": 5}, "Unknown settings: min_new_tokens"),  # the benchmark's own
        ({1: 2}, "Unknown settings: 1"),
        ({"temperature": "9"}, "The setting temperature must be between 0.01 and 2.0; it was 9."),
        ({"system_prompt": 3}, "The system prompt must be text."),
        ([("seed", 1)], "The settings must be a table of named values."),
    ]:
        try:
            prepare(LIMITS, message, [], values)
        except UserInputError as e:
            assert str(e).startswith(sentence), (values, str(e))
        else:
            raise AssertionError(f"{values} was accepted")
    prepared = prepare(LIMITS, message, [], {"system_prompt": "Be brief.", "seed": "-1", "max_new_tokens": "7"})
    assert prepared.gen.seed is None and prepared.gen.max_new_tokens == 7
    assert prepared.request.prompt.startswith("<|system|>Be brief.<|end|>")
