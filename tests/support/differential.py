"""Run one chat scenario through google-genai 3.3.0 and through chatledger, and compare.

Both libraries talk to the same :class:`GeminiServer`, get identical scripted replies
(enqueued once for google-genai's run, then again for chatledger's), and every request
they make is recorded. A :class:`Run` holds what one library did: its requests, what the
scenario script observed, and its histories, dumped in one normal form.

Normal forms (the only places where the two are made comparable):

- **Contents** (histories): ``Content.model_dump(mode="json", exclude_none=True)`` on
  both sides: snake_case field names, bytes as URL-safe base64. chatledger keeps fields
  it does not know under their wire names (``futureField``); google-genai drops them.
- **Requests**: chatledger's bodies are compared as sent. google-genai's are put in
  canonical wire form first, undoing three encodings of its own that the Gemini API
  accepts as equivalent: it sends the inner keys of some objects in snake_case
  (``inlineData.mime_type``, ``thinkingConfig.include_thoughts``, a function
  declaration's ``parameters_json_schema``...), it sends an empty
  ``generationConfig: {}`` when there is no config, and it re-encodes bytes
  (``thoughtSignature``, ``inlineData.data``) as URL-safe base64. Bytes are compared
  decoded on both sides; :func:`base64_fields` shows the text actually sent.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

import chatledger
from chatledger import RecordedEvent
from chatledger import types as ledger_types
from tests.support.gemini_server import GeminiServer, RecordedRequest, Reply, text_response

__all__ = [
    "API_KEY",
    "BAD_MESSAGES",
    "CALL",
    "FAILED_TURN_EVENTS",
    "HTTP_ERRORS",
    "MODEL",
    "TURN_EVENTS",
    "WAIT",
    "WEATHER_TOOL",
    "Differential",
    "Run",
    "adiff",
    "assert_same",
    "base64_fields",
    "canonical_request",
    "capture",
    "check_failed_then_retried",
    "diff",
    "dump_contents",
    "error_signature",
    "http_error",
    "json_reply",
    "model",
    "sse",
    "stream_texts",
    "text_chunk",
    "user",
]

API_KEY = "test-api-key-DO-NOT-LEAK-4f9a8b7c"
MODEL = "gemini-test"

# google-genai copies these objects into the request without converting their keys, so
# their direct keys may be snake_case. Their values (function response payloads) are data.
_PASS_THROUGH_OBJECTS = frozenset(
    {
        "inlineData",
        "fileData",
        "functionResponse",
        "videoMetadata",
        "executableCode",
        "codeExecutionResult",
        "thinkingConfig",
    }
)
_BYTES_FIELDS = frozenset({"thoughtSignature", "data"})


# --------------------------------------------------------------------------- replies


def json_reply(body: dict[str, Any], status: int = 200) -> Reply:
    return Reply("json", status=status, body=body)


def http_error(code: int, status: str, message: str) -> Reply:
    return json_reply({"error": {"code": code, "message": message, "status": status}}, status=code)


def sse(*chunks: Any, **kwargs: Any) -> Reply:
    return Reply("sse", chunks=list(chunks), **kwargs)


def text_chunk(text: str, finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
    """One streamed chunk with a text part (no finish reason unless given)."""
    return text_response(text, finish_reason=finish_reason, **extra)


# --------------------------------------------------------------------------- normal forms


def dump_contents(contents: Sequence[Any]) -> list[dict[str, Any]]:
    """Contents of either library in one comparable form (see the module docstring)."""
    return [content.model_dump(mode="json", exclude_none=True) for content in contents]


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _decode_bytes(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=False)
    except (binascii.Error, ValueError):
        return value


def _walk(value: Any, *, camel_keys: bool) -> Any:
    if isinstance(value, list):
        return [_walk(item, camel_keys=camel_keys) for item in value]
    if not isinstance(value, dict):
        return value
    result: dict[str, Any] = {}
    for key, item in value.items():
        if key in _PASS_THROUGH_OBJECTS and isinstance(item, dict):
            inner = {(_camel(k) if camel_keys else k): v for k, v in item.items()}
            if "data" in inner:
                inner["data"] = _decode_bytes(inner["data"])
            if key == "functionResponse":
                result[key] = inner  # the response payload is the caller's data
            else:
                result[key] = _walk(inner, camel_keys=camel_keys)
        elif key == "functionDeclarations" and isinstance(item, list):
            # google-genai leaves a declaration's keys as written (parameters_json_schema);
            # the schemas inside are JSON Schema data and stay as they are.
            result[key] = [
                {(_camel(k) if camel_keys else k): v for k, v in declaration.items()}
                if isinstance(declaration, dict)
                else declaration
                for declaration in item
            ]
        elif key == "thoughtSignature":
            result[key] = _decode_bytes(item)
        elif key in ("args", "response", "labels", "properties"):
            result[key] = item  # data, not protocol: keys are never converted
        else:
            result[key] = _walk(item, camel_keys=camel_keys)
    return result


def canonical_request(body: dict[str, Any], *, genai_quirks: bool) -> dict[str, Any]:
    """A request body in canonical form: bytes decoded; with ``genai_quirks``, also the
    snake_case inner keys and the empty ``generationConfig`` google-genai sends undone."""
    canonical: dict[str, Any] = _walk(body, camel_keys=genai_quirks)
    if genai_quirks and canonical.get("generationConfig") == {}:
        del canonical["generationConfig"]
    return canonical


def base64_fields(body: Any) -> list[str]:
    """The base64 text of every ``thoughtSignature`` and ``inlineData.data`` in a body, as
    sent (no decoding), in document order."""
    found: list[str] = []

    def visit(value: Any) -> None:
        if isinstance(value, list):
            for item in value:
                visit(item)
        elif isinstance(value, dict):
            for key, item in value.items():
                if key == "thoughtSignature" or (key == "data" and isinstance(item, str)):
                    found.append(item)
                else:
                    visit(item)

    visit(body)
    return found


def error_signature(error: BaseException) -> tuple[str, int | None, str | None, str]:
    """What both libraries' API errors must agree on: class name, code, status, str()."""
    return (
        type(error).__name__,
        getattr(error, "code", None),
        getattr(error, "status", None),
        str(error),
    )


