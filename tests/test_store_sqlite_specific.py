"""What only the SQLite store does: its schema and migrations, pragmas, immutability
triggers, tamper detection on the file, several processes on one file, and the errors a
file can cause (locked, not a database, no such folder)."""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from chatledger.errors import (
    ChatledgerError,
    ConcurrencyError,
    IntegrityError,
    InvalidInputError,
    StoreError,
    StoreUnavailableError,
)
from chatledger.events import (
    ConversationStarted,
    NewEvent,
    RecordedEvent,
    SQLiteStore,
    TurnRewound,
    UnknownEvent,
    UserMessageAdded,
    event_hash,
)
from chatledger.events import sqlite as sqlite_module
from chatledger.events.views import SQLITE_VIEWS
from tests.store_contract import message, new_id, start
from tests.support.legacy_log import write_legacy_events
from tests.support.narrow import stream_version

MIGRATION_NAMES = [
    "001_events",
    "002_streams",
    "003_events_are_immutable",
    "004_snapshots",
    "005_events_are_never_replaced",
    "006_no_index_on_updated_at",
    "007_views_for_sql_readers",
    "008_merkle_nodes",
    "009_erasable_content",
    "010_conversation_read_models",
]

# What the migrations produce, exactly: (type, name, tbl_name, sql) from sqlite_master.
EXPECTED_SCHEMA = [
    (
        "index",
        "chat_summaries_parent",
        "chat_summaries",
        "CREATE INDEX chat_summaries_parent ON chat_summaries (parent_id)",
    ),
    (
        "index",
        "chat_summaries_updated",
        "chat_summaries",
        "CREATE INDEX chat_summaries_updated ON chat_summaries (updated_at DESC, conversation_id)",
    ),
    (
        "index",
        "events_event_id",
        "events",
        'CREATE UNIQUE INDEX "events_event_id"\n    ON "events" ("event_id")',
    ),
    (
        "index",
        "events_stream",
        "events",
        'CREATE UNIQUE INDEX "events_stream"\n    ON "events" ("conversation_id", "version")',
    ),
    ("index", "sqlite_autoindex__chatledger_migrations_1", "_chatledger_migrations", None),
    ("index", "sqlite_autoindex_chat_contents_1", "chat_contents", None),
    ("index", "sqlite_autoindex_chat_summaries_1", "chat_summaries", None),
    ("index", "sqlite_autoindex_snapshots_1", "snapshots", None),
    ("index", "sqlite_autoindex_streams_1", "streams", None),
    (
        "index",
        "streams_parent",
        "streams",
        'CREATE INDEX "streams_parent"\n    ON "streams" ("parent_id")',
    ),
    (
        "table",
        "_chatledger_migrations",
        "_chatledger_migrations",
        "CREATE TABLE _chatledger_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)",
    ),
    (
        "table",
        "chat_contents",
        "chat_contents",
        "CREATE TABLE chat_contents (conversation_id TEXT NOT NULL, span INTEGER NOT NULL, "
        "turn INTEGER NOT NULL, version INTEGER NOT NULL, loaded INTEGER NOT NULL, "
        "flags TEXT NOT NULL, contents BLOB NOT NULL, curated BLOB, "
        "PRIMARY KEY (conversation_id, span))",
    ),
    (
        "table",
        "chat_summaries",
        "chat_summaries",
        "CREATE TABLE chat_summaries (conversation_id TEXT PRIMARY KEY NOT NULL, "
        "model TEXT NOT NULL, title TEXT NOT NULL, turns INTEGER NOT NULL, "
        "version INTEGER NOT NULL, head_hash TEXT NOT NULL, created_at TEXT NOT NULL, "
        "updated_at TEXT NOT NULL, parent_id TEXT, parent_version INTEGER, "
        "state TEXT NOT NULL)",
    ),
    (
        "table",
        "events",
        "events",
        'CREATE TABLE "events" (\n'
        '   "position" INTEGER PRIMARY KEY,\n'
        '   "conversation_id" TEXT NOT NULL,\n'
        '   "version" INTEGER NOT NULL,\n'
        '   "event_id" TEXT NOT NULL,\n'
        '   "type" TEXT NOT NULL,\n'
        '   "schema_version" INTEGER NOT NULL,\n'
        '   "data" TEXT NOT NULL,\n'
        '   "metadata" TEXT NOT NULL,\n'
        '   "recorded_at" TEXT NOT NULL,\n'
        '   "hash" TEXT NOT NULL\n'
        ", content_salt TEXT)",
    ),
    (
        "table",
        "merkle_nodes",
        "merkle_nodes",
        "CREATE TABLE merkle_nodes (level INTEGER NOT NULL, idx INTEGER NOT NULL, "
        "hash BLOB NOT NULL, last_position INTEGER NOT NULL, PRIMARY KEY (level, idx)) "
        "WITHOUT ROWID",
    ),
    (
        "table",
        "snapshots",
        "snapshots",
        'CREATE TABLE "snapshots" (\n'
        '   "conversation_id" TEXT,\n'
        '   "name" TEXT,\n'
        '   "version" INTEGER NOT NULL,\n'
        '   "state" BLOB NOT NULL,\n'
        '   PRIMARY KEY ("conversation_id", "name")\n'
        ")",
    ),
    (
        "table",
        "streams",
        "streams",
        'CREATE TABLE "streams" (\n'
        '   "conversation_id" TEXT PRIMARY KEY,\n'
        '   "version" INTEGER NOT NULL,\n'
        '   "head_hash" TEXT NOT NULL,\n'
        '   "created_at" TEXT NOT NULL,\n'
        '   "updated_at" TEXT NOT NULL,\n'
        '   "parent_id" TEXT,\n'
        '   "parent_version" INTEGER\n'
        ")",
    ),
    (
        "trigger",
        "events_no_delete",
        "events",
        "CREATE TRIGGER events_no_delete BEFORE DELETE ON events "
        "BEGIN SELECT RAISE(ABORT, 'chatledger events are immutable'); END",
    ),
    (
        "trigger",
        "events_no_replace",
        "events",
        "CREATE TRIGGER events_no_replace BEFORE INSERT ON events WHEN EXISTS ("
        "SELECT 1 FROM events WHERE position = NEW.position OR event_id = NEW.event_id "
        "OR (conversation_id = NEW.conversation_id AND version = NEW.version)) "
        "BEGIN SELECT RAISE(ABORT, 'chatledger events are immutable'); END",
    ),
    (
        "trigger",
        "events_no_update",
        "events",
        # Lets exactly an erasure through (docs/erasure.md).
        "CREATE TRIGGER events_no_update BEFORE UPDATE ON events WHEN NOT ("
        "OLD.content_salt IS NOT NULL AND length(OLD.content_salt) = 64 "
        "AND NEW.content_salt IS '' AND NEW.position IS OLD.position "
        "AND NEW.conversation_id IS OLD.conversation_id AND NEW.version IS OLD.version "
        "AND NEW.event_id IS OLD.event_id AND NEW.type IS OLD.type "
        "AND NEW.schema_version IS OLD.schema_version AND NEW.metadata IS OLD.metadata "
        "AND NEW.recorded_at IS OLD.recorded_at AND NEW.hash IS OLD.hash) "
        "BEGIN SELECT RAISE(ABORT, 'chatledger events are immutable'); END",
    ),
    # The views for SQL readers (their text is pinned in tests/integrations/test_sql_views.py).
    ("view", "chat_conversations", "chat_conversations", SQLITE_VIEWS["chat_conversations"]),
    ("view", "chat_messages", "chat_messages", SQLITE_VIEWS["chat_messages"]),
]

