"""Hostile input: whatever a caller, a stored row or an imported file throws at chatledger.

Three doors, each fuzzed with hypothesis and walked with catalogues of known-nasty values:

(a) the public API: ``send_message`` (sync, streamed, async, legacy), ``chats.create``
    (``history=``, ``config=``), ``chats.get`` / ``chats.tree`` / the CLI with random,
    wrongly typed, huge (a 10 MB inline part), deeply nested (10,000 levels), invalid
    UTF-8, lone-surrogate, control-character and SQL-looking values in every field;
(b) the event decoder: stored rows of random bytes and random JSON, through
    ``_row_to_event`` and through a real SQLite file read, verified and resumed;
(c) the importer (``import_lines`` and ``chatledger import``): random lines and forged
    exports (a field changed, lines reordered, dropped, duplicated, spliced from another
    conversation, a hash changed, a truncated last line, and a forger who recomputes the
    whole chain).

Everywhere the answer must be a clear error (a :class:`~chatledger.ChatledgerError`) or a
correct result, never another exception; and a refused input never changes the log: the
full store (every event of ``read_all``, every stream) and the bytes of the SQLite file and
its WAL are compared before and after.

What a recomputed chain can and cannot reveal is spelled out in
:mod:`chatledger.events.audit`; :func:`test_a_recomputed_chain` checks each case.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import importlib.util
import json
import os
import random
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import chatledger
from chatledger import legacy
from chatledger.cli import cli
from chatledger.client.transports.scripted import ScriptedTransport
from chatledger.errors import ChatledgerError, InvalidInputError, InvalidResponseError
from chatledger.events import (
    ConversationStarted,
    MemoryStore,
    NewEvent,
    ParentRef,
    SQLiteStore,
    TurnAbandoned,
    event_hash,
)
from chatledger.events.audit import export_conversation, import_lines
from chatledger.events.envelope import MAX_NESTING
from chatledger.events.kinds import KINDS, NewerSchemaError, data_to_builtins, decode_data
from chatledger.events.store import EventStore, RawRow, _row_to_event
from chatledger.types import Content, FunctionCall, Part
from tests.conftest import API_KEY
from tests.faults import ledger
from tests.support.gemini_server import GeminiServer, text_response

AREA = "input"
MODEL = "gemini-2.5-flash"
SQL = "'; DROP TABLE events; --"
VERIFIER = Path(__file__).resolve().parents[2] / "examples" / "verify_export.py"
ENVELOPE = (
    "conversation_id",
    "version",
    "event_id",
    "type",
    "schema_version",
    "data",
    "metadata",
    "recorded_at",
)

HYPOTHESIS = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
    database=None,
)

# Strings that have broken parsers, drivers, terminals and hash chains somewhere.
NASTY_STRINGS = [
    "",
    " ",
    SQL,
    "' OR '1'='1",
    '"; DELETE FROM streams; --',
    "Robert'); DROP TABLE events;--",
    "\x00",
    "a\x00b",
    "\x1b[2J\x1b[31mred",
    "\r\n\t\x0b\x0c",
    "\x7f\x80\x9f",
    "\u2028\u2029",
    "\ufeff",
    "\u202eevil",
    "\U0010ffff",
    "\U0001f600",
    "\ud800",
    "\udcff",
    "a\udfffb",
    "\\u0000",
    "\\ud800",
    "null",
    "{}",
    "[",
    '{"a":',
    "%s%s%n",
    "${jndi:ldap://x}",
    "../../etc/passwd",
    "models/../../x",
    "a?b&c#d",
    "ﷺ" * 10,
    "x" * 1000,
]
# Surrogates and control characters included: the default text strategy leaves them out.
ANY_CHARS = st.characters(exclude_categories=())
HOSTILE_TEXT = st.one_of(st.sampled_from(NASTY_STRINGS), st.text(ANY_CHARS, max_size=12))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63, -(2**64), 10**40, 0]),
    st.floats(),  # NaN and infinities too
    HOSTILE_TEXT,
    st.binary(max_size=8),
)
JSONISH = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(HOSTILE_TEXT, children, max_size=3),
        st.dictionaries(st.integers(), children, max_size=2),
        st.tuples(children, children),
    ),
    max_leaves=8,
)
PART_KEYS = st.sampled_from(
    [
        "text",
        "inline_data",
        "inlineData",
        "file_data",
        "function_call",
        "functionCall",
        "function_response",
        "thought",
        "thought_signature",
        "video_metadata",
        "executable_code",
    ]
)
BLOB_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "data": st.one_of(st.binary(max_size=16), JSONISH),
        "mime_type": JSONISH,
        "mimeType": JSONISH,
    },
)
CALL_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(HOSTILE_TEXT, JSONISH),
        "args": st.one_of(st.dictionaries(HOSTILE_TEXT, JSONISH, max_size=3), JSONISH),
        "id": JSONISH,
        "response": st.one_of(st.dictionaries(HOSTILE_TEXT, JSONISH, max_size=2), JSONISH),
    },
)
PART_LIKE = st.dictionaries(
    st.one_of(PART_KEYS, HOSTILE_TEXT),
    st.one_of(HOSTILE_TEXT, BLOB_LIKE, CALL_LIKE, JSONISH),
    max_size=3,
)
CONTENT_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "role": st.one_of(st.sampled_from(["user", "model", "system", "function", ""]), JSONISH),
        "parts": st.one_of(st.lists(st.one_of(PART_LIKE, HOSTILE_TEXT), max_size=3), JSONISH),
    },
)


def _part_object(data: dict[Any, Any], how: str, value: Any) -> Any:
    """A Part as a caller may hold one: validated, built without validation, or changed
    after validation by attribute assignment (pydantic does not re-validate either)."""
    if how == "validated":
        try:
            return Part.model_validate(data)
        except ValueError:
            return Part(text="fallback")
    if how == "constructed":
        return Part.model_construct(text=value)
    part = Part(text="x")
    setattr(part, how, value)
    return part


PART_OBJECTS = st.builds(
    _part_object,
    PART_LIKE,
    st.sampled_from(
        ["validated", "validated", "constructed", "text", "function_call", "inline_data", "thought"]
    ),
    JSONISH,
)


@dataclass
class FileLike:
    uri: Any
    mime_type: Any


FileLike.__name__ = "File"  # what chatledger recognises a File-like object by

MESSAGES = st.one_of(
    HOSTILE_TEXT,
    st.binary(max_size=8),
    JSONISH,
    PART_LIKE,
    CONTENT_LIKE,
    PART_OBJECTS,
    st.builds(
        lambda parts: Content.model_construct(role="user", parts=parts),
        st.lists(PART_OBJECTS, max_size=2),
    ),
    st.lists(st.one_of(HOSTILE_TEXT, PART_OBJECTS, PART_LIKE, SCALARS), max_size=4),
    st.builds(FileLike, st.one_of(HOSTILE_TEXT, JSONISH), st.one_of(HOSTILE_TEXT, JSONISH)),
)
CONFIGS = st.one_of(
    JSONISH,
    st.dictionaries(
        st.sampled_from(
            [
                "temperature",
                "top_k",
                "system_instruction",
                "systemInstruction",
                "labels",
                "stop_sequences",
                "tools",
                "tool_config",
                "safety_settings",
                "response_schema",
                "automatic_function_calling",
                "http_options",
                "thinking_config",
                "max_output_tokens",
            ]
        )
        | HOSTILE_TEXT,
        st.one_of(
            JSONISH,
            HOSTILE_TEXT,
            st.lists(st.one_of(PART_LIKE, HOSTILE_TEXT), max_size=2),
            CONTENT_LIKE,
        ),
        max_size=3,
    ),
)
HISTORIES = st.one_of(
    JSONISH,
    st.lists(st.one_of(CONTENT_LIKE, JSONISH), max_size=4),
    st.lists(
        st.tuples(
            st.sampled_from(["user", "model"]), st.lists(HOSTILE_TEXT, min_size=1, max_size=2)
        ).map(lambda pair: {"role": pair[0], "parts": [{"text": text} for text in pair[1]]}),
        max_size=4,
    ),
)


# --------------------------------------------------------------------------- the log


@dataclass(frozen=True)
class LogState:
    """Everything a store holds, and the bytes of its files: equal means unchanged."""

    events: tuple[chatledger.RecordedEvent, ...]
    streams: tuple[Any, ...]
    files: str


def all_events(store: EventStore) -> list[chatledger.RecordedEvent]:
    events: list[chatledger.RecordedEvent] = []
    while page := store.read_all(after_position=events[-1].position if events else 0, limit=1000):
        events.extend(page)
    return events


def file_digest(db_path: Path | None) -> str:
    """sha256 of the database file and its WAL (the -shm file holds readers' marks,
    which reading changes)."""
    if db_path is None:
        return ""
    digest = hashlib.sha256()
    for suffix in ("", "-wal"):
        path = Path(str(db_path) + suffix)
        digest.update(path.read_bytes() if path.exists() else b"<none>")
    return digest.hexdigest()


def log_state(store: EventStore, db_path: Path | None = None) -> LogState:
    return LogState(tuple(all_events(store)), tuple(store.conversations()), file_digest(db_path))


class Tally:
    """Counts the inputs tried and the invariants found broken (for the fault ledger), and
    how inputs were answered (printed with ``pytest -s``, to see what a run exercised)."""

    def __init__(self) -> None:
        self.inputs = 0
        self.broken = 0
        self.answers: Counter[str] = Counter()

    def note(self, error: BaseException | None) -> None:
        answer = "accepted" if error is None else f"refused: {type(error).__name__}"
        self.answers[answer] += 1
        if currently_in_test_context():
            hypothesis_event(answer)

    def record(self, operation: str, *, inputs: int | None = None) -> None:
        """After the test's checks: no invariant broken, then count it in the ledger."""
        assert self.broken == 0
        if self.answers:
            print(f"\n{operation}: {self.inputs} inputs, {dict(self.answers.most_common())}")
        ledger.record(
            AREA,
            operation,
            inputs=self.inputs if inputs is None else inputs,
            invariants_broken=self.broken,
        )

    def check(self, condition: bool, what: str) -> None:
        if not condition:
            self.broken += 1
            raise AssertionError(what)

    def refused(
        self, error: BaseException | None, before: LogState, after: LogState, what: str
    ) -> None:
        """A refused input: a clear error, and the log exactly as it was."""
        self.check(isinstance(error, ChatledgerError), f"{what}: not a clear error: {error!r:.300}")
        self.check(before == after, f"{what}: the log changed although the input was refused")


