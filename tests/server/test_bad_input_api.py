"""Every bad input through the /chat API: the sentence the caller gets, and the server keeps serving."""

import pytest
from gradio_client import handle_file

from tests.badinputs import NAMES, cases

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
