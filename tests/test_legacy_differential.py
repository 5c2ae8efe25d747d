"""The legacy surface against google-generativeai 0.8.6 itself, on the same loopback
server: the same calls, then the histories, the requests and the errors compared
(``tests/support/legacy.py`` says how 0.8.6 is pointed at the server).

Its ASYNC methods cannot be pointed at a loopback REST server:
``GenerativeServiceAsyncClient`` with ``transport="rest"`` uses the synchronous REST
transport, so ``await chat.send_message_async(...)`` fails with ``TypeError: object
GenerateContentResponse can't be used in 'await' expression`` (shown by a test below);
its async path needs ``grpc_asyncio``, which opens a TLS gRPC channel to the endpoint,
and the test support has no gRPC server. The async legacy behaviour is therefore tested
on chatledger alone (tests/test_legacy.py).

Deliberate differences are asserted where they show (docs/differences.md lists them).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import chatledger
from chatledger.legacy import GenerativeModel, IncompleteIterationError
from tests.support.gemini_server import GeminiServer, text_response
from tests.support.legacy import (
    MODEL,
    STREAM_CHUNKS,
    aledger,
    contents_sent,
    get_weather,
    gg,
    gg_configured,
    gg_generation_types,
    gg_history,
    ledger,
    ledger_dict,
    ledger_history,
    proto_dict,
    stream_reply,
)

# The shared fixtures, used by name in the tests' arguments.
FIXTURES = (aledger, gg_configured, ledger)


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
