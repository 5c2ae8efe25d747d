"""Differential tests against google-genai 3.3.0 on one loopback server: the async chat: the same
scenarios through ``client.aio.chats``.

Every scenario runs through google-genai's chat and through chatledger's chat, against
the same :class:`GeminiServer` with identical scripted replies, and compares the request
bodies, the full histories, and google-genai's curated history with chatledger's context
(docs/chat-api.md). Each chatledger run is also reopened by a fresh client from the same
SQLite file, and must rebuild to identical histories (``Differential._finish``). Where
chatledger deliberately differs, a test shows the difference precisely and names it
(docs/differences.md). Fixtures and normal forms: ``tests/support/differential.py``.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from google.genai import errors as genai_errors

import chatledger
from tests.support.differential import (
    BAD_MESSAGES,
    FAILED_TURN_EVENTS,
    HTTP_ERRORS,
    TURN_EVENTS,
    Differential,
    Run,
    adiff,
    assert_same,
    check_failed_then_retried,
    diff,
    dump_contents,
    error_signature,
    http_error,
    model,
    sse,
    text_chunk,
    user,
)
from tests.support.gemini_server import text_response

# The shared fixtures, used by name in the tests' arguments.
FIXTURES = (adiff, diff)


# =========================================================================== async twins


async def test_async_plain_turns(adiff: Differential) -> None:
    async def script(chat: Any, t: Any) -> Any:
        return [(await chat.send_message(text)).text for text in ("Hello", "More")]

    g, led = await adiff.arun(
        [text_response("Hi"), text_response("Sure")],
        script,
        config={"system_instruction": "Be kind.", "temperature": 0.3},
    )

    assert g.observed == led.observed == ["Hi", "Sure"]
    assert_same(g, led)
    assert led.bodies[1] == {
        "contents": [user("Hello"), model("Hi"), user("More")],
        "systemInstruction": user("Be kind."),
        "generationConfig": {"temperature": 0.3},
    }
    assert led.events == ["conversation_started", *TURN_EVENTS * 2]


async def test_async_stream(adiff: Differential) -> None:
    chunks = [text_chunk("Hel"), text_chunk("lo", "STOP")]

    async def script(chat: Any, t: Any) -> Any:
        texts = [chunk.text async for chunk in await chat.send_message_stream("Hi")]
        return [texts, (await chat.send_message("Again")).text]

    g, led = await adiff.arun([sse(*chunks), text_response("ok")], script)

    assert g.observed == led.observed == [["Hel", "lo"], "ok"]
    assert led.bodies[0] == g.bodies[0]
    # docs/differences.md#stream-one-turn, as in the sync chat.
    assert g.contents[1] == [user("Hi"), model("Hel"), model("lo"), user("Again")]
    assert led.contents[1] == [user("Hi"), model("Hello"), user("Again")]
    assert led.full == [user("Hi"), model("Hello"), user("Again"), model("ok")]
    assert led.context == led.full


async def test_async_stream_without_finish_reason(adiff: Differential) -> None:
    async def script(chat: Any, t: Any) -> Any:
        texts = [chunk.text async for chunk in await chat.send_message_stream("Hi")]
        return [texts, (await chat.send_message("Again")).text]

    g, led = await adiff.arun(
        [sse(text_chunk("Hel"), text_chunk("lo")), text_response("ok")], script
    )

    assert g.observed == led.observed == [["Hel", "lo"], "ok"]
    assert led.bodies == g.bodies
    assert led.contents[1] == [user("Again")]
    assert g.full == [user("Hi"), model("Hel"), model("lo"), user("Again"), model("ok")]
    assert led.full == [user("Hi"), model("Hello"), user("Again"), model("ok")]
    assert led.context == g.context == [user("Again"), model("ok")]


@pytest.mark.parametrize(("code", "status", "class_name"), HTTP_ERRORS)
async def test_async_http_error(
    adiff: Differential, code: int, status: str, class_name: str
) -> None:
    async def script(chat: Any, t: Any) -> Any:
        await chat.send_message("hello")
        before = dump_contents(chat.get_history())
        try:
            await chat.send_message("flaky")
            error: Any = None
        except Exception as exc:
            error = exc
        unchanged = dump_contents(chat.get_history()) == before
        return [error, unchanged, (await chat.send_message("flaky")).text]

    replies = [text_response("hi"), http_error(code, status, "try again"), text_response("ok")]
    g, led = await adiff.arun(replies, script)
    check_failed_then_retried(g, led, code, status, class_name)


async def test_async_mid_stream_error(adiff: Differential) -> None:
    error_event = {"error": {"code": 500, "message": "stream broke", "status": "INTERNAL"}}

    async def script(chat: Any, t: Any) -> Any:
        received: list[str | None] = []
        try:
            async for chunk in await chat.send_message_stream("tell me"):
                received.append(chunk.text)
            error: Any = None
        except Exception as exc:
            error = exc
        history = dump_contents(chat.get_history())
        return [error, received, history, (await chat.send_message("again")).text]

    g, led = await adiff.arun([sse(text_chunk("Hel"), error_event), text_response("ok")], script)

    assert isinstance(g.observed[0], genai_errors.ServerError)
    assert isinstance(led.observed[0], chatledger.ServerError)
    assert error_signature(led.observed[0]) == error_signature(g.observed[0])
    assert g.observed[1:] == led.observed[1:] == [["Hel"], [], "ok"]
    assert_same(g, led)
    assert led.events == ["conversation_started", *FAILED_TURN_EVENTS, *TURN_EVENTS]


async def test_async_abandoned_stream(adiff: Differential) -> None:
    async def run(library: str) -> Run:
        gate = threading.Event()
        replies = [
            sse(text_chunk("Hel"), text_chunk("lo", "STOP"), gates={1: gate}),
            text_response("ok"),
        ]

        async def script(chat: Any, t: Any) -> Any:
            stream = await chat.send_message_stream("tell me")
            received = []
            async for chunk in stream:
                received.append(chunk.text)
                break
            await stream.aclose()
            gate.set()
            empty = chat.get_history() == []
            return [received, empty, (await chat.send_message("again")).text]

        runner = adiff.arun_genai if library == "genai" else adiff.arun_ledger
        return await runner(replies, script)

    g = await run("genai")
    led = await run("chatledger")

    assert g.observed == led.observed == [["Hel"], True, "ok"]
    assert_same(g, led)
    assert led.full == [user("again"), model("ok")]
    assert led.events == ["conversation_started", *FAILED_TURN_EVENTS, *TURN_EVENTS]
    failed = led.event_data("model_call_failed")
    assert [(f.error.kind, f.partial) for f in failed] == [
        ("abandoned", {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}]})
    ]


@pytest.mark.parametrize("message", BAD_MESSAGES)
async def test_async_bad_message_types(adiff: Differential, message: Any) -> None:
    async def script(chat: Any, t: Any) -> Any:
        names = []
        with pytest.raises(ValueError) as raised:
            await chat.send_message(message)
        names.append(type(raised.value).__name__)
        with pytest.raises(ValueError) as raised:
            await chat.send_message_stream(message)  # both check before returning the stream
        names.append(type(raised.value).__name__)
        return [names, chat.get_history() == []]

    g, led = await adiff.arun([], script)

    assert g.observed == [["ValueError", "ValueError"], True]
    assert led.observed == [["InvalidInputError", "InvalidInputError"], True]
    assert g.requests == led.requests == []
    assert led.events == ["conversation_started"]
