"""The legacy ``google.generativeai`` surface (SEMANTICS §7): ``chatledger.legacy``.

Two parts:

1. Behaviour: every item of SEMANTICS §7 and of the seed ``ChatSession`` reference,
   against the loopback Gemini-protocol server, with the log on a real SQLite file:
   ``len(history) == 2`` after one send; a stream ends in the same state as a plain send;
   ``history`` (and ``rewind``, sends, the setter) refused while a stream is unfinished;
   the history setter recorded as an event and visible from another process; rewind and
   rewind on an empty history; async sends and streams; automatic function calling on
   and off; the content forms google.generativeai accepts.

2. Differential against ``google-generativeai==0.8.6`` on the same server. Its sync
   client can be pointed at a loopback REST server:
   ``genai.configure(api_key=..., transport="rest", client_options={"api_endpoint":
   "http://127.0.0.1:PORT"})`` (the scheme in the endpoint is honoured; requests go to
   ``/v1beta/models/...:generateContent`` with ``$alt=json;enum-encoding=int``). Its
   streaming over REST reads a JSON array (not server-sent events), so the server is
   given the same chunks in that framing. Its ASYNC methods cannot be pointed at a
   loopback REST server: ``GenerativeServiceAsyncClient`` with ``transport="rest"``
   uses the synchronous REST transport, so ``await chat.send_message_async(...)`` fails
   with ``TypeError: object GenerateContentResponse can't be used in 'await'
   expression`` (shown by a test below); its async path needs ``grpc_asyncio``, which
   opens a TLS gRPC channel to the endpoint, and the test support has no gRPC server.
   The async legacy behaviour is therefore tested on chatledger alone.

Deliberate differences from google.generativeai are asserted where they show (see the
``chatledger.legacy`` module docstring for the list).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.genai import types as genai_types

import chatledger
from chatledger.errors import ChatStateError, InvalidInputError, ServerError
from chatledger.legacy import (
    AsyncGenerateContentResponse,
    BrokenResponseError,
    ChatSession,
    GenerateContentResponse,
    GenerativeModel,
    IncompleteIterationError,
)
from chatledger.types import Part
from tests.support.gemini_server import GeminiServer, text_response

with warnings.catch_warnings():
    # google.generativeai announces its end of support (FutureWarning) on import, and
    # google.api_core its Python version policy.
    warnings.simplefilter("ignore", FutureWarning)
    gg: Any = importlib.import_module("google.generativeai")
    gg_generation_types: Any = importlib.import_module("google.generativeai.types.generation_types")

API_KEY = "test-api-key-DO-NOT-LEAK-4f9a8b7c"
MODEL = "gemini-test"
WAIT = 10.0  # a bound on waiting for another thread (never a duration assertion)


# =========================================================================== fixtures


@pytest.fixture
def ledger(gemini_server: GeminiServer, db_path: Path) -> Iterator[chatledger.Client]:
    with chatledger.Client(
        api_key=API_KEY,
        http_options={"base_url": gemini_server.base_url},
        store=str(db_path),
    ) as client:
        yield client


@pytest.fixture
async def aledger(gemini_server: GeminiServer, db_path: Path) -> AsyncIterator[chatledger.Client]:
    """As ``ledger``, closed with ``aclose`` (its async HTTP connections too)."""
    client = chatledger.Client(
        api_key=API_KEY,
        http_options={"base_url": gemini_server.base_url},
        store=str(db_path),
    )
    yield client
    await client.aclose()


@pytest.fixture
def gg_configured(gemini_server: GeminiServer) -> None:
    """google.generativeai 0.8.6 (global configuration) pointed at the loopback server."""
    gg.configure(
        api_key=API_KEY,
        transport="rest",
        client_options={"api_endpoint": gemini_server.base_url},
    )


def user(*texts: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text} for text in texts]}


def model(*texts: str) -> dict[str, Any]:
    return {"role": "model", "parts": [{"text": text} for text in texts]}


def wire(contents: list[Any]) -> list[dict[str, Any]]:
    return [content.to_wire() for content in contents]


def types_of(session: ChatSession) -> list[str]:
    return [event.type for event in session.chat.events()]


def chunk(text: str, finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
    return text_response(text, finish_reason=finish_reason, **extra)


USAGE = {"promptTokenCount": 4, "candidatesTokenCount": 3, "totalTokenCount": 7}
STREAM_CHUNKS = [chunk("Once "), chunk("upon "), chunk("a time.", "STOP", usage=USAGE)]
MERGED = text_response("Once upon a time.", usage=USAGE)


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


# =========================================================================== behaviour


def test_one_send_makes_a_history_of_two(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    """The seed's example: ``len(chat.history) == 2`` after one send."""
    gemini_server.reply_text("Hello! How can I assist you today?")
    session = GenerativeModel(MODEL, client=ledger).start_chat()

    response = session.send_message("Hello")

    assert isinstance(response, GenerateContentResponse)
    assert response.text == "Hello! How can I assist you today?"
    assert len(session.history) == 2
    assert wire(session.history) == [user("Hello"), model("Hello! How can I assist you today?")]
    assert session.last is response
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
    assert streamed.last is response
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
    assert len(session.history) == 2
    assert session.last is response

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
    # rewind takes back the whole turn, function steps included.
    sent, received = session.rewind()
    assert sent.to_wire() == user("Weather in Paris?") and received.to_wire() == model(
        "It is sunny in Paris."
    )
    assert session.history == []


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
        assert wire(resumed.history) == [user("First"), model("One.")]
        assert resumed.last is not None and resumed.last.text == "One."
        resumed.send_message("Second")
    assert len(session.history) == 4  # the first session sees the other's turn


