"""Model-server faults: what a broken server, proxy or network does to a chat.

Both HTTP transports (Gemini REST and OpenAI-compatible), sync and async chats, streamed
and not, against :class:`~tests.support.fault_server.FaultServer`, which writes raw bytes:
connections closed mid-answer, invalid JSON, enormous answers, streams without a finish
reason, and timeouts (connect, read, and ``http_options.timeout`` as the budget of the
whole request). After every fault:

- the error is the right class, and its message says what happened and what to do;
- a ``model_call_failed`` event ends the turn, and the log verifies;
- no history (full, curated, rebuilt from the log) holds any of the partial answer;
- the chat sends again, and that request carries the user message once.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import socket
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import chatledger
from chatledger.cli import cli
from chatledger.errors import (
    ChatledgerError,
    InvalidResponseError,
    ModelConnectionError,
    ModelTimeoutError,
)
from tests.conftest import API_KEY
from tests.faults import ledger
from tests.support.fault_server import FaultServer, Script, Wire, never_accepting_listener
from tests.support.openai_server import completion

AREA = "server"
#: The client's budget where a test does not time things: generous, but nothing hangs.
SAFE_TIMEOUT_MS = 10_000
#: The budget of the timeout tests: short, so they stay fast.
SHORT_TIMEOUT_MS = 200
ENORMOUS = 20 * 1024 * 1024


# --------------------------------------------------------------------------- protocols


def _text_of(parts: Any) -> str:
    return "".join(
        p.get("text", "") for p in parts or [] if isinstance(p, dict) and not p.get("thought")
    )


class Gemini:
    name = "gemini"
    model = "gemini-2.0-flash"

    def base_url(self, address: str) -> str:
        return address

    def body(self, text: str) -> dict[str, Any]:
        return {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": text}]},
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 3,
                "candidatesTokenCount": 2,
                "totalTokenCount": 5,
            },
        }

    def events(self, pieces: list[str], *, finish: bool = True, done: bool = True) -> list[str]:
        events = []
        for index, piece in enumerate(pieces):
            candidate: dict[str, Any] = {
                "content": {"role": "model", "parts": [{"text": piece}]},
                "index": 0,
            }
            if finish and index == len(pieces) - 1:
                candidate["finishReason"] = "STOP"
            events.append(json.dumps({"candidates": [candidate]}))
        return events

    def sent(self, body: Any) -> list[tuple[str, str]]:
        return [(c["role"], _text_of(c.get("parts"))) for c in body["contents"]]


class OpenAI:
    name = "openai"
    model = "openai/scripted-model"

    def base_url(self, address: str) -> str:
        return address + "/v1"

    def body(self, text: str) -> dict[str, Any]:
        return completion(text)

    def _event(self, delta: dict[str, Any], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return json.dumps(
            {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}
        )

    def events(self, pieces: list[str], *, finish: bool = True, done: bool = True) -> list[str]:
        events = [self._event({"role": "assistant", "content": ""})]
        events.extend(self._event({"content": piece}) for piece in pieces)
        if finish:
            events.append(self._event({}, "stop"))
        if done:
            events.append("[DONE]")
        return events

    def sent(self, body: Any) -> list[tuple[str, str]]:
        roles = {"assistant": "model", "user": "user"}
        return [(roles[m["role"]], m["content"]) for m in body["messages"]]


Protocol = Gemini | OpenAI


def texts(contents: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(c["role"], _text_of(c.get("parts"))) for c in contents]


# --------------------------------------------------------------------------- sync / async


class SyncMode:
    name = "sync"

    def create(self, client: chatledger.Client, model: str) -> Any:
        return client.chats.create(model=model)

    def reopen(self, client: chatledger.Client, conversation_id: str) -> Any:
        return client.chats.get(conversation_id)

    def send(self, chat: Any, message: str, *, stream: bool, received: list[str]) -> str:
        if not stream:
            return chat.send_message(message).text or ""
        for chunk in chat.send_message_stream(message):
            received.append(chunk.text or "")
        return "".join(received)

    def events(self, chat: Any) -> list[chatledger.RecordedEvent]:
        return chat.events()  # type: ignore[no-any-return]

    def close(self, client: chatledger.Client) -> None:
        client.close()

    def shutdown(self) -> None:
        pass


class AsyncMode:
    name = "async"

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def create(self, client: chatledger.Client, model: str) -> Any:
        return client.aio.chats.create(model=model)

    def reopen(self, client: chatledger.Client, conversation_id: str) -> Any:
        return client.aio.chats.get(conversation_id)

    def send(self, chat: Any, message: str, *, stream: bool, received: list[str]) -> str:
        async def run() -> str:
            if not stream:
                return (await chat.send_message(message)).text or ""
            async for chunk in await chat.send_message_stream(message):
                received.append(chunk.text or "")
            return "".join(received)

        return self.loop.run_until_complete(run())

    def events(self, chat: Any) -> list[chatledger.RecordedEvent]:
        events: list[chatledger.RecordedEvent] = self.loop.run_until_complete(chat.events())
        return events

    def close(self, client: chatledger.Client) -> None:
        self.loop.run_until_complete(client.aclose())

    def shutdown(self) -> None:
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


Mode = SyncMode | AsyncMode


# --------------------------------------------------------------------------- the rig


@dataclass
class Before:
    """A chat's state before a fault: what it must still be after it."""

    version: int
    full: list[dict[str, Any]]
    curated: list[dict[str, Any]]
    context: list[dict[str, Any]]