# --------------------------------------------------------------------------- runs


@dataclass
class Run:
    """What one library did in one scenario."""

    library: str  # "genai" or "chatledger"
    chat: Any
    requests: list[RecordedRequest]
    observed: Any
    full: list[dict[str, Any]]
    # google-genai: get_history(curated=True); chatledger: get_context() (docs/differences.md#curated).
    context: list[dict[str, Any]]
    # chatledger only: get_history(curated=True), the seed's curated history.
    curated: list[dict[str, Any]] | None = None
    # chatledger only: the conversation's events in the log, in order.
    records: list[RecordedEvent] = field(default_factory=list)

    @property
    def events(self) -> list[str]:
        """The types of the conversation's events (chatledger)."""
        return [record.type for record in self.records]

    def event_data(self, *types: str) -> list[Any]:
        """The data of the events of the given types (chatledger), in order."""
        return [record.data for record in self.records if record.type in types]

    @property
    def bodies(self) -> list[dict[str, Any]]:
        """Request bodies in canonical form (see :func:`canonical_request`)."""
        return [
            canonical_request(request.body, genai_quirks=self.library == "genai")
            for request in self.requests
        ]

    @property
    def contents(self) -> list[list[dict[str, Any]]]:
        return [body["contents"] for body in self.bodies]

    @property
    def paths(self) -> list[str]:
        return [request.path for request in self.requests]


Script = Callable[[Any, Any], Any]
AsyncScript = Callable[[Any, Any], Awaitable[Any]]


