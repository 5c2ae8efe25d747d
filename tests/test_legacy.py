"""The legacy ``google.generativeai`` surface: ``chatledger.legacy`` (docs/legacy.md).

Behaviour against the loopback Gemini-protocol server, with the log on a real SQLite
file: ``len(history) == 2`` after one send; a stream ends in the same state as a plain
send; ``history`` (and ``rewind``, sends, the setter) refused while a stream is
unfinished; a broken stream until ``rewind()``; the history setter recorded as an event
and visible from another process; rewind and rewind on an empty history; async sends
and streams; automatic function calling on and off; the content forms
google.generativeai accepts. ``tests/test_legacy_differential.py`` runs the same
scenarios on google-generativeai 0.8.6 and compares.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from google.genai import types as genai_types

import chatledger
from chatledger.errors import ChatStateError, InvalidInputError, ModelTimeoutError, ServerError
from chatledger.legacy import (
    AsyncGenerateContentResponse,
    BlockedPromptException,
    BrokenResponseError,
    GenerateContentResponse,
    GenerativeModel,
    IncompleteIterationError,
    StopCandidateException,
)
from chatledger.types import Part
from tests.support.gemini_server import GeminiServer, Reply, text_response
from tests.support.legacy import (
    API_KEY,
    MERGED,
    MODEL,
    STREAM_CHUNKS,
    aledger,
    chunk,
    get_weather,
    gg_configured,
    ledger,
    model,
    types_of,
    user,
    wire,
)

# The shared fixtures, used by name in the tests' arguments.
FIXTURES = (aledger, gg_configured, ledger)


def test_one_send_makes_a_history_of_two(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    """The seed's example: ``len(chat.history) == 2`` after one send."""
    gemini_server.reply_text("Hello! How can I assist you today?")
    session = GenerativeModel(MODEL, client=ledger).start_chat()

    response = session.send_message("Hello")

    assert isinstance(response, GenerateContentResponse)
    assert response.text == "Hello! How can I assist you today?"
    assert session.last is response
    assert len(session.history) == 2
    assert wire(session.history) == [user("Hello"), model("Hello! How can I assist you today?")]
    assert session.last is None  # as google.generativeai: reading the history takes it
    assert types_of(session) == [
        "conversation_started",
        "user_message_added",
        "model_call_started",
        "model_responded",
    ]
    assert session.chat.verify().ok


def test_model_name_model_and_id(ledger: chatledger.Client) -> None:
    generative = GenerativeModel("gemini-1.5-flash", client=ledger)
    assert generative.model_name == "models/gemini-1.5-flash"
    assert (
        GenerativeModel("models/gemini-1.5-flash", client=ledger).model_name
        == "models/gemini-1.5-flash"
    )
    session = generative.start_chat()
    assert session.model is generative
    assert session.id == session.chat.id
    assert ledger.chats.get(session.id).model == "gemini-1.5-flash"
    assert session.enable_automatic_function_calling is False
    assert session.last is None
    assert session.history == []


@pytest.mark.parametrize("call", ["iterate", "resolve"])
def test_a_stream_ends_in_the_same_state_as_a_plain_send(
    ledger: chatledger.Client, gemini_server: GeminiServer, call: str
) -> None:
    """Once iteration is complete, the response and the session are as with stream=False."""
    generative = GenerativeModel(MODEL, client=ledger)
    plain = generative.start_chat()
    gemini_server.reply_json(MERGED)
    plain_response = plain.send_message("Tell me a story")

    streamed = generative.start_chat()
    gemini_server.reply_sse(STREAM_CHUNKS)
    response = streamed.send_message("Tell me a story", stream=True)
    if call == "iterate":
        texts = [piece.text for piece in response]
        assert texts == ["Once ", "upon ", "a time."]
    else:
        response.resolve()
    assert response.done

    assert response.text == plain_response.text == "Once upon a time."
    assert response.to_dict() == plain_response.to_dict()
    assert response.usage_metadata == plain_response.usage_metadata
    assert response.usage_metadata.total_token_count == 7
    assert [c.finish_reason for c in response.candidates] == ["STOP"]
    assert (
        wire(streamed.history)
        == wire(plain.history)
        == [
            user("Tell me a story"),
            model("Once upon a time."),
        ]
    )
    assert streamed.last is None  # taken into the history, as google.generativeai
    # Iterating again gives the same chunks (nothing is re-sent).
    assert [piece.text for piece in response] == ["Once ", "upon ", "a time."]
    assert len(gemini_server.requests) == 2