@dataclass
class Outcome:
    text: str | None
    received: list[str]
    error: BaseException | None
    seconds: float


@dataclass
class Rig:
    protocol: Protocol
    mode: Mode
    server: FaultServer
    client: chatledger.Client
    db_path: Path
    extra_clients: list[chatledger.Client] = field(default_factory=list)

    def impatient(
        self, chat: Any, timeout_ms: int, base_url: str | None = None, **options: Any
    ) -> Any:
        """``chat`` opened by another client on the same log, with a short timeout (and
        maybe another server): the faulty call goes through it, the recovery not."""
        http_options = {
            "base_url": base_url or self.protocol.base_url(self.server.address),
            "timeout": timeout_ms,
            **options,
        }
        client = chatledger.Client(
            api_key=API_KEY, http_options=http_options, store=str(self.db_path)
        )
        self.extra_clients.append(client)
        return self.mode.reopen(client, chat.id)

    def chat(self) -> Any:
        """A chat with one completed turn (so the context is not empty)."""
        chat = self.mode.create(self.client, self.protocol.model)
        self.server.enqueue(lambda wire: wire.json(self.protocol.body("hi there")))
        assert self.attempt(chat, "hello").text == "hi there"
        return chat

    def before(self, chat: Any) -> Before:
        return Before(
            version=chat.version,
            full=[c.to_wire() for c in chat.get_history()],
            curated=[c.to_wire() for c in chat.get_history(curated=True)],
            context=[c.to_wire() for c in chat.get_context()],
        )

    def attempt(self, chat: Any, message: str, *, stream: bool = False) -> Outcome:
        received: list[str] = []
        started = time.monotonic()
        try:
            text: str | None = self.mode.send(chat, message, stream=stream, received=received)
            error = None
        except Exception as exc:
            text, error = None, exc
        return Outcome(text, received, error, time.monotonic() - started)

    def measured_attempt(self, chat: Any, message: str, *, stream: bool) -> tuple[Outcome, int]:
        """:meth:`attempt`, and the peak of the memory Python allocated meanwhile."""
        tracemalloc.start()
        try:
            outcome = self.attempt(chat, message, stream=stream)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return outcome, peak

    def good_reply(self, text: str, *, stream: bool) -> Script:
        if stream:
            events = self.protocol.events([text[: len(text) // 2], text[len(text) // 2 :]])
            return lambda wire: wire.sse(events)
        body = self.protocol.body(text)
        return lambda wire: wire.json(body)

    # ----------------------------------------------------------------- checks

    def expect_failure(
        self,
        chat: Any,
        before: Before,
        outcome: Outcome,
        error_class: type[ChatledgerError],
        *phrases: str,
    ) -> None:
        """The fault ended the turn as a failure and changed no history."""
        error = outcome.error
        assert type(error) is error_class, f"expected {error_class.__name__}, got {error!r}"
        assert isinstance(error, ChatledgerError)
        message = str(error)
        for phrase in phrases:
            assert phrase.lower() in message.lower(), f"{phrase!r} not in {message!r}"
        assert API_KEY not in message and API_KEY not in repr(error.args)

        turn = self.mode.events(chat)[before.version :]
        kinds = [event.type for event in turn]
        assert kinds[0] == "user_message_added" and kinds.count("user_message_added") == 1, kinds
        assert "model_responded" not in kinds, kinds
        failed = turn[-1]
        assert failed.type == "model_call_failed", kinds
        assert failed.data.ends_turn  # type: ignore[attr-defined]
        assert failed.data.error.kind == type(error).__name__  # type: ignore[attr-defined]
        # What the caller saw of a stream is kept for the audit, and only there.
        partial = failed.data.partial  # type: ignore[attr-defined]
        seen = "".join(outcome.received)
        kept = _text_of(
            ((partial or {}).get("candidates") or [{}])[0].get("content", {}).get("parts")
        )
        assert kept == seen, (kept[:80], seen[:80])

        assert self.client.store.verify(chat.id).ok
        assert [c.to_wire() for c in chat.get_history()] == before.full
        assert [c.to_wire() for c in chat.get_history(curated=True)] == before.curated
        assert [c.to_wire() for c in chat.get_context()] == before.context
        rebuilt = self.mode.reopen(self.client, chat.id)
        assert [c.to_wire() for c in rebuilt.get_history()] == before.full
        assert [c.to_wire() for c in rebuilt.get_history(curated=True)] == before.curated

    def expect_recovery(self, chat: Any, before: Before, message: str, *, stream: bool) -> Before:
        """The same message sent again gets an answer; the request carries it once."""
        self.server.enqueue(self.good_reply("all better now", stream=stream))
        sent_before = len(self.server.requests)
        outcome = self.attempt(chat, message, stream=stream)
        assert outcome.error is None, repr(outcome.error)
        assert outcome.text == "all better now"
        request = self.server.requests[sent_before].body
        assert self.protocol.sent(request) == [*texts(before.context), ("user", message)]
        added = [("user", message), ("model", "all better now")]
        assert texts([c.to_wire() for c in chat.get_history()]) == [*texts(before.full), *added]
        assert texts([c.to_wire() for c in chat.get_history(curated=True)]) == [
            *texts(before.curated),
            *added,
        ]
        assert self.client.store.verify(chat.id).ok
        return self.before(chat)


PROTOCOLS: dict[str, Protocol] = {"gemini": Gemini(), "openai": OpenAI()}


@pytest.fixture(params=["gemini", "openai"])
def protocol(request: pytest.FixtureRequest) -> Protocol:
    return PROTOCOLS[request.param]


@pytest.fixture(params=["sync", "async"])
def mode_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def rig(
    protocol: Protocol, mode_name: str, tmp_path: Path, fault_server: FaultServer
) -> Iterator[Rig]:
    db_path = tmp_path / "faults.db"
    mode: Mode = SyncMode() if mode_name == "sync" else AsyncMode()
    client = chatledger.Client(
        api_key=API_KEY,
        http_options={
            "base_url": protocol.base_url(fault_server.address),
            "timeout": SAFE_TIMEOUT_MS,
        },
        store=str(db_path),
    )
    rig = Rig(protocol, mode, fault_server, client, db_path)
    try:
        yield rig
    finally:
        for other in [*rig.extra_clients, client]:
            mode.close(other)
        mode.shutdown()


def operation(scenario: str, rig: Rig) -> str:
    return f"{scenario}/{rig.protocol.name}"


# --------------------------------------------------------------------------- raw replies


def sse_frames(events: list[str]) -> bytes:
    """The body of an SSE reply as it goes on the wire (chunked), without the last chunk."""
    frames = b""
    for data in events:
        payload = b"data: " + data.encode() + b"\r\n\r\n"
        frames += f"{len(payload):x}\r\n".encode() + payload + b"\r\n"
    return frames


def cut_points(length: int, count: int) -> list[int]:
    """``count`` positions spread over ``0 .. length - 1``, both ends included."""
    if count <= 1 or length <= 1:
        return [0]
    return sorted({round(i * (length - 1) / (count - 1)) for i in range(count)})


def prebuilt(protocol: Protocol, text: str, *, stream: bool) -> Script:
    """A whole answer built before the test measures memory (the server shares the
    process, so what it allocates while sending would be counted too)."""
    if stream:
        raw = sse_frames(protocol.events([text])) + b"0\r\n\r\n"

        def send_stream(wire: Wire) -> None:
            wire.sse_head()
            wire.send(raw)

        return send_stream
    body = json.dumps(protocol.body(text)).encode()
    return lambda wire: wire.body(body)


def send_then_drop(head: Callable[[Wire], None], payload: bytes) -> Script:
    def script(wire: Wire) -> None:
        head(wire)
        wire.send(payload)
        wire.drop()

    return script


# =========================================================================== 1. closed connections


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "body"])
def test_a_connection_closed_mid_answer(rig: Rig, stream: bool) -> None:
    """The server closes the connection at a cut point in its answer: before the
    response, mid-headers, mid-body or mid-stream (mid-event and between events)."""
    protocol = rig.protocol
    if stream:
        payload = sse_frames(protocol.events(["Once ", "upon ", "a ", "time"]))

        def head(wire: Wire) -> None:
            wire.sse_head()
    else:
        payload = json.dumps(protocol.body("Once upon a time")).encode()

        def head(wire: Wire) -> None:
            wire.head(200, length=len(payload))

    scripts: list[Script] = [
        send_then_drop(lambda wire: None, b""),  # after reading the request, before any answer
        send_then_drop(lambda wire: None, b"HTTP/1.1 200 OK\r\nContent-Ty"),  # mid-headers
    ]
    # Every cut before the last event is complete (after it, the answer is whole).
    cuts = cut_points(len(payload) - 2, ledger.scale(4, 40))
    scripts += [send_then_drop(head, payload[:at]) for at in cuts]
    chat = rig.chat()
    before = rig.before(chat)
    for script in scripts:
        rig.server.enqueue(script)
        outcome = rig.attempt(chat, "Tell me a story", stream=stream)
        rig.expect_failure(
            chat,
            before,
            outcome,
            ModelConnectionError,
            "broke before the answer was complete",
            "send the message again",
        )
        assert "Once upon a time".startswith("".join(outcome.received))
        before = rig.expect_recovery(chat, before, "Tell me a story", stream=stream)
    ledger.record(
        AREA,
        operation("closed-" + ("mid-stream" if stream else "mid-body"), rig),
        faults=len(scripts),
    )


def test_a_stream_in_arbitrary_pieces(rig: Rig) -> None:
    """The network may deliver a stream in any pieces (an event a byte at a time, a CRLF
    split in two), and SSE lines may end in LF, CRLF or CR: the answer is the same. Text
    holding U+2028, U+2029 or U+0085, which JSON allows unescaped and servers do send
    raw, is not taken for a line end (httpx's ``iter_lines`` would cut the event there)."""
    words = ["Line\u2028separated, ", "para\u2029separated, ", "next\x85line, ", "done"]
    # As vLLM or llama.cpp's server write it: UTF-8, non-ASCII not escaped.
    events = [
        e if e == "[DONE]" else json.dumps(json.loads(e), ensure_ascii=False)
        for e in rig.protocol.events(words)
    ]
    chat = rig.chat()
    variants = ledger.scale(3, 30)
    rng = random.Random(rig.protocol.name)
    for variant in range(variants):
        line_end = ["\r\n", "\n", "\r"][variant % 3]
        stream = "".join(f"data: {e}{line_end}{line_end}" for e in events).encode()
        most = [3, 64, 1][variant % 3] if variant < 3 else rng.randint(1, 200)
        pieces, at = [], 0
        while at < len(stream):
            size = rng.randint(1, most)
            pieces.append(stream[at : at + size])
            at += size

        def script(wire: Wire, pieces: list[bytes] = pieces) -> None:
            wire.sse_head()
            for piece in pieces:
                wire.chunk(piece)
            wire.end()

        rig.server.enqueue(script)
        outcome = rig.attempt(chat, f"Say it {variant}", stream=True)
        assert outcome.error is None, repr(outcome.error)
        assert outcome.text == "".join(words)
        assert _text_of(chat.get_history(curated=True)[-1].to_wire()["parts"]) == "".join(words)
    assert rig.client.store.verify(chat.id).ok
    ledger.record(AREA, operation("fragmented-stream", rig), inputs=variants)


# =========================================================================== 2. invalid JSON


def _gzip_garbage(wire: Wire) -> None:
    wire.body(b"\x1f\x8b\x08\x00not gzip at all", headers={"Content-Encoding": "gzip"})


def test_an_invalid_json_body(rig: Rig) -> None:
    valid = json.dumps(rig.protocol.body("A fine answer")).encode()
    wrong_shape = {"candidates": "none"} if rig.protocol.name == "gemini" else {"choices": "none"}
    variants: list[tuple[Script, tuple[str, ...]]] = [
        (lambda wire: wire.body(b"{not json at all"), ("not valid JSON", "send the message again")),
        (
            lambda wire: wire.body(valid[: len(valid) // 2]),
            ("not valid JSON", "send the message again"),
        ),
        (lambda wire: wire.body(b""), ("not valid JSON", "send the message again")),
        (
            lambda wire: wire.body(
                b"<html><body>502 Bad Gateway</body></html>", content_type="text/html"
            ),
            ("not valid JSON", "<html>", "check that base_url"),
        ),
        (lambda wire: wire.body(b"[1, 2, 3]"), ("not a JSON object", "send the message again")),
        (_gzip_garbage, ("could not be decoded", "send the message again")),
        (lambda wire: wire.json(wrong_shape), ()),
    ]
    chat = rig.chat()
    before = rig.before(chat)
    for script, phrases in variants:
        rig.server.enqueue(script)
        outcome = rig.attempt(chat, "Answer me")
        rig.expect_failure(chat, before, outcome, InvalidResponseError, *phrases)
        before = rig.expect_recovery(chat, before, "Answer me", stream=False)
    ledger.record(AREA, operation("invalid-json-body", rig), faults=len(variants))


def test_invalid_json_in_a_stream(rig: Rig) -> None:
    protocol = rig.protocol
    good = protocol.events(["First ", "second ", "third"])
    if protocol.name == "openai":
        first, rest = good[:2], good[2:]  # the role delta, then "First "
    else:
        first, rest = good[:1], good[1:]
    truncated = rest[0][: len(rest[0]) // 2]

    def gzip_stream(wire: Wire) -> None:
        wire.sse_head(headers={"Content-Encoding": "gzip"})
        wire.chunk(gzip.compress(("data: " + first[0] + "\r\n\r\n").encode())[:-8] + b"garbage!")
        wire.end()

    variants: list[tuple[Script, tuple[str, ...]]] = [
        (
            lambda wire: wire.sse([*first, "{not json", *rest]),
            ("not valid JSON", "send the message again"),
        ),
        (lambda wire: wire.sse([*first, truncated]), ("not valid JSON", "send the message again")),
        (
            lambda wire: wire.sse([*first, "42", *rest]),
            ("not a JSON object", "send the message again"),
        ),
        (gzip_stream, ("could not be decoded", "send the message again")),
    ]
    chat = rig.chat()
    before = rig.before(chat)
    for script, phrases in variants:
        rig.server.enqueue(script)
        outcome = rig.attempt(chat, "Count to three", stream=True)
        rig.expect_failure(chat, before, outcome, InvalidResponseError, *phrases)
        assert "".join(outcome.received) in ("", "First ")
        before = rig.expect_recovery(chat, before, "Count to three", stream=True)
    ledger.record(AREA, operation("invalid-json-stream", rig), faults=len(variants))


def _no_stream_variants() -> list[tuple[str, Script, str]]:
    """200 answers to a streamed request that hold no stream event: (what, script, the
    phrase the error must say)."""

    def bare(payload: bytes, content_type: str) -> Script:
        def script(wire: Wire) -> None:
            wire.head(200, content_type=content_type, chunked=True)
            if payload:
                wire.chunk(payload)
            wire.end()

        return script

    html = b"<html>\n<body>proxy error</body>\n</html>\n"
    cases = [  # what, the body, its content type, what the error quotes
        ("garbage", b"garbage", "text/plain", "it starts 'garbage'"),
        ("an HTML page", html, "text/html", "it starts '<html>"),
        ("HTML called an event stream", html, "text/event-stream", "it starts '<html>"),
        ("an empty stream", b"", "text/event-stream", "nothing at all"),
        ("keep-alive comments only", b": ping\n\n: ping\n\n", "text/event-stream", "': ping"),
        ("not data", b"event: message\nid: 7\nretry: 10\n\n", "text/event-stream", "'event: "),
    ]
    return [(what, bare(body, kind), phrase) for what, body, kind, phrase in cases]


def test_a_200_answer_that_is_no_stream(rig: Rig) -> None:
    """Issue 13, item 5: a 200 answer to a streamed request that holds no stream event
    (garbage, an HTML page, nothing, only comments) was recorded as a ``model_responded``
    with ``{}``, while the same answer to a plain request was an InvalidResponseError. A
    stream with no answer in it is a failed call, its message quoting how it started."""
    chat = rig.chat()
    before = rig.before(chat)
    variants = _no_stream_variants()
    for what, script, phrase in variants:
        rig.server.enqueue(script)
        outcome = rig.attempt(chat, "Stream to me", stream=True)
        assert outcome.error is not None, what
        rig.expect_failure(
            chat,
            before,
            outcome,
            InvalidResponseError,
            "ended without any answer",
            phrase,
            "send the message again",
        )
        before = rig.expect_recovery(chat, before, "Stream to me", stream=True)
    ledger.record(AREA, operation("200-but-no-stream", rig), faults=len(variants))


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "body"])
def test_an_error_object_in_a_200_answer(rig: Rig, stream: bool) -> None:
    """``{"error": {...}}`` with status 200, as a whole body (to a plain or a streamed
    request) or as a stream's only event: the APIError it carries, streamed or not (a
    Gemini body with one was once recorded as the model's reply)."""
    error = {"error": {"code": 503, "message": "overloaded, try later", "status": "UNAVAILABLE"}}
    scripts: list[Script] = [lambda wire: wire.json(error)]
    if stream:
        scripts.append(lambda wire: wire.sse([json.dumps(error)]))
    chat = rig.chat()
    before = rig.before(chat)
    for script in scripts:
        rig.server.enqueue(script)
        outcome = rig.attempt(chat, "Answer me", stream=stream)
        rig.expect_failure(chat, before, outcome, chatledger.ServerError, "overloaded, try later")
        assert isinstance(outcome.error, chatledger.ServerError) and outcome.error.code == 503
        before = rig.expect_recovery(chat, before, "Answer me", stream=stream)
    ledger.record(
        AREA,
        operation("error-in-200-" + ("stream" if stream else "body"), rig),
        faults=len(scripts),
    )


def test_the_cli_fails_on_a_stream_with_no_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault_server: FaultServer
) -> None:
    """The issue's report: ``chatledger chat`` against such a server exited 0 and logged
    an empty reply. Now: ``Error: ...`` on stderr, exit 1, and a failed call in the log."""
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    db = tmp_path / "cli.db"
    runner = CliRunner()
    for _, script, _ in _no_stream_variants():
        fault_server.enqueue(script)
        result = runner.invoke(
            cli,
            [
                "--db",
                str(db),
                "chat",
                "-m",
                "gemini-2.0-flash",
                "--base-url",
                fault_server.address,
                "Hi",
            ],
        )
        assert result.exit_code == 1, result.output
        assert "Error:" in result.stderr and "ended without any answer" in result.stderr
        assert "Traceback" not in result.output
    with chatledger.SQLiteStore(db) as store:
        events = []
        for info in store.conversations():
            events += store.read(info.conversation_id)
    kinds = [event.type for event in events]
    assert "model_responded" not in kinds
    assert kinds.count("model_call_failed") == len(_no_stream_variants())
    ledger.record(AREA, "200-but-no-stream/cli", faults=len(_no_stream_variants()))


# =========================================================================== 3. enormous answers


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "body"])
def test_an_enormous_answer_is_handled_with_bounded_memory(rig: Rig, stream: bool) -> None:
    """A single 20 MB SSE event, or a 20 MB JSON body, is a valid answer: it is received,
    recorded and sent back on the next turn, with memory a small multiple of its size."""
    big = "x" * (ENORMOUS - 17) + "the end of it all"
    chat = rig.chat()
    rig.server.enqueue(prebuilt(rig.protocol, big, stream=stream))
    del big
    outcome, peak = rig.measured_attempt(chat, "Say a lot", stream=stream)
    assert outcome.error is None, repr(outcome.error)
    assert (
        outcome.text is not None and len(outcome.text) == ENORMOUS and outcome.text.endswith("all")
    )
    # Measured about 5x (the raw bytes, the text, the event, its JSON in the log...).
    assert peak < 12 * ENORMOUS, (
        f"peak {peak / 2**20:.0f} MiB for a {ENORMOUS / 2**20:.0f} MiB answer"
    )
    curated = [c.to_wire() for c in chat.get_history(curated=True)]
    assert len(_text_of(curated[-1]["parts"])) == ENORMOUS
    assert rig.client.store.verify(chat.id).ok
    before = rig.before(chat)
    rig.expect_recovery(chat, before, "Now say less", stream=stream)
    sent = rig.protocol.sent(rig.server.requests[-1].body)
    assert len(sent[-2][1]) == ENORMOUS  # the big answer went back as context
    ledger.record(AREA, operation("enormous-" + ("event" if stream else "body"), rig), faults=1)


