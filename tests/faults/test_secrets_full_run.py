"""Secrets, over a whole run: nothing a client is given as a credential ends up anywhere
it is kept or shown, even when the model server echoes it back.

One run does everything a deployment does: sync and async chats, streamed and not,
automatic function calling (sync and async tools), retries after 429 and 500, errors that
are not retried, a mid-stream error, a fork, an export to a file, and the CLI's ``chat``,
``log --json``, ``log``, ``show``, ``ls``, ``tree``, ``verify`` and ``export``; with logging
at DEBUG for every logger (httpx and httpcore included). The base URL carries a user and
a password (``http://auditor:PASSWORD@host``). The server echoes the API key, every
header value and the password in its error bodies (JSON and HTML), in its response
headers, and in successful replies: text, stream chunks and function-call arguments
(chatledger masks them there too; see docs/security.md).

Then the secrets are looked for in every place they could have reached: the database and
its -wal and -shm files, the export files, every log record (message, arguments,
exception text), every exception seen (``str``, ``repr``, ``args``, details, the response
kept on it, the formatted traceback and every chained exception), the ``repr`` of the
client, its options, transports, chats, configs, histories, responses and events, and
every CLI output.

Which header values count as secret: those whose name contains ``authorization``,
``auth``, ``key``, ``token``, ``secret``, ``cookie``, ``password``, ``credential`` or
``session`` (see :func:`chatledger.client.transports._http.register_secret_headers`);
any other value is made secret with :func:`chatledger.errors.register_secret`, as the
README says. Both are exercised here.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import chatledger
from chatledger.cli import cli
from chatledger.errors import register_secret
from chatledger.events.audit import export_conversation
from tests.conftest import API_KEY
from tests.faults import ledger
from tests.support.gemini_server import GeminiServer, Reply, text_response

MODEL = "gemini-2.5-flash"
BEARER = "Bearer full-run-BEARER-5e6f7a8b9c"
PROXY_TOKEN = "proxy-token-VALUE-1a2b3c4d5e"
SESSION = "session-COOKIE-value-77e1d2"
# A header whose name does not say it is a credential: made secret explicitly.
TENANT = "tenant-SECRET-9f8e7d6c5b"
HEADERS = {
    "Authorization": BEARER,
    "X-Proxy-Token": PROXY_TOKEN,
    "Cookie": f"session={SESSION}",
    "X-Tenant": TENANT,
}
PASSWORD = "url-PASSWORD-8c9d0e1f2a"
BASIC = base64.b64encode(f"auditor:{PASSWORD}".encode()).decode()
SECRETS = [API_KEY, BEARER, BEARER.split(" ", 1)[1], PROXY_TOKEN, SESSION, TENANT, PASSWORD, BASIC]
# What the server echoes: each header as sent, then every secret on its own.
ECHO = " ".join(
    [*(f"{name}: {value}" for name, value in HEADERS.items()), f"key={API_KEY}", *SECRETS]
)
RETRIES = {"attempts": 3, "initial_delay": 0, "max_delay": 0, "jitter": 0}


def echo_error(server: GeminiServer, code: int, status: str) -> None:
    """An error that echoes every credential: in its JSON body and its headers."""
    body = {
        "error": {
            "code": code,
            "message": f"rejected request with {ECHO}",
            "status": status,
            "details": [{"echo": ECHO}],
        }
    }
    server.enqueue(
        Reply(
            "json",
            status=code,
            body=body,
            headers={"X-Echo-Key": API_KEY, "X-Echo-Auth": BEARER, "Retry-After": "0"},
        )
    )


def echo_html(server: GeminiServer, code: int) -> None:
    server.enqueue(
        Reply(
            "raw",
            status=code,
            raw=f"<html><body>bad: {ECHO}</body></html>".encode(),
            content_type="text/html",
            headers={"X-Echo": TENANT},
        )
    )


class Seen:
    """Every text a secret could reach, by where it was found."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []
        self.errors: list[BaseException] = []

    def add(self, where: str, value: Any) -> None:
        self.texts.append((where, value if isinstance(value, str) else repr(value)))

    def error(self, where: str, error: BaseException) -> None:
        self.errors.append(error)
        chain: list[BaseException] = []
        current: BaseException | None = error
        while current is not None and current not in chain:  # every chained exception
            chain.append(current)
            current = current.__cause__ or current.__context__
        for index, link in enumerate(chain):
            label = f"{where} (chained {index})" if index else where
            self.add(f"{label}: str", str(link))
            self.add(f"{label}: repr", repr(link))
            self.add(f"{label}: args", repr(link.args))
            for attribute in ("details", "response", "error_message", "status"):
                if hasattr(link, attribute):
                    self.add(f"{label}: .{attribute}", repr(getattr(link, attribute)))
            response = getattr(link, "response", None)
            for attribute in ("text", "headers"):
                if hasattr(response, attribute):
                    self.add(f"{label}: .response.{attribute}", repr(getattr(response, attribute)))
        self.add(f"{where}: traceback", "".join(traceback.format_exception(error)))

    def expect(self, where: str, error_type: type[BaseException], action: Any) -> None:
        try:
            action()
        except error_type as exc:
            self.error(where, exc)
        else:
            raise AssertionError(f"{where}: no {error_type.__name__}")


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The CLI reads the key from the environment, as a user's shell gives it.
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    yield