EVENT_COLUMNS = (
    "position, conversation_id, version, event_id, type, schema_version, data, metadata, "
    "recorded_at, hash"
)


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the file, in autocommit mode, closed afterwards."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def schema(path: Path) -> list[tuple[str, str, str, str | None]]:
    with raw(path) as conn:
        return conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()


def migration_rows(path: Path) -> list[tuple[str, str]]:
    with raw(path) as conn:
        return conn.execute(
            "SELECT name, applied_at FROM _chatledger_migrations ORDER BY rowid"
        ).fetchall()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "chatledger.db"


@pytest.fixture
def store(path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(path) as store:
        yield store


# ----------------------------------------------------------------------------- schema


def test_migrations_produce_exactly_this_schema(store: SQLiteStore, path: Path) -> None:
    assert schema(path) == EXPECTED_SCHEMA


def test_migrations_are_recorded_by_name_in_order(store: SQLiteStore, path: Path) -> None:
    assert [name for name, _ in sqlite_module.MIGRATIONS] == MIGRATION_NAMES
    rows = migration_rows(path)
    assert [name for name, _ in rows] == MIGRATION_NAMES
    stamps = [applied_at for _, applied_at in rows]
    assert stamps == sorted(stamps)
    assert all(stamp.endswith("Z") for stamp in stamps)
    assert store.applied_migrations() == MIGRATION_NAMES


def test_reopening_a_file_does_not_rerun_migrations(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = new_id()
    with SQLiteStore(path) as store:
        start(store, cid, message(1))
        events = store.read(cid)
    rows = migration_rows(path)

    def must_not_run(db: Any) -> None:
        raise AssertionError("a migration ran again")

    monkeypatch.setattr(
        sqlite_module, "MIGRATIONS", [(name, must_not_run) for name in MIGRATION_NAMES]
    )
    with SQLiteStore(path) as store:
        assert store.read(cid) == events
        assert store.verify().ok
        store.append(cid, [message(2)], expected_version=2)
    assert migration_rows(path) == rows
    assert schema(path) == EXPECTED_SCHEMA


def test_an_older_file_is_migrated_to_the_same_schema(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = new_id()
    with monkeypatch.context() as patch:
        patch.setattr(sqlite_module, "MIGRATIONS", sqlite_module.MIGRATIONS[:2])
        SQLiteStore(path).close()
        # Events as the chatledger of that schema wrote them (no content salt).
        datas = [ConversationStarted(model="m"), message(1).data]
        hashes = write_legacy_events(path, cid, datas)
        assert [name for name, _ in migration_rows(path)] == MIGRATION_NAMES[:2]
    first_rows = migration_rows(path)

    with SQLiteStore(path) as store:
        assert store.applied_migrations() == MIGRATION_NAMES
        events = store.read(cid)
        assert [(e.data, e.hash, e.erased) for e in events] == [
            (data, digest, False) for data, digest in zip(datas, hashes, strict=True)
        ]
        assert store.verify().ok
    assert schema(path) == EXPECTED_SCHEMA
    assert migration_rows(path)[:2] == first_rows
    # The late migration is in force: events are now immutable.
    with raw(path) as conn, pytest.raises(sqlite3.IntegrityError, match="immutable"):
        conn.execute("DELETE FROM events")


def test_the_file_is_in_wal_mode_with_normal_sync_and_the_busy_timeout(path: Path) -> None:
    with SQLiteStore(path, busy_timeout=0.2) as store:
        conn = store._conn  # the store's own connection: these pragmas are per connection
        assert conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
        assert conn.execute("PRAGMA busy_timeout").fetchone() == (200,)
    with raw(path) as conn:  # the journal mode is kept in the file
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_synchronous_can_be_chosen_and_is_checked(path: Path) -> None:
    with SQLiteStore(path, synchronous="full") as store:
        assert store._conn.execute("PRAGMA synchronous").fetchone() == (2,)
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStore(path, synchronous="SOMETIMES")


# ----------------------------------------------------------------------------- immutability


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET data = '{}' WHERE version = 2",
        "UPDATE events SET hash = 'x'",
        "DELETE FROM events WHERE version = 2",
        "DELETE FROM events",
    ],
)
def test_update_and_delete_are_refused_by_triggers(
    store: SQLiteStore, path: Path, statement: str
) -> None:
    """Another connection (not the library) gets sqlite3.IntegrityError from the triggers'
    RAISE(ABORT, ...); the library itself never issues UPDATE or DELETE on events."""
    cid = new_id()
    start(store, cid, message(1))
    before = store.read(cid)
    with (
        raw(path) as conn,
        pytest.raises(sqlite3.IntegrityError, match="chatledger events are immutable"),
    ):
        conn.execute(statement)
    assert store.read(cid) == before
    assert store.verify().ok


def test_insert_or_replace_over_an_event_is_refused(store: SQLiteStore, path: Path) -> None:
    cid = new_id()
    start(store, cid, NewEvent(data=TurnRewound(turn=1)))
    # INSERT OR REPLACE deletes the old row without firing DELETE triggers; migration 005
    # refuses the insert itself.
    with raw(path) as conn, pytest.raises(sqlite3.IntegrityError, match="immutable"):
        row = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE version = 2").fetchone()
        conn.execute(
            f"INSERT OR REPLACE INTO events ({EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (*row[:6], '{"turn":7}', *row[7:]),
        )


def test_replace_over_an_event_is_caught_by_verify(store: SQLiteStore, path: Path) -> None:
    cid = new_id()
    start(store, cid, NewEvent(data=TurnRewound(turn=1)))
    event = store.read(cid)[1]
    with raw(path) as conn:
        conn.execute("DROP TRIGGER events_no_replace")  # an attacker with the file can
        row = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE version = 2").fetchone()
        conn.execute(
            f"INSERT OR REPLACE INTO events ({EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (*row[:6], '{"turn":7}', *row[7:]),
        )
    problems = store.verify(cid).problems
    assert [(p.conversation_id, p.version, p.event_id) for p in problems] == [
        (cid, 2, event.event_id)
    ]


# ----------------------------------------------------------------------------- tampering


def _set(conn: sqlite3.Connection, cid: str, version: int, column: str, value: object) -> None:
    conn.execute(
        f"UPDATE events SET {column} = ? WHERE conversation_id = ? AND version = ?",
        (value, cid, version),
    )


def _get(conn: sqlite3.Connection, cid: str, version: int, column: str) -> Any:
    return conn.execute(
        f"SELECT {column} FROM events WHERE conversation_id = ? AND version = ?", (cid, version)
    ).fetchone()[0]


def _forge(conn: sqlite3.Connection, cid: str, events: list[RecordedEvent], *, rehash: bool) -> str:
    """Insert a version-6 user message after the real head (version 5)."""
    head = events[-1]
    data = {"turn": 9, "content": {"role": "user", "parts": [{"text": "forged"}]}}
    digest = (
        event_hash(
            conversation_id=cid,
            version=6,
            event_id="forged-event",
            type="user_message_added",
            schema_version=1,
            data=data,
            metadata={},
            recorded_at=head.recorded_at,
            prev_hash=head.hash,
        )
        if rehash
        else "f" * 64
    )
    conn.execute(
        "INSERT INTO events (conversation_id, version, event_id, type, schema_version, data, "
        "metadata, recorded_at, hash) VALUES (?, 6, 'forged-event', 'user_message_added', 1, "
        "?, '{}', ?, ?)",
        (cid, msgspec.json.encode(data).decode(), head.recorded_at, digest),
    )
    return "forged-event"


def _swap(conn: sqlite3.Connection, cid: str, column: str, one: int, two: int) -> None:
    first, second = _get(conn, cid, one, column), _get(conn, cid, two, column)
    if column == "version":  # (conversation_id, version) is unique: swap through a spare one
        _set(conn, cid, one, "version", -1)
        _set(conn, cid, two, "version", one)
        _set(conn, cid, -1, "version", two)
    else:
        _set(conn, cid, one, column, second)
        _set(conn, cid, two, column, first)


# Each tampering: (what it does to stream ``cid`` of 5 events; the version verify must
# name; the index in the original events of the event named, or None for the forgery;
# words the reason must contain).
Tamper = Callable[[sqlite3.Connection, str, list[RecordedEvent]], object]
TAMPERINGS: dict[str, tuple[Tamper, int, int | None, str]] = {
    "edit-data": (
        lambda conn, cid, _: _set(
            conn,
            cid,
            3,
            "data",
            '{"turn":2,"content":{"role":"user","parts":[{"text":"I never said that"}]}}',
        ),
        3,
        2,
        "hash mismatch",
    ),
    "edit-metadata": (
        lambda conn, cid, _: _set(conn, cid, 3, "metadata", '{"actor":"mallory"}'),
        3,
        2,
        "hash mismatch",
    ),
    "edit-recorded-at": (
        lambda conn, cid, _: _set(conn, cid, 3, "recorded_at", "2001-01-01T00:00:00.000000Z"),
        3,
        2,
        "hash mismatch",
    ),
    "delete-middle": (
        lambda conn, cid, _: conn.execute(
            "DELETE FROM events WHERE conversation_id = ? AND version = 3", (cid,)
        ),
        4,
        3,
        "expected version 3",
    ),
    "delete-last": (
        lambda conn, cid, _: conn.execute(
            "DELETE FROM events WHERE conversation_id = ? AND version = 5", (cid,)
        ),
        4,
        3,
        "version 5",
    ),
    "swap-data": (lambda conn, cid, _: _swap(conn, cid, "data", 2, 3), 2, 1, "hash mismatch"),
    "swap-versions": (
        lambda conn, cid, _: _swap(conn, cid, "version", 2, 3),
        2,
        2,
        "hash mismatch",
    ),
    "forged-row": (
        lambda conn, cid, events: _forge(conn, cid, events, rehash=False),
        6,
        None,
        "hash mismatch",
    ),
    "forged-row-rehashed": (
        lambda conn, cid, events: _forge(conn, cid, events, rehash=True),
        6,
        None,
        "head row says version 5",
    ),
}


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_tampering_with_the_file_is_named_by_verify(
    store: SQLiteStore, path: Path, tampering: str
) -> None:
    tamper, version, index, reason = TAMPERINGS[tampering]
    cid, other = new_id(), new_id()
    # Interleaved, so that the tampered stream's events are neither first nor last in the file.
    start(store, other)
    start(store, cid, message(1, "one"), message(2, "two"))
    store.append(other, [message(1)], expected_version=1)
    store.append(cid, [message(3, "three"), message(4, "four")], expected_version=3)
    store.append(other, [message(2)], expected_version=2)
    events = store.read(cid)
    assert [e.version for e in events] == [1, 2, 3, 4, 5]
    assert store.verify().ok

    with raw(path) as conn:  # an attacker with the file drops the triggers first
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute("DROP TRIGGER events_no_delete")
        tamper(conn, cid, events)

    report = store.verify(cid)
    assert not report.ok
    problem = report.problems[0]
    assert (problem.conversation_id, problem.version) == (cid, version)
    assert reason in problem.reason
    if index is None:
        assert problem.event_id == "forged-event"
    else:
        assert problem.event_id == events[index].event_id
        assert problem.position == events[index].position
    # Checking the whole file names the same event first for this stream.
    everything = store.verify()
    assert next(p for p in everything.problems if p.conversation_id == cid) == problem
    assert store.verify(other).ok


# ----------------------------------------------------------------------------- newer versions


def write_as_newer_version(
    path: Path, cid: str, type_name: str, schema_version: int, data: Any, metadata: dict[str, Any]
) -> None:
    """Append an event the way a newer chatledger would: same envelope, same chain."""
    with raw(path) as conn:
        conn.execute("BEGIN IMMEDIATE")
        version, head_hash = conn.execute(
            "SELECT version, head_hash FROM streams WHERE conversation_id = ?", (cid,)
        ).fetchone()
        recorded_at = "2031-05-06T07:08:09.123456Z"
        digest = event_hash(
            conversation_id=cid,
            version=version + 1,
            event_id="from-the-future",
            type=type_name,
            schema_version=schema_version,
            data=data,
            metadata=metadata,
            recorded_at=recorded_at,
            prev_hash=head_hash,
        )
        conn.execute(
            "INSERT INTO events (conversation_id, version, event_id, type, schema_version, "
            "data, metadata, recorded_at, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                cid,
                version + 1,
                "from-the-future",
                type_name,
                schema_version,
                msgspec.json.encode(data).decode(),  # as every chatledger writes data
                msgspec.json.encode(metadata).decode(),
                recorded_at,
                digest,
            ),
        )
        conn.execute(
            "UPDATE streams SET version = ?, head_hash = ?, updated_at = ? WHERE conversation_id = ?",
            (version + 1, digest, recorded_at, cid),
        )
        conn.execute("COMMIT")