#: The answer limit of the over-the-limit tests (``http_options.max_response_bytes``).
SMALL_LIMIT = 1024 * 1024


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "body"])
def test_an_answer_over_the_limit_is_refused_without_buffering_it(rig: Rig, stream: bool) -> None:
    """Over ``http_options.max_response_bytes`` (1 MiB here), a body, a line, an event or a
    whole stream is refused as soon as it is seen to be too large, with memory bounded by
    the limit, not by what the server sends: a line that never ends, an event of many
    lines, and a model that streams small events forever (the runaway stream that once
    grew a client by 800 MB in 90 s) all end at the limit."""
    protocol = rig.protocol
    big = "y" * (2 * SMALL_LIMIT)
    piece = b"z" * 65536
    if stream:
        line = b"data: " + b"w" * 65536 + b"\n"
        line_frame = f"{len(line):x}\r\n".encode() + line + b"\r\n"
        talk = protocol.events(["blah " * 2000], finish=False, done=False)[-1].encode()

        def endless_line(wire: Wire) -> None:
            wire.sse_head()
            wire.chunk(b'data: {"text": "')
            while True:
                wire.chunk(piece)

        def many_lines_one_event(wire: Wire) -> None:
            wire.sse_head()
            for _ in range(40):
                wire.send(line_frame)
            wire.end()

        def runaway(wire: Wire) -> None:
            wire.sse_head()
            while True:  # 10 kB events, every one valid, forever
                wire.event(talk)

        variants: list[Script] = [
            prebuilt(protocol, big, stream=True),
            endless_line,
            many_lines_one_event,
            runaway,
        ]
    else:
        body = json.dumps(protocol.body(big)).encode()
        frames = [
            f"{len(body[i : i + 65536]):x}\r\n".encode() + body[i : i + 65536] + b"\r\n"
            for i in range(0, len(body), 65536)
        ]

        def chunked_body(wire: Wire) -> None:
            wire.head(200, chunked=True)
            for frame in frames:
                wire.send(frame)
            wire.end()

        variants = [prebuilt(protocol, big, stream=False), chunked_body]
    chat = rig.chat()
    before = rig.before(chat)
    limited = rig.impatient(chat, SAFE_TIMEOUT_MS, max_response_bytes=SMALL_LIMIT)
    for script in variants:
        rig.server.enqueue(script)
        outcome, peak = rig.measured_attempt(limited, "Say too much", stream=stream)
        rig.expect_failure(
            limited,
            before,
            outcome,
            InvalidResponseError,
            f"is larger than http_options.max_response_bytes ({SMALL_LIMIT} bytes)",
            "send the message again",
        )
        assert peak < 8 * SMALL_LIMIT, f"peak {peak / 2**20:.1f} MiB with a 1 MiB limit"
        before = rig.expect_recovery(chat, before, "Say too much", stream=stream)
    ledger.record(
        AREA,
        operation("over-the-limit-" + ("stream" if stream else "body"), rig),
        faults=len(variants),
    )


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "body"])
def test_an_enormous_error_body_is_read_only_in_part(rig: Rig, stream: bool) -> None:
    """A 500 whose body never ends (or is 1 GB): only its first 64 KiB are read, so the
    error comes at once, with bounded memory, and the event keeps a bounded message."""
    piece = b"<p>internal error</p>" * 3000

    def endless_error(wire: Wire) -> None:
        wire.head(500, content_type="text/html", length=1 << 30)
        while True:
            wire.send(piece)

    chat = rig.chat()
    before = rig.before(chat)
    rig.server.enqueue(endless_error)
    outcome, peak = rig.measured_attempt(chat, "Fail big", stream=stream)
    rig.expect_failure(chat, before, outcome, chatledger.ServerError, "internal error")
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MiB for an endless error body"
    failed = rig.mode.events(chat)[-1]
    assert len(failed.data.error.message) < 10_000  # type: ignore[attr-defined]
    rig.expect_recovery(chat, before, "Fail big", stream=stream)
    ledger.record(AREA, operation("endless-error-body", rig), faults=1)


