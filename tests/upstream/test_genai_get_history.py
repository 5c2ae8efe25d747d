"""google-genai 3.3.0 ``tests/chats/test_get_history.py``, ported.

The mocked ``Models.generate_content`` / ``generate_content_stream`` become replies
queued on the scripted transport; ``chats.Chats(modules=...)`` becomes a chatledger
client on a SQLite file. Inputs and expected values are the originals, in chatledger's
types (which compare by class, as google-genai's do).
"""

from __future__ import annotations

from typing import Any

import pytest

import chatledger
from chatledger import types
from chatledger.client.transports import ScriptedTransport

AFC_HISTORY = [
    types.Content(
        role="user",
        parts=[types.Part.from_text(text="afc input")],
    ),
    types.Content(
        role="model",
        parts=[types.Part(function_call=types.FunctionCall(name="foo", args={"bar": "baz"}))],
    ),
]


def reply(response: types.GenerateContentResponse) -> dict[str, Any]:
    return response.to_wire()


@pytest.fixture
def generate_content_with_empty_text_part(scripted: ScriptedTransport) -> None:
    scripted.enqueue(
        reply(
            types.GenerateContentResponse(
                candidates=[
                    types.Candidate(
                        content=types.Content(role="model", parts=[types.Part(text="")])
                    )
                ]
            )
        )
    )


@pytest.fixture
def generate_content_empty_content(scripted: ScriptedTransport) -> None:
    scripted.enqueue(reply(types.GenerateContentResponse(candidates=[])))


@pytest.fixture
def generate_content_stream_with_empty_text_part(scripted: ScriptedTransport) -> None:
    scripted.enqueue(
        chunks=[
            reply(
                types.GenerateContentResponse(
                    candidates=[
                        types.Candidate(
                            content=types.Content(role="model", parts=[types.Part(text="")]),
                            finish_reason=types.FinishReason.STOP,
                        )
                    ]
                )
            )
        ]
    )


@pytest.fixture
def generate_content_stream_empty_content(scripted: ScriptedTransport) -> None:
    scripted.enqueue(chunks=[reply(types.GenerateContentResponse(candidates=[]))])


def test_history_start_with_valid_model_content(ledger: chatledger.Client) -> None:
    history = [
        types.Content(
            role="model",
            parts=[types.Part.from_text(text="Hello there! how can I help you?")],
        ),
        types.Content(role="user", parts=[types.Part.from_text(text="Hello")]),
    ]

    chat = ledger.chats.create(model="gemini-2.5-flash", history=history)

    assert chat.get_history() == history
    assert chat.get_history(curated=True) == history


def test_history_start_with_invalid_model_content(ledger: chatledger.Client) -> None:
    history = [
        types.Content(role="model", parts=[]),
        types.Content(role="user", parts=[types.Part.from_text(text="Hello")]),
    ]

    chat = ledger.chats.create(model="gemini-2.5-flash", history=history)

    assert chat.get_history() == history
    assert chat.get_history(curated=True) == [
        types.Content(role="user", parts=[types.Part.from_text(text="Hello")])
    ]


def test_history_with_consecutive_valid_user_inputs(ledger: chatledger.Client) -> None:
    history = [
        types.Content(role="user", parts=[types.Part.from_text(text="user input 1")]),
        types.Content(role="user", parts=[types.Part.from_text(text="user input 2")]),
    ]

    chat = ledger.chats.create(model="gemini-2.5-flash", history=history)

    assert chat.get_history() == history
    assert chat.get_history(curated=True) == history


def test_history_with_valid_and_invalid_user_inputs(ledger: chatledger.Client) -> None:
    history = [
        types.Content(role="user", parts=[types.Part.from_text(text="user input 1")]),
        types.Content(role="user", parts=[]),  # invalid content
        types.Content(role="user", parts=[types.Part.from_text(text="user input 2")]),
    ]

    chat = ledger.chats.create(model="gemini-2.5-flash", history=history)

    assert chat.get_history() == history
    assert chat.get_history(curated=True) == history