class Differential:
    """Both libraries, pointed at one loopback server; chatledger on a real SQLite file."""

    def __init__(self, server: GeminiServer, db_path: Path) -> None:
        self.server = server
        self.db_path = db_path
        options: Any = {"base_url": server.base_url, "api_version": "v1beta"}
        self.genai = genai.Client(api_key=API_KEY, http_options=options)
        self.ledger = chatledger.Client(api_key=API_KEY, http_options=options, store=str(db_path))
        self._fresh_clients: list[chatledger.Client] = []

    def close(self) -> None:
        self.close_resumed()
        self.genai.close()
        self.ledger.close()

    async def aclose(self) -> None:
        await self.genai.aio.aclose()
        self.genai.close()
        await self.ledger.aclose()

    # ----------------------------------------------------------------- plumbing

    def enqueue(self, replies: Sequence[Any]) -> None:
        for reply in replies:
            self.server.enqueue(reply if isinstance(reply, Reply) else json_reply(reply))

    @contextlib.contextmanager
    def _recording(self, replies: Sequence[Any]) -> Iterator[list[RecordedRequest]]:
        start = len(self.server.requests)
        self.enqueue(replies)
        recorded: list[RecordedRequest] = []
        try:
            yield recorded
        finally:
            recorded.extend(self.server.requests[start:])

    def _finish(
        self, library: str, chat: Any, requests: list[RecordedRequest], observed: Any
    ) -> Run:
        if library == "genai":
            full = dump_contents(chat.get_history())
            context = dump_contents(chat.get_history(curated=True))
            return Run(library, chat, requests, observed, full, context)
        run = Run(
            library,
            chat,
            requests,
            observed,
            dump_contents(chat.get_history()),
            dump_contents(chat.get_context()),
            dump_contents(chat.get_history(curated=True)),
            self.ledger.store.read(chat.id),
        )
        self.assert_rebuilds_identically(chat)
        return run

    def create_genai(self, *, is_async: bool = False, **create: Any) -> Any:
        chats = self.genai.aio.chats if is_async else self.genai.chats
        return chats.create(model=create.pop("model", MODEL), **create)

    def create_ledger(self, *, is_async: bool = False, **create: Any) -> Any:
        chats = self.ledger.aio.chats if is_async else self.ledger.chats
        return chats.create(model=create.pop("model", MODEL), **create)

    # ----------------------------------------------------------------- scenarios

    def run_genai(self, replies: Sequence[Any], script: Script, **create: Any) -> Run:
        chat = self.create_genai(**copy.deepcopy(create))
        with self._recording(replies) as requests:
            observed = script(chat, genai_types)
        return self._finish("genai", chat, requests, observed)

    def run_ledger(self, replies: Sequence[Any], script: Script, **create: Any) -> Run:
        chat = self.create_ledger(**copy.deepcopy(create))
        with self._recording(replies) as requests:
            observed = script(chat, ledger_types)
        return self._finish("chatledger", chat, requests, observed)

    def run(self, replies: Sequence[Any], script: Script, **create: Any) -> tuple[Run, Run]:
        """The scenario through google-genai, then through chatledger, on equal replies."""
        genai_run = self.run_genai(replies, script, **create)
        assert self.server.pending == 0, "google-genai did not consume every scripted reply"
        ledger_run = self.run_ledger(replies, script, **create)
        assert self.server.pending == 0, "chatledger did not consume every scripted reply"
        return genai_run, ledger_run

    async def arun_genai(self, replies: Sequence[Any], script: AsyncScript, **create: Any) -> Run:
        chat = self.create_genai(is_async=True, **copy.deepcopy(create))
        with self._recording(replies) as requests:
            observed = await script(chat, genai_types)
        return self._finish("genai", chat, requests, observed)

    async def arun_ledger(self, replies: Sequence[Any], script: AsyncScript, **create: Any) -> Run:
        chat = self.create_ledger(is_async=True, **copy.deepcopy(create))
        with self._recording(replies) as requests:
            observed = await script(chat, ledger_types)
        return self._finish("chatledger", chat, requests, observed)

    async def arun(
        self, replies: Sequence[Any], script: AsyncScript, **create: Any
    ) -> tuple[Run, Run]:
        """:meth:`run` with the async chats (``client.aio.chats``) and an async script."""
        genai_run = await self.arun_genai(replies, script, **create)
        assert self.server.pending == 0, "google-genai did not consume every scripted reply"
        ledger_run = await self.arun_ledger(replies, script, **create)
        assert self.server.pending == 0, "chatledger did not consume every scripted reply"
        return genai_run, ledger_run

    # ----------------------------------------------------------------- checks

    def _fresh_client(self) -> chatledger.Client:
        return chatledger.Client(
            api_key=API_KEY,
            http_options={"base_url": self.server.base_url, "api_version": "v1beta"},
            store=str(self.db_path),
        )

    def resume(self, chat: Any) -> chatledger.Chat:
        """The same conversation opened by a fresh client on the same SQLite file (the
        client is closed with this object)."""
        fresh = self._fresh_client()
        self._fresh_clients.append(fresh)
        return fresh.chats.get(chat.id)

    def close_resumed(self) -> None:
        for client in self._fresh_clients:
            client.close()
        self._fresh_clients.clear()

    def assert_rebuilds_identically(self, chat: Any) -> None:
        """Rebuilt from the log in a fresh client == the state built incrementally."""
        with self._fresh_client() as fresh:
            resumed = fresh.chats.get(chat.id)
            assert resumed.version == chat.version
            assert dump_contents(resumed.get_history()) == dump_contents(chat.get_history())
            assert dump_contents(resumed.get_history(curated=True)) == dump_contents(
                chat.get_history(curated=True)
            )
            assert dump_contents(resumed.get_context()) == dump_contents(chat.get_context())
            live_last, resumed_last = chat.last, resumed.last
            assert (resumed_last.to_wire() if resumed_last else None) == (
                live_last.to_wire() if live_last else None
            )