# =========================================================================== 4. no finish reason


def test_a_stream_that_ends_without_a_finish_reason(rig: Rig) -> None:
    """A streamed turn is valid only when it finished with a finish reason
    (docs/chat-api.md, "Streaming"). A stream that ends cleanly without one (for the
    OpenAI protocol: with its ``[DONE]``) is recorded as a completed but invalid turn: it
    is in the full history (as google-genai's comprehensive history), and never in the
    curated history or the context, so the next request does not send it. An OpenAI
    stream that ends with neither a finish reason nor ``[DONE]`` was cut short: a failed
    call. (A stream with no chunk at all is no answer: see
    :func:`test_a_200_answer_that_is_no_stream`.)"""
    protocol = rig.protocol
    chat = rig.chat()
    faults = 0
    cases: list[tuple[list[str], str]] = [
        (protocol.events(["Half an ", "answer"], finish=False), "Half an answer")
    ]
    for events, partial in cases:
        before = rig.before(chat)
        rig.server.enqueue(lambda wire, events=events: wire.sse(events))  # type: ignore[misc]
        outcome = rig.attempt(chat, "Finish this", stream=True)
        assert outcome.error is None and outcome.text == partial
        turn = rig.mode.events(chat)[before.version :]
        assert [e.type for e in turn] == [
            "user_message_added",
            "model_call_started",
            "model_responded",
        ]
        full = [c.to_wire() for c in chat.get_history()]
        assert texts(full) == [*texts(before.full), ("user", "Finish this"), ("model", partial)]
        assert [c.to_wire() for c in chat.get_history(curated=True)] == before.curated
        assert [c.to_wire() for c in chat.get_context()] == before.context
        assert rig.client.store.verify(chat.id).ok
        rebuilt = rig.mode.reopen(rig.client, chat.id)
        assert [c.to_wire() for c in rebuilt.get_history()] == full
        # The next request leaves the unfinished turn out: one "Finish this" in it.
        rig.expect_recovery(chat, _without_last_turn(rig, chat, before), "Finish this", stream=True)
        faults += 1
    if protocol.name == "openai":
        for events, error_class, phrase in [
            (
                protocol.events(["Half an ", "answer"], finish=False, done=False),
                ModelConnectionError,
                "ended before",
            ),
            (["[DONE]"], InvalidResponseError, "without any answer"),
        ]:
            before = rig.before(chat)
            rig.server.enqueue(lambda wire, events=events: wire.sse(events))  # type: ignore[misc]
            outcome = rig.attempt(chat, "Finish this", stream=True)
            rig.expect_failure(chat, before, outcome, error_class, phrase, "send the message again")
            rig.expect_recovery(chat, before, "Finish this", stream=True)
            faults += 1
    ledger.record(AREA, operation("no-finish-reason", rig), faults=faults)