def outcome(action: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """Run ``action``: (result, None), or (None, the exception) for any Exception."""
    try:
        return action(), None
    except Exception as exc:
        return None, exc


def clear_replies(server: GeminiServer) -> None:
    with server._lock:
        server._replies.clear()


def verifier() -> Any:
    """examples/verify_export.py as a module: the standard-library verifier."""
    spec = importlib.util.spec_from_file_location("verify_export", VERIFIER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stdlib_verifies(store: EventStore, conversation_id: str) -> bool:
    lines = list(export_conversation(store, conversation_id))
    _conversations, _events, problems = verifier().verify(lines)
    return not problems


@pytest.fixture(scope="module")
def module_server() -> Iterator[GeminiServer]:
    """One loopback server for the module (stopping one takes half a second)."""
    with GeminiServer() as server:
        yield server


@pytest.fixture
def gemini_server(module_server: GeminiServer) -> GeminiServer:
    clear_replies(module_server)
    return module_server


@pytest.fixture
def hostile(gemini_server: GeminiServer, db_path: Path) -> Iterator[chatledger.Client]:
    with chatledger.Client(
        api_key=API_KEY,
        http_options={"base_url": gemini_server.base_url},
        store=SQLiteStore(db_path),
        actor="tester",
    ) as client:
        try:
            yield client
        finally:
            client.store.close()


def reopen(client: chatledger.Client, conversation_id: str) -> chatledger.Chat:
    """The conversation as a fresh process sees it: folded from the log."""
    other = chatledger.Client(api_key=API_KEY, store=client.store, actor="reader")
    return other.chats.get(conversation_id)


def as_written(model: Any) -> dict[str, Any]:
    """A model's JSON, read back and written again: what the log should hold of it."""
    dumped = model.model_dump(mode="json", by_alias=True, exclude_none=True, warnings=False)
    return type(model).model_validate(dumped).to_wire()  # type: ignore[no-any-return]


def wires(contents: list[Content]) -> list[dict[str, Any]]:
    return [content.to_wire() for content in contents]


# --------------------------------------------------------------------------- (a) messages


SEND_MODES = ["send", "stream", "legacy"]


def test_random_messages_are_sent_exactly_or_refused_cleanly(
    hostile: chatledger.Client, gemini_server: GeminiServer, db_path: Path
) -> None:
    """Any value as a message: either it is sent and recorded exactly as the server
    received it (and reads back the same from the log), or it is refused with a clear
    error before anything is sent or recorded."""
    tally = Tally()

    @settings(HYPOTHESIS, max_examples=ledger.scale(60, 600))
    @given(message=MESSAGES, mode=st.sampled_from(SEND_MODES))
    def one(message: Any, mode: str) -> None:
        tally.inputs += 1
        clear_replies(gemini_server)
        session = legacy.GenerativeModel(MODEL, client=hostile).start_chat()
        chat = session._chat if mode == "legacy" else hostile.chats.create(model=MODEL)
        if mode == "stream":
            gemini_server.reply_sse([text_response("ok")])
        else:
            gemini_server.reply_echo()
        requests, before = len(gemini_server.requests), log_state(hostile.store, db_path)
        if mode == "send":
            _, error = outcome(lambda: chat.send_message(message))
        elif mode == "stream":
            _, error = outcome(lambda: list(chat.send_message_stream(message)))
        else:
            _, error = outcome(lambda: session.send_message(message))
        tally.note(error)
        if error is not None:
            tally.refused(
                error, before, log_state(hostile.store, db_path), f"{mode} {message!r:.200}"
            )
            tally.check(
                len(gemini_server.requests) == requests, "a refused message reached the server"
            )
            return
        sent = gemini_server.requests[-1].body["contents"][-1]
        history = chat.get_history()
        tally.check(
            history[0].to_wire() == sent,
            f"recorded {history[0].to_wire()!r:.200} but sent {sent!r:.200}",
        )
        tally.check(
            wires(reopen(hostile, chat.id).get_history()) == wires(history),
            "the log reads back differently",
        )
        tally.check(hostile.store.verify(chat.id).ok, "the log does not verify")
        if isinstance(message, str):
            tally.check(
                sent == {"role": "user", "parts": [{"text": message}]}, "a text message was changed"
            )

    one()
    tally.record("send_message/random messages")


def test_random_messages_async(gemini_server: GeminiServer, db_path: Path) -> None:
    """The async chat: the same rule (sent and recorded, or refused with nothing written)."""
    tally = Tally()
    store = SQLiteStore(db_path)

    async def send(message: Any, mode: str) -> tuple[chatledger.AsyncChat, BaseException | None]:
        client = chatledger.Client(
            api_key=API_KEY, http_options={"base_url": gemini_server.base_url}, store=store
        )
        chat = client.aio.chats.create(model=MODEL)
        try:
            if mode == "stream":
                async for _chunk in await chat.send_message_stream(message):
                    pass
            else:
                await chat.send_message(message)
            return chat, None
        except Exception as exc:
            return chat, exc
        finally:
            await client.aclose()

    @settings(HYPOTHESIS, max_examples=ledger.scale(20, 200))
    @given(message=MESSAGES, mode=st.sampled_from(["send", "stream"]))
    def one(message: Any, mode: str) -> None:
        tally.inputs += 1
        clear_replies(gemini_server)
        if mode == "stream":
            gemini_server.reply_sse([text_response("ok")])
        else:
            gemini_server.reply_echo()
        requests = len(gemini_server.requests)
        before = log_state(store, db_path)
        chat, error = asyncio.run(send(message, mode))
        tally.note(error)
        if error is not None:
            after = log_state(store, db_path)
            # The chat's own conversation_started is the one event the attempt may add.
            started = [e for e in after.events if e.conversation_id == chat.id]
            tally.check(
                isinstance(error, ChatledgerError), f"async {mode} {message!r:.200}: {error!r:.300}"
            )
            tally.check(
                len(started) == 1 and after.events[: len(before.events)] == before.events,
                "the log changed",
            )
            tally.check(
                len(gemini_server.requests) == requests, "a refused message reached the server"
            )
            return
        sent = gemini_server.requests[-1].body["contents"][-1]
        tally.check(chat.get_history()[0].to_wire() == sent, "recorded is not what was sent")
        tally.check(store.verify(chat.id).ok, "the log does not verify")

    try:
        one()
    finally:
        store.close()
    tally.record("async send_message/random messages")


def test_random_histories_models_and_configs_at_create(
    hostile: chatledger.Client, db_path: Path
) -> None:
    """``chats.create`` with any model, history and config: recorded exactly (the history
    reads back as given) or refused with nothing recorded."""
    tally = Tally()

    @settings(HYPOTHESIS, max_examples=ledger.scale(80, 800))
    @given(
        model=st.one_of(st.just(MODEL), HOSTILE_TEXT, JSONISH),
        history=st.one_of(
            st.none(),
            HISTORIES,
            st.lists(
                st.fixed_dictionaries(
                    {
                        "role": st.just("user"),
                        "parts": st.lists(PART_OBJECTS, min_size=1, max_size=2),
                    }
                ),
                max_size=2,
            ),
        ),
        config=st.one_of(st.none(), CONFIGS),
        surface=st.sampled_from(["chats", "chats", "legacy"]),
    )
    def one(model: Any, history: Any, config: Any, surface: str) -> None:
        tally.inputs += 1
        before = log_state(hostile.store, db_path)
        if surface == "legacy":
            chat, error = outcome(
                lambda: (
                    legacy.GenerativeModel(model, client=hostile, generation_config=config)
                    .start_chat(history=history)
                    ._chat
                )
            )
        else:
            chat, error = outcome(
                lambda: hostile.chats.create(model=model, history=history, config=config)
            )
        tally.note(error)
        if error is not None:
            tally.refused(
                error,
                before,
                log_state(hostile.store, db_path),
                f"create {model!r:.80} {history!r:.200} {config!r:.200}",
            )
            return
        tally.check(hostile.store.verify(chat.id).ok, "the log does not verify")
        again = reopen(hostile, chat.id)
        tally.check(
            wires(again.get_history()) == wires(chat.get_history()),
            "the history reads back differently",
        )
        tally.check(
            again.model == (model.removeprefix("models/") if surface == "legacy" else model),
            "the model name changed",
        )
        if history and surface == "chats":
            given_contents = [as_written(Content.model_validate(item)) for item in history]
            tally.check(
                wires(chat.get_history()) == given_contents, "the history is not the one given"
            )
        _, config_error = outcome(lambda: again.config)
        tally.check(
            config_error is None, f"the recorded config does not read back: {config_error!r:.200}"
        )

    one()
    tally.record("chats.create/random model, history, config")


def test_random_per_message_configs(
    hostile: chatledger.Client, gemini_server: GeminiServer, db_path: Path
) -> None:
    """``send_message(..., config=<anything>)``: sent with that config, or refused cleanly."""
    tally = Tally()
    chat = hostile.chats.create(model=MODEL, config={"temperature": 0.5})

    @settings(HYPOTHESIS, max_examples=ledger.scale(50, 500))
    @given(config=CONFIGS)
    def one(config: Any) -> None:
        tally.inputs += 1
        clear_replies(gemini_server)
        gemini_server.reply_echo()
        before = log_state(hostile.store, db_path)
        _, error = outcome(lambda: chat.send_message("hello", config=config))
        tally.note(error)
        if error is not None:
            tally.refused(
                error, before, log_state(hostile.store, db_path), f"config {config!r:.300}"
            )
            return
        tally.check(hostile.store.verify(chat.id).ok, "the log does not verify")

    one()
    tally.record("send_message/random per-message configs")


def test_random_ids_for_get_tree_and_history(hostile: chatledger.Client, db_path: Path) -> None:
    """``chats.get`` / ``chats.tree`` / ``chats.list(parent_id=)`` / ``get_history(as_of=)``
    with any value: a clear error (NotFoundError for a well-formed unknown id) and an
    unchanged log."""
    tally = Tally()
    chat = hostile.chats.create(
        model=MODEL,
        history=[
            {"role": "user", "parts": [{"text": "q"}]},
            {"role": "model", "parts": [{"text": "a"}]},
        ],
    )

    @settings(HYPOTHESIS, max_examples=ledger.scale(60, 600))
    @given(value=st.one_of(HOSTILE_TEXT, JSONISH, st.text(ANY_CHARS, min_size=150, max_size=300)))
    def one(value: Any) -> None:
        tally.inputs += 1
        before = log_state(hostile.store, db_path)
        for what, action in (
            ("get", lambda: hostile.chats.get(value)),
            ("aio.get", lambda: hostile.aio.chats.get(value)),
            ("tree", lambda: hostile.chats.tree(value)),
            ("list", lambda: hostile.chats.list(parent_id=value)),
            ("as_of", lambda: chat.get_history(as_of=value)),
            ("fork", lambda: chat.fork(at=value)),
        ):
            result, error = outcome(action)
            if what == "list" and error is None:
                tally.check(
                    value is None or result == [], "children of a conversation that does not exist"
                )
                continue
            if what in ("as_of", "fork") and error is None:
                # None means "now"; a version of the conversation is a version.
                tally.check(value is None or type(value) is int, f"{what}={value!r} was accepted")
                continue
            tally.refused(
                error, before, log_state(hostile.store, db_path), f"{what}({value!r:.100})"
            )

    one()
    tally.record("chats.get/tree/list, as_of, fork/random ids", inputs=tally.inputs * 6)


# --------------------------------------------------------------------------- (a) huge and deep


def test_a_10_mb_inline_part_round_trips_exactly(
    hostile: chatledger.Client, gemini_server: GeminiServer, tmp_path: Path
) -> None:
    tally = Tally()
    payload = random.Random(8).randbytes(10 * 1024 * 1024)
    chat = hostile.chats.create(model=MODEL)
    gemini_server.reply_echo()
    chat.send_message(
        [Part.from_bytes(data=payload, mime_type="application/octet-stream"), "what is this?"]
    )
    tally.inputs += 1
    sent = gemini_server.requests[-1].body["contents"][-1]["parts"][0]["inlineData"]["data"]
    tally.check(base64.urlsafe_b64decode(sent) == payload, "the server did not get the exact bytes")
    for source in (chat, reopen(hostile, chat.id)):
        blob = source.get_history()[0].parts[0].inline_data  # type: ignore[index]
        tally.check(
            blob is not None and blob.data == payload, "the history does not hold the exact bytes"
        )
    tally.check(hostile.store.verify(chat.id).ok, "the log does not verify")
    # Through an export file and an import into another store.
    lines = list(export_conversation(hostile.store, chat.id))
    with SQLiteStore(tmp_path / "copy.db") as copy:
        import_lines(copy, lines)
        tally.check(copy.verify().ok, "the imported copy does not verify")
        tally.check(
            [e.hash for e in copy.read(chat.id)] == [e.hash for e in chat.events()],
            "the import changed events",
        )
    # And a 10 MB text message.
    text = "ü" * (5 * 1024 * 1024)
    gemini_server.reply_echo()
    chat.send_message(text)
    tally.inputs += 1
    tally.check(
        reopen(hostile, chat.id).get_history()[-2].parts[0].text == text, "a 10 MB text changed"
    )  # type: ignore[index]
    tally.record("send_message/10 MB inline part and text")


def nested(depth: int, leaf: Any = 1) -> Any:
    """``{"a": {"a": ... leaf}}``, ``depth`` objects deep (built without recursion)."""
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def nested_schema(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"type": "STRING"}
    for _ in range(depth):
        value = {"type": "ARRAY", "items": value}
    return value


DEPTHS = [MAX_NESTING + 1, 1_000, 10_000, 100_000]


def deep_inputs(
    depth: int, session: legacy.ChatSession
) -> list[tuple[str, Callable[[chatledger.Client, chatledger.Chat], Any]]]:
    deep = nested(depth)
    return [
        (
            "message function_call args",
            lambda c, chat: chat.send_message(
                Part(function_call=FunctionCall(name="f", args=deep))
            ),
        ),
        (
            "message list",
            lambda c, chat: chat.send_message(
                ["hi", Part(function_call=FunctionCall(name="f", args=deep))]
            ),
        ),
        (
            "stream message",
            lambda c, chat: list(
                chat.send_message_stream(Part(function_call=FunctionCall(name="f", args=deep)))
            ),
        ),
        (
            "history",
            lambda c, chat: c.chats.create(
                model=MODEL,
                history=[
                    {"role": "user", "parts": [{"functionCall": {"name": "f", "args": deep}}]}
                ],
            ),
        ),
        (
            "history list",
            lambda c, chat: c.chats.create(
                model=MODEL, history=[{"role": "user", "parts": [{"text": "x"}]}, nested(depth, [])]
            ),
        ),
        (
            "config response_schema",
            lambda c, chat: c.chats.create(model=MODEL, config={"response_schema": deep}),
        ),
        (
            "config tool schema",
            lambda c, chat: c.chats.create(
                model=MODEL,
                config={
                    "tools": [
                        {
                            "function_declarations": [
                                {"name": "f", "parameters": nested_schema(depth)}
                            ]
                        }
                    ]
                },
            ),
        ),
        (
            "per-message config",
            lambda c, chat: chat.send_message("hi", config={"response_json_schema": deep}),
        ),
        (
            "legacy content",
            lambda c, chat: session.send_message(
                {"role": "user", "parts": [{"function_call": {"name": "f", "args": deep}}]}
            ),
        ),
    ]


@pytest.mark.parametrize("depth", DEPTHS)
def test_deep_nesting_is_a_clear_error_and_writes_nothing(
    hostile: chatledger.Client, gemini_server: GeminiServer, db_path: Path, depth: int
) -> None:
    tally = Tally()
    chat = hostile.chats.create(model=MODEL)
    session = legacy.GenerativeModel(MODEL, client=hostile).start_chat()
    for what, action in deep_inputs(depth, session):
        tally.inputs += 1
        clear_replies(gemini_server)
        gemini_server.reply_echo()
        before, requests = log_state(hostile.store, db_path), len(gemini_server.requests)
        _, error = outcome(lambda action=action: action(hostile, chat))  # type: ignore[misc]
        tally.refused(error, before, log_state(hostile.store, db_path), f"{what} at depth {depth}")
        tally.check(
            isinstance(error, InvalidInputError) and "nested" in str(error),
            f"{what}: {error!r:.300}",
        )
        tally.check(len(gemini_server.requests) == requests, f"{what}: reached the server")
    tally.record(f"deep nesting/{depth} levels")


def test_nesting_within_the_limit_round_trips(
    hostile: chatledger.Client, gemini_server: GeminiServer, tmp_path: Path
) -> None:
    depth = MAX_NESTING - 10
    args = nested(depth - 6, "leaf")  # the part and the content wrap args 6 levels deep
    chat = hostile.chats.create(model=MODEL, config={"response_schema": nested(depth - 2)})
    gemini_server.reply_echo()
    chat.send_message(Part(function_call=FunctionCall(name="f", args=args)))
    assert reopen(hostile, chat.id).get_history()[0].parts[0].function_call.args == args  # type: ignore[index,union-attr]
    with SQLiteStore(tmp_path / "copy.db") as copy:
        import_lines(copy, list(export_conversation(hostile.store, chat.id)))
        assert copy.verify().ok
    ledger.record(AREA, f"nesting/{depth} levels accepted", inputs=1)


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 10_000])
def test_deeply_nested_model_answers_are_clear_errors(
    hostile: chatledger.Client, gemini_server: GeminiServer, depth: int
) -> None:
    """A server answering with (or erroring with) JSON nested deeper than the limit: a
    clear error, the failure recorded, the log verifies and the history is unchanged."""
    tally = Tally()
    chat = hostile.chats.create(model=MODEL)
    call = {"functionCall": {"name": "f", "args": nested(depth)}}
    raw = (
        json.dumps(text_response(parts=[call]))
        if depth < 900
        else (
            '{"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"f","args":'
            + '{"a":' * depth
            + "1"
            + "}" * depth
            + "}}]}}]}"
        )
    )
    cases: list[tuple[str, Callable[[], Any], type[Exception]]] = [
        (
            "answer",
            lambda: (
                gemini_server.reply_raw(raw.encode(), content_type="application/json"),
                chat.send_message("hi"),
            ),
            InvalidResponseError,
        ),
        (
            "stream",
            lambda: (gemini_server.reply_sse([raw]), list(chat.send_message_stream("hi"))),
            InvalidResponseError,
        ),
        (
            "error body",
            lambda: (
                gemini_server.reply_raw(raw.encode(), status=400, content_type="application/json"),
                chat.send_message("hi"),
            ),
            chatledger.ClientError,
        ),
    ]
    for what, action, expected in cases:
        tally.inputs += 1
        clear_replies(gemini_server)
        _, error = outcome(action)
        tally.check(isinstance(error, expected), f"{what}: {error!r:.300}")
        tally.check(hostile.store.verify(chat.id).ok, f"{what}: the log does not verify")
        tally.check(
            chat.get_history() == [] and reopen(hostile, chat.id).get_history() == [],
            f"{what}: history changed",
        )
        tally.check(
            chat.events()[-1].type == "model_call_failed", f"{what}: the failure is not recorded"
        )
    tally.record(f"deep server answers/{depth} levels")