def lookup(city: str) -> str:
    """The weather in a city."""
    return f"{city}: sunny"


async def alookup(city: str) -> str:
    """The weather in a city (async)."""
    return f"{city}: rainy"


def call(name: str) -> dict[str, Any]:
    return text_response(parts=[{"functionCall": {"name": name, "args": {"city": "Oslo"}}}])


def test_a_full_run_leaks_no_secret(
    gemini_server: GeminiServer,
    db_path: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    secret_env: None,
) -> None:
    for name in ("", "httpx", "httpcore", "chatledger", "asyncio"):
        caplog.set_level(logging.DEBUG, logger=name or None)
    register_secret(TENANT)  # the documented way for a header whose name says nothing
    seen = Seen()
    base_url = gemini_server.base_url.replace("http://", f"http://auditor:{PASSWORD}@")
    options = {"base_url": base_url, "headers": HEADERS, "retry_options": RETRIES}
    server = gemini_server

    # A reader holding the database open for the whole run, so that its -wal and -shm
    # files are still there to look into at the end (the last connection to close
    # checkpoints and deletes them).
    watcher = chatledger.SQLiteStore(db_path)
    with chatledger.Client(
        api_key=API_KEY, http_options=options, store=str(db_path), actor="auditor"
    ) as client:
        for where, value in (
            ("client", client),
            ("client.http_options", client.http_options),
            ("str(client.http_options)", str(client.http_options)),
            ("transport", client.transport_for(MODEL)),
            ("client.aio", client.aio),
            ("retry policy", vars(client.retry_policy) if client.retry_policy else None),
        ):
            seen.add(where, value)
        chat = client.chats.create(
            model=MODEL,
            config={
                "system_instruction": "be brief",
                "tools": [lookup],
                "http_options": {"headers": {"X-Api-Key": PROXY_TOKEN}},
            },
        )
        # Retries: a 429 then a 500, both echoing every secret, then an answer.
        echo_error(server, 429, "RESOURCE_EXHAUSTED")
        echo_error(server, 500, "INTERNAL")
        server.reply_text("after retries")
        seen.add("retried response", chat.send_message("hello"))
        # Streamed, after a retried 503.
        echo_error(server, 503, "UNAVAILABLE")
        server.reply_sse([text_response("str", finish_reason=None), text_response("eamed")])
        seen.add("stream chunks", list(chat.send_message_stream("stream please")))
        # Automatic function calling.
        server.reply_json(call("lookup"))
        server.reply_text("it is sunny")
        seen.add("afc response", chat.send_message("weather in Oslo?"))
        # Successful replies that echo every secret: text, a stream, a function call's
        # arguments (the function then sees them masked, and so does its response).
        server.reply_text(f"you sent me {ECHO}")
        seen.add("echoing response", chat.send_message("what did I send?"))
        server.reply_sse(
            [text_response(f"streamed {ECHO} ", finish_reason=None), text_response(ECHO)]
        )
        seen.add("echoing chunks", list(chat.send_message_stream("and streamed?")))
        server.reply_json(
            text_response(parts=[{"functionCall": {"name": "lookup", "args": {"city": ECHO}}}])
        )
        server.reply_text(f"done with {ECHO}")
        seen.add("echoing afc", chat.send_message("look it up"))
        # Errors that end the turn: retries spent, not retryable, an HTML page, mid-stream.
        for _ in range(3):
            echo_error(server, 500, "INTERNAL")
        seen.expect("retries spent", chatledger.ServerError, lambda: chat.send_message("again"))
        echo_error(server, 400, "INVALID_ARGUMENT")
        seen.expect("400", chatledger.ClientError, lambda: chat.send_message("bad"))
        echo_error(server, 403, "PERMISSION_DENIED")
        seen.expect(
            "403 stream", chatledger.ClientError, lambda: list(chat.send_message_stream("bad"))
        )
        for _ in range(3):
            echo_html(server, 502)
        seen.expect("html 502", chatledger.ServerError, lambda: chat.send_message("html"))
        server.reply_sse(
            [
                text_response("partial", finish_reason=None),
                {"error": {"code": 500, "message": f"died: {ECHO}", "status": "INTERNAL"}},
            ]
        )
        seen.expect(
            "mid-stream", chatledger.APIError, lambda: list(chat.send_message_stream("mid"))
        )
        # A fork, which goes on.
        fork = chat.fork(turn=1)
        server.reply_text("forked")
        fork.send_message("fork question")
        views: tuple[tuple[str, Any], ...] = (
            ("chat", chat),
            ("fork", fork),
            ("chat.config", chat.config),
            ("chat.last", chat.last),
            ("chat.usage", chat.usage),
            ("history", chat.get_history()),
            ("curated", chat.get_history(curated=True)),
            ("context", chat.get_context()),
            ("branches", chat.branches()),
            ("list", client.chats.list()),
            ("tree", client.chats.tree(chat.id)),
        )
        for where, value in views:
            seen.add(where, value)
        chat_id, fork_id = chat.id, fork.id

    # The async side, on the same log.
    async def async_run() -> None:
        aclient = chatledger.Client(
            api_key=API_KEY, http_options=options, store=str(db_path), actor="async"
        )
        try:
            achat = aclient.aio.chats.create(model=MODEL, config={"tools": [alookup]})
            echo_error(server, 429, "RESOURCE_EXHAUSTED")
            server.reply_text("async answer")
            seen.add("async response", await achat.send_message("hello async"))
            echo_error(server, 500, "INTERNAL")
            server.reply_sse([text_response("a", finish_reason=None), text_response("sync")])
            seen.add(
                "async chunks",
                [chunk async for chunk in await achat.send_message_stream("stream async")],
            )
            server.reply_json(call("alookup"))
            server.reply_text("rainy")
            seen.add("async afc", await achat.send_message("weather?"))
            echo_error(server, 401, "UNAUTHENTICATED")
            try:
                await achat.send_message("bad async")
            except chatledger.ClientError as exc:
                seen.error("async 401", exc)
            else:
                raise AssertionError("async 401: no error")
            for _ in range(3):
                echo_error(server, 500, "INTERNAL")
            try:
                async for _chunk in await achat.send_message_stream("bad async stream"):
                    pass
            except chatledger.ServerError as exc:
                seen.error("async stream 500", exc)
            else:
                raise AssertionError("async stream 500: no error")
            seen.add("async chat", achat)
            seen.add("async events", await achat.events())
        finally:
            await aclient.aclose()

    asyncio.run(async_run())

    # Exports: the library's, and the CLI's to a file; then the CLI's views.
    export_path = tmp_path / "export.jsonl"
    export_path.write_text(
        "".join(
            line + "\n"
            for line in export_conversation(
                chatledger.SQLiteStore(db_path), chat_id, include_forks=True
            )
        ),
        encoding="utf-8",
    )
    cli_export = tmp_path / "cli-export.jsonl"
    runner = CliRunner()
    outputs: list[tuple[str, Any]] = []
    for args in (
        ["export", chat_id, "--forks", "-o", str(cli_export)],
        ["export", fork_id],
        ["log", chat_id, "--json"],
        ["log", chat_id],
        ["log", fork_id, "--json"],
        ["show", chat_id],
        ["show", chat_id, "--json"],
        ["show", chat_id, "--context"],
        ["show", chat_id, "--curated"],
        ["ls"],
        ["ls", "--json"],
        ["tree", chat_id],
        ["verify"],
        ["replay", chat_id],
    ):
        outputs.append((" ".join(args), runner.invoke(cli, ["--db", str(db_path), *args])))
    # The CLI talking to the echoing server: its error message is shown to the user.
    echo_error(server, 400, "INVALID_ARGUMENT")
    outputs.append(
        (
            "chat",
            runner.invoke(
                cli,
                [
                    "--db",
                    str(db_path),
                    "chat",
                    "-m",
                    MODEL,
                    "--base-url",
                    base_url,
                    "--no-stream",
                    "hi",
                ],
            ),
        )
    )
    for where, result in outputs:
        seen.add(f"cli {where}: stdout", result.stdout)
        seen.add(f"cli {where}: stderr", result.stderr)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            seen.error(f"cli {where}", result.exception)
        assert where == "chat" or result.exit_code == 0, f"{where}: {result.output}"
    assert "Error:" in outputs[-1][1].stderr and "400" in outputs[-1][1].stderr

    # Every event, as a fresh reader sees it.
    with chatledger.SQLiteStore(db_path) as store:
        events: list[chatledger.RecordedEvent] = []
        while page := store.read_all(after_position=events[-1].position if events else 0):
            events.extend(page)
        seen.add("events", events)
        failures = [e for e in events if e.type == "model_call_failed"]
    assert len(failures) >= 12, "the failed attempts are recorded"
    errors = [e.data.error for e in failures]  # type: ignore[attr-defined]
    assert all("***" in error.message for error in errors if error.code), "the echoed key is masked"

    # The secrets did travel where they belong: to the server, in headers only.
    *by_clients, by_cli = server.requests
    assert all(request.headers["x-goog-api-key"] == API_KEY for request in server.requests)
    assert all(
        request.headers["authorization"] == BEARER and request.headers["x-tenant"] == TENANT
        for request in by_clients
    )
    # The CLI was given only the URL: its credentials went as Basic auth, nothing else.
    assert by_cli.headers["authorization"] == f"Basic {BASIC}"
    assert all(PASSWORD not in request.path for request in server.requests)
    # The echoing replies were recorded, masked: the model's words, not the secrets.
    responded = [repr(e.data) for e in events if e.type == "model_responded"]
    assert any("you sent me" in text and "***" in text for text in responded)
    assert any("done with" in text and "***" in text for text in responded)
    assert all(API_KEY not in request.path for request in server.requests)

    # Now look everywhere: the files while open (with their -wal and -shm), and after.
    files = [*sorted(db_path.parent.glob(db_path.name + "*")), export_path, cli_export]
    assert {path.name for path in files} >= {
        db_path.name,
        db_path.name + "-wal",
        db_path.name + "-shm",
    }
    blobs = [(f"file {path.name} (open)", path.read_bytes()) for path in files]
    watcher.close()
    blobs += [
        (f"file {path.name} (closed)", path.read_bytes())
        for path in db_path.parent.glob(db_path.name + "*")
    ]
    records = caplog.records
    assert any(record.name.startswith("httpx") for record in records), "httpx's log was captured"
    assert any(record.name.startswith("httpcore") for record in records), (
        "httpcore's log was captured"
    )
    for record in records:
        seen.add(f"log {record.name}: message", record.getMessage())
        seen.add(f"log {record.name}: args", repr(record.args))
        seen.add(
            f"log {record.name}: formatted",
            logging.Formatter("%(message)s %(exc_info)s").format(record),
        )
    seen.add("log text", caplog.text)

    leaks: list[str] = []
    for secret in SECRETS:
        for where, blob in blobs:
            if secret.encode() in blob:
                leaks.append(f"{where}: {secret}")
        for where, text in seen.texts:
            if secret in text:
                leaks.append(f"{where}: {secret}")
    places = len(blobs) + len(seen.texts)
    assert not leaks, "\n".join(leaks[:40])
    assert len(seen.errors) == 7 and places > 200
    ledger.record(
        "secrets",
        "full run: files, logs, errors, reprs, CLI",
        inputs=places,
        invariants_broken=len(leaks),
    )
    # The attack classes of issue 13, item 6, within that run: requests made through a
    # base URL holding a password, and successful replies echoing every secret.
    ledger.record("secrets", "password in the base URL", faults=len(server.requests))
    ledger.record("secrets", "secrets echoed in successful replies", faults=3)
