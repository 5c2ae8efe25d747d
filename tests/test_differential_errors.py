"""Differential tests against google-genai 3.3.0 on one loopback server: HTTP errors, mid-stream errors
and dropped connections, and the events failures leave.

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

import chatledger
from tests.support.differential import (
    FAILED_TURN_EVENTS,
    HTTP_ERRORS,
    TURN_EVENTS,
    Differential,
    Run,
    adiff,
    assert_same,
    capture,
    check_failed_then_retried,
    diff,
    dump_contents,
    error_signature,
    http_error,
    model,
    sse,
    stream_texts,
    text_chunk,
    user,
)
from tests.support.gemini_server import text_response

# The shared fixtures, used by name in the tests' arguments.
FIXTURES = (adiff, diff)


# =========================================================================== errors


@pytest.mark.parametrize(("code", "status", "class_name"), HTTP_ERRORS)
def test_http_error(diff: Differential, code: int, status: str, class_name: str) -> None:
    def script(chat: Any, t: Any) -> Any:
        chat.send_message("hello")
        before = dump_contents(chat.get_history())
        error = capture(lambda: chat.send_message("flaky"))
        unchanged = dump_contents(chat.get_history()) == before
        return [error, unchanged, chat.send_message("flaky").text]

    replies = [text_response("hi"), http_error(code, status, "try again"), text_response("ok")]
    g, led = diff.run(replies, script)
    check_failed_then_retried(g, led, code, status, class_name)


@pytest.mark.parametrize(("code", "status", "class_name"), HTTP_ERRORS)
def test_http_error_on_stream(diff: Differential, code: int, status: str, class_name: str) -> None:
    def script(chat: Any, t: Any) -> Any:
        chat.send_message("hello")
        before = dump_contents(chat.get_history())
        error = capture(lambda: stream_texts(chat, "flaky"))
        unchanged = dump_contents(chat.get_history()) == before
        return [error, unchanged, "".join(text or "" for text in stream_texts(chat, "flaky"))]

    replies = [
        text_response("hi"),
        http_error(code, status, "try again"),
        sse(text_chunk("ok", "STOP")),
    ]
    g, led = diff.run(replies, script)
    check_failed_then_retried(g, led, code, status, class_name)
    assert [request.streamed for request in led.requests] == [False, True, True]


@pytest.mark.parametrize(
    ("code", "status", "error_class"),
    [(500, "INTERNAL", "ServerError"), (429, "RESOURCE_EXHAUSTED", "ClientError")],
    ids=["500", "429"],
)
def test_mid_stream_error_event(
    diff: Differential, code: int, status: str, error_class: str
) -> None:
    error_event = {"error": {"code": code, "message": "stream broke", "status": status}}

    def script(chat: Any, t: Any) -> Any:
        chat.send_message("hello")
        before = dump_contents(chat.get_history())
        received: list[str | None] = []

        def consume() -> None:
            for chunk in chat.send_message_stream("tell me"):
                received.append(chunk.text)

        error = capture(consume)
        return [
            error,
            received,
            dump_contents(chat.get_history()) == before,
            chat.send_message("again").text,
        ]

    replies = [text_response("hi"), sse(text_chunk("Hel"), error_event), text_response("ok")]
    g, led = diff.run(replies, script)

    (g_error, g_received, g_unchanged, g_after), (l_error, l_received, l_unchanged, l_after) = (
        g.observed,
        led.observed,
    )
    assert type(g_error).__name__ == type(l_error).__name__ == error_class
    assert isinstance(l_error, chatledger.APIError)
    assert error_signature(l_error) == error_signature(g_error)
    assert str(l_error) == f"{code} {status}. {error_event}"
    assert g_received == l_received == ["Hel"]
    assert g_unchanged is l_unchanged is True
    assert g_after == l_after == "ok"
    assert_same(g, led)
    assert led.full == [user("hello"), model("hi"), user("again"), model("ok")]
    (failed,) = led.event_data("model_call_failed")
    assert (failed.error.kind, failed.error.code, failed.error.status) == (
        error_class,
        code,
        status,
    )
    assert failed.partial == {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}]
    }


def test_dropped_connection_mid_stream(diff: Differential) -> None:
    """The server closes the connection after one chunk. google-genai lets its HTTP
    library's error through; chatledger raises ModelConnectionError. Neither changes
    history; chatledger's log has the attempt with its partial text (docs/chat-api.md#errors)."""

    def script(chat: Any, t: Any) -> Any:
        received: list[str | None] = []

        def consume() -> None:
            for chunk in chat.send_message_stream("tell me"):
                received.append(chunk.text)

        error = capture(consume)
        return [error, received, dump_contents(chat.get_history()), chat.send_message("again").text]

    replies = [sse(text_chunk("Hel"), text_chunk("lo", "STOP"), drop_after=1), text_response("ok")]
    g, led = diff.run(replies, script)

    assert type(g.observed[0]).__name__ in ("RemoteProtocolError", "ReadError")  # httpx's
    assert isinstance(led.observed[0], chatledger.ModelConnectionError)
    assert g.observed[1:] == led.observed[1:] == [["Hel"], [], "ok"]
    assert_same(g, led)
    assert led.events == ["conversation_started", *FAILED_TURN_EVENTS, *TURN_EVENTS]
    (failed,) = led.event_data("model_call_failed")
    assert failed.error.kind == "ModelConnectionError"
    assert failed.partial == {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}]
    }


def test_failures_leave_events_not_history(diff: Differential) -> None:
    """docs/chat-api.md#errors in one conversation: an HTTP error, a mid-stream error and an
    abandoned stream leave the histories exactly as google-genai's (unchanged), while
    chatledger's log has every attempt, and the user message is in the history once."""

    def run(library: str) -> Run:
        gate = threading.Event()
        replies = [
            http_error(500, "INTERNAL", "oops"),
            sse(
                text_chunk("Par"),
                {"error": {"code": 503, "message": "gone", "status": "UNAVAILABLE"}},
            ),
            sse(text_chunk("tial"), text_chunk("!", "STOP"), gates={1: gate}),
            text_response("Finally."),
        ]

        def script(chat: Any, t: Any) -> Any:
            errors = [
                capture(lambda: chat.send_message("Q")),
                capture(lambda: stream_texts(chat, "Q")),
            ]
            for _chunk in chat.send_message_stream("Q"):
                break
            gate.set()
            empty = dump_contents(chat.get_history()) == []
            return [[error_signature(e)[:3] for e in errors], empty, chat.send_message("Q").text]

        return (diff.run_genai if library == "genai" else diff.run_ledger)(replies, script)

    g, led = run("genai"), run("chatledger")

    assert (
        g.observed
        == led.observed
        == [
            [("ServerError", 500, "INTERNAL"), ("ServerError", 503, "UNAVAILABLE")],
            True,
            "Finally.",
        ]
    )
    assert_same(g, led)
    assert led.full == [user("Q"), model("Finally.")]
    assert led.events == ["conversation_started", *FAILED_TURN_EVENTS * 3, *TURN_EVENTS]
    kinds = [event.error.kind for event in led.event_data("model_call_failed")]
    assert kinds == ["ServerError", "ServerError", "abandoned"]
    partials = [event.partial for event in led.event_data("model_call_failed")]
    assert partials[0] is None
    assert partials[1]["candidates"][0]["content"]["parts"] == [{"text": "Par"}]
    assert partials[2]["candidates"][0]["content"]["parts"] == [{"text": "tial"}]
