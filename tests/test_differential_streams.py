"""Differential tests against google-genai 3.3.0 on one loopback server: streamed replies, abandoned
streams, and chunks reaching the caller as they arrive.

Every scenario runs through google-genai's chat and through chatledger's chat, against
the same :class:`GeminiServer` with identical scripted replies, and compares the request
bodies, the full histories, and google-genai's curated history with chatledger's context
(docs/chat-api.md). Each chatledger run is also reopened by a fresh client from the same
SQLite file, and must rebuild to identical histories (``Differential._finish``). Where
chatledger deliberately differs, a test shows the difference precisely and names it
(docs/differences.md). Fixtures and normal forms: ``tests/support/differential.py``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from tests.support.differential import (
    CALL,
    FAILED_TURN_EVENTS,
    TURN_EVENTS,
    WAIT,
    WEATHER_TOOL,
    Differential,
    Run,
    adiff,
    assert_same,
    diff,
    dump_contents,
    model,
    sse,
    stream_texts,
    text_chunk,
    user,
)
from tests.support.gemini_server import text_response

# The shared fixtures, used by name in the tests' arguments.
FIXTURES = (adiff, diff)


# =========================================================================== streaming


def test_stream_single_chunk_with_finish_reason(diff: Differential) -> None:
    """One chunk that carries the whole answer and the finish reason: identical."""

    def script(chat: Any, t: Any) -> Any:
        return [stream_texts(chat, "Hello"), chat.send_message("And?").text]

    g, led = diff.run([sse(text_chunk("Hi!", "STOP")), text_response("That's all.")], script)

    assert g.observed == led.observed == [["Hi!"], "That's all."]
    assert_same(g, led)
    assert led.requests[0].streamed and led.requests[0].query == {"alt": ["sse"]}
    assert led.contents[1] == [user("Hello"), model("Hi!"), user("And?")]


def test_stream_is_one_model_turn(diff: Differential) -> None:
    """docs/differences.md#stream-one-turn: google-genai appends each chunk as its own model content;
    chatledger merges the chunks of the turn into one. Both count the turn valid."""
    chunks = [
        text_chunk("Hel"),
        text_chunk("lo, "),
        text_chunk("world", "STOP", usageMetadata={"totalTokenCount": 9}),
    ]

    def script(chat: Any, t: Any) -> Any:
        return [stream_texts(chat, "Greet me"), chat.send_message("Thanks").text]

    g, led = diff.run([sse(*chunks), text_response("Welcome")], script)

    assert g.observed == led.observed == [["Hel", "lo, ", "world"], "Welcome"]
    assert led.bodies[0] == g.bodies[0]
    assert g.full == [
        user("Greet me"),
        model("Hel"),
        model("lo, "),
        model("world"),
        user("Thanks"),
        model("Welcome"),
    ]
    assert led.full == [user("Greet me"), model("Hello, world"), user("Thanks"), model("Welcome")]
    # Both count it valid (it is in both contexts and in the next request), each in its shape.
    assert g.context == g.full and led.context == led.full
    assert g.contents[1] == [
        user("Greet me"),
        model("Hel"),
        model("lo, "),
        model("world"),
        user("Thanks"),
    ]
    assert led.contents[1] == [user("Greet me"), model("Hello, world"), user("Thanks")]
    # The merged content is exactly google-genai's chunk contents joined.
    joined = "".join(content["parts"][0]["text"] for content in g.full[1:4])
    assert led.full[1] == model(joined)
    events = led.event_data("model_responded")
    assert events[0].streamed and events[0].chunks == 3
    assert events[0].response == {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "Hello, world"}]},
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"totalTokenCount": 9},
    }


def test_stream_last_is_the_merged_response(diff: Differential) -> None:
    chunks = [
        text_chunk("Hel"),
        text_chunk("lo", "STOP", usageMetadata={"promptTokenCount": 2, "totalTokenCount": 5}),
    ]

    def script(chat: Any, t: Any) -> Any:
        return stream_texts(chat, "Hi")

    g, led = diff.run([sse(*chunks)], script)

    assert g.observed == led.observed == ["Hel", "lo"]
    last = led.chat.last
    assert last.text == "".join(g.observed)
    assert last.candidates[0].finish_reason.value == "STOP"
    assert last.usage_metadata.total_token_count == 5


def test_stream_without_finish_reason(diff: Differential) -> None:
    """A stream that ends without a finish reason is an invalid turn in both libraries:
    kept in the full history (google-genai: one content per chunk; chatledger: one merged
    content, docs/differences.md#stream-one-turn), left out of the context and of the next request."""
    chunks = [text_chunk("Hel"), text_chunk("lo")]

    def script(chat: Any, t: Any) -> Any:
        return [stream_texts(chat, "Hi"), chat.send_message("Still there?").text]

    g, led = diff.run([sse(*chunks), text_response("Yes")], script)

    assert g.observed == led.observed == [["Hel", "lo"], "Yes"]
    assert led.bodies == g.bodies  # the invalid turn is sent by neither
    assert led.contents[1] == [user("Still there?")]
    assert g.full == [user("Hi"), model("Hel"), model("lo"), user("Still there?"), model("Yes")]
    assert led.full == [user("Hi"), model("Hello"), user("Still there?"), model("Yes")]
    assert led.context == g.context == [user("Still there?"), model("Yes")]


def test_stream_final_chunk_with_only_finish_reason(diff: Differential) -> None:
    """docs/differences.md#stream-one-turn: a final chunk carrying only the finish reason and usage is fine for
    chatledger (the merged content is valid); google-genai judges every chunk on its own,
    finds this one without content, and drops the whole turn from its curated history."""
    chunks = [
        text_chunk("Hel"),
        text_chunk("lo"),
        {"candidates": [{"finishReason": "STOP"}], "usageMetadata": {"totalTokenCount": 4}},
    ]

    def script(chat: Any, t: Any) -> Any:
        return [stream_texts(chat, "Hi"), chat.send_message("Again").text]

    g, led = diff.run([sse(*chunks), text_response("ok")], script)

    assert g.observed == led.observed == [["Hel", "lo", None], "ok"]
    assert g.full == [user("Hi"), model("Hel"), model("lo"), user("Again"), model("ok")]
    assert g.contents[1] == [user("Again")]
    assert g.context == [user("Again"), model("ok")]
    assert led.full == [user("Hi"), model("Hello"), user("Again"), model("ok")]
    assert led.contents[1] == [user("Hi"), model("Hello"), user("Again")]
    assert led.context == led.full


def test_stream_merges_text_and_keeps_other_parts(diff: Differential) -> None:
    """docs/differences.md#stream-one-turn: adjacent plain text parts are concatenated (thoughts with
    thoughts), other parts are kept in order with their thought signature."""
    signed_call = {**CALL, "thoughtSignature": "c2lnbmVk"}
    chunks = [
        text_response(parts=[{"text": "Plan: ", "thought": True}], finish_reason=None),
        text_response(parts=[{"text": "ask the tool.", "thought": True}], finish_reason=None),
        text_chunk("Let me "),
        text_chunk("check."),
        text_response(parts=[signed_call], finish_reason="STOP"),
    ]

    def script(chat: Any, t: Any) -> Any:
        texts = stream_texts(chat, "Weather in Paris?")
        answer = t.Part.from_function_response(name="get_weather", response={"temp_c": 21})
        return [texts, chat.send_message(answer).text]

    g, led = diff.run([sse(*chunks), text_response("21 C.")], script, config=WEATHER_TOOL)

    assert g.observed == led.observed == [[None, None, "Let me ", "check.", None], "21 C."]
    merged = {
        "role": "model",
        "parts": [
            {"text": "Plan: ask the tool.", "thought": True},
            {"text": "Let me check."},
            {
                "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                "thoughtSignature": "c2lnbmVk",
            },
        ],
    }
    assert led.requests[1].body["contents"][:2] == [user("Weather in Paris?"), merged]
    assert len(g.contents[1]) == 7  # google-genai: the user content, 5 chunk contents, the answer
    assert led.contents[1][2] == g.contents[1][6]
    assert (
        led.full[1]["parts"][2]["thought_signature"] == g.full[5]["parts"][0]["thought_signature"]
    )


# =========================================================================== abandoned streams


@pytest.mark.parametrize("how", ["break", "close"])
def test_abandoned_stream_changes_no_history(diff: Differential, how: str) -> None:
    def run(library: str) -> Run:
        gate = threading.Event()
        replies = [
            text_response("Hi"),
            sse(text_chunk("Hel"), text_chunk("lo", "STOP"), gates={1: gate}),
            text_response("ok"),
        ]

        def script(chat: Any, t: Any) -> Any:
            chat.send_message("first")
            before = dump_contents(chat.get_history())
            firsts = []
            if how == "break":
                for chunk in chat.send_message_stream("tell me"):
                    firsts.append(chunk.text)
                    break
            else:
                stream = chat.send_message_stream("tell me")
                firsts.append(next(stream).text)
                stream.close()
            gate.set()  # only now may the server send the rest (nobody reads it)
            after = dump_contents(chat.get_history())
            return [firsts, before == after, chat.send_message("again").text]

        runner = diff.run_genai if library == "genai" else diff.run_ledger
        return runner(replies, script)

    g, led = run("genai"), run("chatledger")

    assert g.observed == led.observed == [["Hel"], True, "ok"]
    assert_same(g, led)
    assert led.contents[2] == [user("first"), model("Hi"), user("again")]
    assert led.full == [user("first"), model("Hi"), user("again"), model("ok")]
    assert led.events == ["conversation_started", *TURN_EVENTS, *FAILED_TURN_EVENTS, *TURN_EVENTS]
    (failed,) = led.event_data("model_call_failed")
    assert failed.error.kind == "abandoned"
    assert failed.streamed
    assert failed.partial == {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}]
    }