def test_the_first_chunk_is_read_at_once_and_iteration_reads_ahead(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    """As google.generativeai: send_message(stream=True) makes the request and reads the
    first chunk at once (it returns while the server still holds the second), and
    iterating reads one chunk ahead, so the response is done when its last chunk is
    yielded."""
    gate = threading.Event()
    gemini_server.reply_sse([chunk("Hel"), chunk("lo", "STOP")], gates={1: gate})
    session = GenerativeModel(MODEL, client=ledger).start_chat()
    try:
        response = session.send_message("Hi", stream=True)
        assert response.result.text == "Hel"
        assert not gate.is_set() and not response.done
    finally:
        gate.set()
    iterator = iter(response)
    assert next(iterator).text == "Hel"
    assert response.result.text == "Hello"  # the second chunk was read ahead
    assert next(iterator).text == "lo"
    assert response.done
    assert list(iterator) == []
    assert response.text == "Hello"


def test_history_is_refused_while_a_stream_is_unfinished(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    gemini_server.reply_sse(STREAM_CHUNKS)
    session = GenerativeModel(MODEL, client=ledger).start_chat()
    response = session.send_message("Tell me a story", stream=True)

    with pytest.raises(
        IncompleteIterationError, match=r"streamed response is not finished.*history"
    ):
        _ = session.history
    with pytest.raises(IncompleteIterationError, match=r"not finished.*rewinding"):
        session.rewind()
    with pytest.raises(IncompleteIterationError, match=r"not finished.*sending another message"):
        session.send_message("next")
    with pytest.raises(IncompleteIterationError, match="not finished"):
        session.history = []
    with pytest.raises(IncompleteIterationError, match="not finished"):
        _ = response.text
    with pytest.raises(IncompleteIterationError, match="not finished"):
        _ = response.candidates
    # What has arrived so far is readable; last is the response in progress.
    assert session.last is response
    assert response.result.text == "Once "

    response.resolve()
    assert len(session.history) == 2
    assert len(gemini_server.requests) == 1


def test_an_abandoned_stream_leaves_the_history_and_is_recorded(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    gemini_server.reply_text("First answer.")
    gemini_server.reply_sse(STREAM_CHUNKS)
    gemini_server.reply_text("Third answer.")
    session = GenerativeModel(MODEL, client=ledger).start_chat()
    session.send_message("First")
    response = session.send_message("Second", stream=True)
    response.close()

    assert response.done
    with pytest.raises(ChatStateError, match="abandoned"):
        response.resolve()
    assert wire(session.history) == [user("First"), model("First answer.")]
    assert session.send_message("Third").text == "Third answer."
    assert gemini_server.requests[-1].body["contents"] == [
        user("First"),
        model("First answer."),
        user("Third"),
    ]
    failed = [e.data for e in session.chat.events() if e.type == "model_call_failed"]
    assert [f.error.kind for f in failed] == ["abandoned"]  # type: ignore[attr-defined]
    assert failed[0].partial["candidates"][0]["content"]["parts"] == [{"text": "Once "}]  # type: ignore[attr-defined]


def test_a_stream_that_fails_is_broken_until_rewound(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    """As google.generativeai: ``history`` and sends raise BrokenResponseError until
    ``rewind()``, which takes back the broken turn only; the failed attempt stays in the
    log and the history never held it."""
    error = {"error": {"code": 500, "message": "internal", "status": "INTERNAL"}}
    gemini_server.reply_text("Fine.")
    gemini_server.reply_sse([chunk("Par"), json.dumps(error)])
    session = GenerativeModel(MODEL, client=ledger).start_chat()
    session.send_message("First")
    response = session.send_message("Hi", stream=True)
    with pytest.raises(ServerError):
        response.resolve()
    assert response.done
    with pytest.raises(BrokenResponseError) as broken:
        _ = session.history
    assert isinstance(broken.value.__cause__, ServerError)
    with pytest.raises(BrokenResponseError):
        session.send_message("Again")
    assert session.last is response
    assert types_of(session)[-1] == "model_call_failed"
    events_before = len(session.chat.events())

    sent, received = session.rewind()
    assert sent.to_wire() == user("Hi")
    assert received.to_wire() == model("Par")
    assert wire(session.history) == [user("First"), model("Fine.")]
    assert len(session.chat.events()) == events_before  # the failed turn was never in the history
    assert len(gemini_server.requests) == 2


def test_setting_the_history_is_an_event_seen_from_another_process(
    ledger: chatledger.Client, gemini_server: GeminiServer, db_path: Path
) -> None:
    gemini_server.reply_text("Hi")
    gemini_server.reply_text("Blue.")
    session = GenerativeModel(MODEL, client=ledger).start_chat()
    session.send_message("Hello")
    session.history = [
        {"role": "user", "parts": ["What is your favourite colour?"]},
        {"role": "model", "parts": [{"text": "Green."}]},
    ]
    expected = [user("What is your favourite colour?"), model("Green.")]
    assert wire(session.history) == expected
    assert session.last is None
    assert types_of(session)[-1] == "history_replaced"

    script = (
        "import json, sys, chatledger\n"
        "chat = chatledger.Client(store=sys.argv[1]).chats.get(sys.argv[2])\n"
        "print(json.dumps([c.to_wire() for c in chat.get_history()]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(db_path), session.id],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout) == expected

    # The next send carries the new history.
    assert session.send_message("Really?").text == "Blue."
    assert gemini_server.requests[-1].body["contents"] == [*expected, user("Really?")]
    assert len(session.history) == 4


def test_setting_an_invalid_history_records_nothing(ledger: chatledger.Client) -> None:
    session = GenerativeModel(MODEL, client=ledger).start_chat()
    before = types_of(session)
    for bad in (
        [{"role": "system", "parts": ["x"]}],
        [{"role": "user"}],
        "not a list",
        [{"role": "user", "parts": [{"nonsense": 1}]}],
    ):
        with pytest.raises(InvalidInputError):
            session.history = bad
    assert types_of(session) == before


def test_start_chat_with_a_history(ledger: chatledger.Client, gemini_server: GeminiServer) -> None:
    gemini_server.reply_text("Yes.")
    history = [{"role": "user", "parts": "Hi"}, {"role": "model", "parts": ["Hello", "there"]}]
    session = GenerativeModel(MODEL, client=ledger).start_chat(history=history)
    assert wire(session.history) == [user("Hi"), model("Hello", "there")]
    session.send_message("Still there?")
    assert gemini_server.requests[0].body["contents"] == [
        user("Hi"),
        model("Hello", "there"),
        user("Still there?"),
    ]


def test_rewind(ledger: chatledger.Client, gemini_server: GeminiServer) -> None:
    gemini_server.reply_text("One.")
    gemini_server.reply_text("Two.")
    gemini_server.reply_text("Two again.")
    session = GenerativeModel(MODEL, client=ledger).start_chat()
    session.send_message("First")
    session.send_message("Second")

    sent, received = session.rewind()
    assert (sent.to_wire(), received.to_wire()) == (user("Second"), model("Two."))
    assert wire(session.history) == [user("First"), model("One.")]
    assert session.last is None  # as google.generativeai after a rewind
    assert types_of(session)[-1] == "turn_rewound"
    # The log keeps the rewound turn; the next request does not carry it.
    session.send_message("Second, again")
    assert gemini_server.requests[-1].body["contents"] == [
        user("First"),
        model("One."),
        user("Second, again"),
    ]


def test_rewind_on_an_empty_history_is_a_clear_error(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    session = GenerativeModel(MODEL, client=ledger).start_chat()
    with pytest.raises(
        ChatStateError, match=r"rewind\(\): the history of conversation .* is empty"
    ):
        session.rewind()
    gemini_server.reply_text("One.")
    session.send_message("First")
    session.rewind()
    with pytest.raises(ChatStateError, match="is empty"):
        session.rewind()
    assert types_of(session)[-1] == "turn_rewound"


async def test_send_message_async(aledger: chatledger.Client, gemini_server: GeminiServer) -> None:
    ledger = aledger
    gemini_server.reply_text("Async hello.")
    gemini_server.reply_sse(STREAM_CHUNKS)
    gemini_server.reply_text("Sync again.")
    session = GenerativeModel(MODEL, client=ledger).start_chat()

    response = await session.send_message_async("Hello")
    assert isinstance(response, AsyncGenerateContentResponse)
    assert response.text == "Async hello."
    assert session.last is response
    assert len(session.history) == 2
    assert session.last is None

    streamed = await session.send_message_async("Tell me a story", stream=True)
    with pytest.raises(IncompleteIterationError):
        _ = session.history
    with pytest.raises(TypeError, match="async for"):
        iter(streamed)
    assert [piece.text async for piece in streamed] == ["Once ", "upon ", "a time."]
    assert streamed.text == "Once upon a time."
    assert streamed.usage_metadata.total_token_count == 7
    assert len(session.history) == 4

    # The sync and async sends share one conversation, one log.
    assert (await asyncio.to_thread(session.send_message, "And sync?")).text == "Sync again."
    assert wire(session.history) == [
        user("Hello"),
        model("Async hello."),
        user("Tell me a story"),
        model("Once upon a time."),
        user("And sync?"),
        model("Sync again."),
    ]
    assert types_of(session).count("user_message_added") == 3


async def test_async_stream_resolve_and_close(
    aledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    ledger = aledger
    gemini_server.reply_sse(STREAM_CHUNKS)
    gemini_server.reply_sse(STREAM_CHUNKS)
    session = GenerativeModel(MODEL, client=ledger).start_chat()
    first = await session.send_message_async("One", stream=True)
    await first.resolve()
    assert first.text == "Once upon a time."
    second = await session.send_message_async("Two", stream=True)
    await second.aclose()
    assert len(session.history) == 2
    assert types_of(session)[-1] == "model_call_failed"


def test_automatic_function_calling_on(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    gemini_server.reply_json(
        text_response(parts=[{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}])
    )
    gemini_server.reply_text("It is sunny in Paris.")
    generative = GenerativeModel(MODEL, tools=[get_weather], client=ledger)
    session = generative.start_chat(enable_automatic_function_calling=True)
    assert session.enable_automatic_function_calling is True

    response = session.send_message("Weather in Paris?")

    assert response.text == "It is sunny in Paris."
    history = wire(session.history)
    assert history == [
        user("Weather in Paris?"),
        {
            "role": "model",
            "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}],
        },
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "name": "get_weather",
                        "response": {"result": "sunny in Paris"},
                    }
                }
            ],
        },
        model("It is sunny in Paris."),
    ]
    declaration = gemini_server.requests[0].body["tools"][0]["functionDeclarations"][0]
    assert declaration["name"] == "get_weather"
    events = session.chat.events()
    called = [e.data for e in events if e.type == "function_called"]
    responded = [e.data for e in events if e.type == "function_responded"]
    assert [(c.name, c.args) for c in called] == [("get_weather", {"city": "Paris"})]  # type: ignore[attr-defined]
    assert [r.response for r in responded] == [{"result": "sunny in Paris"}]  # type: ignore[attr-defined]
    # As google.generativeai, rewind takes back the last two contents: the function
    # response and the answer; the call stays, recorded as a history replacement.
    sent, received = session.rewind()
    assert sent.to_wire() == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"result": "sunny in Paris"}}}
        ],
    }
    assert received.to_wire() == model("It is sunny in Paris.")
    assert [c.role for c in session.history] == ["user", "model"]
    assert (session.history[1].parts or [])[0].function_call is not None
    assert types_of(session)[-1] == "history_replaced"


