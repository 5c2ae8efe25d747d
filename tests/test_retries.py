"""Retries: off by default (as google-genai), exponential backoff with jitter when asked,
Retry-After honoured, and every attempt an event. Delays are checked by recording what
the client asked ``sleep`` for, never by timing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import chatledger
from chatledger.client._retry import RetryPolicy, retry_after
from chatledger.errors import ModelConnectionError, ServerError
from chatledger.types import HttpRetryOptions
from tests.conftest import API_KEY
from tests.support.gemini_server import GeminiServer, Reply, text_response

FAST = {"attempts": 3, "initial_delay": 0.25, "max_delay": 30, "jitter": 0}


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    asked: list[float] = []

    def fake_sleep(seconds: float) -> None:
        asked.append(seconds)

    async def fake_async_sleep(seconds: float) -> None:
        asked.append(seconds)

    monkeypatch.setattr("chatledger.client._chat.time.sleep", fake_sleep)
    monkeypatch.setattr("chatledger.client._chat.asyncio.sleep", fake_async_sleep)
    return asked


def make_client(
    server: GeminiServer, path: Path, retry: dict[str, Any] | None
) -> chatledger.Client:
    options: dict[str, Any] = {"base_url": server.base_url}
    if retry is not None:
        options["retry_options"] = retry
    return chatledger.Client(api_key=API_KEY, http_options=options, store=str(path))


@pytest.fixture
def client(gemini_server: GeminiServer, db_path: Path) -> Iterator[chatledger.Client]:
    with make_client(gemini_server, db_path, FAST) as client:
        yield client


def kinds(chat: Any) -> list[str]:
    return [event.type for event in chat.events()][1:]


def test_retries_are_off_by_default(
    gemini_server: GeminiServer, db_path: Path, sleeps: list[float]
) -> None:
    gemini_server.reply_error(503, "UNAVAILABLE", "busy")
    with make_client(gemini_server, db_path, None) as client:
        chat = client.chats.create(model="m")
        with pytest.raises(ServerError):
            chat.send_message("hi")
        assert len(gemini_server.requests) == 1 and sleeps == []


def test_a_retried_call_succeeds_and_every_attempt_is_an_event(
    client: chatledger.Client, gemini_server: GeminiServer, sleeps: list[float]
) -> None:
    gemini_server.reply_error(503, "UNAVAILABLE", "busy")
    gemini_server.reply_error(429, "RESOURCE_EXHAUSTED", "slow down")
    gemini_server.reply_text("finally")
    chat = client.chats.create(model="m")
    assert chat.send_message("hi").text == "finally"
    assert kinds(chat) == [
        "user_message_added",
        "model_call_started",
        "model_call_failed",
        "model_call_started",
        "model_call_failed",
        "model_call_started",
        "model_responded",
    ]
    events = chat.events()
    assert [e.data.attempt for e in events if e.type == "model_call_started"] == [1, 2, 3]  # type: ignore[attr-defined]
    assert [e.data.ends_turn for e in events if e.type == "model_call_failed"] == [False, False]  # type: ignore[attr-defined]
    assert sleeps == [0.25, 0.5]  # exponential: initial, then doubled (no jitter here)
    # One turn in the history; the same request was sent three times.
    history = [c.to_wire() for c in chat.get_history()]
    assert len(history) == 2 and history[0]["parts"] == [{"text": "hi"}]
    bodies = [request.body for request in gemini_server.requests]
    assert bodies[0] == bodies[1] == bodies[2]


def test_giving_up_ends_the_turn_and_raises(
    client: chatledger.Client, gemini_server: GeminiServer, sleeps: list[float]
) -> None:
    for _ in range(3):
        gemini_server.reply_error(500, "INTERNAL", "down")
    chat = client.chats.create(model="m")
    with pytest.raises(ServerError):
        chat.send_message("hi")
    failed = [e.data for e in chat.events() if e.type == "model_call_failed"]
    assert [f.ends_turn for f in failed] == [False, False, True]  # type: ignore[attr-defined]
    assert chat.get_history() == [] and len(sleeps) == 2
    gemini_server.reply_text("later")
    assert chat.send_message("again").text == "later"


def test_client_errors_are_not_retried(
    client: chatledger.Client, gemini_server: GeminiServer, sleeps: list[float]
) -> None:
    gemini_server.reply_error(400, "INVALID_ARGUMENT", "bad")
    chat = client.chats.create(model="m")
    with pytest.raises(chatledger.ClientError):
        chat.send_message("hi")
    assert len(gemini_server.requests) == 1 and sleeps == []


def test_retry_after_is_honoured(
    client: chatledger.Client, gemini_server: GeminiServer, sleeps: list[float]
) -> None:
    gemini_server.enqueue(
        Reply(
            "raw",
            status=429,
            raw=b'{"error": {"code": 429, "message": "wait", "status": "RESOURCE_EXHAUSTED"}}',
            content_type="application/json",
            headers={"Retry-After": "7"},
        )
    )
    gemini_server.reply_text("ok")
    chat = client.chats.create(model="m")
    assert chat.send_message("hi").text == "ok"
    assert sleeps == [7.0]


def test_a_dropped_connection_is_retried(
    client: chatledger.Client, gemini_server: GeminiServer, sleeps: list[float]
) -> None:
    gemini_server.reply_sse([text_response("never")], drop_after=0)
    gemini_server.reply_sse([text_response("second try")])
    chat = client.chats.create(model="m")
    chunks = list(chat.send_message_stream("hi"))
    assert [c.text for c in chunks] == ["second try"]
    failed = next(e for e in chat.events() if e.type == "model_call_failed")
    assert failed.data.error.kind == "ModelConnectionError"  # type: ignore[attr-defined]


def test_a_stream_is_not_retried_once_chunks_reached_the_caller(
    client: chatledger.Client, gemini_server: GeminiServer, sleeps: list[float]
) -> None:
    gemini_server.reply_sse(
        [text_response("half ", finish_reason=None), text_response("never")], drop_after=1
    )
    chat = client.chats.create(model="m")
    received = []
    with pytest.raises(ModelConnectionError):
        for chunk in chat.send_message_stream("hi"):
            received.append(chunk.text)
    assert received == ["half "] and sleeps == []
    assert len(gemini_server.requests) == 1


def test_async_retries(gemini_server: GeminiServer, db_path: Path, sleeps: list[float]) -> None:
    gemini_server.reply_error(503, "UNAVAILABLE", "busy")
    gemini_server.reply_text("async ok")

    async def scenario() -> list[str]:
        client = make_client(gemini_server, db_path, FAST)
        chat = client.aio.chats.create(model="m")
        response = await chat.send_message("hi")
        assert response.text == "async ok"
        events = await chat.events()
        await client.aclose()
        return [event.type for event in events]

    assert asyncio.run(scenario()).count("model_call_started") == 2
    assert sleeps == [0.25]


def test_a_conversation_with_retries_replays_cleanly(
    client: chatledger.Client, gemini_server: GeminiServer, sleeps: list[float]
) -> None:
    gemini_server.reply_error(503, "UNAVAILABLE", "busy")
    gemini_server.reply_text("ok")
    chat = client.chats.create(model="m")
    chat.send_message("hi")
    report = chatledger.replay_conversation(client.store, chat.id)
    assert report.ok and report.calls == 2


def test_policy_formula_and_retry_after_parsing() -> None:
    policy = RetryPolicy(
        HttpRetryOptions(attempts=4, initial_delay=1, max_delay=5, exp_base=3, jitter=0)
    )
    error = ServerError(503, {"error": {"code": 503}})
    assert [policy.delay(error, attempt) for attempt in (1, 2, 3, 4)] == [1.0, 3.0, 5.0, None]
    assert RetryPolicy(HttpRetryOptions()).attempts == 5
    assert retry_after(error) is None

    class Response:
        def __init__(self) -> None:
            self.headers = {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}

    dated = ServerError(503, {}, Response())
    assert retry_after(dated) == 0.0  # a date in the past: no extra wait


def test_many_attempts_never_overflow_the_backoff() -> None:
    """``exp_base ** (attempt - 1)`` overflows a float past attempt 1,000 or so: the
    delay is then the maximum, as tenacity's wait_exponential_jitter makes it."""
    policy = RetryPolicy(HttpRetryOptions(attempts=5000, max_delay=7, jitter=0))
    error = ServerError(503, {"error": {"code": 503}})
    assert policy.delay(error, 1100) == 7.0
    assert policy.delay(error, 4999) == 7.0


@pytest.mark.parametrize("field", ["initial_delay", "max_delay", "exp_base", "jitter"])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1.0])
def test_retry_options_that_are_not_finite_are_refused(field: str, value: float) -> None:
    """``max_delay=inf`` with a server's long Retry-After was a sleep forever (and NaN a
    ValueError from time.sleep): such options are refused when the client is made."""
    with pytest.raises(chatledger.InvalidInputError, match="finite"):
        chatledger.Client(http_options={"retry_options": {field: value}})