def test_history_with_consecutive_valid_model_outputs(ledger: chatledger.Client) -> None:
    history = [
        types.Content(role="model", parts=[types.Part.from_text(text="model output 1")]),
        types.Content(role="model", parts=[types.Part.from_text(text="model output 2")]),
    ]

    chat = ledger.chats.create(model="gemini-2.5-flash", history=history)

    assert chat.get_history() == history
    assert chat.get_history(curated=True) == history


def test_history_with_valid_and_invalid_model_output(ledger: chatledger.Client) -> None:
    history = [
        types.Content(role="model", parts=[types.Part.from_text(text="model output 1")]),
        types.Content(role="model", parts=[]),  # invalid content
        types.Content(role="model", parts=[types.Part.from_text(text="model output 2")]),
    ]

    chat = ledger.chats.create(model="gemini-2.5-flash", history=history)

    assert chat.get_history() == history
    assert chat.get_history(curated=True) == []


def test_history_end_with_user_input(ledger: chatledger.Client) -> None:
    history = [
        types.Content(role="user", parts=[types.Part.from_text(text="user input 1")]),
        types.Content(role="model", parts=[types.Part.from_text(text="model output")]),
        types.Content(role="user", parts=[types.Part.from_text(text="user input 2")]),
    ]

    chat = ledger.chats.create(model="gemini-2.5-flash", history=history)

    assert chat.get_history() == history
    assert chat.get_history(curated=True) == history


def test_unrecognized_role_in_history(ledger: chatledger.Client) -> None:
    history = [
        types.Content(role="user", parts=[types.Part.from_text(text="Hello")]),
        types.Content(
            role="invalid_role",
            parts=[types.Part.from_text(text="Hello there! how can I help you?")],
        ),
    ]

    with pytest.raises(ValueError) as e:
        ledger.chats.create(model="gemini-2.5-flash", history=history)

    assert "Role must be user or model" in str(e)


def test_sync_chat_create(ledger: chatledger.Client) -> None:
    history = [
        types.Content(role="user", parts=[types.Part.from_text(text="user input turn 1")]),
        types.Content(role="model", parts=[types.Part.from_text(text="model output turn 1")]),
        types.Content(role="model", parts=[types.Part.from_text(text="model output turn 1")]),
        types.Content(role="model", parts=[types.Part.from_text(text="user input turn 2")]),
    ]

    chat = ledger.chats.create(model="gemini-2.5-flash", history=history)

    assert chat.get_history() == history
    assert chat.get_history(curated=True) == history


def test_async_chat_create(ledger: chatledger.Client) -> None:
    history = [
        types.Content(role="user", parts=[types.Part.from_text(text="user input turn 1")]),
        types.Content(role="model", parts=[types.Part.from_text(text="model output turn 1")]),
        types.Content(role="model", parts=[types.Part.from_text(text="model output turn 1")]),
        types.Content(role="model", parts=[types.Part.from_text(text="user input turn 2")]),
        types.Content(role="model", parts=[types.Part.from_text(text="model output turn 2")]),
    ]

    chat = ledger.aio.chats.create(model="gemini-2.5-flash", history=history)

    assert chat.get_history() == history
    assert chat.get_history(curated=True) == history


HISTORY_DICT = [
    {"role": "user", "parts": [{"text": "user input turn 1"}]},
    {"role": "model", "parts": [{"text": "model output turn 1"}]},
    {"role": "user", "parts": [{"text": "user input turn 2"}]},
    {"role": "model", "parts": [{"text": "model output turn 2"}]},
]
EXPECTED_FROM_DICT = [
    types.Content(role="user", parts=[types.Part.from_text(text="user input turn 1")]),
    types.Content(role="model", parts=[types.Part.from_text(text="model output turn 1")]),
    types.Content(role="user", parts=[types.Part.from_text(text="user input turn 2")]),
    types.Content(role="model", parts=[types.Part.from_text(text="model output turn 2")]),
]


