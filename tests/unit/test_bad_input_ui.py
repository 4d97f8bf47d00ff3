"""Every bad input through the page's send handler: the sentence the user sees, and the chat
and the message box exactly as they were. Good inputs of awkward kinds get an answer."""

import copy
import re

import gradio as gr
import pytest

from phi_demo.settings import AppSettings
from phi_demo.ui.chat import ChatHandlers
from tests.badinputs import LIMITS, MESSAGE_SHAPES, NAMES, cases

GEN = {"system_prompt": "sys", "max_new_tokens": 4, "do_sample": False, "temperature": 0.7, "top_p": 0.95,
       "top_k": 50, "repetition_penalty": 1.0, "seed": -1}
HISTORY = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]},
           {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]}]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    return cases(tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="module")
def handlers(engine):
    return ChatHandlers(engine, AppSettings(model="tiny-random", **LIMITS))


def test_catalogue_names_are_all_tested(catalogue):
    assert sorted(catalogue) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_ui_path(handlers, catalogue, name):
    message, expected = catalogue[name]
    history = copy.deepcopy(HISTORY)
    outputs = []
    if expected is None:
        outputs = list(handlers.submit(message, history, GEN))
        final, _ = outputs[-1]
        assert final[:2] == HISTORY and final[2]["role"] == "user" and final[3]["role"] == "assistant"
        return
    with pytest.raises(gr.Error) as err:
        for out in handlers.submit(message, history, GEN):
            outputs.append(out)
    assert expected in str(err.value)
    # Either nothing was shown, or the last thing shown is the chat as it was, message back in the box.
    assert outputs == [] or (outputs[-1][0] == HISTORY and outputs[-1][1]["value"] == message)
    assert history == HISTORY


@pytest.mark.parametrize("name", list(MESSAGE_SHAPES))
def test_a_message_of_another_shape(handlers, name):
    """The page's box always sends {text, files}; /chat's callers may not. The same handler
    path gives them a sentence, and the chat stays as it was."""
    message, expected = MESSAGE_SHAPES[name]
    if expected is None:
        assert list(handlers.submit(message, [], GEN))[-1][0][-1]["metadata"]["title"].startswith("📊")
        return
    history = copy.deepcopy(HISTORY)
    outputs = []
    with pytest.raises(gr.Error, match=re.escape(expected)):
        for out in handlers.submit(message, history, GEN):
            outputs.append(out)
    # The page empties the box on send, so the message goes back into it and the chat is as it was.
    assert [shown for shown, _ in outputs] == [HISTORY] and history == HISTORY