def _without_last_turn(rig: Rig, chat: Any, before: Before) -> Before:
    """The state to recover from after an invalid turn: its full history holds the turn;
    curated and context are as before it."""
    now = rig.before(chat)
    return Before(
        version=now.version, full=now.full, curated=before.curated, context=before.context
    )


# =========================================================================== 5. timeouts
#
# The fault goes through an impatient client (a short http_options.timeout) on the same
# log; the chat's own client, with a generous one, sends the recovery, so only the
# fault is ever timed.


@pytest.fixture(scope="module")
def black_hole() -> Iterator[str]:
    with never_accepting_listener() as address:
        yield address


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "body"])
def test_a_connect_timeout(rig: Rig, black_hole: str, stream: bool) -> None:
    """A server that never accepts the connection: the connect phase times out."""
    chat = rig.chat()
    before = rig.before(chat)
    stuck = rig.impatient(chat, SHORT_TIMEOUT_MS, base_url=rig.protocol.base_url(black_hole))
    outcome = rig.attempt(stuck, "Are you there?", stream=stream)
    assert outcome.seconds < SHORT_TIMEOUT_MS / 1000 + 1.0
    rig.expect_failure(
        stuck,
        before,
        outcome,
        ModelTimeoutError,
        "check the base URL",
        "http_options.timeout",
        "send the message again",
    )
    rig.expect_recovery(chat, before, "Are you there?", stream=stream)
    ledger.record(AREA, operation("connect-timeout", rig), faults=1)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "body"])