def test_an_event_type_from_a_newer_version_reads_back_as_unknown_and_verifies(
    store: SQLiteStore, path: Path
) -> None:
    cid = new_id()
    start(store, cid, message(1))
    data = {"emoji": "👍", "target": {"version": 2}, "weights": [0.5, 1, None]}
    write_as_newer_version(path, cid, "reaction_added", 3, data, {"library": "chatledger/9.0"})

    event = store.read(cid)[-1]
    assert event.type == "reaction_added"
    assert event.schema_version == 3
    assert event.version == 3
    assert event.event_id == "from-the-future"
    assert event.data == UnknownEvent(type="reaction_added", data=data, version=3)
    assert event.metadata == {"library": "chatledger/9.0"}
    assert event.to_export()["data"] == data
    assert store.verify(cid).ok
    assert [e.event_id for e in store.read_all(after_position=event.position - 1)] == [
        "from-the-future"
    ]

    # This version goes on writing after it, and the chain holds.
    store.append(cid, [message(2)], expected_version=3)
    assert [e.version for e in store.read(cid)] == [1, 2, 3, 4]
    assert store.verify().ok


def test_a_known_kind_at_a_newer_schema_version_asks_for_an_upgrade(
    store: SQLiteStore, path: Path
) -> None:
    """Reading it as something else could silently change a history: refuse, clearly."""
    cid = new_id()
    start(store, cid)
    write_as_newer_version(path, cid, "turn_rewound", 2, {"turn": "three"}, {})
    with pytest.raises(
        ChatledgerError,
        match=rf"{cid} v2: turn_rewound events at schema_version 2 .* upgrade chatledger",
    ):
        store.read(cid)
    report = store.verify(cid)
    assert [problem.version for problem in report.problems] == [2]