def make_tool(result: Any) -> Callable[[int], Any]:
    def tool(x: int) -> Any:
        """A tool."""
        if isinstance(result, Exception):
            raise result
        return result

    return tool


def test_hostile_function_results_are_recorded_safely(
    hostile: chatledger.Client, gemini_server: GeminiServer
) -> None:
    """A Python tool returning what JSON cannot hold (NaN, a lone surrogate, 10,000 levels,
    a set, an object) or raising with a lone surrogate in its message: the call and its
    response are recorded (as text where the value is not JSON) and the turn completes."""
    results: list[Any] = [
        float("nan"),
        "\ud800",
        nested(10_000),
        nested(MAX_NESTING + 5),
        {1, 2},
        object(),
        b"\xff",
        {"k": float("inf")},
    ]
    tally = Tally()
    for result in [*results, ValueError("bad \udcff input")]:
        tally.inputs += 1

        chat = hostile.chats.create(model=MODEL, config={"tools": [make_tool(result)]})
        clear_replies(gemini_server)
        gemini_server.reply_json(
            text_response(parts=[{"functionCall": {"name": "tool", "args": {"x": 1}}}])
        )
        gemini_server.reply_text("done")
        _, error = outcome(lambda chat=chat: chat.send_message("call it"))  # type: ignore[misc]
        tally.check(error is None, f"{type(result).__name__}: {error!r:.300}")
        tally.check(hostile.store.verify(chat.id).ok, "the log does not verify")
        tally.check(
            stdlib_verifies(hostile.store, chat.id),
            "the export does not verify with the standard library",
        )
        responded = [e for e in chat.events() if e.type == "function_responded"]
        tally.check(len(responded) == 1, "the function response is not recorded")
        tally.check(
            len(reopen(hostile, chat.id).get_history()) == 4, "the turn is not in the history"
        )
    tally.record("automatic function calling/unstorable results")