def test_new_send_abandons_a_suspended_stream(diff: Differential) -> None:
    """Listed in docs/differences.md#google-genai-smaller: a sync stream left suspended (neither finished nor
    closed) is abandoned by the chat's next send, so turns never interleave. google-genai
    lets the old stream go on afterwards and records its turn after the newer one."""

    def run(library: str) -> Run:
        gate = threading.Event()
        replies = [
            sse(text_chunk("Hel"), text_chunk("lo", "STOP"), gates={1: gate}),
            text_response("B"),
        ]

        def script(chat: Any, t: Any) -> Any:
            stream = chat.send_message_stream("A")
            first = next(stream).text
            answer = chat.send_message("b").text
            gate.set()
            return [first, answer, [chunk.text for chunk in stream]]

        return (diff.run_genai if library == "genai" else diff.run_ledger)(replies, script)

    g, led = run("genai"), run("chatledger")

    assert g.observed == ["Hel", "B", ["lo"]]
    assert led.observed == ["Hel", "B", []]
    assert led.bodies == g.bodies
    assert led.contents == [[user("A")], [user("b")]]
    assert g.full == [user("b"), model("B"), user("A"), model("Hel"), model("lo")]
    assert led.full == [user("b"), model("B")]
    assert led.events == ["conversation_started", *FAILED_TURN_EVENTS, *TURN_EVENTS]
    (failed,) = led.event_data("model_call_failed")
    assert failed.error.kind == "abandoned"