def test_undecodable_data_is_an_integrity_error_naming_the_event(
    store: SQLiteStore, path: Path
) -> None:
    cid = new_id()
    start(store, cid, NewEvent(data=TurnRewound(turn=1)))
    with raw(path) as conn:
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute(
            'UPDATE events SET data = \'{"turn": "x"}\' WHERE conversation_id = ? AND version = 2',
            (cid,),
        )
    with pytest.raises(IntegrityError, match=rf"{cid} v2 .* is not a valid turn_rewound event"):
        store.read(cid)


@pytest.mark.parametrize(
    ("column", "value", "shown"),
    [
        ("hash", b"\xab", "bytes"),
        ("version", "two", "str"),
        ("recorded_at", b"2026", "bytes"),
        ("schema_version", "one", "str"),
    ],
)
def test_a_column_of_the_wrong_type_is_an_integrity_error_naming_it(
    store: SQLiteStore, path: Path, column: str, value: object, shown: str
) -> None:
    # SQLite stores what it is given in a column of another type (a blob in a TEXT
    # column, text in an INTEGER one): only a damaged file or a foreign writer does so.
    cid = new_id()
    start(store, cid, NewEvent(data=TurnRewound(turn=1)))
    with raw(path) as conn:
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute(
            f"UPDATE events SET {column} = ? WHERE conversation_id = ? AND version = 2",
            (value, cid),
        )
    with pytest.raises(IntegrityError, match=rf"its {column} is damaged \({shown} "):
        store.read(cid)
    assert not store.verify(cid).ok