def test_a_refused_connection(rig: Rig, stream: bool) -> None:
    """A port nothing listens on: a connection error at once, not a timeout."""
    chat = rig.chat()
    before = rig.before(chat)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    refused = rig.impatient(
        chat, SHORT_TIMEOUT_MS, base_url=rig.protocol.base_url(f"http://127.0.0.1:{port}")
    )
    outcome = rig.attempt(refused, "Are you there?", stream=stream)
    rig.expect_failure(
        refused, before, outcome, ModelConnectionError, "cannot reach", "check the base URL"
    )
    rig.expect_recovery(chat, before, "Are you there?", stream=stream)
    ledger.record(AREA, operation("connection-refused", rig), faults=1)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "body"])
def test_a_read_timeout(rig: Rig, stream: bool) -> None:
    """A server that stalls: before its headers, after them, or (a stream) mid-way."""
    protocol = rig.protocol

    def after_headers(wire: Wire) -> None:
        if stream:
            wire.sse_head()
        else:
            wire.head(200, length=500)
            wire.send(b'{"candidates": ')
        wire.stall()

    scripts: list[Script] = [lambda wire: wire.stall(), after_headers]
    if stream:
        events = protocol.events(["Once ", "upon ", "a time"])

        def mid_stream(wire: Wire) -> None:
            wire.sse(events[:2], end=False)
            wire.stall()

        scripts.append(mid_stream)
    chat = rig.chat()
    before = rig.before(chat)
    impatient = rig.impatient(chat, SHORT_TIMEOUT_MS)
    for script in scripts:
        rig.server.enqueue(script)
        outcome = rig.attempt(impatient, "Hello?", stream=stream)
        assert outcome.seconds < SHORT_TIMEOUT_MS / 1000 + 1.0
        rig.expect_failure(
            impatient,
            before,
            outcome,
            ModelTimeoutError,
            "http_options.timeout",
            "send the message again",
        )
        before = rig.expect_recovery(chat, before, "Hello?", stream=stream)
    ledger.record(AREA, operation("read-timeout", rig), faults=len(scripts))