# =========================================================================== differential


def proto_dict(content: Any) -> dict[str, Any]:
    """A google.generativeai (proto-plus) content as a dict, unset fields left out."""
    to_dict: Any = type(content).to_dict
    result: dict[str, Any] = to_dict(content, always_print_fields_with_no_presence=False)
    return result


def ledger_dict(content: Any) -> dict[str, Any]:
    result: dict[str, Any] = content.model_dump(mode="json", exclude_none=True)
    return result


def gg_history(chat: Any) -> list[dict[str, Any]]:
    return [proto_dict(c) for c in chat.history]


def ledger_history(session: ChatSession) -> list[dict[str, Any]]:
    return [ledger_dict(c) for c in session.history]


def contents_sent(server: GeminiServer, start: int = 0) -> list[list[dict[str, Any]]]:
    """The contents of each request since ``start``, keys in one order (camelCase)."""
    return [
        json.loads(json.dumps(request.body["contents"], sort_keys=True))
        for request in server.requests[start:]
    ]


def stream_reply(server: GeminiServer, chunks: list[dict[str, Any]], *, library: str) -> None:
    """The same chunks in each library's streaming framing: a JSON array for
    google.generativeai's REST transport, server-sent events for chatledger."""
    if library == "gg":
        server.reply_raw(json.dumps(chunks).encode(), content_type="application/json")
    else:
        server.reply_sse(chunks)


@pytest.mark.usefixtures("gg_configured")
def test_differential_plain_turns(ledger: chatledger.Client, gemini_server: GeminiServer) -> None:
    settings = {
        "generation_config": {"temperature": 0.5, "max_output_tokens": 40},
        "system_instruction": "Be brief.",
    }
    gemini_server.reply_text("Hi there")
    gemini_server.reply_text("Fine")
    chat = gg.GenerativeModel(MODEL, **settings).start_chat()
    first = chat.send_message("Hello")
    assert len(chat.history) == 2
    second = chat.send_message(["How", "are you?"], generation_config={"temperature": 0.1})

    start = len(gemini_server.requests)
    gemini_server.reply_text("Hi there")
    gemini_server.reply_text("Fine")
    session = GenerativeModel(MODEL, client=ledger, **settings).start_chat()
    l_first = session.send_message("Hello")
    assert len(session.history) == 2
    l_second = session.send_message(["How", "are you?"], generation_config={"temperature": 0.1})

    assert (first.text, second.text) == (l_first.text, l_second.text) == ("Hi there", "Fine")
    assert ledger_history(session) == gg_history(chat)
    gg_requests, ledger_requests = gemini_server.requests[:start], gemini_server.requests[start:]
    assert contents_sent(gemini_server, start) == contents_sent(gemini_server)[:start]
    assert [r.path for r in ledger_requests] == [r.path for r in gg_requests]
    assert [r.body["generationConfig"] for r in ledger_requests] == [
        r.body["generationConfig"] for r in gg_requests
    ]
    # The system instruction: the same parts; chatledger gives it the "user" role (as
    # google-genai), google.generativeai none.
    assert [r.body["systemInstruction"] for r in gg_requests] == [
        {"parts": [{"text": "Be brief."}]}
    ] * 2
    assert [r.body["systemInstruction"] for r in ledger_requests] == [
        {"role": "user", "parts": [{"text": "Be brief."}]}
    ] * 2