# --------------------------------------------------------------------------- (a) catalogues


def surrogate_actions(
    client: chatledger.Client, chat: chatledger.Chat
) -> list[tuple[str, Callable[[], Any]]]:
    lone = "\ud800"
    escaped = os.fsdecode(b"\xff")  # how a shell's invalid UTF-8 reaches Python: "\udcff"
    session = legacy.GenerativeModel(MODEL, client=client).start_chat()
    return [
        ("text message", lambda: chat.send_message(lone)),
        ("shell bytes message", lambda: chat.send_message(escaped)),
        ("list message", lambda: chat.send_message(["ok", escaped])),
        ("Part text", lambda: chat.send_message(Part(text=lone))),
        (
            "Part function name",
            lambda: chat.send_message(Part.from_function_call(name=lone, args={})),
        ),
        (
            "Part function args",
            lambda: chat.send_message(Part.from_function_call(name="f", args={"k": lone})),
        ),
        (
            "Part function arg key",
            lambda: chat.send_message(Part.from_function_call(name="f", args={lone: 1})),
        ),
        ("stream message", lambda: list(chat.send_message_stream(lone))),
        ("bytes message", lambda: chat.send_message(b"\xff\xfe")),
        (
            "system instruction",
            lambda: chat.send_message("ok", config={"system_instruction": lone}),
        ),
        ("labels", lambda: chat.send_message("ok", config={"labels": {"k": lone}})),
        (
            "history",
            lambda: client.chats.create(
                model=MODEL, history=[{"role": "user", "parts": [{"text": lone}]}]
            ),
        ),
        ("model name", lambda: client.chats.create(model=lone)),
        ("shell model name", lambda: client.chats.create(model=escaped)),
        ("fork model name", lambda: chat.fork(model=lone)),
        (
            "declared function name",
            lambda: client.chats.create(
                model=MODEL, config={"tools": [{"function_declarations": [{"name": lone}]}]}
            ),
        ),
        ("conversation id", lambda: client.chats.get(lone)),
        ("shell conversation id", lambda: client.chats.get(escaped)),
        ("tree id", lambda: client.chats.tree(escaped)),
        ("actor", lambda: chatledger.Client(store=client.store, actor=lone)),
        ("acting_as", lambda: chatledger.acting_as(lone).__enter__()),
        ("legacy model", lambda: legacy.GenerativeModel(lone, client=client).start_chat()),
        ("legacy content", lambda: session.send_message({"parts": [lone]})),
    ]


def test_lone_surrogates_and_invalid_utf8_cannot_poison_the_log(
    hostile: chatledger.Client, gemini_server: GeminiServer, db_path: Path
) -> None:
    """A lone surrogate (what invalid UTF-8 becomes in Python) anywhere: a clear error and
    no change, or a correct result; the log always verifies, with chatledger and with the
    standard-library verifier, and every export stays valid UTF-8 JSON."""
    tally = Tally()
    chat = hostile.chats.create(model=MODEL)
    for what, action in surrogate_actions(hostile, chat):
        tally.inputs += 1
        clear_replies(gemini_server)
        gemini_server.reply_echo()
        before = log_state(hostile.store, db_path)
        _, error = outcome(action)
        tally.refused(error, before, log_state(hostile.store, db_path), what)
    # A lone surrogate escape in a model's answer is not valid JSON text: refused, recorded.
    tally.inputs += 1
    clear_replies(gemini_server)
    gemini_server.reply_raw(
        b'{"candidates":[{"content":{"role":"model","parts":[{"text":"\\ud800"}]}}]}',
        content_type="application/json",
    )
    _, error = outcome(lambda: chat.send_message("hi"))
    tally.check(isinstance(error, InvalidResponseError), f"server surrogate: {error!r}")
    tally.check(chat.get_history() == [], "the history changed")
    # The CLI, given an id that is not UTF-8 by the shell.
    runner = CliRunner()
    for command in (["show"], ["log"], ["export"], ["fork"], ["tree"], ["verify"]):
        tally.inputs += 1
        result = runner.invoke(cli, ["--db", str(db_path), *command, os.fsdecode(b"\xff\xfe")])
        tally.check(
            result.exit_code == 1 and isinstance(result.exception, SystemExit),
            f"{command}: {result.output!r:.300} {result.exception!r}",
        )
        tally.check("Error:" in result.output, f"{command}: {result.output!r:.300}")
    tally.check(hostile.store.verify().ok, "the log does not verify")
    tally.check(stdlib_verifies(hostile.store, chat.id), "the standard-library verifier disagrees")
    for line in export_conversation(hostile.store, chat.id):
        line.encode("utf-8")  # strict: no surrogate reached an export
    tally.record("lone surrogates/invalid UTF-8 everywhere")


CONTROL_TEXTS = [
    s for s in NASTY_STRINGS if s and "\ud800" not in s and "\udcff" not in s and "\udfff" not in s
]


def test_control_characters_nuls_and_sql_round_trip_exactly(
    hostile: chatledger.Client, gemini_server: GeminiServer, db_path: Path, tmp_path: Path
) -> None:
    """NULs, escapes, control characters, BOMs, bidi overrides and SQL-looking text in
    messages, histories, system instructions, labels, model names, function names and
    actors are data: stored, sent and read back byte for byte, through the log, an
    export, an import and the CLI; and the SQL never runs."""
    tally = Tally()
    chats: list[chatledger.Chat] = []
    for text in CONTROL_TEXTS:
        tally.inputs += 1
        clear_replies(gemini_server)
        with (
            chatledger.acting_as(text)
            if text.isprintable() and len(text) <= 200
            else contextlib.nullcontext()
        ):
            chat = hostile.chats.create(
                model=text
                if text.strip()
                and text.isprintable()
                and len(text) <= 500
                and not any(c in text for c in ("..", "?", "&", "#"))
                else MODEL,
                history=[
                    {"role": "user", "parts": [{"text": text}]},
                    {"role": "model", "parts": [{"text": text}]},
                ],
                config={
                    "system_instruction": text or "x",
                    "labels": {text: text},
                    "tools": [
                        {"function_declarations": [{"name": text or "f", "description": text}]}
                    ],
                },
            )
            gemini_server.reply_echo()
            gemini_server.reply_sse([text_response(text, finish_reason=None), text_response(text)])
            chat.send_message(
                [text or "x", Part.from_function_call(name=text or "f", args={text: text})]
            )
            list(chat.send_message_stream(text or "x"))
        chats.append(chat)
        request = gemini_server.requests[-2].body
        tally.check(
            request["contents"][-1]["parts"][0]["text"] == (text or "x"),
            f"{text!r}: the request changed the text",
        )
        tally.check(
            request["systemInstruction"]["parts"][0]["text"] == (text or "x"),
            f"{text!r}: system instruction changed",
        )
        tally.check(request["labels"] == {text: text}, f"{text!r}: labels changed")
        again = reopen(hostile, chat.id)
        tally.check(
            wires(again.get_history()) == wires(chat.get_history()),
            f"{text!r}: reads back differently",
        )
        tally.check(
            again.get_history()[-1].parts[0].text == text + text,
            f"{text!r}: the streamed reply changed",
        )  # type: ignore[index]
    tally.check(hostile.store.verify().ok, "the log does not verify")
    with sqlite3.connect(db_path) as conn:
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        tally.check({"events", "streams", "snapshots"} <= tables, f"tables went missing: {tables}")
    # Export, import into a new store, and the CLI's JSON views, byte for byte.
    with SQLiteStore(tmp_path / "copy.db") as copy:
        for chat in chats:
            import_lines(copy, list(export_conversation(hostile.store, chat.id)))
        tally.check(copy.verify().ok, "the copy does not verify")
        for chat in chats:
            tally.check(
                [e.hash for e in copy.read(chat.id)] == [e.hash for e in chat.events()],
                "the import changed events",
            )
    runner = CliRunner()
    for chat in chats[:8]:
        result = runner.invoke(cli, ["--db", str(db_path), "show", chat.id, "--json"])
        tally.check(result.exit_code == 0, result.output)
        tally.check(json.loads(result.stdout) == wires(chat.get_history()), "show --json differs")
        result = runner.invoke(cli, ["--db", str(db_path), "log", chat.id, "--json"])
        tally.check(result.exit_code == 0, result.output)
        tally.check(
            [json.loads(line)["hash"] for line in result.stdout.splitlines()]
            == [e.hash for e in chat.events()],
            "log --json differs",
        )
    tally.record("control characters, NULs, SQL/round trip")