# ----------------------------------------------------------------------------- processes


def append_from_process(
    path: str, cid: str, writer: int, count: int, barrier: Any, results: Any
) -> None:
    """One writer process: ``count`` appends with optimistic retries on ConcurrencyError."""
    try:
        with SQLiteStore(path) as store:
            barrier.wait()
            conflicts = 0
            for n in range(count):
                while True:
                    info = store.stream_info(cid)
                    assert info is not None
                    content = {"role": "user", "parts": [{"text": f"{writer}/{n}"}]}
                    event = NewEvent(
                        data=UserMessageAdded(turn=n + 1, content=content),
                        metadata={"writer": writer, "n": n},
                    )
                    try:
                        store.append(cid, [event], expected_version=info.version)
                        break
                    except ConcurrencyError:
                        conflicts += 1
        results.put((writer, conflicts, None))
    except BaseException as exc:
        results.put((writer, -1, repr(exc)))


def test_processes_appending_to_one_conversation_with_retries(path: Path) -> None:
    writers, each = 4, 100
    cid = new_id()
    with SQLiteStore(path) as store:
        start(store, cid)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(writers)
    results = context.Queue()
    processes = [
        context.Process(
            target=append_from_process, args=(str(path), cid, w, each, barrier, results)
        )
        for w in range(writers)
    ]
    for process in processes:
        process.start()
    try:
        # A generous guard so a wedged child fails the test instead of hanging it.
        outcomes = [results.get(timeout=240) for _ in range(writers)]
    except queue.Empty:
        outcomes = []
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
                process.join()
    results.close()
    results.join_thread()
    assert sorted(w for w, _, _ in outcomes) == list(range(writers))
    assert [error for _, _, error in outcomes if error] == []
    assert [process.exitcode for process in processes] == [0] * writers

    with SQLiteStore(path) as store:
        events = store.read(cid)
        total = writers * each + 1
        assert [e.version for e in events] == list(range(1, total + 1))
        assert len({e.event_id for e in events}) == total
        written = [(e.metadata["writer"], e.metadata["n"]) for e in events[1:]]
        assert sorted(written) == [(w, n) for w in range(writers) for n in range(each)]
        for w in range(writers):
            assert [n for writer, n in written if writer == w] == list(range(each))
        positions = [e.position for e in events]
        assert positions == sorted(set(positions))
        report = store.verify()
        assert report.ok, report.problems
        assert report.events_checked == total


