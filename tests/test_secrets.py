"""The API key, and credential headers, never reach an event, the database file, a log
line, an error message or a repr — even when the server echoes them back."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import chatledger
from chatledger.cli import cli
from chatledger.client.transports._http import register_secret_headers
from chatledger.errors import redact, register_secret
from chatledger.events.audit import export_conversation
from chatledger.types import HttpOptions
from tests.conftest import API_KEY
from tests.faults import ledger
from tests.support.gemini_server import GeminiServer, Reply, text_response
from tests.support.narrow import text_of
from tests.support.postgres import connect, scratch_database

SECRET_HEADER = "Bearer proxy-token-SECRET-77aa99"


def test_secrets_never_leak(
    gemini_server: GeminiServer, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    options = {"base_url": gemini_server.base_url, "headers": {"Authorization": SECRET_HEADER}}
    seen: list[str] = []
    with chatledger.Client(api_key=API_KEY, http_options=options, store=str(db_path)) as client:
        seen += [
            repr(client),
            str(client.http_options),
            repr(client.transport_for("gemini-2.5-flash")),
        ]
        chat = client.chats.create(model="gemini-2.5-flash", config={"system_instruction": "hi"})
        gemini_server.reply_text("fine")
        chat.send_message("hello")
        gemini_server.reply_sse([text_response("a", finish_reason=None), text_response("b")])
        list(chat.send_message_stream("stream"))
        # A hostile or careless server echoes the key and the header back in its error.
        gemini_server.reply_error(
            400, "INVALID_ARGUMENT", f"bad key {API_KEY} with {SECRET_HEADER}"
        )
        with pytest.raises(chatledger.ClientError) as raised:
            chat.send_message("again")
        error = raised.value
        seen += [str(error), repr(error), repr(error.details), str(error.args), str(error.response)]
        gemini_server.reply_raw(f"<html>{API_KEY}</html>".encode(), status=502)
        with pytest.raises(chatledger.ServerError) as raised_html:
            chat.send_message("html error")
        seen += [str(raised_html.value), repr(raised_html.value.details)]
        seen += [repr(event) for event in chat.events()]
        seen.append(repr(chat.get_history()))

    # The key did reach the server, in the header only (never the URL).
    assert all(request.headers["x-goog-api-key"] == API_KEY for request in gemini_server.requests)
    assert all(API_KEY not in request.path for request in gemini_server.requests)

    database = b"".join(path.read_bytes() for path in db_path.parent.glob(db_path.name + "*"))
    assert database, "the database file should exist"
    logs = caplog.text + "\n".join(record.getMessage() for record in caplog.records)
    for secret in (API_KEY, SECRET_HEADER, SECRET_HEADER.split(" ", 1)[1]):
        assert secret.encode() not in database
        assert secret not in logs
        for text in seen:
            assert secret not in text, text
    # The failure events were recorded, with the redacted message.
    failures = [
        e for e in chatledger.SQLiteStore(db_path).read(chat.id) if e.type == "model_call_failed"
    ]
    assert len(failures) == 2
    assert "***" in failures[0].data.error.message  # type: ignore[attr-defined]


def test_http_options_repr_hides_header_values() -> None:
    options = HttpOptions(headers={"x-api-key": "abc-secret-123"}, base_url="http://x")
    assert "abc-secret-123" not in repr(options)
    assert "abc-secret-123" not in str(options)


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("Authorization", True),
        ("Proxy-Authorization", True),
        ("x-goog-api-key", True),
        ("api-key", True),
        ("X-Auth-Token", True),
        ("X-Amz-Security-Token", True),
        ("Cookie", True),
        ("X-Session-Id", True),
        ("X-Client-Secret", True),
        ("X-Credential", True),
        ("X-Password", True),
        ("X-Request-Id", False),
        ("User-Agent", False),
        ("X-Tenant", False),
    ],
)
def test_which_header_values_are_secret(name: str, secret: bool) -> None:
    """A header is a credential when its name says so (SECRET_HEADER_WORDS); its value is
    then masked in any text chatledger writes. Other values are left alone."""
    value = f"value-of-{name}-{'s' if secret else 'p'}9183"
    register_secret_headers({name: value})
    assert (redact(f"echo: {value}") == "echo: ***") is secret


def test_any_value_can_be_marked_secret_and_cookie_values_are_each_secret() -> None:
    register_secret_headers(
        {
            "Cookie": "sid=cookie-one-4411; theme=cookie-two-4412",
            "Authorization": "Basic dXNlcjpwdw-4413",
        }
    )
    register_secret("plain-header-value-4414")  # the documented way for any other header
    text = redact("cookie-one-4411 cookie-two-4412 dXNlcjpwdw-4413 plain-header-value-4414")
    assert text == "*** *** *** ***"
    docs = Path(__file__).resolve().parents[1] / "docs" / "security.md"
    assert "register_secret" in docs.read_text(encoding="utf-8")


def test_echoed_response_headers_are_masked_in_errors_and_http_logs(
    gemini_server: GeminiServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that echoes the key in a response header: not on the APIError, not in
    httpcore's DEBUG log (which logs response headers)."""
    caplog.set_level(logging.DEBUG)
    gemini_server.enqueue(
        Reply(
            "json",
            status=400,
            body={"error": {"code": 400, "message": "no", "status": "INVALID_ARGUMENT"}},
            headers={"X-Echo": API_KEY},
        )
    )
    with (
        chatledger.Client(
            api_key=API_KEY, http_options={"base_url": gemini_server.base_url}
        ) as client,
        pytest.raises(chatledger.ClientError) as raised,
    ):
        client.chats.create(model="gemini-2.5-flash").send_message("hi")
    assert raised.value.response.headers["x-echo"] == "***"
    assert any(record.name.startswith("httpcore") for record in caplog.records)
    assert API_KEY not in caplog.text and API_KEY not in repr(raised.value.response)