def test_sql_looking_ids_actors_and_names(
    hostile: chatledger.Client, gemini_server: GeminiServer, db_path: Path
) -> None:
    """SQL in a conversation id (API and CLI), a parent id, an actor, a model name, an
    event id and a function name: not found, or stored as data; never executed."""
    tally = Tally()
    payloads = [
        SQL,
        "' OR '1'='1",
        '" OR ""="',
        "1; DELETE FROM streams",
        "x') UNION SELECT * FROM events --",
        "%",
        "_",
    ]
    runner = CliRunner()
    for payload in payloads:
        before = log_state(hostile.store, db_path)
        for what, action in (
            ("chats.get", lambda p=payload: hostile.chats.get(p)),
            ("chats.tree", lambda p=payload: hostile.chats.tree(p)),
            ("read", lambda p=payload: hostile.store.read(p)),
            ("stream_info", lambda p=payload: hostile.store.stream_info(p)),
        ):
            tally.inputs += 1
            result, error = outcome(action)
            tally.check(
                result in ([], None) or isinstance(error, chatledger.NotFoundError),
                f"{what}({payload!r}): {result!r} {error!r}",
            )
        tally.check(hostile.chats.list(parent_id=payload) == [], f"list({payload!r})")
        for command in ("show", "log", "export", "fork", "tree", "verify"):
            tally.inputs += 1
            result = runner.invoke(cli, ["--db", str(db_path), command, payload])
            tally.check(
                result.exit_code == 1 and "Error:" in result.output,
                f"{command} {payload!r}: {result.output!r}",
            )
        tally.check(log_state(hostile.store, db_path) == before, f"{payload!r}: the log changed")
        # As data: an actor, a model name, a function name, an event id.
        tally.inputs += 1
        with chatledger.acting_as(payload):
            stored = hostile.chats.create(
                model=payload, config={"tools": [{"function_declarations": [{"name": payload}]}]}
            )
        gemini_server.reply_echo()
        stored.send_message(Part.from_function_call(name=payload, args={payload: payload}))
        tally.check(all(e.actor == payload for e in stored.events()[:1]), "the actor changed")
        hostile.store.append(
            stored.id,
            [
                NewEvent(
                    data=TurnAbandoned(turn=99, reason=payload), event_id=payload + stored.id[:8]
                )
            ],
            expected_version=len(stored.events()),
        )
        tally.check(
            hostile.store.read(stored.id)[-1].event_id == payload + stored.id[:8],
            "the event id changed",
        )
    tally.check(hostile.store.verify().ok, "the log does not verify")
    with sqlite3.connect(db_path) as conn:
        counted = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    tally.check(counted == len(all_events(hostile.store)), "rows went missing")
    tally.record("SQL-looking ids, actors, names")


# --------------------------------------------------------------------------- (b) decoder


def kind_data(name: str) -> dict[str, Any]:
    """Valid data of each kind, to mutate."""
    content = {"role": "user", "parts": [{"text": "hi"}]}
    response = text_response("a")
    return {
        "conversation_started": {
            "model": MODEL,
            "config": {"temperature": 1},
            "history": [content],
        },
        "user_message_added": {"turn": 1, "content": content},
        "model_call_started": {
            "turn": 1,
            "model": MODEL,
            "config": {"tools": [{"functionDeclarations": [{"name": "f"}]}]},
        },
        "model_responded": {"turn": 1, "response": response},
        "model_call_failed": {
            "turn": 1,
            "error": {"kind": "ServerError", "message": "x", "code": 500},
            "partial": response,
        },
        "function_called": {"turn": 1, "name": "f", "args": {"x": 1}},
        "function_responded": {"turn": 1, "name": "f", "response": {"result": 1}},
        "turn_rewound": {"turn": 1},
        "turn_abandoned": {"turn": 1, "reason": "r"},
        "config_changed": {"config": {"temperature": 1}, "model": MODEL},
        "history_replaced": {"history": [content]},
    }[name]


JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
    ),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


def similar(value: Any, rng: random.Random, replacement: Any) -> Any:
    """A value like ``value`` (same JSON type, most of the time), or ``replacement``."""
    if rng.random() < 0.3:
        return replacement
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return rng.choice([0, -1, value + 1, 2**63, 10**30])
    if isinstance(value, float):
        return rng.choice([0.0, -1.5, 1e308, 5e-324])
    if isinstance(value, str):
        return rng.choice([*NASTY_STRINGS, value + "!", "", "user", "model", "STOP"])
    if isinstance(value, dict):
        return {
            **value,
            rng.choice(["text", "role", "parts", "functionCall", "x", ""]): replacement,
        }
    if isinstance(value, list):
        return rng.choice([[], [*value, replacement], [*value, *value], value[::-1]])
    return replacement


def mutate(value: Any, rng: random.Random, replacement: Any, stop: float = 0.25) -> Any:
    """``value`` with one randomly chosen node replaced (or a key dropped)."""
    if not isinstance(value, (dict, list)) or not value or rng.random() < stop:
        return similar(value, rng, replacement)
    if isinstance(value, dict):
        key = rng.choice(list(value))
        if rng.random() < 0.2:
            return {k: v for k, v in value.items() if k != key}
        return {**value, key: mutate(value[key], rng, replacement, stop)}
    index = rng.randrange(len(value))
    return [*value[:index], mutate(value[index], rng, replacement, stop), *value[index + 1 :]]


def mutate_event(event: dict[str, Any], rng: random.Random, replacement: Any) -> Any:
    """An exported event with one value changed: mostly deep in its data, where a forger
    who rehashes has the most room; sometimes its metadata or envelope."""
    roll = rng.random()
    if roll < 0.75 and isinstance(event.get("data"), dict):
        return {**event, "data": mutate(event["data"], rng, replacement, stop=0.1)}
    if roll < 0.85:
        return {**event, "metadata": mutate(event.get("metadata"), rng, replacement, stop=0.3)}
    return mutate(event, rng, replacement)


STORED_DATA = st.one_of(
    st.binary(max_size=40),
    st.text(ANY_CHARS, max_size=40),
    JSON_VALUES.map(lambda v: json.dumps(v)),
    st.tuples(st.sampled_from(sorted(KINDS)), st.randoms(use_true_random=False), JSON_VALUES).map(
        lambda t: json.dumps(mutate(kind_data(t[0]), t[1], t[2]))
    ),
    st.sampled_from(
        [
            "[" * 5000 + "]" * 5000,
            '{"a":' * 3000 + "1" + "}" * 3000,
            '"\\ud800"',
            "1e999",
            "9" * 5000,
        ]
    ),
)


def test_the_event_decoder_on_random_rows() -> None:
    """A stored row of random bytes or JSON decodes to an event that re-encodes to the
    same data, or raises a chatledger error naming the event; ``decode_data`` itself
    raises only the msgspec errors it documents (and NewerSchemaError)."""
    tally = Tally()

    @settings(HYPOTHESIS, max_examples=ledger.scale(300, 5000))
    @given(
        type_name=st.one_of(st.sampled_from(sorted(KINDS)), st.text(max_size=10)),
        schema_version=st.one_of(st.integers(-3, 3), st.integers()),
        data=STORED_DATA,
        metadata=st.one_of(STORED_DATA, st.just(""), st.just(b"")),
    )
    def one(type_name: str, schema_version: int, data: Any, metadata: Any) -> None:
        tally.inputs += 1
        row = RawRow(
            "c",
            1,
            1,
            "e",
            type_name,
            schema_version,
            data,
            metadata,
            "2025-01-01T00:00:00.000000Z",
            "0" * 64,
        )
        decoded, error = outcome(lambda: _row_to_event(row))
        tally.note(error)
        if error is not None:
            tally.check(isinstance(error, ChatledgerError), f"_row_to_event: {error!r:.300}")
        else:
            tally.check(isinstance(decoded.metadata, dict), "metadata is not a dict")
            tally.check(
                (decoded.type, decoded.schema_version) == (type_name, schema_version),
                "the envelope changed",
            )
            again = decode_data(
                type_name, schema_version, msgspec.json.encode(data_to_builtins(decoded.data))
            )
            tally.check(again == decoded.data, "the decoded data does not re-encode to itself")
        _, error = outcome(lambda: decode_data(type_name, schema_version, data))
        tally.check(
            error is None or isinstance(error, (msgspec.DecodeError, NewerSchemaError)),
            f"decode_data: {error!r:.300}",
        )

    one()
    tally.record("event decoder/random rows")


def poisoned_snapshots() -> list[bytes]:
    """Snapshot states a hand-edited database may hold: nested deeper than the stack,
    indexes out of range, the wrong format."""
    from chatledger.client._conversation import _SNAPSHOT_ENCODER, SNAPSHOT_FORMAT, _Snapshot
    from chatledger.projections.history import HistoryState
    from chatledger.projections.usage import UsageState

    marker = "PLACEHOLDER-0123"
    valid = _SNAPSHOT_ENCODER.encode(
        _Snapshot(
            SNAPSHOT_FORMAT, "0" * 64, HistoryState(), UsageState(), [{"a": marker}], [0], [], []
        )
    )
    return [
        valid.replace(msgspec.msgpack.encode(marker), b"\x91" * 100_000 + b"\xc0"),
        _SNAPSHOT_ENCODER.encode(
            _Snapshot(SNAPSHOT_FORMAT, "0" * 64, HistoryState(), UsageState(), [], [7, -1], [], [])
        ),
        _SNAPSHOT_ENCODER.encode(
            _Snapshot(SNAPSHOT_FORMAT + 1, "0" * 64, HistoryState(), UsageState(), [], [], [], [])
        ),
        valid,
    ]


POISONED_SNAPSHOTS = poisoned_snapshots()