def test_sync_chat_create_with_history_dict(ledger: chatledger.Client) -> None:
    chat = ledger.chats.create(model="gemini-2.5-flash", history=HISTORY_DICT)

    assert chat.get_history() == EXPECTED_FROM_DICT
    assert chat.get_history(curated=True) == EXPECTED_FROM_DICT


def test_async_chat_create_with_history_dict(ledger: chatledger.Client) -> None:
    chat = ledger.aio.chats.create(model="gemini-2.5-flash", history=HISTORY_DICT)

    assert chat.get_history() == EXPECTED_FROM_DICT
    assert chat.get_history(curated=True) == EXPECTED_FROM_DICT


def test_history_with_invalid_turns(ledger: chatledger.Client) -> None:
    valid_input = types.Content(role="user", parts=[types.Part.from_text(text="Hello")])
    valid_output = [
        types.Content(
            role="model",
            parts=[types.Part.from_text(text="Hello there! how can I help you?")],
        ),
        types.Content(
            role="model",
            parts=[types.Part.from_text(text="Hello there! how can I help you?")],
        ),
    ]
    invalid_input = types.Content(
        role="user",
        parts=[types.Part.from_text(text="a input will be rejected by the model")],
    )
    invalid_output = types.Content(role="model", parts=[])
    comprehensive_history = [valid_input, *valid_output, invalid_input, invalid_output]
    curated_history = [valid_input, *valid_output]

    chat = ledger.chats.create(model="gemini-2.5-flash", history=comprehensive_history)

    assert chat.get_history() == comprehensive_history
    assert chat.get_history(curated=True) == curated_history


@pytest.mark.usefixtures("generate_content_with_empty_text_part")
def test_chat_with_empty_text_part(ledger: chatledger.Client) -> None:
    chat = ledger.chats.create(model="gemini-2.5-flash")

    chat.send_message("Hello")

    expected_comprehensive_history = [
        types.UserContent(parts=[types.Part.from_text(text="Hello")]),
        types.Content(parts=[types.Part(text="")], role="model"),
    ]
    assert chat.get_history() == expected_comprehensive_history
    assert chat.get_history(curated=True) == expected_comprehensive_history


@pytest.mark.usefixtures("generate_content_empty_content")
def test_chat_with_empty_content(ledger: chatledger.Client) -> None:
    chat = ledger.chats.create(model="gemini-2.5-flash")

    chat.send_message("Hello")

    expected_comprehensive_history = [
        types.UserContent(parts=[types.Part.from_text(text="Hello")]),
        types.Content(parts=[], role="model"),
    ]
    assert chat.get_history() == expected_comprehensive_history
    assert not chat.get_history(curated=True)


@pytest.mark.usefixtures("generate_content_stream_with_empty_text_part")
def test_chat_stream_with_empty_text_part(ledger: chatledger.Client) -> None:
    chat = ledger.chats.create(model="gemini-2.5-flash")

    chunks = chat.send_message_stream("Hello")
    for _chunk in chunks:
        pass

    expected_comprehensive_history = [
        types.UserContent(parts=[types.Part.from_text(text="Hello")]),
        types.Content(parts=[types.Part(text="")], role="model"),
    ]
    assert chat.get_history() == expected_comprehensive_history
    assert chat.get_history(curated=True) == expected_comprehensive_history


@pytest.mark.usefixtures("generate_content_stream_empty_content")
def test_chat_stream_with_empty_content(ledger: chatledger.Client) -> None:
    chat = ledger.chats.create(model="gemini-2.5-flash")

    chunks = chat.send_message_stream("Hello")
    for _chunk in chunks:
        pass

    expected_comprehensive_history = [
        types.UserContent(parts=[types.Part.from_text(text="Hello")]),
        types.Content(parts=[], role="model"),
    ]
    assert chat.get_history() == expected_comprehensive_history
    assert not chat.get_history(curated=True)