# --------------------------------------------------------------------------- shared by the tests


WAIT = 10.0  # seconds an event may take before a test gives up (never a duration assertion)


TURN_EVENTS = ["user_message_added", "model_call_started", "model_responded"]


FAILED_TURN_EVENTS = ["user_message_added", "model_call_started", "model_call_failed"]


@pytest.fixture
def diff(gemini_server: GeminiServer, db_path: Path) -> Iterator[Differential]:
    differential = Differential(gemini_server, db_path)
    yield differential
    differential.close()


@pytest.fixture
async def adiff(gemini_server: GeminiServer, db_path: Path) -> AsyncIterator[Differential]:
    differential = Differential(gemini_server, db_path)
    yield differential
    differential.close_resumed()
    await differential.aclose()


def user(*texts: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text} for text in texts]}


def model(*texts: str) -> dict[str, Any]:
    return {"role": "model", "parts": [{"text": text} for text in texts]}


def assert_same(genai_run: Run, ledger_run: Run) -> None:
    """Requests, full history and context (google-genai's curated) are identical."""
    assert ledger_run.paths == genai_run.paths
    assert ledger_run.bodies == genai_run.bodies
    assert ledger_run.full == genai_run.full
    assert ledger_run.context == genai_run.context


def capture(call: Any) -> Any:
    """Run ``call``; return its result, or the exception it raised."""
    try:
        return call()
    except Exception as exc:
        return exc


WEATHER_TOOL = {
    "tools": [
        {
            "function_declarations": [
                {
                    "name": "get_weather",
                    "description": "The weather in a city.",
                    "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}},
                }
            ]
        }
    ]
}


CALL = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}


def stream_texts(chat: Any, message: Any) -> list[str | None]:
    return [chunk.text for chunk in chat.send_message_stream(message)]


HTTP_ERRORS = [
    pytest.param(400, "INVALID_ARGUMENT", "ClientError", id="400"),
    pytest.param(429, "RESOURCE_EXHAUSTED", "ClientError", id="429"),
    pytest.param(500, "INTERNAL", "ServerError", id="500"),
    pytest.param(503, "UNAVAILABLE", "ServerError", id="503"),
]


def check_failed_then_retried(g: Run, led: Run, code: int, status: str, class_name: str) -> None:
    (g_error, g_unchanged, g_retry), (l_error, l_unchanged, l_retry) = g.observed, led.observed
    assert isinstance(g_error, genai_errors.APIError)
    assert isinstance(l_error, chatledger.APIError)
    assert error_signature(l_error) == error_signature(g_error)
    assert type(l_error).__name__ == class_name
    assert (l_error.code, l_error.status) == (code, status)
    assert str(l_error).startswith(f"{code} {status}. {{'error': {{'code': {code}")
    assert l_error.details == g_error.details
    assert g_unchanged is l_unchanged is True
    assert g_retry == l_retry == "ok"
    assert_same(g, led)
    # The retry does not duplicate the user message: it is in the history once.
    assert led.full == [user("hello"), model("hi"), user("flaky"), model("ok")]
    assert led.contents[1] == led.contents[2] == [user("hello"), model("hi"), user("flaky")]
    # docs/chat-api.md#errors: the failed attempt is in the log.
    assert led.events == ["conversation_started", *TURN_EVENTS, *FAILED_TURN_EVENTS, *TURN_EVENTS]
    (failed,) = led.event_data("model_call_failed")
    assert (failed.error.kind, failed.error.code, failed.error.status) == (class_name, code, status)
    added = led.event_data("user_message_added")
    assert [event.content for event in added] == [user("hello"), user("flaky"), user("flaky")]


BAD_MESSAGES = [
    pytest.param({"text": "hi"}, id="dict"),
    pytest.param(42, id="int"),
    pytest.param(None, id="None"),
    pytest.param([], id="empty-list"),
    pytest.param(["ok", {"text": "hi"}], id="list-with-dict"),
    pytest.param(b"bytes", id="bytes"),
]