def test_two_store_objects_on_one_file_see_each_other_live(path: Path) -> None:
    cid = new_id()
    with SQLiteStore(path) as writer, SQLiteStore(path) as reader:
        first = start(writer, cid)[0]
        assert [e.version for e in reader.read(cid)] == [1]
        live = [message(n) for n in range(1, 6)]
        stop = threading.Event()
        guard = threading.Timer(60, stop.set)  # fail rather than hang
        caught_up = threading.Event()

        def write() -> None:
            caught_up.wait()
            for n, event in enumerate(live, start=1):
                writer.append(cid, [event], expected_version=n)

        thread = threading.Thread(target=write)
        thread.start()
        guard.start()
        seen: list[str] = []
        try:
            for event in reader.subscribe(first - 1, stop=stop, poll_interval=0.01):
                seen.append(event.event_id)
                caught_up.set()
                if len(seen) == 1 + len(live):
                    stop.set()
        finally:
            caught_up.set()
            guard.cancel()
            thread.join()
        assert seen[1:] == [e.event_id for e in live]


# ----------------------------------------------------------------------------- a file's errors


def test_a_locked_file_gives_store_unavailable_and_nothing_is_written(path: Path) -> None:
    with SQLiteStore(path, busy_timeout=0.2) as store:
        cid = new_id()
        start(store, cid)
        before = store.read(cid)
        with raw(path) as locker:
            locker.execute("BEGIN EXCLUSIVE")
            with pytest.raises(StoreUnavailableError) as caught:
                store.append(cid, [message(1)], expected_version=1)
            text = str(caught.value)
            assert "locked" in text
            assert "nothing was written" in text
            assert "busy_timeout" in text
            # WAL: readers are not blocked by the writer's lock.
            assert store.read(cid) == before
            locker.execute("ROLLBACK")
        assert store.read(cid) == before
        assert stream_version(store, cid) == 1
        store.append(cid, [message(1)], expected_version=1)
        assert [e.version for e in store.read(cid)] == [1, 2]
        assert store.verify().ok