# --------------------------------------------------------------------------- issue 13, item 6


def _stored(db_path: Path) -> bytes:
    return b"".join(path.read_bytes() for path in db_path.parent.glob(db_path.name + "*"))


def test_a_secret_echoed_in_a_successful_reply_is_masked_before_it_is_recorded(
    gemini_server: GeminiServer, db_path: Path
) -> None:
    """A server that echoes the key inside a *successful* reply: the text, a streamed
    chunk, a function call's arguments. What the chat returns and what the log keeps
    say ``***`` where the key was (docs/security.md says why the model's words are
    changed); the rest of the words are kept, ``key=...`` included."""

    def lookup(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    with chatledger.Client(
        api_key=API_KEY, http_options={"base_url": gemini_server.base_url}, store=str(db_path)
    ) as client:
        chat = client.chats.create(model="gemini-2.5-flash", config={"tools": [lookup]})
        gemini_server.reply_text(f"Your key is {API_KEY}; as code: dict(key=value)")
        reply = chat.send_message("what is my key?")
        assert reply.text == "Your key is ***; as code: dict(key=value)"
        # A model repeating the key while streaming splits it over chunks (tokens): no
        # chunk holds it whole, the merged reply that is recorded does, and is masked.
        gemini_server.reply_sse(
            [
                text_response(f"again: {API_KEY[:10]}", finish_reason=None),
                text_response(API_KEY[10:]),
            ]
        )
        list(chat.send_message_stream("and streamed?"))
        assert text_of(chat.get_history()[-1]) == "again: ***"
        gemini_server.reply_sse([text_response(f"streamed {API_KEY} here")])
        streamed = "".join(chunk.text or "" for chunk in chat.send_message_stream("whole?"))
        assert streamed == "streamed *** here"
        call = {"functionCall": {"name": "lookup", "args": {"city": f"Oslo {API_KEY}"}}}
        gemini_server.reply_json(text_response(parts=[call]))
        gemini_server.reply_text("done")
        chat.send_message("weather?")
        # The function was called with the masked argument.
        responded = [e for e in chat.events() if e.type == "function_responded"]
        assert responded[-1].data.response == {"result": "sunny in Oslo ***"}  # type: ignore[attr-defined]
        history = repr(chat.get_history())
    assert API_KEY not in history
    assert API_KEY.encode() not in _stored(db_path)


def test_a_short_secret_is_masked_in_errors_but_not_in_a_model_reply(
    gemini_server: GeminiServer,
) -> None:
    """Under 8 characters a secret cannot be told from an ordinary word (a cookie value
    ``dark``): errors and logs mask it, a model's reply keeps it."""
    register_secret("Zq7x")
    with chatledger.Client(
        api_key=API_KEY, http_options={"base_url": gemini_server.base_url}
    ) as client:
        chat = client.chats.create(model="gemini-2.5-flash")
        gemini_server.reply_text("the code Zq7x")
        assert chat.send_message("hi").text == "the code Zq7x"
        gemini_server.reply_error(400, "INVALID_ARGUMENT", "bad code Zq7x")
        with pytest.raises(chatledger.ClientError) as caught:
            chat.send_message("again")
        assert "Zq7x" not in str(caught.value)


URL_PASSWORD = "url-PASSWORD-5f6a7b8c9d"


def test_credentials_in_the_base_url_never_reach_the_log_or_an_export(
    gemini_server: GeminiServer, db_path: Path
) -> None:
    """``base_url`` ``http://user:PASSWORD@host/``: the password was in the error, the
    ``model_call_failed`` event and the export. Now the request carries it as Basic
    auth, and nothing chatledger writes holds it, even when the server echoes it."""
    base_url = gemini_server.base_url.replace("http://", f"http://carol:{URL_PASSWORD}@")
    with chatledger.Client(
        api_key=API_KEY, http_options={"base_url": base_url}, store=str(db_path)
    ) as client:
        chat = client.chats.create(model="gemini-2.5-flash")
        gemini_server.reply_error(401, "UNAUTHENTICATED", f"wrong password {URL_PASSWORD}")
        with pytest.raises(chatledger.ClientError) as caught:
            chat.send_message("hello")
        gemini_server.reply_text(f"you are carol:{URL_PASSWORD}")
        assert chat.send_message("hello again").text == "you are carol:***"
        shown = [str(caught.value), repr(caught.value.details), repr(client.http_options)]
        exported = "\n".join(export_conversation(client.store, chat.id))
    authorization = gemini_server.requests[0].headers["authorization"]
    assert authorization.startswith("Basic ")
    assert URL_PASSWORD not in gemini_server.requests[0].path
    for text in [*shown, exported]:
        assert URL_PASSWORD not in text, text
        assert authorization.split(" ")[1] not in text
    assert URL_PASSWORD.encode() not in _stored(db_path)
    ledger.record("secrets", "password in the base URL/sqlite", faults=2)


@pytest.fixture(scope="module")
def secrets_database() -> Iterator[str]:
    with scratch_database("chatledger_secrets") as url:
        yield url


def test_credentials_in_the_base_url_never_reach_a_postgres_log(
    gemini_server: GeminiServer, secrets_database: str
) -> None:
    """The same on PostgreSQL: no row of any table the log writes holds the password,
    the failed call and the echoing reply included."""
    base_url = gemini_server.base_url.replace("http://", f"http://carol:{URL_PASSWORD}@")
    with chatledger.Client(
        api_key=API_KEY, http_options={"base_url": base_url}, store=secrets_database
    ) as client:
        chat = client.chats.create(model="gemini-2.5-flash")
        gemini_server.reply_error(401, "UNAUTHENTICATED", f"wrong password {URL_PASSWORD}")
        with pytest.raises(chatledger.ClientError):
            chat.send_message("hello")
        gemini_server.reply_text(f"you are carol:{URL_PASSWORD}")
        assert chat.send_message("hello again").text == "you are carol:***"
        exported = "\n".join(export_conversation(client.store, chat.id))
    authorization = gemini_server.requests[0].headers["authorization"].split(" ")[1]
    with connect(secrets_database) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        ]
        stored = [
            repr(conn.execute(f'SELECT * FROM public."{table}"').fetchall()) for table in tables
        ]
        kinds = [row[0] for row in conn.execute("SELECT type FROM public.events")]
    assert "model_call_failed" in kinds and "events" in tables
    for text in [*stored, exported]:
        assert URL_PASSWORD not in text and authorization not in text
    ledger.record("secrets", "password in the base URL/postgres", faults=2)