#: Under the trickle's 100 ms, a per-read timeout this long never trips: only the deadline.
DEADLINE_MS = 250


def _trickle_comments(wire: Wire) -> None:
    wire.sse_head()
    wire.trickle(b": keep-alive\n\n", 0.1)


def _trickle_spaces(wire: Wire) -> None:
    wire.head(200, length=10_000)
    wire.trickle(b" ", 0.1, chunked=False)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "body"])
def test_the_timeout_bounds_the_whole_request(rig: Rig, stream: bool) -> None:
    """httpx's timeouts are per read: a server that sends a byte every 100 ms never
    trips them. ``http_options.timeout`` is the budget of the whole request, so the
    trickle ends at the deadline with ModelTimeoutError: keep-alive comments forever, a
    model that never stops talking, a JSON body a space at a time."""
    protocol = rig.protocol
    if stream:
        talk = protocol.events(["blah "], finish=False, done=False)[-1]  # one text chunk

        def endless_talk(wire: Wire) -> None:
            wire.sse_head()
            wire.trickle(b"data: " + talk.encode() + b"\n\n", 0.1)

        scripts: list[Script] = [_trickle_comments, endless_talk]
    else:

        def chunked_spaces(wire: Wire) -> None:
            wire.head(200, chunked=True)
            wire.trickle(b" ", 0.1)

        scripts = [_trickle_spaces, chunked_spaces]
    chat = rig.chat()
    before = rig.before(chat)
    impatient = rig.impatient(chat, DEADLINE_MS)
    for script in scripts:
        rig.server.enqueue(script)
        outcome = rig.attempt(impatient, "Go on", stream=stream)
        assert DEADLINE_MS / 1000 - 0.05 <= outcome.seconds < DEADLINE_MS / 1000 + 0.6, (
            outcome.seconds
        )
        rig.expect_failure(
            impatient,
            before,
            outcome,
            ModelTimeoutError,
            f"within http_options.timeout ({DEADLINE_MS} ms)",
            "whole request",
            "send the message again",
        )
        before = rig.expect_recovery(chat, before, "Go on", stream=stream)
    ledger.record(AREA, operation("whole-request-deadline", rig), faults=len(scripts))