# =========================================================================== chunks arrive as sent


def first_chunk_before_second_is_sent(chat: Any, gate: threading.Event) -> list[str | None]:
    """Consume a gated stream in a thread; check the first chunk arrives while the server
    still holds the second (it waits for ``gate``), then release it."""
    received: list[str | None] = []
    first = threading.Event()
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            for chunk in chat.send_message_stream("stream please"):
                received.append(chunk.text)
                first.set()
        except BaseException as exc:  # reported to the test thread
            failure.append(exc)
            first.set()

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    try:
        arrived = first.wait(timeout=WAIT)
        assert not gate.is_set()
        assert arrived and not failure, (
            f"first chunk not received while the second was held ({failure})"
        )
        assert received == ["Hel"]
    finally:
        gate.set()
        worker.join(timeout=WAIT)
    assert not worker.is_alive() and not failure
    return received


def test_chunks_reach_the_caller_as_they_arrive(diff: Differential) -> None:
    for library in ("genai", "chatledger"):
        gate = threading.Event()
        reply = sse(text_chunk("Hel"), text_chunk("lo", "STOP"), gates={1: gate})

        def script(chat: Any, t: Any, gate: threading.Event = gate) -> Any:
            return first_chunk_before_second_is_sent(chat, gate)

        run = (diff.run_genai if library == "genai" else diff.run_ledger)([reply], script)
        assert run.observed == ["Hel", "lo"]
        assert run.full[0] == user("stream please")


async def test_async_chunks_reach_the_caller_as_they_arrive(adiff: Differential) -> None:
    for library in ("genai", "chatledger"):
        gate = threading.Event()
        adiff.enqueue([sse(text_chunk("Hel"), text_chunk("lo", "STOP"), gates={1: gate})])
        if library == "genai":
            chat = adiff.create_genai(is_async=True)
        else:
            chat = adiff.create_ledger(is_async=True)
        stream = await chat.send_message_stream("stream please")
        iterator = stream.__aiter__()
        try:
            first = await asyncio.wait_for(iterator.__anext__(), timeout=WAIT)
            assert not gate.is_set()
            assert first.text == "Hel"
        finally:
            gate.set()
        rest = [chunk.text async for chunk in iterator]
        assert rest == ["lo"]
    assert adiff.server.pending == 0
