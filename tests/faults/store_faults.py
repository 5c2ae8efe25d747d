"""The store fault suite's shared parts: an observed SQLite store, clients on the
loopback server, what was committed and what was lost, and the tally each test records.

The suite is split by fault, one file each (``test_store_faults_<fault>.py``), and
shows what another process, a full disk, permissions and damage to the file do to real
chats.

Every test works on a real file with real chats sent through the loopback Gemini server,
injects a fault, and then measures against what had been committed before it:

- the error is a :class:`~chatledger.errors.StoreError` (never a raw ``sqlite3`` error,
  never a crash), and its message names the file and says what to do;
- no committed event is lost (``events_lost``, measured, then asserted to be 0);
- the log verifies, or ``verify`` names the damage (the very event, when it is inside
  one); whatever ``verify`` passes reads exactly as committed: nothing silently wrong;
- once the fault is gone (lock released, space freed, permissions back) the chat goes on.

Faults, and how each is made honestly:

- **locked**: another *process* holds ``BEGIN IMMEDIATE`` / ``BEGIN EXCLUSIVE`` (or the
  exclusive locking mode, which shuts out readers too) for longer than the busy timeout,
  taken just before each append a send, stream, function-calling turn, retry, failure,
  rewind, create and fork makes, so every point of a turn is hit.
- **disk full**, at many fill levels, three ways: a small ``tmpfs`` really filled up
  (ENOSPC; needs root and ``mount``, else skipped), SQLite's ``max_page_count`` (its own
  SQLITE_FULL, portable), and ``RLIMIT_FSIZE`` in a child process with ``SIGXFSZ``
  ignored (writes fail with EFBIG: SQLite's I/O error path).
- **read-only**: ``chmod`` when not root; as root (permission bits do not apply)
  ``chattr +i`` on the file, and a read-only bind mount of the folder.
- **truncated** at many offsets and **corrupted** by flipping bits at many offsets (the
  header, the schema, b-tree pages, overflow pages, indexes, and inside event rows); a
  flipped byte in an event's JSON must be named by ``verify``. The ``-wal`` a crash
  leaves behind, cut short or flipped: every commit before the damage survives.
- **not a database**: text, binary, a chatledger export, another program's database, a
  folder; an empty file is a new, empty log (SQLite's rule; see the test).
- **damaged tables** (``_heads``, ``_tables``): head rows deleted, added, moved, re-hashed,
  re-parented or re-timed; snapshots past the log, of no conversation, or damaged; the
  schema's triggers, keys, functions and migrations changed; the projection runner's
  position deleted or moved; a retry that reuses an event id with other content.
- **another program's database** (``_foreign``) and **what an import takes from another
  host** (``_imports``): leases, times, repeated ids and turns a file leaves open.

``ledger.scale(fast, full)`` sizes the loops: the normal suite runs a sample, ``make
faults`` many more.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

import chatledger
from chatledger.errors import StoreError
from chatledger.events import EventStore, NewEvent, RecordedEvent, SQLiteStore
from tests.conftest import API_KEY
from tests.faults import ledger
from tests.support.gemini_server import GeminiServer, text_response

AREA = "store"
ROOT = Path(__file__).resolve().parents[2]
#: Short, so that a lock held past it fails fast; long enough for an unlocked write.
BUSY_TIMEOUT = 0.1
#: SQLite's default page count limit: "no limit" for max_page_count.
NO_PAGE_LIMIT = 1073741823


class ObservedStore(SQLiteStore):
    """A real SQLite store that numbers its appends, remembers every event they committed,
    and can run a fault just before append number N (``before_append[N]``)."""

    def __init__(self, path: str | os.PathLike[str], **options: Any) -> None:
        super().__init__(path, **options)
        self.appends = 0
        self.committed: set[str] = set()
        self.before_append: dict[int, Callable[[], None]] = {}
        #: (append number, first event type, error) of every append that failed.
        self.failed: list[tuple[int, str, StoreError]] = []

    def append(
        self, conversation_id: str, events: Sequence[NewEvent], *, expected_version: int
    ) -> list[int]:
        self.appends += 1
        number = self.appends
        fault = self.before_append.pop(number, None)
        if fault is not None:
            fault()
        try:
            positions = super().append(conversation_id, events, expected_version=expected_version)
        except StoreError as exc:
            self.failed.append((number, events[0].type, exc))
            raise
        self.committed.update(event.event_id for event in events)
        return positions


def make_client(server: GeminiServer, store: Any, **options: Any) -> chatledger.Client:
    return chatledger.Client(
        api_key=API_KEY,
        http_options={"base_url": server.base_url, "api_version": "v1beta", **options},
        store=store,
        actor="faults",
    )


Entry = tuple[str, int, str]  # conversation id, version, hash


def log_of(store: SQLiteStore) -> dict[str, Entry]:
    """Every event in the store by event id."""
    found: dict[str, Entry] = {}
    position = 0
    while True:
        events = store.read_all(after_position=position, limit=1000)
        if not events:
            return found
        for event in events:
            found[event.event_id] = (event.conversation_id, event.version, event.hash)
        position = events[-1].position


def count_lost(before: dict[str, Entry], committed: set[str], after: dict[str, Entry]) -> int:
    """Events committed before or during the fault that are missing or changed now."""
    lost = sum(1 for event_id, entry in before.items() if after.get(event_id) != entry)
    return lost + sum(1 for event_id in committed - before.keys() if event_id not in after)


def user_texts(chat: chatledger.Chat) -> list[str]:
    return [
        "".join(part.text or "" for part in content.parts or [])
        for content in chat.get_history(curated=True)
        if content.role == "user"
    ]


def lookup(city: str) -> dict[str, str]:
    """The weather in a city (a tool for the function-calling turn)."""
    return {"city": city, "sky": "clear"}


def function_call(name: str, **args: Any) -> dict[str, Any]:
    return text_response(parts=[{"functionCall": {"name": name, "args": args}}])


def mentions_path(message: str, path: Path) -> bool:
    return str(path) in message or path.name in message


def one_line_error(output: str) -> bool:
    lines = [line for line in output.splitlines() if line.strip()]
    return len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in output


@dataclass
class Tally:
    """What one test injected and measured, for the ledger and its assertions."""

    faults: int = 0
    events_lost: int = 0
    invariants_broken: int = 0
    notes: list[str] = field(default_factory=list)

    def check(self, ok: bool, note: str) -> bool:
        if not ok:
            self.invariants_broken += 1
            self.notes.append(note)
        return ok

    def add(self, other: Tally) -> None:
        self.faults += other.faults
        self.events_lost += other.events_lost
        self.invariants_broken += other.invariants_broken
        self.notes.extend(other.notes)

    def record(self, fault: str) -> None:
        ledger.record(
            AREA,
            f"{fault}/sqlite",
            faults=self.faults,
            events_lost=self.events_lost,
            invariants_broken=self.invariants_broken,
        )

    def assert_clean(self) -> None:
        assert self.faults > 0
        assert self.events_lost == 0, self.notes
        assert self.invariants_broken == 0, "\n".join(self.notes[:20])


def send_streamed(chat: chatledger.Chat, text: str) -> object:
    """Send ``text`` as a stream and read every chunk."""
    return list(chat.send_message_stream(text))


@contextlib.contextmanager
def make_client_without_server(path: Path) -> Iterator[chatledger.Client]:
    with chatledger.Client(api_key=API_KEY, store=str(path), actor="faults") as client:
        yield client


@dataclass(frozen=True)
class Template:
    """A closed log file with several conversations (one forked, one with function calls,
    one with a message spilling over several pages), and every event it holds."""

    path: Path
    content: bytes
    events: dict[str, list[RecordedEvent]]


@pytest.fixture(scope="module", name="template")
def template_fixture(tmp_path_factory: pytest.TempPathFactory) -> Template:
    path = tmp_path_factory.mktemp("template") / "chatledger.db"
    with GeminiServer() as server, make_client(server, str(path)) as client:
        chats = []
        for number in range(3):
            chat = client.chats.create(
                model="gemini-test",
                config={"system_instruction": f"conversation {number}", "tools": [lookup]},
            )
            for turn in range(3):
                server.reply_echo()
                chat.send_message(
                    f"conversation {number} turn {turn}: " + "words " * (5 + 20 * turn)
                )
            chats.append(chat)
        server.reply_json(function_call("lookup", city="Oslo"))
        server.reply_text("It is clear in Oslo.")
        chats[0].send_message("Weather in Oslo?")
        server.reply_echo()  # a message longer than a page: its rows spill to overflow pages
        chats[2].send_message("long " * 3000)
        fork = chats[1].fork(turn=2)
        server.reply_echo()
        fork.send_message("a different third turn")
        store = client.store
        events = {
            info.conversation_id: store.read(info.conversation_id) for info in store.conversations()
        }
        assert store.verify().ok
    for suffix in ("-wal", "-shm"):  # closed cleanly: everything is in the file itself
        assert not Path(f"{path}{suffix}").exists()
    return Template(path, path.read_bytes(), events)


# --------------------------------------------------------------------------- damaged tables


@dataclass
class Backend:
    """A store on a real database (SQLite or PostgreSQL), and a way to change its tables
    behind its back, as someone with write access to the database could."""

    name: str
    open: Callable[[], EventStore]
    #: Run one SQL statement (``%s`` placeholders) on the log's tables, unqualified.
    execute: Callable[[str, tuple[Any, ...]], None]


def backend_for(kind: str, tmp_path: Path, postgres_url: str | None) -> Backend:
    """A SQLite file in ``tmp_path``, or a schema of its own in the PostgreSQL database."""
    if kind == "sqlite":
        path = tmp_path / "damaged.db"

        def execute_sqlite(statement: str, params: tuple[Any, ...] = ()) -> None:
            with contextlib.closing(sqlite3.connect(path)) as conn, conn:
                conn.execute(statement.replace("%s", "?"), params)

        return Backend("sqlite", lambda: SQLiteStore(path), execute_sqlite)
    assert postgres_url is not None
    schema = f"damaged_{uuid.uuid4().hex[:10]}"

    def execute_postgres(statement: str, params: tuple[Any, ...] = ()) -> None:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"SET search_path TO {schema}")
            conn.execute(statement, params)

    def open_postgres() -> EventStore:
        from chatledger.events.postgres import PostgresStore

        return PostgresStore(postgres_url, schema=schema)

    return Backend("postgres", open_postgres, execute_postgres)
