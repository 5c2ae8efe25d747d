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
import copy
import gc
import json
import warnings
from typing import Any

import PIL.Image
import pytest

import chatledger
import chatledger.legacy
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
    # rewind takes back the last two contents in both: the function response, the answer.
    gg_rewound, ledger_rewound = chat.rewind(), session.rewind()
    assert [ledger_dict(c) for c in ledger_rewound] == [proto_dict(c) for c in gg_rewound]
    assert ledger_history(session) == gg_history(chat)
    assert len(session.history) == 2
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


# =========================================================================== 0.8.6 behaviours kept


def _both(ledger: chatledger.Client, **settings: Any) -> tuple[Any, Any]:
    """A google.generativeai 0.8.6 chat and a chatledger one, with the same settings."""
    return (
        gg.GenerativeModel(MODEL, **settings).start_chat(),
        GenerativeModel(MODEL, client=ledger, **settings).start_chat(),
    )


@pytest.mark.usefixtures("gg_configured")
def test_differential_repr(
    ledger: chatledger.Client, gemini_server: GeminiServer, tmp_path: Any
) -> None:
    """The same text, character for character: reprlib's abbreviations, the image's
    base64, the model's settings."""
    image = tmp_path / "image.png"
    PIL.Image.new("RGB", (8, 8), (200, 120, 40)).save(image)
    reprs = []
    for chat in _both(ledger):
        gemini_server.reply_text("first")
        gemini_server.reply_text("second")
        chat.send_message("I really like fantasy books, more than you would think.")
        with PIL.Image.open(image) as picture:
            chat.send_message(["I also like this image.", picture])
        reprs.append(repr(chat))
    assert reprs[0] == reprs[1]
    assert "iVBORw0KGgoA..." in reprs[1] and "'role': 'model'" in reprs[1]


