"""Every bad input through the /chat API: the sentence the caller gets, and the server keeps serving."""

import pytest
from gradio_client import handle_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.badinputs import MESSAGE_SHAPES, NAMES, cases

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    return cases(tmp_path_factory.mktemp("bad-api"))


@pytest.mark.parametrize("name", NAMES)
def test_api_path(server, catalogue, name):
    message, expected = catalogue[name]
    payload = {"text": message["text"], "files": [handle_file(f) for f in message["files"]]}
    if expected is None:
        answer = server.client.predict(payload, [], api_name="/chat", max_new_tokens=4)
        assert isinstance(answer, str)
        return
    with pytest.raises(Exception) as err:
        server.client.predict(payload, [], api_name="/chat", max_new_tokens=4)
    assert expected in str(err.value)


def test_still_serving_after_the_catalogue(server):
    assert isinstance(server.client.predict({"text": "Hello", "files": []}, [], api_name="/chat", max_new_tokens=4), str)


GRADIO_GENERIC = "upstream Gradio app has raised an exception"


@pytest.mark.parametrize("name", list(MESSAGE_SHAPES))
def test_a_message_that_is_not_text_and_files_gets_a_sentence(server, name):
    message, expected = MESSAGE_SHAPES[name]
    if expected is None:
        assert isinstance(server.client.predict(message, [], api_name="/chat", max_new_tokens=2), str)
        return
    with pytest.raises(Exception) as err:
        server.client.predict(message, [], api_name="/chat", max_new_tokens=2)
    assert expected in str(err.value) and GRADIO_GENERIC not in str(err.value)


scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=12) | st.sampled_from(["/etc/passwd", "", "image.png", "text", "files"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.sampled_from(["text", "files", "path", "file", "type"])
                                             | st.text(max_size=5), inner, max_size=3), max_leaves=8)
messages = json_values | st.fixed_dictionaries({}, optional={"text": json_values, "files": json_values})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_whatever_json_the_message_is_the_caller_gets_an_answer_or_a_sentence(server, message):
    """Through the real server: Gradio hands /chat's message over as it came, and the
    handler answers or says what is wrong; never Gradio's generic failure."""
    try:
        answer = server.client.predict(message, [], api_name="/chat", max_new_tokens=1)
    except Exception as e:  # noqa: BLE001 - the client raises its AppError with the sentence
        assert str(e).strip() and GRADIO_GENERIC not in str(e), (message, str(e))
    else:
        assert isinstance(answer, str)