def insert_raw(db_path: Path, rows: list[tuple[Any, ...]]) -> None:
    """Write rows straight into the events table, as damage or a hand-made file would
    (text with lone surrogates goes in as the invalid UTF-8 bytes it stands for)."""
    conn = sqlite3.connect(db_path)
    try:
        with conn:
            for row in rows:
                row = tuple(
                    value.encode("utf-8", "surrogatepass")
                    if isinstance(value, str)
                    and not value.isascii()
                    and any(0xD800 <= ord(c) <= 0xDFFF for c in value)
                    else value
                    for value in row
                )
                conn.execute(
                    "INSERT INTO events (conversation_id, version, event_id, type, schema_version, "
                    "data, metadata, recorded_at, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
            for cid, version in {(row[0], row[1]) for row in rows}:
                conn.execute(
                    "INSERT INTO streams (conversation_id, version, head_hash, created_at, updated_at) "
                    "VALUES (?, ?, '', 'x', 'x') ON CONFLICT (conversation_id) DO UPDATE SET version = "
                    "max(version, excluded.version)",
                    (cid, version),
                )
    finally:
        conn.close()


def test_random_rows_in_a_real_sqlite_file(tmp_path: Path) -> None:
    """Rows of random bytes and JSON written into the SQLite file behind the library's
    back: reading, verifying, resuming, listing, the CLI's log and show all answer with a
    result or a clear error; verify reports problems rather than raising."""
    tally = Tally()
    runner = CliRunner()
    counter = iter(range(10**9))

    @settings(HYPOTHESIS, max_examples=ledger.scale(25, 250))
    @given(
        rows=st.lists(
            st.tuples(
                st.one_of(st.sampled_from(sorted(KINDS)), st.text(max_size=6)),
                st.integers(-2, 4),
                STORED_DATA,
                st.one_of(STORED_DATA, st.just("{}")),
                st.one_of(st.just("2025-01-01T00:00:00.000000Z"), st.text(max_size=10)),
            ),
            min_size=1,
            max_size=4,
        ),
        bad_utf8=st.booleans(),
        snapshot=st.one_of(st.none(), st.binary(max_size=64), st.sampled_from(POISONED_SNAPSHOTS)),
    )
    def one(
        rows: list[tuple[str, int, Any, Any, str]], bad_utf8: bool, snapshot: bytes | None
    ) -> None:
        tally.inputs += 1
        db = tmp_path / f"raw{next(counter)}.db"
        SQLiteStore(db).close()
        cid = "raw"
        insert_raw(
            db,
            [
                (cid, version, f"e{version}", t, sv, d, m, at, "0" * 64)
                for version, (t, sv, d, m, at) in enumerate(rows, 1)
            ],
        )
        with sqlite3.connect(db) as conn:
            if bad_utf8:
                conn.execute("UPDATE streams SET created_at = CAST(x'ff' AS TEXT)")
            if snapshot is not None:
                conn.execute(
                    "INSERT INTO snapshots (conversation_id, name, version, state) VALUES (?, 'conversation', ?, ?)",
                    (cid, len(rows), snapshot),
                )
        with SQLiteStore(db) as store:
            for what, action in (
                ("read", lambda: store.read(cid)),
                ("read_all", lambda: store.read_all()),
                ("conversations", lambda: store.conversations()),
                ("chats.get", lambda: chatledger.Client(store=store).chats.get(cid).get_history()),
                ("chats.list", lambda: chatledger.Client(store=store).chats.list()),
            ):
                _, error = outcome(action)
                tally.check(
                    error is None or isinstance(error, ChatledgerError), f"{what}: {error!r:.300}"
                )
            report, error = outcome(store.verify)
            tally.check(
                error is None or isinstance(error, ChatledgerError), f"verify: {error!r:.300}"
            )
            tally.check(report is None or not report.ok, "verify passed rows with made-up hashes")
        for command in (["log", cid], ["show", cid], ["verify"], ["ls"]):
            result = runner.invoke(cli, ["--db", str(db), *command])
            tally.check(
                result.exit_code in (0, 1)
                and (result.exception is None or isinstance(result.exception, SystemExit)),
                f"{command}: {result.exception!r:.300}",
            )

    one()
    tally.record("stored rows/random bytes in a SQLite file")


# --------------------------------------------------------------------------- (c) importer


@pytest.fixture(scope="module")
def family(
    module_server: GeminiServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[chatledger.Client, dict[str, chatledger.Chat]]]:
    """Real conversations to export: a root with text, a function call turn and a stream,
    a fork of it with a turn of its own, and an unrelated conversation. (Built once for
    the module: the tests only read them.)"""
    gemini_server = module_server
    clear_replies(gemini_server)
    with chatledger.Client(
        api_key=API_KEY,
        http_options={"base_url": gemini_server.base_url},
        store=str(tmp_path_factory.mktemp("family") / "origin.db"),
        actor="origin",
    ) as client:

        def lookup(city: str) -> str:
            """Look a city up."""
            return f"{city}: sunny"

        root = client.chats.create(
            model=MODEL, config={"system_instruction": "be brief", "tools": [lookup]}
        )
        gemini_server.reply_text("one")
        root.send_message("first")
        gemini_server.reply_json(
            text_response(parts=[{"functionCall": {"name": "lookup", "args": {"city": "Oslo"}}}])
        )
        gemini_server.reply_text("sunny")
        root.send_message("weather?")
        gemini_server.reply_sse([text_response("str", finish_reason=None), text_response("eamed")])
        list(root.send_message_stream("stream"))
        fork = root.fork(turn=1)
        gemini_server.reply_text("forked")
        fork.send_message("fork question")
        other = client.chats.create(model=MODEL)
        gemini_server.reply_text("other")
        other.send_message("unrelated")
        yield client, {"root": root, "fork": fork, "other": other}


def export_events(
    client: chatledger.Client, chat: chatledger.Chat, *, forks: bool = False
) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in export_conversation(client.store, chat.id, include_forks=forks)
    ]