@pytest.mark.usefixtures("gg_configured")
def test_differential_blocked_prompt_and_stopped_candidate(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    for chat in _both(ledger):
        gemini_server.reply_text("Hello.")
        gemini_server.reply_json({"promptFeedback": {"blockReason": "SAFETY"}})
        gemini_server.reply_json(text_response(None, finish_reason="SAFETY"))
        stream_reply(
            gemini_server,
            [{"promptFeedback": {"blockReason": "OTHER"}}],
            library="gg" if isinstance(chat, gg.ChatSession) else "ledger",
        )
        gemini_server.reply_text("Still here.")
        legacy = gg_generation_types if isinstance(chat, gg.ChatSession) else chatledger.legacy
        chat.send_message("Hi")
        with pytest.raises(legacy.BlockedPromptException) as blocked:
            chat.send_message("Something bad")
        assert "SAFETY" in str(blocked.value)
        with pytest.raises(legacy.StopCandidateException) as stopped:
            chat.send_message("Something risky")
        assert "SAFETY" in str(stopped.value)
        with pytest.raises(legacy.BlockedPromptException), warnings.catch_warnings():
            # 0.8.6 raises without closing its streamed HTTP response: collected here.
            warnings.simplefilter("ignore", ResourceWarning)
            try:
                chat.send_message("Something bad, streamed", stream=True)
            finally:
                gc.collect()
        assert len(chat.history) == 2
        chat.send_message("Are you there?")

    half = len(gemini_server.requests) // 2
    assert contents_sent(gemini_server, half) == contents_sent(gemini_server)[:half]
    session = chat
    events = [event.type for event in session.chat.events()]
    assert events.count("turn_rewound") == 3  # each attempt stays in the log, taken back
    assert events.count("model_responded") == 5


@pytest.mark.usefixtures("gg_configured")
def test_differential_a_stream_stopped_for_safety_is_broken_until_rewound(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    chunks = [
        text_response("Once ", finish_reason=None),
        text_response("upon", finish_reason="SAFETY"),
    ]
    histories = []
    for chat in _both(ledger):
        library = "gg" if isinstance(chat, gg.ChatSession) else "ledger"
        legacy = gg_generation_types if library == "gg" else chatledger.legacy
        gemini_server.reply_text("Hello.")
        stream_reply(gemini_server, chunks, library=library)
        gemini_server.reply_text("Fine.")
        chat.send_message("Hi")
        response = chat.send_message("Tell me a story", stream=True)
        assert [chunk.text for chunk in response] == ["Once ", "upon"]
        with pytest.raises(legacy.BrokenResponseError) as broken:
            _ = chat.history
        assert isinstance(broken.value.__cause__, legacy.StopCandidateException)
        with pytest.raises(legacy.BrokenResponseError):
            chat.send_message("Next")
        sent, received = chat.rewind()
        assert [part.text for part in sent.parts] == ["Tell me a story"]
        assert [part.text for part in received.parts] == ["Once upon"]
        chat.send_message("Something else")
        histories.append([c.parts[0].text for c in chat.history])
    assert histories[0] == histories[1] == ["Hi", "Hello.", "Something else", "Fine."]
    requests = gemini_server.requests
    assert contents_sent(gemini_server, 3) == contents_sent(gemini_server)[:3]
    assert len(requests) == 6


@pytest.mark.usefixtures("gg_configured")
def test_differential_rewind_after_a_broken_stream_keeps_the_good_turn(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    """The user code 0.8.6's BrokenResponseError message asks for takes back the broken
    turn only: the turn before it stays."""
    for chat in _both(ledger):
        library = "gg" if isinstance(chat, gg.ChatSession) else "ledger"
        legacy = gg_generation_types if library == "gg" else chatledger.legacy
        gemini_server.reply_text("Fine.")
        if library == "gg":  # a JSON array cut short: 0.8.6's REST stream parser fails
            cut = json.dumps([text_response("Par", finish_reason=None)])[:-1] + ', {"candid'
            gemini_server.reply_raw(cut.encode(), content_type="application/json")
        else:
            gemini_server.reply_sse([text_response("Par", finish_reason=None)], drop_after=1)
        gemini_server.reply_text("Again.")
        chat.send_message("First")
        response = chat.send_message("Second", stream=True)
        with pytest.raises(Exception):  # noqa: B017 - each library's own error
            response.resolve()
        with pytest.raises(legacy.BrokenResponseError):
            _ = chat.history
        chat.rewind()
        assert [c.parts[0].text for c in chat.history] == ["First", "Fine."]
        chat.send_message("Third")
    half = len(gemini_server.requests) // 2
    assert contents_sent(gemini_server, half) == contents_sent(gemini_server)[:half]


@pytest.mark.usefixtures("gg_configured")
def test_differential_history_without_roles_and_replies_without_a_role(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    """Both accept a history without roles; 0.8.6 sends it without roles, chatledger
    with the roles of their places (docs/differences.md). A reply received without a
    role is a "model" content in both histories, and ``history = history`` works."""
    no_role_reply = {
        "candidates": [{"content": {"parts": [{"text": "No role"}]}, "finishReason": "STOP"}]
    }
    histories = []
    for chat in _both(ledger):
        gemini_server.reply_json(no_role_reply)
        gemini_server.reply_text("Ok.")
        chat.history = [{"parts": ["Hi"]}, {"parts": ["Hello"]}]
        chat.send_message("How are you?")
        chat.history = chat.history
        chat.send_message("Good.")
        histories.append(chat.history)
    gg_sent, ledger_sent = contents_sent(gemini_server)[:2], contents_sent(gemini_server)[2:]
    assert gg_sent[1][:2] == [{"parts": [{"text": "Hi"}]}, {"parts": [{"text": "Hello"}]}]
    assert ledger_sent[1][:2] == [
        {"parts": [{"text": "Hi"}], "role": "user"},
        {"parts": [{"text": "Hello"}], "role": "model"},
    ]
    assert gg_sent[1][2:] == ledger_sent[1][2:]
    assert [proto_dict(c) for c in histories[0]][2:] == [ledger_dict(c) for c in histories[1]][2:]
    assert histories[1][3].role == "model"


@pytest.mark.usefixtures("gg_configured")
@pytest.mark.parametrize("mode", ["mode_auto", "mode_any", "mode_none", "AUTO", 2])
def test_differential_function_calling_modes(
    ledger: chatledger.Client, gemini_server: GeminiServer, mode: Any
) -> None:
    tool_config = {"function_calling_config": {"mode": mode}}
    for chat in _both(ledger, tools=[get_weather], tool_config=tool_config):
        gemini_server.reply_text("ok")
        chat.send_message("Weather?")
    gg_body, ledger_body = (request.body for request in gemini_server.requests)
    names = {1: "AUTO", 2: "ANY", 3: "NONE"}
    assert (
        names[gg_body["toolConfig"]["functionCallingConfig"]["mode"]]
        == (ledger_body["toolConfig"]["functionCallingConfig"]["mode"])
    )


@pytest.mark.usefixtures("gg_configured")
def test_differential_copies_are_independent(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    histories = []
    for chat in _both(ledger):
        gemini_server.reply_text("first")
        gemini_server.reply_text("second")
        gemini_server.reply_text("third")
        gemini_server.reply_text("fourth")
        chat.send_message("hello1")
        shallow, deep = copy.copy(chat), copy.deepcopy(chat)
        shallow.send_message("hello2")
        deep.send_message("hello3")
        chat.send_message("hello4")
        histories.append([[c.parts[0].text for c in s.history] for s in (chat, shallow, deep)])
    assert histories[0] == histories[1]
    assert histories[1][0] == ["hello1", "first", "hello4", "fourth"]
    session = chat
    forks = ledger.chats.list(parent_id=session.id)
    assert len(forks) == 2  # each copy is a fork of the conversation, recorded as such


@pytest.mark.usefixtures("gg_configured")
def test_differential_editing_the_history_list(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    for chat in _both(ledger):
        for text in ("first", "second", "third"):
            gemini_server.reply_text(text)
        chat.send_message("hello")
        chat.send_message("hello again")
        chat.history[-1] = {"role": "model", "parts": [{"text": "edited"}]}
        del chat.history[0:2]
        chat.send_message("and now?")
    half = len(gemini_server.requests) // 2
    assert contents_sent(gemini_server, half) == contents_sent(gemini_server)[:half]
    assert contents_sent(gemini_server)[-1][:2] == [
        {"parts": [{"text": "hello again"}], "role": "user"},
        {"parts": [{"text": "edited"}], "role": "model"},
    ]


@pytest.mark.usefixtures("gg_configured")
def test_differential_request_options_are_accepted(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    retry_module: Any = __import__("google.api_core.retry", fromlist=["Retry"])
    options = [
        {"timeout": 30},
        {"timeout": 30.5, "retry": retry_module.Retry(initial=0.01, maximum=0.02, timeout=1)},
    ]
    for chat in _both(ledger):
        for request_options in options:
            gemini_server.reply_text("ok")
            chat.send_message("Hi", request_options=request_options)
    half = len(gemini_server.requests) // 2
    assert contents_sent(gemini_server, half) == contents_sent(gemini_server)[:half]


@pytest.mark.usefixtures("gg_configured")
def test_differential_repr_of_a_stream_in_progress_and_broken(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    reprs: list[list[str]] = []
    for chat in _both(ledger):
        library = "gg" if isinstance(chat, gg.ChatSession) else "ledger"
        gemini_server.reply_text("Fine.")
        stream_reply(gemini_server, STREAM_CHUNKS, library=library)
        stream_reply(
            gemini_server,
            [text_response("No", finish_reason=None), text_response("pe", finish_reason="SAFETY")],
            library=library,
        )
        chat.send_message("First")
        response = chat.send_message("Tell me a story", stream=True)
        in_progress = repr(chat)
        response.resolve()
        done = repr(chat)
        chat.send_message("Unsafe", stream=True).resolve()
        reprs.append([in_progress, done, repr(chat)])
    assert reprs[0] == reprs[1]
    assert reprs[1][0].endswith("'role': 'user'}), <STREAMING IN PROGRESS>]\n)")
    assert reprs[1][2].endswith("'role': 'user'}), <STREAMING ERROR>]\n)")


def fails_to_get_weather(city: str) -> str:
    """The weather in a city."""
    raise ValueError(f"no weather station in {city}")


@pytest.mark.usefixtures("gg_configured")
def test_differential_a_raising_function_propagates(
    ledger: chatledger.Client, gemini_server: GeminiServer
) -> None:
    """The function's own exception comes out of send_message, and the history is as
    before the send; nothing more is sent to the model."""
    call = {"functionCall": {"name": "fails_to_get_weather", "args": {"city": "Oslo"}}}
    histories = []
    for chat in (
        gg.GenerativeModel(MODEL, tools=[fails_to_get_weather]).start_chat(
            enable_automatic_function_calling=True
        ),
        GenerativeModel(MODEL, tools=[fails_to_get_weather], client=ledger).start_chat(
            enable_automatic_function_calling=True
        ),
    ):
        gemini_server.reply_text("Hello.")
        gemini_server.reply_json(text_response(parts=[call]))
        gemini_server.reply_text("Cold.")
        chat.send_message("Hi")
        with pytest.raises(ValueError, match="no weather station in Oslo"):
            chat.send_message("Weather in Oslo?")
        histories.append([content.parts[0].text for content in list[Any](chat.history)])
        chat.send_message("Never mind.")
    assert histories[0] == histories[1] == ["Hi", "Hello."]
    assert contents_sent(gemini_server)[3:] == contents_sent(gemini_server)[:3]