@pytest.mark.usefixtures("gg_configured")
def test_differential_safety_settings(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    """The same settings; google.generativeai's REST transport sends enums as numbers
    (``$alt=json;enum-encoding=int``), chatledger as names."""
    safety = {"harassment": "block_none", "danger": "low"}
    gemini_server.reply_text("ok")
    gemini_server.reply_text("ok")
    gg.GenerativeModel(MODEL, safety_settings=safety).start_chat().send_message("hi")
    GenerativeModel(MODEL, safety_settings=safety, client=ledger).start_chat().send_message("hi")
    gg_body, ledger_body = (request.body for request in gemini_server.requests)
    assert gg_body["safetySettings"] == [
        {"category": 7, "threshold": 4},
        {"category": 10, "threshold": 1},
    ]
    assert ledger_body["safetySettings"] == [
        {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"},
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "threshold": "BLOCK_LOW_AND_ABOVE"},
    ]
    assert gemini_server.requests[0].query == {"$alt": ["json;enum-encoding=int"]}


@pytest.mark.usefixtures("gg_configured")
def test_differential_stream(ledger: chatledger.Client, gemini_server: GeminiServer) -> None:
    stream_reply(gemini_server, STREAM_CHUNKS, library="gg")
    chat = gg.GenerativeModel(MODEL).start_chat()
    response = chat.send_message("Tell me a story", stream=True)
    with pytest.raises(gg_generation_types.IncompleteIterationError):
        _ = chat.history
    gg_texts = [piece.text for piece in response]

    stream_reply(gemini_server, STREAM_CHUNKS, library="ledger")
    session = GenerativeModel(MODEL, client=ledger).start_chat()
    l_response = session.send_message("Tell me a story", stream=True)
    with pytest.raises(IncompleteIterationError):
        _ = session.history
    ledger_texts = [piece.text for piece in l_response]

    assert ledger_texts == gg_texts == ["Once ", "upon ", "a time."]
    assert l_response.text == response.text == "Once upon a time."
    assert (
        l_response.usage_metadata.total_token_count
        == response.usage_metadata.total_token_count
        == 7
    )
    assert ledger_history(session) == gg_history(chat)
    paths = [request.path for request in gemini_server.requests]
    assert paths == [f"/v1beta/models/{MODEL}:streamGenerateContent"] * 2
    assert contents_sent(gemini_server)[0] == contents_sent(gemini_server)[1]
    assert gemini_server.requests[1].query == {"alt": ["sse"]}


@pytest.mark.usefixtures("gg_configured")
def test_differential_history_setter_and_rewind(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    history = [
        {"role": "user", "parts": ["Favourite colour?"]},
        {"role": "model", "parts": ["Green."]},
    ]
    outcomes: dict[str, Any] = {}
    for library in ("gg", "ledger"):
        gemini_server.reply_text("One.")
        gemini_server.reply_text("Two.")
        session: Any = (
            gg.GenerativeModel(MODEL).start_chat()
            if library == "gg"
            else GenerativeModel(MODEL, client=ledger).start_chat()
        )
        session.send_message("Hello")
        session.history = history
        session.send_message("Why?")
        sent, received = session.rewind()
        to_dict = proto_dict if library == "gg" else ledger_dict
        outcomes[library] = {
            "rewound": (to_dict(sent), to_dict(received)),
            "history": gg_history(session) if library == "gg" else ledger_history(session),
            "last": session.last,
        }
    assert (
        outcomes["ledger"]["rewound"]
        == outcomes["gg"]["rewound"]
        == (
            {"parts": [{"text": "Why?"}], "role": "user"},
            {"parts": [{"text": "Two."}], "role": "model"},
        )
    )
    assert (
        outcomes["ledger"]["history"]
        == outcomes["gg"]["history"]
        == [
            {"parts": [{"text": "Favourite colour?"}], "role": "user"},
            {"parts": [{"text": "Green."}], "role": "model"},
        ]
    )
    assert outcomes["gg"]["last"] is None and outcomes["ledger"]["last"] is None
    sent = contents_sent(gemini_server)
    assert sent[2:4] == sent[:2]


@pytest.mark.usefixtures("gg_configured")
def test_differential_rewind_on_an_empty_history(ledger: chatledger.Client) -> None:
    """Both raise an IndexError; chatledger's also says what is wrong."""
    with pytest.raises(IndexError, match="pop from empty list"):
        gg.GenerativeModel(MODEL).start_chat().rewind()
    with pytest.raises(IndexError, match="is empty"):
        GenerativeModel(MODEL, client=ledger).start_chat().rewind()


@pytest.mark.usefixtures("gg_configured")
def test_differential_automatic_function_calling(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    """With a str argument and a str result the two send the same contents; the
    declarations differ (google.generativeai: an OpenAPI ``parameters`` schema with
    enum numbers; chatledger: google-genai's ``parametersJsonSchema``)."""
    replies = [
        text_response(parts=[{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]),
        text_response("Sunny in Paris."),
    ]
    for reply in replies:
        gemini_server.reply_json(reply)
    chat = gg.GenerativeModel(MODEL, tools=[get_weather]).start_chat(
        enable_automatic_function_calling=True
    )
    assert chat.send_message("Weather in Paris?").text == "Sunny in Paris."
    for reply in replies:
        gemini_server.reply_json(reply)
    session = GenerativeModel(MODEL, tools=[get_weather], client=ledger).start_chat(
        enable_automatic_function_calling=True
    )
    assert session.send_message("Weather in Paris?").text == "Sunny in Paris."

    sent = contents_sent(gemini_server)
    assert sent[2:] == sent[:2]
    assert ledger_history(session) == gg_history(chat)
    assert len(session.history) == 4
    gg_tool = gemini_server.requests[0].body["tools"][0]["functionDeclarations"][0]
    ledger_tool = gemini_server.requests[2].body["tools"][0]["functionDeclarations"][0]
    assert gg_tool == {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": 6, "properties": {"city": {"type": 1}}, "required": ["city"]},
    }
    assert ledger_tool == {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parametersJsonSchema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
        "responseJsonSchema": {"type": "string"},
    }


@pytest.mark.usefixtures("gg_configured")
def test_differential_function_results_and_numbers(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    """google.generativeai sends a dict result as the response itself and passes every
    number as a float (protobuf Struct); chatledger, as google-genai, wraps every result
    as ``{"result": ...}`` and passes integers as integers."""
    seen: list[Any] = []

    def forecast(city: str, days: int) -> dict[str, Any]:
        """A forecast."""
        seen.append(days)
        return {"city": city, "days": days}

    replies = [
        text_response(
            parts=[{"functionCall": {"name": "forecast", "args": {"city": "Oslo", "days": 2}}}]
        ),
        text_response("Done."),
    ]
    for reply in replies:
        gemini_server.reply_json(reply)
    gg.GenerativeModel(MODEL, tools=[forecast]).start_chat(
        enable_automatic_function_calling=True
    ).send_message("go")
    for reply in replies:
        gemini_server.reply_json(reply)
    GenerativeModel(MODEL, tools=[forecast], client=ledger).start_chat(
        enable_automatic_function_calling=True
    ).send_message("go")

    assert seen == [2.0, 2] and [type(days) for days in seen] == [float, int]
    gg_answer = gemini_server.requests[1].body["contents"][-1]["parts"][0]["functionResponse"]
    ledger_answer = gemini_server.requests[3].body["contents"][-1]["parts"][0]["functionResponse"]
    assert gg_answer == {"name": "forecast", "response": {"city": "Oslo", "days": 2.0}}
    assert ledger_answer == {
        "name": "forecast",
        "response": {"result": {"city": "Oslo", "days": 2}},
    }


@pytest.mark.usefixtures("gg_configured")
def test_differential_afc_off_and_a_manual_answer(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    replies = [
        text_response(parts=[{"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}]),
        text_response("Thanks."),
    ]
    answer = {"function_response": {"name": "get_weather", "response": {"weather": "sunny"}}}
    for reply in replies:
        gemini_server.reply_json(reply)
    chat = gg.GenerativeModel(MODEL, tools=[get_weather]).start_chat()
    first = chat.send_message("Weather in Rome?")
    assert first.parts[0].function_call.name == "get_weather"
    chat.send_message(answer)
    for reply in replies:
        gemini_server.reply_json(reply)
    session = GenerativeModel(MODEL, tools=[get_weather], client=ledger).start_chat()
    assert session.send_message("Weather in Rome?").function_calls[0].name == "get_weather"
    session.send_message(answer)

    assert ledger_history(session) == gg_history(chat)
    sent = contents_sent(gemini_server)
    assert sent[2:] == sent[:2]


@pytest.mark.usefixtures("gg_configured")
def test_google_generativeai_async_cannot_use_the_rest_loopback(
    gemini_server: GeminiServer,
) -> None:
    """Why the async legacy methods have no differential test (see the module docstring)."""
    gemini_server.reply_text("never awaited")
    chat = gg.GenerativeModel(MODEL).start_chat()
    with pytest.raises(TypeError, match="can't be used in 'await' expression"):
        asyncio.run(chat.send_message_async("Hello"))