def test_opening_a_new_file_another_connection_holds_locked_gives_store_unavailable(
    path: Path,
) -> None:
    with raw(path) as locker:
        locker.execute("PRAGMA journal_mode = WAL")
        locker.execute("BEGIN EXCLUSIVE")
        locker.execute("CREATE TABLE unrelated (x)")
        with pytest.raises(StoreUnavailableError, match="locked"):
            SQLiteStore(path, busy_timeout=0.2)
        locker.execute("COMMIT")
    # Its table committed, the file is another program's database: a log goes in it only
    # when asked for.
    with SQLiteStore(path, busy_timeout=0.2, create_in_existing=True) as store:
        assert store.applied_migrations() == MIGRATION_NAMES


def test_a_file_that_is_not_a_database_gives_store_unavailable(path: Path) -> None:
    garbage = b"this is not a database, just some bytes\x00\xff" * 200
    path.write_bytes(garbage)
    with pytest.raises(StoreUnavailableError) as caught:
        SQLiteStore(path)
    text = str(caught.value)
    assert "corrupt" in text
    assert "not a" in text
    assert str(path) in text
    assert path.read_bytes() == garbage


def test_a_folder_that_does_not_exist_gives_store_unavailable(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "folder"
    with pytest.raises(StoreUnavailableError) as caught:
        SQLiteStore(missing / "chatledger.db")
    text = str(caught.value)
    assert "does not exist" in text
    assert str(missing) in text
    assert not (tmp_path / "no").exists()


def test_a_closed_store_refuses_to_work(path: Path) -> None:
    store = SQLiteStore(path)
    cid = new_id()
    start(store, cid)
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.read(cid)
    with pytest.raises(StoreError, match="closed"):
        store.append(cid, [message(1)], expected_version=1)
    store.close()  # closing twice is fine
    with SQLiteStore(path) as reopened:
        assert [e.version for e in reopened.read(cid)] == [1]


def test_a_bad_event_never_reaches_the_file(store: SQLiteStore, path: Path) -> None:
    cid = new_id()
    start(store, cid)
    with raw(path) as conn:
        count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    with pytest.raises(InvalidInputError):
        store.append(
            cid,
            [message(1), NewEvent(data=TurnRewound(turn=1), metadata={"s": {1}})],
            expected_version=1,
        )
    with raw(path) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == count
        assert conn.execute(
            "SELECT version FROM streams WHERE conversation_id = ?", (cid,)
        ).fetchone() == (1,)
