"""The chat scenario suite: every scenario runs on the sync Chat and on the AsyncChat.

Replies come from ScriptedTransport (a real transport object with queued replies); the
log is a real SQLite file. Behaviour at the HTTP level is covered by the differential
suite against google-genai.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import chatledger
from chatledger import types
from chatledger.client.transports.scripted import ScriptedTransport, text_response
from chatledger.errors import (
    ChatStateError,
    FunctionCallingError,
    InvalidInputError,
    NotFoundError,
    ServerError,
)
from tests.support.drivers import AsyncDriver, SyncDriver
from tests.support.narrow import part_of

Driver = SyncDriver | AsyncDriver


@pytest.fixture(params=["sync", "async"])
def driver(request: pytest.FixtureRequest) -> Driver:
    return SyncDriver() if request.param == "sync" else AsyncDriver()


@pytest.fixture
def transport() -> ScriptedTransport:
    return ScriptedTransport()


@pytest.fixture
def client(
    transport: ScriptedTransport, db_path: Path, driver: Driver
) -> Iterator[chatledger.Client]:
    client = chatledger.Client(store=str(db_path), transport=transport, actor="alice")
    yield client
    driver.close(client)


def wire(contents: list[types.Content]) -> list[dict[str, Any]]:
    return [content.to_wire() for content in contents]


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


def model(text: str) -> dict[str, Any]:
    return {"role": "model", "parts": [{"text": text}]}


def types_of(events: list[chatledger.RecordedEvent]) -> list[str]:
    return [event.type for event in events]


# --------------------------------------------------------------------------- turns


def test_plain_turns_build_all_three_histories(
    driver: Driver, client: chatledger.Client, transport: ScriptedTransport
) -> None:
    transport.enqueue(
        text_response(
            "Hi!", usage={"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}
        )
    )
    transport.enqueue("Fine.")
    chat = driver.create(
        client, model="gemini-2.5-flash", config={"system_instruction": "Be brief."}
    )

    assert driver.send(chat, "Hello").text == "Hi!"
    assert driver.send(chat, "How are you?").text == "Fine."

    expected = [user("Hello"), model("Hi!"), user("How are you?"), model("Fine.")]
    assert wire(chat.get_history()) == expected
    assert wire(chat.get_history(curated=True)) == expected
    assert wire(chat.get_context()) == expected
    assert chat.last is not None and chat.last.text == "Fine."
    # The second request carried the first turn and the system instruction.
    assert transport.requests[1].contents == [*expected[:3]]
    assert transport.requests[1].config["systemInstruction"] == {
        "role": "user",
        "parts": [{"text": "Be brief."}],
    }
    assert types_of(driver.events(chat)) == [
        "conversation_started",
        "user_message_added",
        "model_call_started",
        "model_responded",
        "user_message_added",
        "model_call_started",
        "model_responded",
    ]
    assert all(event.actor == "alice" for event in driver.events(chat))
    assert chat.usage.turns == 2
    assert chat.usage.total("totalTokenCount") == 5


def test_history_given_at_creation_is_the_start_of_every_history(
    driver: Driver, client: chatledger.Client, transport: ScriptedTransport
) -> None:
    transport.enqueue("third")
    history = [user("one"), model("two"), user("bad"), {"role": "model", "parts": []}]
    chat = driver.create(client, model="m", history=history)
    assert wire(chat.get_history()) == history
    assert wire(chat.get_context()) == history[:2]  # the invalid turn is not sent
    driver.send(chat, "again")
    assert transport.requests[0].contents == [*history[:2], user("again")]


def test_get_history_returns_copies(
    driver: Driver, client: chatledger.Client, transport: ScriptedTransport
) -> None:
    transport.enqueue("Hi")
    chat = driver.create(client, model="m")
    driver.send(chat, "Hello")
    copy = chat.get_history()
    copy.append(types.Content(role="user", parts=[types.Part(text="injected")]))
    part_of(copy[0]).text = "changed"
    assert wire(chat.get_history()) == [user("Hello"), model("Hi")]


def test_streamed_reply_is_one_turn_with_merged_text(
    driver: Driver, client: chatledger.Client, transport: ScriptedTransport
) -> None:
    final = text_response(
        "day", usage={"promptTokenCount": 4, "candidatesTokenCount": 3, "totalTokenCount": 7}
    )
    transport.enqueue(chunks=["Good ", "sunny ", final])
    chat = driver.create(client, model="m")
    chunks = driver.stream(chat, "Weather?")

    assert [chunk.text for chunk in chunks] == ["Good ", "sunny ", "day"]
    assert wire(chat.get_history()) == [user("Weather?"), model("Good sunny day")]
    assert chat.last is not None
    assert chat.last.text == "Good sunny day"
    assert chat.last.candidates[0].finish_reason == types.FinishReason.STOP  # type: ignore[index]
    assert chat.last.usage_metadata is not None and chat.last.usage_metadata.total_token_count == 7
    responded = driver.events(chat)[-1]
    assert responded.type == "model_responded"
    assert responded.data.streamed and responded.data.chunks == 3  # type: ignore[attr-defined]


def test_stream_without_finish_reason_is_recorded_but_not_sent_again(
    driver: Driver, client: chatledger.Client, transport: ScriptedTransport
) -> None:
    transport.enqueue(
        chunks=[text_response("cut ", finish_reason=None), text_response("off", finish_reason=None)]
    )
    transport.enqueue("ok")
    chat = driver.create(client, model="m")
    driver.stream(chat, "Tell me")
    assert wire(chat.get_history()) == [user("Tell me"), model("cut off")]
    assert chat.get_context() == []
    driver.send(chat, "Again")
    assert transport.requests[1].contents == [user("Again")]


def test_a_final_chunk_with_only_finish_reason_and_usage_is_fine(
    driver: Driver, client: chatledger.Client, transport: ScriptedTransport
) -> None:
    last = {"candidates": [{"finishReason": "STOP"}], "usageMetadata": {"totalTokenCount": 9}}
    transport.enqueue(
        chunks=[
            text_response("all", finish_reason=None),
            text_response(" good", finish_reason=None),
            last,
        ]
    )
    chat = driver.create(client, model="m")
    driver.stream(chat, "q")
    assert wire(chat.get_context()) == [user("q"), model("all good")]


def test_thought_signatures_and_unknown_fields_survive_streaming(
    driver: Driver, client: chatledger.Client, transport: ScriptedTransport
) -> None:
    signed = {"text": "", "thoughtSignature": "c2lnbmF0dXJl"}
    future = {"text": "x", "futureField": {"nested": [1, 2]}}
    transport.enqueue(
        chunks=[
            {
                "candidates": [
                    {"content": {"role": "model", "parts": [{"text": "a"}, {"text": "b"}]}}
                ]
            },
            {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [signed, future]},
                        "finishReason": "STOP",
                    }
                ],
                "responseId": "r1",
            },
        ]
    )
    transport.enqueue("next")
    chat = driver.create(client, model="m")
    driver.stream(chat, "q")
    driver.send(chat, "again")
    sent_model = transport.requests[1].contents[1]
    assert sent_model == {"parts": [{"text": "ab"}, signed, future], "role": "model"}
    assert part_of(chat.get_history()[1], 1).thought_signature == b"signature"


# --------------------------------------------------------------------------- failures


def test_failure_leaves_events_not_history_and_retry_does_not_duplicate(
    driver: Driver, client: chatledger.Client, transport: ScriptedTransport
) -> None:
    transport.enqueue("first")
    transport.enqueue(
        error=ServerError(
            503, {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}
        )
    )
    transport.enqueue("second")
    chat = driver.create(client, model="m")
    driver.send(chat, "one")
    with pytest.raises(ServerError) as raised:
        driver.send(chat, "two")
    assert raised.value.code == 503
    assert wire(chat.get_history()) == [user("one"), model("first")]
    failed = driver.events(chat)[-1]
    assert failed.type == "model_call_failed"
    assert failed.data.error.code == 503 and failed.data.error.status == "UNAVAILABLE"  # type: ignore[attr-defined]

    driver.send(chat, "two")
    assert wire(chat.get_history()) == [user("one"), model("first"), user("two"), model("second")]
    assert transport.requests[2].contents == [user("one"), model("first"), user("two")]
    assert chat.usage.turns_failed == 1


def test_abandoned_stream_is_recorded_with_partial_text(
    driver: Driver, client: chatledger.Client, transport: ScriptedTransport
) -> None:
    transport.enqueue(chunks=["par", "tial ", "never seen"])
    transport.enqueue("fresh")
    chat = driver.create(client, model="m")
    chunks = driver.stream(chat, "q", stop_after=2)
    assert [chunk.text for chunk in chunks] == ["par", "tial "]
    assert chat.get_history() == []
    failed = driver.events(chat)[-1]
    assert failed.type == "model_call_failed"
    assert failed.data.error.kind == "abandoned"  # type: ignore[attr-defined]
    assert failed.data.partial["candidates"][0]["content"]["parts"] == [{"text": "partial "}]  # type: ignore[attr-defined]
    driver.send(chat, "q2")
    assert wire(chat.get_history()) == [user("q2"), model("fresh")]


def test_error_in_the_middle_of_a_stream(
    driver: Driver, client: chatledger.Client, transport: ScriptedTransport
) -> None:
    boom = ServerError(500, {"error": {"code": 500, "message": "internal", "status": "INTERNAL"}})
    transport.enqueue(chunks=["half"], error=boom)
    chat = driver.create(client, model="m")
    with pytest.raises(ServerError):
        driver.stream(chat, "q")
    assert chat.get_history() == []
    assert driver.events(chat)[-1].data.partial is not None  # type: ignore[attr-defined]


def test_invalid_response_shape_is_a_recorded_failure(
    driver: Driver, client: chatledger.Client, transport: ScriptedTransport
) -> None:
    transport.enqueue({"candidates": "not a list"})
    chat = driver.create(client, model="m")
    with pytest.raises(chatledger.InvalidResponseError):
        driver.send(chat, "q")
    assert chat.get_history() == []
    assert types_of(driver.events(chat))[-1] == "model_call_failed"


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "message", [None, 42, {"text": "dict"}, [], [1], types.Content(role="user", parts=[])]
)
def test_bad_messages_raise_before_anything_is_recorded(
    driver: Driver, client: chatledger.Client, message: Any
) -> None:
    chat = driver.create(client, model="m")
    before = len(driver.events(chat))
    with pytest.raises(ValueError) as raised:
        driver.send(chat, message)
    assert isinstance(raised.value, InvalidInputError)
    assert type(message).__name__ in str(raised.value) or "empty" in str(raised.value)
    assert len(driver.events(chat)) == before


@pytest.mark.parametrize(
    "history",
    [
        [{"role": "system", "parts": [{"text": "x"}]}],
        [{"parts": [{"text": "no role"}]}],
        ["just a string"],
        "not a list",
    ],
)
def test_malformed_history_is_refused_and_nothing_is_recorded(
    driver: Driver, client: chatledger.Client, history: Any
) -> None:
    with pytest.raises(InvalidInputError):
        driver.create(client, model="m", history=history)
    assert client.store.conversations() == []


def test_unknown_conversation_id(driver: Driver, client: chatledger.Client) -> None:
    with pytest.raises(NotFoundError, match="no conversation 'nope'"):
        driver.get(client, "nope")


def test_message_kinds_become_the_right_contents(
    driver: Driver, client: chatledger.Client, transport: ScriptedTransport
) -> None:
    for _ in range(3):
        transport.enqueue("ok")
    chat = driver.create(client, model="m")
    driver.send(chat, ["look", types.Part.from_bytes(data=b"\x89PNG", mime_type="image/png")])
    driver.send(chat, types.File(uri="gs://bucket/a.pdf", mime_type="application/pdf"))
    driver.send(chat, types.Part.from_function_call(name="f", args={"x": 1}))
    sent = [request.contents[-1] for request in transport.requests]
    assert sent[0] == {
        "role": "user",
        "parts": [{"text": "look"}, {"inlineData": {"data": "iVBORw==", "mimeType": "image/png"}}],
    }
    assert sent[1] == {
        "role": "user",
        "parts": [{"fileData": {"fileUri": "gs://bucket/a.pdf", "mimeType": "application/pdf"}}],
    }
    # A Part holding a function call becomes a model turn, as in google-genai, and is sent.
    assert sent[2] == {
        "role": "model",
        "parts": [{"functionCall": {"name": "f", "args": {"x": 1}}}],
    }
    assert len(transport.requests[2].contents) == 5  # two earlier turns, then the message


# --------------------------------------------------------------------------- config


def test_per_message_config_is_merged_over_the_chats(
    driver: Driver, client: chatledger.Client, transport: ScriptedTransport
) -> None:
    transport.enqueue("a")
    transport.enqueue("b")
    chat = driver.create(
        client,
        model="m",
        config={"system_instruction": "sys", "temperature": 0.1, "max_output_tokens": 50},
    )
    driver.send(chat, "q1", config={"temperature": 0.9})
    driver.send(chat, "q2")
    first, second = (request.config for request in transport.requests)
    assert first["systemInstruction"]["parts"] == [{"text": "sys"}]
    assert first["generationConfig"] == {"temperature": 0.9, "maxOutputTokens": 50}
    assert second["generationConfig"] == {"temperature": 0.1, "maxOutputTokens": 50}
    started = [e for e in driver.events(chat) if e.type == "model_call_started"]
    assert started[0].data.config == {"temperature": 0.9}  # type: ignore[attr-defined]
    assert started[1].data.config is None  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- rewind, resume


def test_rewind_takes_back_the_last_turn_and_deletes_nothing(
    driver: Driver, client: chatledger.Client, transport: ScriptedTransport
) -> None:
    transport.enqueue("a1")
    transport.enqueue("a2")
    transport.enqueue("a2 again")
    chat = driver.create(client, model="m")
    driver.send(chat, "q1")
    driver.send(chat, "q2")
    removed_user, removed_model = driver.rewind(chat)
    assert (removed_user.to_wire(), removed_model.to_wire()) == (user("q2"), model("a2"))
    assert wire(chat.get_history()) == [user("q1"), model("a1")]
    assert chat.last is None
    driver.send(chat, "q2 rephrased")
    assert transport.requests[-1].contents == [user("q1"), model("a1"), user("q2 rephrased")]
    assert types_of(driver.events(chat)).count("turn_rewound") == 1
    assert len(driver.events(chat)) == 11  # nothing was deleted


def test_rewind_on_an_empty_history_is_a_clear_error(
    driver: Driver, client: chatledger.Client
) -> None:
    chat = driver.create(client, model="m")
    with pytest.raises(ChatStateError, match="no turn to rewind"):
        driver.rewind(chat)


def test_resume_in_a_new_client_and_catch_up_across_clients(
    driver: Driver, client: chatledger.Client, transport: ScriptedTransport, db_path: Path
) -> None:
    for text in ("a1", "a2", "a3"):
        transport.enqueue(text)
    chat = driver.create(client, model="m", config={"temperature": 0.3})
    driver.send(chat, "q1")

    other_client = chatledger.Client(store=str(db_path), transport=transport, actor="bob")
    try:
        resumed = driver.get(other_client, chat.id)
        assert wire(resumed.get_history()) == wire(chat.get_history())
        assert resumed.config is not None and resumed.config.temperature == 0.3
        driver.send(resumed, "q2")  # written by the other client
        driver.send(chat, "q3")  # this chat catches up before sending
        assert transport.requests[-1].contents == [
            user("q1"),
            model("a1"),
            user("q2"),
            model("a2"),
            user("q3"),
        ]
        actors = {
            event.actor for event in driver.events(chat) if event.type == "user_message_added"
        }
        assert actors == {"alice", "bob"}
    finally:
        driver.close(other_client) if isinstance(driver, SyncDriver) else other_client.close()


def test_a_send_reads_only_new_events(
    driver: Driver, transport: ScriptedTransport, db_path: Path
) -> None:
    """No send costs O(whole conversation) in reads: count the events each send reads."""
    store = chatledger.SQLiteStore(db_path)
    read_counts: list[int] = []
    original = store.read

    def counting_read(conversation_id: str, **kwargs: Any) -> list[chatledger.RecordedEvent]:
        events = original(conversation_id, **kwargs)
        read_counts.append(len(events))
        return events

    store.read = counting_read  # type: ignore[method-assign]
    client = chatledger.Client(store=store, transport=transport)
    try:
        chat = driver.create(client, model="m")
        per_send = []
        for index in range(30):
            transport.enqueue(f"a{index}")
            read_counts.clear()
            driver.send(chat, f"q{index}")
            per_send.append(sum(read_counts))
        assert per_send[-1] == per_send[1]  # the 30th send reads as much as the 2nd
        assert per_send[-1] <= 4  # its own three events, plus nothing else
    finally:
        driver.close(client)


# --------------------------------------------------------------------------- functions


def get_weather(city: str) -> dict[str, Any]:
    """Get the weather for a city."""
    return {"city": city, "sky": "sunny"}


def failing_tool(x: int) -> int:
    """Always fails."""
    raise RuntimeError("tool broke")


def call(name: str, **args: Any) -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"functionCall": {"name": name, "args": args}}],
                },
                "finishReason": "STOP",
            }
        ]
    }


def test_automatic_function_calling_records_each_step(
    driver: Driver, client: chatledger.Client, transport: ScriptedTransport
) -> None:
    transport.enqueue(call("get_weather", city="Oslo"))
    transport.enqueue("It is sunny in Oslo.")
    chat = driver.create(client, model="m", config={"tools": [get_weather]})
    response = driver.send(chat, "Weather in Oslo?")
    assert response.text == "It is sunny in Oslo."

    function_response = {
        "role": "user",
        "parts": [
            {
                "functionResponse": {
                    "name": "get_weather",
                    "response": {"result": {"city": "Oslo", "sky": "sunny"}},
                }
            }
        ],
    }
    model_call = {
        "role": "model",
        "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}],
    }
    assert wire(chat.get_history()) == [
        user("Weather in Oslo?"),
        model_call,
        function_response,
        model("It is sunny in Oslo."),
    ]
    assert wire(chat.get_history(curated=True)) == [
        user("Weather in Oslo?"),
        model("It is sunny in Oslo."),
    ]
    assert transport.requests[1].contents == [
        user("Weather in Oslo?"),
        model_call,
        function_response,
    ]
    declarations = transport.requests[0].config["tools"][0]["functionDeclarations"]
    assert declarations[0]["name"] == "get_weather"
    assert declarations[0]["parametersJsonSchema"]["required"] == ["city"]
    assert types_of(driver.events(chat))[1:] == [
        "user_message_added",
        "model_call_started",
        "model_responded",
        "function_called",
        "function_responded",
        "model_call_started",
        "model_responded",
    ]
    called = [e for e in driver.events(chat) if e.type == "function_called"]
    responded = [e for e in driver.events(chat) if e.type == "function_responded"]
    assert [(e.data.name, e.data.args) for e in called] == [("get_weather", {"city": "Oslo"})]  # type: ignore[attr-defined]
    assert responded[0].data.error is None and responded[0].data.duration_ms >= 0  # type: ignore[attr-defined]


def test_function_errors_and_unknown_names_become_error_responses(
    driver: Driver, client: chatledger.Client, transport: ScriptedTransport
) -> None:
    transport.enqueue(call("failing_tool", x=1))
    transport.enqueue(call("not_a_tool", y=2))
    transport.enqueue("done")
    chat = driver.create(client, model="m", config={"tools": [failing_tool]})
    assert driver.send(chat, "go").text == "done"
    responses = [e.data for e in driver.events(chat) if e.type == "function_responded"]
    assert "tool broke" in responses[0].response["error"]  # type: ignore[attr-defined]
    assert "not_a_tool" in responses[1].response["error"]  # type: ignore[attr-defined]
    assert responses[1].error is not None  # type: ignore[attr-defined]


def test_spent_budget_leaves_the_call_unexecuted_and_never_sends_it(
    driver: Driver, client: chatledger.Client, transport: ScriptedTransport
) -> None:
    transport.enqueue(call("get_weather", city="Rome"))
    transport.enqueue("next turn")
    config = {"tools": [get_weather], "automatic_function_calling": {"maximum_remote_calls": 1}}
    chat = driver.create(client, model="m", config=config)
    response = driver.send(chat, "Weather?")
    assert response.function_calls is not None
    assert "function_called" not in types_of(driver.events(chat))
    assert wire(chat.get_history())[-1]["parts"][0]["functionCall"]["name"] == "get_weather"
    driver.send(chat, "Never mind")
    # The unanswered call is not sent; the user's message is.
    assert transport.requests[-1].contents == [user("Weather?"), user("Never mind")]


def test_declaration_only_tools_are_returned_to_the_caller(
    driver: Driver, client: chatledger.Client, transport: ScriptedTransport
) -> None:
    transport.enqueue(call("lookup", q="x"))
    transport.enqueue("thanks")
    declaration = types.FunctionDeclaration(name="lookup", description="Look something up.")
    chat = driver.create(
        client, model="m", config={"tools": [types.Tool(function_declarations=[declaration])]}
    )
    response = driver.send(chat, "find x")
    assert response.function_calls is not None and response.function_calls[0].name == "lookup"
    answer = types.Part.from_function_response(name="lookup", response={"result": "found"})
    driver.send(chat, answer)
    sent = transport.requests[-1].contents
    assert sent[-2]["parts"][0]["functionCall"]["name"] == "lookup"  # answered now, so sent
    assert sent[-1] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "lookup", "response": {"result": "found"}}}],
    }


async def double(x: int) -> int:
    """Doubles x, asynchronously."""
    return 2 * x


def test_sync_chat_refuses_async_functions_before_anything_is_recorded(db_path: Path) -> None:
    transport = ScriptedTransport()
    with chatledger.Client(store=str(db_path), transport=transport) as client:
        chat = client.chats.create(model="m", config={"tools": [double]})
        before = len(chat.events())
        with pytest.raises(FunctionCallingError, match="coroutine"):
            chat.send_message("go")
        assert len(chat.events()) == before
        assert transport.requests == []


def test_async_chat_calls_async_functions(db_path: Path) -> None:
    driver = AsyncDriver()
    transport = ScriptedTransport()
    transport.enqueue(call("double", x=21))
    transport.enqueue("42")
    client = chatledger.Client(store=str(db_path), transport=transport)
    try:
        chat = driver.create(client, model="m", config={"tools": [double]})
        assert driver.send(chat, "double 21").text == "42"
        responded = [e.data for e in driver.events(chat) if e.type == "function_responded"]
        assert responded[0].response == {"result": 42}  # type: ignore[attr-defined]
    finally:
        driver.close(client)


@pytest.mark.parametrize(
    "model", ["../files", "models/../../v1/files", "gemini?alt=json", "a&b", "gemini#x"]
)
def test_a_model_name_a_gemini_url_cannot_carry_is_refused_at_create(
    db_path: Path, model: str
) -> None:
    """Refused before conversation_started is written, not at the first send; the same
    name is fine where it travels in the body (an OpenAI-compatible server)."""
    from chatledger import legacy

    with chatledger.Client(
        api_key="k", http_options={"base_url": "http://127.0.0.1:9"}, store=str(db_path)
    ) as client:
        with pytest.raises(InvalidInputError, match="a Gemini model name cannot hold"):
            client.chats.create(model=model)
        with pytest.raises(InvalidInputError, match="a Gemini model name cannot hold"):
            legacy.GenerativeModel(model, client=client).start_chat()
        assert client.store.conversations() == []
        assert client.chats.create(model=f"openai/{model}").model == f"openai/{model}"