def test_the_deadline_also_ends_a_read_that_is_already_waiting(rig: Rig) -> None:
    """A stream that trickles until just before the deadline and then goes silent: the
    read already waiting is ended at the deadline, not one whole timeout after the last
    byte (where per-read timeouts alone would end it: 0.5 + 0.6 s here)."""
    timeout_ms = 600

    def trickle_then_silence(wire: Wire) -> None:
        wire.sse_head()
        for index in range(6):  # at 0, 0.1 ... 0.5 s
            if index:
                wire.wait(0.1)
            wire.chunk(b": keep-alive\n\n")
        wire.stall()

    chat = rig.chat()
    before = rig.before(chat)
    impatient = rig.impatient(chat, timeout_ms)
    rig.server.enqueue(trickle_then_silence)
    outcome = rig.attempt(impatient, "Go on", stream=True)
    assert outcome.seconds < timeout_ms / 1000 + 0.3, outcome.seconds
    rig.expect_failure(impatient, before, outcome, ModelTimeoutError, "within http_options.timeout")
    rig.expect_recovery(chat, before, "Go on", stream=True)
    ledger.record(AREA, operation("deadline-while-waiting", rig), faults=1)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "body"])
def test_a_request_over_its_deadline_is_retried(rig: Rig, stream: bool) -> None:
    """With retries on, the deadline's ModelTimeoutError is retried like any timeout
    (a stream only while nothing reached the caller); each attempt has the whole budget."""
    chat = rig.chat()
    before = rig.before(chat)
    retrying = rig.impatient(
        chat,
        DEADLINE_MS,
        retry_options={"attempts": 2, "initial_delay": 0, "max_delay": 0, "jitter": 0},
    )
    rig.server.enqueue(_trickle_comments if stream else _trickle_spaces)
    rig.server.enqueue(rig.good_reply("second time lucky", stream=stream))
    outcome = rig.attempt(retrying, "Try hard", stream=stream)
    assert outcome.error is None and outcome.text == "second time lucky"
    turn = rig.mode.events(chat)[before.version :]
    assert [e.type for e in turn] == [
        "user_message_added",
        "model_call_started",
        "model_call_failed",
        "model_call_started",
        "model_responded",
    ]
    failed = turn[2].data
    assert failed.error.kind == "ModelTimeoutError" and not failed.ends_turn  # type: ignore[attr-defined]
    assert rig.protocol.sent(rig.server.requests[-1].body) == rig.protocol.sent(
        rig.server.requests[-2].body
    )
    assert texts([c.to_wire() for c in retrying.get_history(curated=True)]) == [
        *texts(before.curated),
        ("user", "Try hard"),
        ("model", "second time lucky"),
    ]
    assert rig.client.store.verify(chat.id).ok
    ledger.record(AREA, operation("deadline-retried", rig), faults=1)