def recompute(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a forger does: rehash every conversation's chain in version order, and point
    each fork at its parent's new hash."""
    events = [json.loads(json.dumps(event)) for event in events]
    by_stream: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_stream.setdefault(event["conversation_id"], []).append(event)
    new_hash: dict[tuple[str, int], str] = {}
    pending = list(by_stream)
    while pending:
        progressed = False
        for cid in list(pending):
            stream = sorted(by_stream[cid], key=lambda e: e["version"])
            parent = (
                stream[0]["data"].get("parent") if isinstance(stream[0].get("data"), dict) else None
            )
            if (
                isinstance(parent, dict)
                and parent.get("conversation_id") in pending
                and parent.get("conversation_id") != cid
            ):
                continue
            if (
                isinstance(parent, dict)
                and (parent.get("conversation_id"), parent.get("version")) in new_hash
            ):
                parent["hash"] = new_hash[(parent["conversation_id"], parent["version"])]
            prev = ""
            for event in stream:
                envelope = {k: event[k] for k in ENVELOPE}
                event["hash"] = event_hash(**envelope, prev_hash=prev)
                prev = event["hash"]
                new_hash[(cid, event["version"])] = event["hash"]
            pending.remove(cid)
            progressed = True
        if not progressed:
            break
    return events


def lines_of(events: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(event, ensure_ascii=False) for event in events]


def try_import(
    store: EventStore, db_path: Path | None, lines: list[Any], tally: Tally, what: str
) -> Any:
    """Import; a refusal must be clear and change nothing. Returns the report or None."""
    before = log_state(store, db_path)
    report, error = outcome(lambda: import_lines(store, lines))
    tally.note(error)
    if error is not None:
        tally.refused(error, before, log_state(store, db_path), what)
        return None
    tally.check(store.verify().ok, f"{what}: accepted, but the store does not verify")
    return report


def read_everything(
    store: EventStore, db_path: Path, tally: Tally, what: str, only: list[str] | None = None
) -> None:
    """Every conversation of ``store`` reads back (or says clearly why not): histories,
    context, last response, config, usage, tree; and the CLI's log and show."""
    runner = CliRunner()
    client = chatledger.Client(store=store)
    transport = ScriptedTransport()
    sender = chatledger.Client(store=store, transport=transport, busy_timeout=0)
    for info in store.conversations():
        if only is not None and info.conversation_id not in only:
            continue
        for name, action in (
            ("get_history", lambda i=info: client.chats.get(i.conversation_id).get_history()),
            (
                "curated",
                lambda i=info: client.chats.get(i.conversation_id).get_history(curated=True),
            ),
            ("context", lambda i=info: client.chats.get(i.conversation_id).get_context()),
            ("last", lambda i=info: client.chats.get(i.conversation_id).last),
            ("config", lambda i=info: client.chats.get(i.conversation_id).config),
            ("tree", lambda i=info: client.chats.tree(i.conversation_id)),
            ("as_of", lambda i=info: client.chats.get(i.conversation_id).get_history(as_of=1)),
        ):
            _, error = outcome(action)
            tally.check(
                error is None or isinstance(error, ChatledgerError),
                f"{what}: {name}: {error!r:.300}",
            )
        # And the conversation goes on (or says clearly why it cannot): a send, a fork,
        # a re-run of its messages, a rewind.
        for _ in range(4):
            transport.enqueue("more")
        for name, action in (
            ("send", lambda i=info: sender.chats.get(i.conversation_id).send_message("go on")),
            ("fork", lambda i=info: sender.chats.get(i.conversation_id).fork(turn=0)),
            ("rerun", lambda i=info: sender.chats.get(i.conversation_id).rerun()),
            ("rewind", lambda i=info: sender.chats.get(i.conversation_id).rewind()),
        ):
            _, error = outcome(action)
            tally.check(
                error is None or isinstance(error, ChatledgerError),
                f"{what}: {name}: {error!r:.300}",
            )
        for command in ("log", "show", "tree", "replay"):
            result = runner.invoke(cli, ["--db", str(db_path), command, info.conversation_id])
            tally.check(
                result.exception is None or isinstance(result.exception, SystemExit),
                f"{what}: {command}: {result.exception!r:.300}",
            )
    _, error = outcome(lambda: client.chats.list())
    tally.check(
        error is None or isinstance(error, ChatledgerError), f"{what}: list: {error!r:.300}"
    )


RANDOM_LINES = st.lists(
    st.one_of(
        st.text(ANY_CHARS, max_size=30),
        st.binary(max_size=30),
        JSONISH.map(lambda v: json.dumps(v, default=repr)),
        st.dictionaries(
            st.sampled_from(
                [
                    "conversation_id",
                    "version",
                    "event_id",
                    "type",
                    "schema_version",
                    "data",
                    "metadata",
                    "recorded_at",
                    "hash",
                    "position",
                ]
            ),
            JSON_VALUES,
        ).map(json.dumps),
        st.sampled_from(
            ["[" * 10_000, "{" * 50_000 + "}" * 50_000, '{"a":"\\ud800"}', "\x00", "1e999"]
        ),
    ),
    max_size=5,
)


def test_random_import_lines(
    family: tuple[chatledger.Client, dict[str, chatledger.Chat]], tmp_path: Path
) -> None:
    """Random lines, and real export lines with one random value changed, mixed: an import
    is refused with a clear error and no change, or the result verifies and reads back."""
    client, chats = family
    real = export_events(client, chats["root"], forks=True)
    tally = Tally()
    target_path = tmp_path / "target.db"
    with SQLiteStore(target_path) as target:
        import_lines(target, lines_of(export_events(client, chats["other"])))

        @settings(HYPOTHESIS, max_examples=ledger.scale(60, 600))
        @given(
            noise=st.one_of(st.just([]), RANDOM_LINES),
            keep=st.one_of(
                st.just([True] * len(real)),
                st.lists(
                    st.sampled_from([True, True, True, False]),
                    min_size=len(real),
                    max_size=len(real),
                ),
            ),
            rng=st.randoms(use_true_random=False),
            replacement=JSONISH,
        )
        def one(noise: list[Any], keep: list[bool], rng: random.Random, replacement: Any) -> None:
            tally.inputs += 1
            events = [event for event, kept in zip(real, keep, strict=True) if kept]
            if events and rng.random() < 0.7:
                index = rng.randrange(len(events))
                events[index] = mutate_event(events[index], rng, replacement)
            lines: list[Any] = [
                json.dumps(e, default=repr, ensure_ascii=rng.random() < 0.5) for e in events
            ]
            for item in noise:
                lines.insert(rng.randrange(len(lines) + 1), item)
            report = try_import(target, target_path, lines, tally, f"lines {lines!r:.300}")
            if report is not None:
                # Only what this file brought: the target keeps every earlier import.
                read_everything(
                    target, target_path, tally, "random lines", only=report.conversations
                )

        one()
    tally.record("import/random and mutated lines")


def difference(old: Any, new: Any, path: str = "") -> str:
    """Where two JSON values first differ, for failure messages."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            if old.get(key, "<absent>") != new.get(key, "<absent>"):
                return difference(
                    old.get(key, "<absent>"), new.get(key, "<absent>"), f"{path}.{key}"
                )
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            if a != b:
                return difference(a, b, f"{path}[{index}]")
    return f"{path}: {old!r:.100} -> {new!r:.100}"


def _swap_versions(events: list[dict[str, Any]], root: str) -> None:
    mine = [e for e in events if e["conversation_id"] == root]
    mine[1]["version"], mine[2]["version"] = mine[2]["version"], mine[1]["version"]


def forgeries(
    root: str, fork: str, other: str
) -> dict[str, Callable[[list[dict[str, Any]]], list[dict[str, Any]]]]:
    """Tampering that must be refused, by what it does to a root+fork export."""

    def first(events: list[dict[str, Any]], cid: str, kind: str) -> dict[str, Any]:
        return next(e for e in events if e["conversation_id"] == cid and e["type"] == kind)

    def edit(
        change: Callable[[list[dict[str, Any]]], None],
    ) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
        def apply(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
            change(events)
            return events

        return apply

    def text(events: list[dict[str, Any]]) -> None:
        first(events, root, "user_message_added")["data"]["content"]["parts"][0]["text"] = "forged"

    return {
        "edit message text": edit(text),
        "edit actor": edit(
            lambda es: first(es, root, "user_message_added")["metadata"].update(actor="mallory")
        ),
        "edit recorded_at": edit(
            lambda es: first(es, root, "model_responded").update(
                recorded_at="2020-01-01T00:00:00.000000Z"
            )
        ),
        "edit event_id": edit(
            lambda es: first(es, root, "model_responded").update(event_id="forged-id")
        ),
        "edit type": edit(
            lambda es: first(es, root, "model_call_started").update(type="model_call_failed")
        ),
        "edit schema_version": edit(
            lambda es: first(es, root, "model_responded").update(schema_version=2)
        ),
        "edit function args": edit(
            lambda es: first(es, root, "function_called")["data"]["args"].update(city="Paris")
        ),
        "edit model answer": edit(
            lambda es: first(es, root, "model_responded")["data"]["response"]["candidates"][0][
                "content"
            ]["parts"].append({"text": "!"})
        ),
        "change a hash": edit(lambda es: first(es, root, "model_responded").update(hash="f" * 64)),
        "change a hash's case": edit(
            lambda es: first(es, root, "model_responded").update(
                hash=first(es, root, "model_responded")["hash"].upper()
            )
        ),
        "swap two versions": edit(lambda es: _swap_versions(es, root)),
        "drop the first line": lambda es: es[1:],
        "drop a middle line": lambda es: [
            e for e in es if not (e["conversation_id"] == root and e["version"] == 3)
        ],
        "duplicate a line": lambda es: [*es, dict(es[2])],
        "duplicate a line, next version": lambda es: [
            *es,
            dict(
                es[2],
                version=max(
                    e["version"] for e in es if e["conversation_id"] == es[2]["conversation_id"]
                )
                + 1,
            ),
        ],
        "splice from another conversation": lambda es: [
            *es,
            dict(first(es, root, "user_message_added"), conversation_id=fork, version=99),
        ],
        "splice as the next event": lambda es: [
            *es,
            dict(
                first(es, root, "user_message_added"),
                conversation_id=fork,
                version=sum(e["conversation_id"] == fork for e in es) + 1,
            ),
        ],
        "move an event to another conversation": edit(
            lambda es: first(es, fork, "user_message_added").update(conversation_id=other)
        ),
        "fork points at another parent hash": edit(
            lambda es: first(es, fork, "conversation_started")["data"]["parent"].update(
                hash="0" * 64
            )
        ),
        "fork points past its parent": edit(
            lambda es: first(es, fork, "conversation_started")["data"]["parent"].update(version=999)
        ),
        "parent edited, chain recomputed, fork kept": lambda es: _recompute_only(es, root, text),
        "event ids used twice in the file": lambda es: recompute(
            [
                *es,
                *(
                    dict(e, conversation_id="copy-" + fork[:8])
                    for e in es
                    if e["conversation_id"] == fork
                ),
            ]
        ),
        "recomputed, bad recorded_at": lambda es: recompute(
            edit(lambda e: first(e, root, "model_responded").update(recorded_at="yesterday"))(es)
        ),
        "recomputed, parts not an array": lambda es: recompute(
            edit(lambda e: first(e, root, "user_message_added")["data"]["content"].update(parts=5))(
                es
            )
        ),
        "recomputed, history role system": lambda es: recompute(
            edit(
                lambda e: first(e, root, "conversation_started")["data"].update(
                    history=[{"role": "system", "parts": []}]
                )
            )(es)
        ),
        "recomputed, negative parent version": lambda es: recompute(
            edit(
                lambda e: first(e, fork, "conversation_started")["data"]["parent"].update(
                    version=-1
                )
            )(es)
        ),
        "recomputed, content not an object": lambda es: recompute(
            edit(lambda e: first(e, root, "user_message_added")["data"].update(content=[1]))(es)
        ),
        "recomputed, metadata not an object": lambda es: recompute(
            edit(lambda e: first(e, root, "user_message_added").update(metadata=[1]))(es)
        ),
        "recomputed, type not a name": lambda es: recompute(
            edit(lambda e: e[-1].update(type=SQL))(es)
        ),
        "truncated last line": lambda es: es,  # cut in test_forged_exports
    }


def _recompute_only(
    events: list[dict[str, Any]], cid: str, change: Callable[[list[dict[str, Any]]], None]
) -> list[dict[str, Any]]:
    """Edit the parent and rehash its chain only: the fork still names the old hash."""
    change(events)
    mine = recompute([e for e in events if e["conversation_id"] == cid])
    return [*mine, *(e for e in events if e["conversation_id"] != cid)]


FORGERY_NAMES = list(forgeries("root", "fork", "other"))


@pytest.mark.parametrize("forgery", FORGERY_NAMES)
def test_forged_exports_are_refused_and_write_nothing(
    family: tuple[chatledger.Client, dict[str, chatledger.Chat]], tmp_path: Path, forgery: str
) -> None:
    client, chats = family
    forge = forgeries(chats["root"].id, chats["fork"].id, chats["other"].id)[forgery]
    events = forge(export_events(client, chats["root"], forks=True))
    lines = lines_of(events)
    if forgery == "truncated last line":
        lines[-1] = lines[-1][: len(lines[-1]) // 2]
    tally = Tally()
    target_path = tmp_path / "target.db"
    with SQLiteStore(target_path) as target:
        import_lines(target, lines_of(export_events(client, chats["other"])))
        tally.inputs += 1
        report = try_import(target, target_path, lines, tally, forgery)
        tally.check(report is None, f"{forgery}: accepted")
        # The CLI refuses the same file the same way.
        path = tmp_path / "forged.jsonl"
        path.write_text(
            "".join(line + "\n" for line in lines), encoding="utf-8", errors="surrogatepass"
        )
        before = log_state(target, target_path)
        result = CliRunner().invoke(cli, ["--db", str(target_path), "import", str(path)])
        tally.inputs += 1
        tally.check(
            result.exit_code == 1 and "Error:" in result.output,
            f"CLI: {result.output!r:.300} {result.exception!r}",
        )
        tally.check(log_state(target, target_path) == before, "CLI: the log changed")
    tally.record(f"import/forged export: {forgery}")


def test_what_a_recomputed_chain_can_and_cannot_hide(
    family: tuple[chatledger.Client, dict[str, chatledger.Chat]], tmp_path: Path
) -> None:
    """A forger who edits events and recomputes every hash (the chain is self-certifying):

    - into a store that already holds the conversation: refused (an anchor);
    - into a store holding the parent of a fork whose parent prefix was edited: refused;
    - into an empty store: accepted, and the result is a consistent, verifiable log that
      reads back (it proves nothing about its author: see chatledger.events.audit);
    - reordered lines (versions kept) and a file cut at a line boundary are valid files:
      the same events, and a shorter prefix of the conversation.
    """
    client, chats = family
    tally = Tally()
    original = export_events(client, chats["root"], forks=True)
    forged = json.loads(json.dumps(original))
    next(e for e in forged if e["type"] == "user_message_added")["data"]["content"]["parts"][0][
        "text"
    ] = "forged"
    forged = recompute(forged)
    holder_path = tmp_path / "holder.db"
    with SQLiteStore(holder_path) as holder:
        import_lines(holder, lines_of(original))
        tally.inputs += 1
        tally.check(
            try_import(holder, holder_path, lines_of(forged), tally, "recomputed over the original")
            is None,
            "a recomputed chain replaced a stored conversation",
        )
    parent_only_path = tmp_path / "parent.db"
    with SQLiteStore(parent_only_path) as parent_only:
        import_lines(parent_only, lines_of(export_events(client, chats["root"])))
        fork_lines = [e for e in forged if e["conversation_id"] == chats["fork"].id]
        tally.inputs += 1
        tally.check(
            try_import(
                parent_only,
                parent_only_path,
                lines_of(fork_lines),
                tally,
                "fork of an edited parent",
            )
            is None,
            "a fork of a forged parent was accepted",
        )
    empty_path = tmp_path / "empty.db"
    with SQLiteStore(empty_path) as empty:
        tally.inputs += 1
        report = try_import(
            empty, empty_path, lines_of(forged), tally, "recomputed into an empty store"
        )
        tally.check(report is not None, "a consistent recomputed file was refused")
        tally.check(
            reopen_text(empty, chats["root"].id) == "forged",
            "the forged text is not what was imported",
        )
        read_everything(empty, empty_path, tally, "recomputed")
        # The imported conversation goes on like any other.
        tally.check(empty.verify().ok, "the store does not verify")
    # Reordering lines (versions kept) changes nothing; cutting at a line boundary is a prefix.
    shuffled = list(original)
    random.Random(3).shuffle(shuffled)
    with SQLiteStore(tmp_path / "shuffled.db") as target:
        tally.inputs += 1
        import_lines(target, lines_of(shuffled))
        tally.check(
            [e.hash for e in target.read(chats["root"].id)]
            == [e.hash for e in chats["root"].events()],
            "reordered lines imported differently",
        )
    with SQLiteStore(tmp_path / "prefix.db") as target:
        tally.inputs += 1
        root_only = [e for e in original if e["conversation_id"] == chats["root"].id]
        import_lines(target, lines_of(root_only[:-2]))
        imported = target.read(chats["root"].id)
        # A prefix that ends inside a turn is imported with that turn closed (a recorded
        # turn_abandoned after the file's events): an import never leaves a turn open.
        tally.check(
            target.verify().ok
            and [e.hash for e in imported[: len(root_only) - 2]]
            == [e["hash"] for e in root_only[:-2]]
            and [e.type for e in imported[len(root_only) - 2 :]] in ([], ["turn_abandoned"]),
            "a prefix did not import as a prefix",
        )
    tally.record("import/recomputed chains (anchors)")


def reopen_text(store: EventStore, conversation_id: str) -> str | None:
    history = chatledger.Client(store=store).chats.get(conversation_id).get_history()
    return history[0].parts[0].text if history and history[0].parts else None


def test_random_forgeries_with_a_recomputed_chain(
    family: tuple[chatledger.Client, dict[str, chatledger.Chat]], tmp_path: Path
) -> None:
    """One random value changed anywhere in a real export, with or without rehashing:

    - not rehashed: refused, unless nothing hashed changed (then the same events);
    - rehashed, into the store holding the original: refused, unless nothing changed;
    - rehashed, into an empty store: refused clearly, or imported as a log that verifies
      and reads back through the API and the CLI without any other exception.
    """
    client, chats = family
    original = export_events(client, chats["root"], forks=True)
    tally = Tally()
    holder_path = tmp_path / "holder.db"
    counter = iter(range(10**9))
    with SQLiteStore(holder_path) as holder:
        import_lines(holder, lines_of(original))

        @settings(HYPOTHESIS, max_examples=ledger.scale(80, 1000))
        @given(rng=st.randoms(use_true_random=False), replacement=JSON_VALUES, rehash=st.booleans())
        def one(rng: random.Random, replacement: Any, rehash: bool) -> None:
            tally.inputs += 1
            index = rng.randrange(len(original))
            events = [dict(e) for e in original]
            events[index] = mutate_event(original[index], rng, replacement)
            if not isinstance(events[index], dict):
                events[index] = {"value": events[index]}
            if rehash:
                _, error = outcome(lambda: recompute(events))
                if error is not None:  # a mutation that leaves no envelope to hash
                    return
                events = recompute(events)
            # Whether the file still says the same: what an import reads of each line is
            # the hashed envelope and the hash ("position" and unknown keys are not read).
            # (A rehash may undo the change, say of a hash, or change other lines.)
            hashed_same = all(
                isinstance(event, dict)
                and all(event.get(k, "<absent>") == before[k] for k in (*ENVELOPE, "hash"))
                for event, before in zip(events, original, strict=True)
            )
            lines = lines_of(events)
            report = try_import(holder, holder_path, lines, tally, "into the holder")
            if not hashed_same:
                tally.check(
                    report is None,
                    f"a changed event was accepted over the original: {difference(original[index], events[index])}",
                )
            if not rehash and not hashed_same:
                empty_path = tmp_path / f"e{next(counter)}.db"
                with SQLiteStore(empty_path) as empty:
                    tally.check(
                        try_import(empty, empty_path, lines, tally, "unhashed into empty") is None,
                        f"an unhashed change was accepted: {events[index]!r:.300}",
                    )
            if rehash:
                empty_path = tmp_path / f"e{next(counter)}.db"
                with SQLiteStore(empty_path) as empty:
                    if (
                        try_import(empty, empty_path, lines, tally, "rehashed into empty")
                        is not None
                    ):
                        read_everything(
                            empty, empty_path, tally, f"rehashed {events[index]!r:.200}"
                        )

        one()
    tally.record("import/random forgeries, rehashed or not")


def test_an_import_is_atomic_across_conversations(
    family: tuple[chatledger.Client, dict[str, chatledger.Chat]], tmp_path: Path
) -> None:
    """A file with a sound new conversation and a forged one whose event ids are already
    used in the target store by another conversation: refused before anything is
    written (conversations are written one transaction each)."""
    client, chats = family
    tally = Tally()
    target_path = tmp_path / "target.db"
    with SQLiteStore(target_path) as target:
        import_lines(target, lines_of(export_events(client, chats["other"])))
        taken = [e.event_id for e in target.read(chats["other"].id)]
        sound = export_events(client, chats["root"])
        thief = [
            dict(e, conversation_id="thief", event_id=taken[i % len(taken)])
            for i, e in enumerate(export_events(client, chats["root"]))
        ]
        for name, lines in (
            ("sound first", [*sound, *recompute(thief)]),
            ("thief first", [*recompute(thief), *sound]),
        ):
            tally.inputs += 1
            tally.check(
                try_import(target, target_path, lines_of(lines), tally, name) is None,
                f"{name}: accepted",
            )
            tally.check(
                target.stream_info(chats["root"].id) is None,
                f"{name}: the sound conversation was written",
            )
    tally.record("import/atomic over conversations (event id collisions)")


def test_a_chain_of_a_thousand_forks_imports_and_reads(tmp_path: Path) -> None:
    """A file holding a fork of a fork of ... 1,500 deep (more than Python's recursion
    limit): imported, resumed, listed as a tree and shown by the CLI without recursion."""
    depth = ledger.scale(1_200, 3_000)
    source = MemoryStore()
    parent_id, parent_hash = "c0", ""
    source.append(
        parent_id,
        [
            NewEvent(
                data=ConversationStarted(
                    model=MODEL,
                    history=[
                        {"role": "user", "parts": [{"text": "root"}]},
                        {"role": "model", "parts": [{"text": "ok"}]},
                    ],
                )
            )
        ],
        expected_version=0,
    )
    parent_hash = source.read(parent_id)[0].hash
    for index in range(1, depth):
        cid = f"c{index}"
        source.append(
            cid,
            [
                NewEvent(
                    data=ConversationStarted(
                        model=MODEL,
                        parent=ParentRef(conversation_id=parent_id, version=1, hash=parent_hash),
                    )
                )
            ],
            expected_version=0,
        )
        parent_id, parent_hash = cid, source.read(cid)[0].hash
    lines = list(export_conversation(source, parent_id))
    assert len(lines) == depth
    db = tmp_path / "deep.db"
    with SQLiteStore(db) as store:
        report = import_lines(store, reversed(lines))
        assert report.events == depth and store.verify().ok
        client = chatledger.Client(store=store)
        assert wires(client.chats.get(parent_id).get_history()) == [
            {"role": "user", "parts": [{"text": "root"}]},
            {"role": "model", "parts": [{"text": "ok"}]},
        ]
        assert sum(1 for _ in client.chats.tree(parent_id).walk()) == depth
    result = CliRunner().invoke(cli, ["--db", str(db), "show", parent_id])
    assert result.exit_code == 0, result.output
    ledger.record(AREA, f"import/fork chain {depth} deep", inputs=depth)