def test_the_cli_never_prints_the_password_of_a_base_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's report: ``--base-url http://user:PASSWORD@host/`` printed the password
    in the CLI's error (it named the host as ``user:PASSWORD@host``)."""
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    db = tmp_path / "cli.db"
    for args in (
        ["--base-url", f"http://dave:{URL_PASSWORD}@127.0.0.1:{port}/"],
        ["--base-url", f"http://dave:{URL_PASSWORD}@127.0.0.1:{port}/v1"],
    ):
        result = CliRunner().invoke(
            cli, ["--db", str(db), "chat", "-m", "gemini-2.5-flash", *args, "hi"]
        )
        assert result.exit_code == 1
        assert f"cannot reach 127.0.0.1:{port}" in result.stderr
        assert URL_PASSWORD not in result.output
    assert URL_PASSWORD.encode() not in _stored(db)


@pytest.mark.parametrize(
    "value",
    ["Bearer header-SECRET-1a2b\nX-Evil: 1", "Bearer header-SECRET-1a2b\r", "tökén-SECRET-1a2b"],
    ids=["line-break", "carriage-return", "non-ascii"],
)
def test_a_header_that_cannot_be_sent_is_refused_without_showing_it(value: str) -> None:
    """h11 refused such a value deep inside a send, quoting it as ``b'...\\n...'``, a form
    that masking does not recognise: the secret reached the error and the failure event.
    Now the client refuses it when it is made, naming the header and not its value."""
    with pytest.raises(chatledger.InvalidInputError, match="'Authorization'") as caught:
        chatledger.Client(
            api_key=API_KEY,
            http_options={"base_url": "http://127.0.0.1:9", "headers": {"Authorization": value}},
        )
    assert "header-SECRET-1a2b" not in str(caught.value) and "SECRET" not in repr(caught.value)


def test_an_api_key_that_cannot_be_sent_is_refused_before_anything_is_sent(
    gemini_server: GeminiServer,
) -> None:
    key = "kéy-SECRET-99aa88bb"
    client = chatledger.Client(api_key=key, http_options={"base_url": gemini_server.base_url})
    with pytest.raises(chatledger.InvalidInputError, match="the API key") as caught:
        client.transport_for("gemini-2.5-flash")
    client.close()
    assert key not in str(caught.value)
    assert gemini_server.requests == []
