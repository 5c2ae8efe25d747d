"""A Vertex AI access token is a secret like the API key (docs/security.md): it never
reaches an event, the database file, an export, a log line, an error message or a repr,
even when the server echoes it back; nor do the refresh token and client secret that
get it, even when the token endpoint quotes them in an error."""

from __future__ import annotations

import logging
import sys
import uuid
from pathlib import Path

import pytest

import chatledger
from chatledger.events.audit import export_conversation
from chatledger.events.kinds import ModelCallFailed
from tests.support.gemini_server import GeminiServer, text_response
from tests.support.vertex import (
    LOCATION,
    PROJECT,
    expired_credentials,
    refreshable_credentials,
    static_credentials,
    token_reply,
)

MODEL = "gemini-2.5-flash"
# Each test's secrets are its own (uuid4), so that none of them was registered for
# redaction by another test run earlier in the same process.
_RUN = uuid.uuid4().hex
TOKEN = f"ya29.echoed-token-SECRET-{_RUN}"
FRESH = f"ya29.refreshed-token-SECRET-{_RUN}"
REFRESH_TOKEN = f"1//refresh-SECRET-{_RUN}"
CLIENT_SECRET = f"client-secret-SECRET-{_RUN}"
FAILING_REFRESH_TOKEN = f"1//failing-refresh-SECRET-{_RUN}"


def _stored(db_path: Path) -> bytes:
    return b"".join(path.read_bytes() for path in db_path.parent.glob(db_path.name + "*"))


def _client(server: GeminiServer, db_path: Path, credentials: object) -> chatledger.Client:
    return chatledger.Client(
        vertexai=True,
        project=PROJECT,
        location=LOCATION,
        credentials=credentials,
        http_options={"base_url": server.base_url},
        store=str(db_path),
    )


def test_an_echoed_access_token_never_leaks(
    gemini_server: GeminiServer, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    with _client(gemini_server, db_path, static_credentials(TOKEN)) as client:
        seen += [repr(client), repr(client.vertex), repr(client.transport_for(MODEL))]
        chat = client.chats.create(model=MODEL)
        # The token echoed in a reply, in a stream, in a response header, in an error.
        gemini_server.reply_text(f"your token is {TOKEN}", headers={"X-Echo": TOKEN})
        assert chat.send_message("hello").text == "your token is ***"
        gemini_server.reply_sse([text_response(f"streamed Bearer {TOKEN} here")])
        streamed = "".join(chunk.text or "" for chunk in chat.send_message_stream("more"))
        assert streamed == "streamed Bearer *** here"
        gemini_server.reply_json(
            {"error": {"code": 401, "message": f"bad token {TOKEN}", "status": "UNAUTHENTICATED"}},
            status=401,
            headers={"WWW-Authenticate": f'Bearer error="{TOKEN}"'},
        )
        with pytest.raises(chatledger.ClientError) as raised:
            chat.send_message("again")
        error = raised.value
        seen += [str(error), repr(error), repr(error.details), str(error.response)]
        seen += [repr(event) for event in chat.events()]
        seen.append(repr(chat.get_history()))
        seen.append("\n".join(export_conversation(client.store, chat.id)))
        failed = [e.data for e in chat.events() if e.type == "model_call_failed"]

    # The token did reach the server, in the Authorization header only.
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in gemini_server.requests)
    assert all(TOKEN not in r.path for r in gemini_server.requests)
    assert len(failed) == 1 and isinstance(failed[0], ModelCallFailed)
    assert "***" in failed[0].error.message
    database = _stored(db_path)
    assert database, "the database file should exist"
    logs = caplog.text + "\n".join(record.getMessage() for record in caplog.records)
    assert TOKEN not in logs
    assert TOKEN.encode() not in database
    for text in seen:
        assert TOKEN not in text, text


def test_a_refreshed_token_is_a_secret_from_the_moment_it_is_obtained(
    gemini_server: GeminiServer, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The token a refresh brings was never given to chatledger: it is registered when
    the refresh returns, before the request that carries it, so its echo is masked; the
    refresh token and the client secret were registered when the client was made."""
    caplog.set_level(logging.DEBUG)
    credentials = expired_credentials(
        gemini_server.base_url + "/token",
        "ya29.old-token-1234",
        refresh_token=REFRESH_TOKEN,
        client_secret=CLIENT_SECRET,
    )
    with _client(gemini_server, db_path, credentials) as client:
        chat = client.chats.create(model=MODEL)
        gemini_server.reply_json(token_reply(FRESH))
        gemini_server.reply_text(f"{FRESH} / {REFRESH_TOKEN} / {CLIENT_SECRET}")
        assert chat.send_message("echo my credentials").text == "*** / *** / ***"
        exported = "\n".join(export_conversation(client.store, chat.id))
    assert gemini_server.requests[1].headers["authorization"] == f"Bearer {FRESH}"
    logs = caplog.text
    for secret in (FRESH, REFRESH_TOKEN, CLIENT_SECRET):
        assert secret.encode() not in _stored(db_path)
        assert secret not in exported
        assert secret not in logs


def test_a_failed_refresh_is_a_recorded_failure_that_quotes_no_secret(
    gemini_server: GeminiServer, db_path: Path
) -> None:
    """The token endpoint refuses (and quotes the refresh token in its answer): the call
    fails with ModelConnectionError, recorded as a failed call, with every credential
    masked; nothing reaches the model."""
    credentials = refreshable_credentials(
        gemini_server.base_url + "/token", refresh_token=FAILING_REFRESH_TOKEN
    )
    with _client(gemini_server, db_path, credentials) as client:
        chat = client.chats.create(model=MODEL)
        gemini_server.reply_json(
            {"error": "invalid_grant", "error_description": f"unknown {FAILING_REFRESH_TOKEN}"},
            status=400,
        )
        with pytest.raises(chatledger.ModelConnectionError) as raised:
            chat.send_message("hello")
        events = chat.events()
    message = str(raised.value)
    assert "could not get a Vertex AI access token" in message
    assert "invalid_grant" in message
    assert FAILING_REFRESH_TOKEN not in message
    assert [r.path for r in gemini_server.requests] == ["/token"]
    assert [e.type for e in events] == [
        "conversation_started",
        "user_message_added",
        "model_call_started",
        "model_call_failed",
    ]
    assert FAILING_REFRESH_TOKEN.encode() not in _stored(db_path)
    assert chat.get_history() == []


def test_without_google_auth_the_error_names_the_extra(
    gemini_server: GeminiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cloud credentials need google-auth (the ``vertex`` extra): refused when the
    client is made, before anything is recorded. Express mode does not need it."""
    monkeypatch.setitem(sys.modules, "google.auth.transport.requests", None)
    with pytest.raises(chatledger.InvalidInputError) as raised:
        chatledger.Client(vertexai=True, project=PROJECT, location=LOCATION)
    assert "pip install 'chatledger[vertex]'" in str(raised.value)
    assert "express mode" in str(raised.value)
    express = chatledger.Client(
        vertexai=True, api_key="express-key-1234", http_options={"base_url": gemini_server.base_url}
    )
    with express:
        gemini_server.reply_text("hi")
        assert express.chats.create(model=MODEL).send_message("x").text == "hi"
    assert gemini_server.requests[0].headers["x-goog-api-key"] == "express-key-1234"