async def test_automatic_function_calling_async(
    aledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    """send_message_async runs async functions (the async chat's AFC)."""

    async def fetch_weather(city: str) -> str:
        """The weather, fetched."""
        await asyncio.sleep(0)
        return f"rainy in {city}"

    gemini_server.reply_json(
        text_response(
            parts=[{"functionCall": {"name": "fetch_weather", "args": {"city": "Bergen"}}}]
        )
    )
    gemini_server.reply_text("Rainy in Bergen.")
    session = GenerativeModel(MODEL, tools=[fetch_weather], client=aledger).start_chat(
        enable_automatic_function_calling=True
    )
    response = await session.send_message_async("Weather in Bergen?")
    assert response.text == "Rainy in Bergen."
    assert wire(session.history)[2] == {
        "role": "user",
        "parts": [
            {
                "functionResponse": {
                    "name": "fetch_weather",
                    "response": {"result": "rainy in Bergen"},
                }
            }
        ],
    }
    assert types_of(session).count("function_called") == 1


def test_automatic_function_calling_with_a_stream(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    """google.generativeai raises NotImplementedError for stream=True with AFC; chatledger
    streams every step."""
    gemini_server.reply_sse(
        [text_response(parts=[{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}])]
    )
    gemini_server.reply_sse([chunk("Sunny ", None), chunk("in Oslo.", "STOP")])
    session = GenerativeModel(MODEL, tools=[get_weather], client=ledger).start_chat(
        enable_automatic_function_calling=True
    )
    response = session.send_message("Weather in Oslo?", stream=True)
    assert [piece.text for piece in response] == [None, "Sunny ", "in Oslo."]
    assert response.text == "Sunny in Oslo."
    assert len(session.history) == 4


def test_automatic_function_calling_off_returns_the_call(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    gemini_server.reply_json(
        text_response(parts=[{"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}])
    )
    gemini_server.reply_text("Thanks, sunny in Rome.")
    ran: list[str] = []

    def tracked(city: str) -> str:
        """Tracked weather."""
        ran.append(city)
        return "sunny"

    session = GenerativeModel(MODEL, tools=[tracked], client=ledger).start_chat()
    response = session.send_message("Weather in Rome?")

    assert ran == []
    (call,) = response.function_calls
    assert (call.name, call.args) == ("get_weather", {"city": "Rome"})
    with pytest.raises(ValueError, match=r"Could not convert `part.function_call` to text"):
        _ = response.text
    # The caller answers, as google.generativeai users do, with a part dict.
    answer = {"function_response": {"name": "get_weather", "response": {"weather": "sunny"}}}
    assert session.send_message(answer).text == "Thanks, sunny in Rome."
    assert gemini_server.requests[-1].body["contents"][-1] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"weather": "sunny"}}}],
    }
    assert "function_called" not in types_of(session)


def test_per_message_settings_merge_over_the_models(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    gemini_server.reply_text("a")
    gemini_server.reply_text("b")
    generative = GenerativeModel(
        MODEL,
        generation_config={"temperature": 0.2, "max_output_tokens": 30},
        safety_settings={"harassment": "block_none", "hate": "high"},
        system_instruction="Be brief.",
        client=ledger,
    )
    session = generative.start_chat()
    session.send_message("one")
    session.send_message(
        "two",
        generation_config={"temperature": 0.9},
        safety_settings=[{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}],
        tool_config={"function_calling_config": "none"},
    )
    first, second = (request.body for request in gemini_server.requests)
    assert first["generationConfig"] == {"temperature": 0.2, "maxOutputTokens": 30}
    assert second["generationConfig"] == {"temperature": 0.9, "maxOutputTokens": 30}
    assert first["safetySettings"] == [
        {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"},
        {"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_ONLY_HIGH"},
    ]
    assert second["safetySettings"] == [
        {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"},
        {"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"},
    ]
    assert second["toolConfig"] == {"functionCallingConfig": {"mode": "NONE"}}
    assert (
        first["systemInstruction"]["parts"]
        == second["systemInstruction"]["parts"]
        == [{"text": "Be brief."}]
    )


def test_a_single_threshold_applies_to_every_category(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    gemini_server.reply_text("ok")
    GenerativeModel(MODEL, safety_settings="block_none", client=ledger).start_chat().send_message(
        "hi"
    )
    settings = gemini_server.requests[0].body["safetySettings"]
    assert {s["threshold"] for s in settings} == {"BLOCK_NONE"}
    assert len(settings) == 4


@pytest.mark.parametrize(
    ("content", "parts"),
    [
        ("Hello", [{"text": "Hello"}]),
        (["Hello", "world"], [{"text": "Hello"}, {"text": "world"}]),
        (
            {"role": "user", "parts": ["Hello", {"text": "world"}]},
            [{"text": "Hello"}, {"text": "world"}],
        ),
        ({"parts": "Hello"}, [{"text": "Hello"}]),
        ({"text": "Hello"}, [{"text": "Hello"}]),
        (Part(text="Hello"), [{"text": "Hello"}]),
        (
            genai_types.Content(role="user", parts=[genai_types.Part(text="Hello")]),
            [{"text": "Hello"}],
        ),
        (
            {"mime_type": "image/png", "data": b"\x89PNG"},
            [{"inlineData": {"mimeType": "image/png", "data": "iVBORw=="}}],
        ),
        (
            [{"text": "Look:"}, {"inline_data": {"mime_type": "image/png", "data": b"\x89PNG"}}],
            [{"text": "Look:"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw=="}}],
        ),
    ],
)
def test_content_forms(
    ledger: chatledger.Client, gemini_server: GeminiServer, content: Any, parts: list[Any]
) -> None:
    gemini_server.reply_text("ok")
    session = GenerativeModel(MODEL, client=ledger).start_chat()
    session.send_message(content)
    assert gemini_server.requests[0].body["contents"] == [{"role": "user", "parts": parts}]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "must not be empty"),
        ([], "must not be empty"),
        ({"role": "model", "parts": ["I said"]}, "user's turn"),
        ({"role": "system", "parts": ["x"]}, "role must be 'user'"),
        ({"unknown": 1}, "Unable to determine"),
        (42, "got <class 'int'>"),
    ],
)
def test_bad_contents_are_refused_before_anything_is_recorded(
    ledger: chatledger.Client, content: Any, message: str
) -> None:
    session = GenerativeModel(MODEL, client=ledger).start_chat()
    before = types_of(session)
    with pytest.raises(InvalidInputError, match=message):
        session.send_message(content)
    assert types_of(session) == before


def test_bad_settings_are_refused(ledger: chatledger.Client) -> None:
    with pytest.raises(InvalidInputError, match="candidate_count"):
        GenerativeModel(MODEL, generation_config={"candidate_count": 2}, client=ledger)
    with pytest.raises(InvalidInputError, match="no field"):
        GenerativeModel(MODEL, generation_config={"tools": []}, client=ledger)
    with pytest.raises(InvalidInputError, match="harm category"):
        GenerativeModel(MODEL, safety_settings={"rudeness": "block_none"}, client=ledger)
    with pytest.raises(InvalidInputError, match="model_name"):
        GenerativeModel("", client=ledger)
    session = GenerativeModel(MODEL, client=ledger).start_chat()
    with pytest.raises(InvalidInputError, match="request_options has no key"):
        session.send_message("hi", request_options={"deadline": 10})
    with pytest.raises(InvalidInputError, match="positive number of seconds"):
        session.send_message("hi", request_options={"timeout": -1})
    with pytest.raises(InvalidInputError, match=r"request_options\['retry'\]"):
        session.send_message("hi", request_options={"retry": 3})
    assert types_of(session) == ["conversation_started"]


def test_resume_chat_in_a_new_client(
    ledger: chatledger.Client, gemini_server: GeminiServer, db_path: Path
) -> None:
    gemini_server.reply_text("One.")
    gemini_server.reply_text("Two.")
    session = GenerativeModel(MODEL, client=ledger).start_chat()
    session.send_message("First")
    with chatledger.Client(
        api_key=API_KEY, http_options={"base_url": gemini_server.base_url}, store=str(db_path)
    ) as other:
        resumed = GenerativeModel(MODEL, client=other).resume_chat(session.id)
        assert resumed.last is not None and resumed.last.text == "One."
        assert wire(resumed.history) == [user("First"), model("One.")]
        resumed.send_message("Second")
    assert len(session.history) == 4  # the first session sees the other's turn


# =========================================================================== 0.8.6 behaviours kept


def test_a_blocked_prompt_raises_and_the_attempt_stays_in_the_log(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    gemini_server.reply_text("Hello.")
    gemini_server.reply_json({"promptFeedback": {"blockReason": "SAFETY"}})
    gemini_server.reply_json(text_response("Stop", finish_reason="RECITATION"))
    session = GenerativeModel(MODEL, client=ledger).start_chat()
    session.send_message("Hi")
    last = session.last

    with pytest.raises(BlockedPromptException) as blocked:
        session.send_message("Something bad")
    assert blocked.value.args[0].block_reason == "SAFETY"
    with pytest.raises(StopCandidateException) as stopped:
        session.send_message("Something recited")
    assert stopped.value.args[0].finish_reason == "RECITATION"

    assert session.last is last  # as google.generativeai: the failed sends changed nothing
    assert wire(session.history) == [user("Hi"), model("Hello.")]
    assert session.last is None  # taken into the history, as google.generativeai
    assert (
        types_of(session)[-8:]
        == [
            "user_message_added",
            "model_call_started",
            "model_responded",
            "turn_rewound",
        ]
        * 2
    )
    assert session.chat.verify().ok
    # A new process reading the log sees the same history.
    assert wire(ledger.chats.get(session.id).get_history()) == [user("Hi"), model("Hello.")]


async def test_blocked_and_broken_async(
    aledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    gemini_server.reply_json({"promptFeedback": {"blockReason": "SAFETY"}})
    gemini_server.reply_sse([chunk("Once "), chunk("upon", "SAFETY")])
    gemini_server.reply_text("Fine.")
    session = GenerativeModel(MODEL, client=aledger).start_chat()
    with pytest.raises(BlockedPromptException):
        await session.send_message_async("Something bad")
    response = await session.send_message_async("A story", stream=True)
    assert [piece.text async for piece in response] == ["Once ", "upon"]
    with pytest.raises(BrokenResponseError):
        await session.send_message_async("Next")
    sent, received = session.rewind()
    assert (sent.to_wire(), received.to_wire()) == (user("A story"), model("Once upon"))
    await session.send_message_async("Something else")
    assert wire(session.history) == [user("Something else"), model("Fine.")]


def test_request_options_timeout_applies_to_that_call(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    gemini_server.enqueue(Reply("json", body=text_response("Too late."), delay=2.0))
    gemini_server.reply_text("In time.")
    session = GenerativeModel(MODEL, client=ledger).start_chat()
    with pytest.raises(ModelTimeoutError):
        session.send_message("Quick?", request_options={"timeout": 0.3})
    assert session.history == []
    failed = [e.data for e in session.chat.events() if e.type == "model_call_failed"]
    assert [f.error.kind for f in failed] == ["ModelTimeoutError"]  # type: ignore[attr-defined]
    # The client's own settings (no timeout) for the next call.
    assert session.send_message("Now?").text == "In time."
    assert wire(session.history) == [user("Now?"), model("In time.")]


def test_request_options_retry_applies_to_that_call(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    retry: Any = importlib.import_module("google.api_core.retry")
    gemini_server.reply_error(503, "UNAVAILABLE", "busy")
    gemini_server.reply_text("Second try.")
    gemini_server.reply_error(503, "UNAVAILABLE", "busy")
    session = GenerativeModel(MODEL, client=ledger).start_chat()
    options = {"retry": retry.Retry(initial=0.01, maximum=0.02, multiplier=2, timeout=5)}
    assert session.send_message("Hi", request_options=options).text == "Second try."
    started = [e.data for e in session.chat.events() if e.type == "model_call_started"]
    assert [s.attempt for s in started] == [1, 2]  # type: ignore[attr-defined]
    with pytest.raises(ServerError):  # no retry without request_options (the client's)
        session.send_message("Again")
    assert len(gemini_server.requests) == 3


def test_a_history_list_read_before_a_change_is_stale(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    gemini_server.reply_text("One.")
    gemini_server.reply_text("Two.")
    session = GenerativeModel(MODEL, client=ledger).start_chat()
    session.send_message("First")
    history: list[Any] = session.history  # 0.8.6's list takes dicts too
    history.append({"role": "user", "parts": [{"text": "Appended"}]})
    assert wire(session.history) == [user("First"), model("One."), user("Appended")]
    assert types_of(session)[-1] == "history_replaced"
    history.pop()
    assert wire(session.history) == [user("First"), model("One.")]
    session.send_message("Second")
    with pytest.raises(ChatStateError, match=r"read chat\.history again"):
        history.append({"role": "user", "parts": [{"text": "Stale"}]})
    assert wire(session.history)[-1] == model("Two.")


def test_a_reply_without_a_role_is_a_model_content(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    gemini_server.reply_json({"candidates": [{"content": {"parts": [{"text": "Hi"}]}}]})
    session = GenerativeModel(MODEL, client=ledger).start_chat()
    session.send_message("Hello")
    assert [c.role for c in session.history] == ["user", "model"]
    session.history = session.history
    assert types_of(session)[-1] == "history_replaced"
    assert wire(session.history) == [user("Hello"), model("Hi")]


def test_a_copy_is_a_fork_recorded_in_the_log(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    gemini_server.reply_text("One.")
    gemini_server.reply_text("Two.")
    session = GenerativeModel(MODEL, client=ledger).start_chat(
        enable_automatic_function_calling=True
    )
    session.send_message("First")
    shallow, deep = copy.copy(session), copy.deepcopy(session)
    assert shallow.id != session.id != deep.id
    assert not shallow.enable_automatic_function_calling and deep.enable_automatic_function_calling
    assert shallow.chat.parent is not None
    assert shallow.chat.parent.conversation_id == session.id
    assert shallow.chat.parent.version == session.chat.version
    shallow.send_message("Second")
    assert len(shallow.history) == 4 and len(session.history) == 2 and len(deep.history) == 2

    gemini_server.reply_sse(STREAM_CHUNKS)
    response = session.send_message("Streamed", stream=True)
    with pytest.raises(IncompleteIterationError):
        copy.copy(session)
    response.close()


def fails_to_get_weather(city: str) -> str:
    """The weather in a city."""
    raise ValueError(f"no weather station in {city}")


async def afails_to_get_weather(city: str) -> str:
    """The weather in a city."""
    raise ValueError(f"no weather station in {city}")


def test_a_raising_function_ends_its_turn_in_the_log(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    call = {"functionCall": {"name": "fails_to_get_weather", "args": {"city": "Oslo"}}}
    gemini_server.reply_json(text_response(parts=[call]))
    gemini_server.reply_text("Hello.")
    session = GenerativeModel(MODEL, tools=[fails_to_get_weather], client=ledger).start_chat(
        enable_automatic_function_calling=True
    )
    with pytest.raises(ValueError, match="Oslo"):
        session.send_message("Weather in Oslo?")
    events = session.chat.events()
    assert [e.type for e in events][-2:] == ["function_called", "turn_abandoned"]
    assert events[-1].data.reason == (  # type: ignore[attr-defined]
        "function fails_to_get_weather raised ValueError: no weather station in Oslo"
    )
    assert session.history == []
    assert session.send_message("Hi").text == "Hello."  # the conversation goes on
    declared = gemini_server.requests[0].body["tools"][0]["functionDeclarations"][0]
    assert declared["name"] == "fails_to_get_weather"
    assert declared["parametersJsonSchema"]["properties"] == {"city": {"type": "string"}}


async def test_a_raising_function_async_and_streamed(
    aledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    call = {"functionCall": {"name": "afails_to_get_weather", "args": {"city": "Oslo"}}}
    gemini_server.reply_json(text_response(parts=[call]))
    gemini_server.reply_sse([text_response(parts=[call])])
    session = GenerativeModel(MODEL, tools=[afails_to_get_weather], client=aledger).start_chat(
        enable_automatic_function_calling=True
    )
    with pytest.raises(ValueError, match="Oslo"):
        await session.send_message_async("Weather in Oslo?")
    response = await session.send_message_async("And now?", stream=True)
    with pytest.raises(ValueError, match="Oslo"):
        await response.resolve()
    with pytest.raises(BrokenResponseError):
        _ = session.history
    session.rewind()
    assert session.history == []
    types = [event.type for event in session.chat.events()]
    assert types.count("turn_abandoned") == 2
