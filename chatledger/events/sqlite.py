"""The SQLite store: the embedded default. One file, shared safely by several processes.

Defaults: WAL journal (readers never block the writer), ``synchronous=NORMAL`` (a commit
survives a process crash; the last transactions may be lost on power failure, as with
most embedded logs), a busy timeout so concurrent writers wait instead of failing, and
``BEGIN IMMEDIATE`` for appends so the version check and the insert are one atomic step.
Positions are SQLite rowids assigned inside that write lock, so they are in commit order
and gapless: a reader following positions can never skip a late commit.

The schema is created by named, ordered migrations (sqlite-utils), recorded in
``_chatledger_migrations``. Triggers refuse UPDATE and DELETE on ``events``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import sqlite_utils

from ..errors import (
    ConcurrencyError,
    IntegrityError,
    StoreError,
    StoreUnavailableError,
)
from .envelope import NewEvent, utc_now
from .store import EventStore, RawRow, Snapshot, StreamInfo, parent_of, parent_of_rows

__all__ = ["MIGRATIONS", "SQLiteStore"]

Migration = Callable[[sqlite_utils.Database], None]
T = TypeVar("T")


def _m001_events(db: sqlite_utils.Database) -> None:
    db["events"].create(  # type: ignore[union-attr]
        {
            "position": int,
            "conversation_id": str,
            "version": int,
            "event_id": str,
            "type": str,
            "schema_version": int,
            "data": str,
            "metadata": str,
            "recorded_at": str,
            "hash": str,
        },
        pk="position",
        not_null={
            "conversation_id",
            "version",
            "event_id",
            "type",
            "schema_version",
            "data",
            "metadata",
            "recorded_at",
            "hash",
        },
    )
    db["events"].create_index(  # type: ignore[union-attr]
        ["conversation_id", "version"], index_name="events_stream", unique=True
    )
    db["events"].create_index(  # type: ignore[union-attr]
        ["event_id"], index_name="events_event_id", unique=True
    )


def _m002_streams(db: sqlite_utils.Database) -> None:
    db["streams"].create(  # type: ignore[union-attr]
        {
            "conversation_id": str,
            "version": int,
            "head_hash": str,
            "created_at": str,
            "updated_at": str,
            "parent_id": str,
            "parent_version": int,
        },
        pk="conversation_id",
        not_null={"version", "head_hash", "created_at", "updated_at"},
    )
    db["streams"].create_index(["updated_at"], index_name="streams_updated")  # type: ignore[union-attr]
    db["streams"].create_index(["parent_id"], index_name="streams_parent")  # type: ignore[union-attr]


def _m003_events_are_immutable(db: sqlite_utils.Database) -> None:
    for action in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER events_no_{action.lower()} BEFORE {action} ON events "
            f"BEGIN SELECT RAISE(ABORT, 'chatledger events are immutable'); END"
        )


def _m004_snapshots(db: sqlite_utils.Database) -> None:
    db["snapshots"].create(  # type: ignore[union-attr]
        {"conversation_id": str, "name": str, "version": int, "state": bytes},
        pk=("conversation_id", "name"),
        not_null={"version", "state"},
    )


def _m005_events_are_never_replaced(db: sqlite_utils.Database) -> None:
    # INSERT OR REPLACE deletes the old row without firing DELETE triggers: refuse any
    # insert that would collide with a stored event, before conflict resolution runs.
    db.execute(
        "CREATE TRIGGER events_no_replace BEFORE INSERT ON events WHEN EXISTS ("
        "SELECT 1 FROM events WHERE position = NEW.position OR event_id = NEW.event_id "
        "OR (conversation_id = NEW.conversation_id AND version = NEW.version)) "
        "BEGIN SELECT RAISE(ABORT, 'chatledger events are immutable'); END"
    )


MIGRATIONS: list[tuple[str, Migration]] = [
    ("001_events", _m001_events),
    ("002_streams", _m002_streams),
    ("003_events_are_immutable", _m003_events_are_immutable),
    ("004_snapshots", _m004_snapshots),
    ("005_events_are_never_replaced", _m005_events_are_never_replaced),
]

_COLUMNS = "conversation_id, version, position, event_id, type, schema_version, data, metadata, recorded_at, hash"


class SQLiteStore(EventStore):
    """The log in one SQLite file.

    ``path`` is a file path (created if missing) or ``":memory:"``. ``busy_timeout`` is how
    long a write waits for another process's write lock before giving up, in seconds.
    """

    gapless_positions = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 10.0,
        synchronous: str = "NORMAL",
    ) -> None:
        self.path = str(path)
        self.location = f"sqlite:///{self.path}"
        self.busy_timeout = busy_timeout
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError("synchronous must be OFF, NORMAL, FULL or EXTRA")
        self._lock = threading.RLock()
        self._closed = False
        if self.path != ":memory:":
            parent = Path(self.path).expanduser().resolve().parent
            if not parent.is_dir():
                raise StoreUnavailableError(
                    f"cannot open {self.path}: the folder {parent} does not exist; create it first"
                )
        with self._errors():
            self._conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=busy_timeout,
            )
            try:
                self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
                if self.path != ":memory:":
                    self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
                self._migrate()
            except BaseException:
                # Not a usable store (locked, corrupt...): do not leak the connection.
                self._conn.close()
                raise

    # ----------------------------------------------------------------- schema

    def _migrate(self) -> None:
        conn = self._conn
        conn.execute(
            "CREATE TABLE IF NOT EXISTS _chatledger_migrations "
            "(name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        applied = {row[0] for row in conn.execute("SELECT name FROM _chatledger_migrations")}
        if all(name in applied for name, _ in MIGRATIONS):
            return
        with self._transaction():
            # Re-read under the write lock: another process may have migrated meanwhile.
            applied = {row[0] for row in conn.execute("SELECT name FROM _chatledger_migrations")}
            db = sqlite_utils.Database(conn, execute_plugins=False)
            for name, migration in MIGRATIONS:
                if name in applied:
                    continue
                migration(db)
                conn.execute(
                    "INSERT INTO _chatledger_migrations (name, applied_at) VALUES (?, ?)",
                    (name, utc_now()),
                )

    def applied_migrations(self) -> list[str]:
        with self._lock, self._errors():
            return [
                row[0]
                for row in self._conn.execute(
                    "SELECT name FROM _chatledger_migrations ORDER BY name"
                )
            ]

    # ----------------------------------------------------------------- primitives

    def _append(
        self,
        conversation_id: str,
        events: list[tuple[NewEvent, bytes, bytes]],
        expected_version: int,
    ) -> list[int]:
        conn = self._conn
        with self._lock, self._errors():
            conn.execute("BEGIN IMMEDIATE")
            try:
                head = conn.execute(
                    "SELECT version, head_hash FROM streams WHERE conversation_id = ?",
                    (conversation_id,),
                ).fetchone()
                current = head[0] if head else 0
                if current != expected_version:
                    conn.execute("ROLLBACK")
                    retried = self._retried_positions(
                        conversation_id, [event.event_id for event, _, _ in events]
                    )
                    if retried is not None:
                        return retried
                    raise ConcurrencyError(conversation_id, expected_version, current)
                prepared = self._prepare(conversation_id, events, current, head[1] if head else "")
                positions: list[int] = []
                for event in prepared:
                    cursor = conn.execute(
                        "INSERT INTO events (conversation_id, version, event_id, type, "
                        "schema_version, data, metadata, recorded_at, hash) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            conversation_id,
                            event.version,
                            event.event_id,
                            event.type,
                            event.schema_version,
                            event.data.decode("utf-8"),
                            event.metadata.decode("utf-8"),
                            event.recorded_at,
                            event.hash,
                        ),
                    )
                    positions.append(int(cursor.lastrowid or 0))
                last = prepared[-1]
                if head:
                    conn.execute(
                        "UPDATE streams SET version = ?, head_hash = ?, updated_at = ? "
                        "WHERE conversation_id = ?",
                        (last.version, last.hash, last.recorded_at, conversation_id),
                    )
                else:
                    parent_id, parent_version = parent_of(events)
                    conn.execute(
                        "INSERT INTO streams (conversation_id, version, head_hash, created_at, "
                        "updated_at, parent_id, parent_version) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            conversation_id,
                            last.version,
                            last.hash,
                            last.recorded_at,
                            last.recorded_at,
                            parent_id,
                            parent_version,
                        ),
                    )
                conn.execute("COMMIT")
                return positions
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _import_rows(self, conversation_id: str, rows: list[RawRow], after_version: int) -> list[int]:
        conn = self._conn
        with self._lock, self._errors(), self._transaction():
            head = conn.execute(
                "SELECT version FROM streams WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()
            if (head[0] if head else 0) != after_version:
                raise ConcurrencyError(conversation_id, after_version, head[0] if head else 0)
            positions = []
            for row in rows:
                cursor = conn.execute(
                    "INSERT INTO events (conversation_id, version, event_id, type, "
                    "schema_version, data, metadata, recorded_at, hash) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        conversation_id, row.version, row.event_id, row.type, row.schema_version,
                        _text(row.data), _text(row.metadata), row.recorded_at, row.hash,
                    ),
                )
                positions.append(int(cursor.lastrowid or 0))
            if head:
                conn.execute(
                    "UPDATE streams SET version = ?, head_hash = ?, updated_at = ? "
                    "WHERE conversation_id = ?",
                    (rows[-1].version, rows[-1].hash, rows[-1].recorded_at, conversation_id),
                )
            else:
                parent_id, parent_version = parent_of_rows(rows)
                conn.execute(
                    "INSERT INTO streams (conversation_id, version, head_hash, created_at, "
                    "updated_at, parent_id, parent_version) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        conversation_id, rows[-1].version, rows[-1].hash, rows[0].recorded_at,
                        rows[-1].recorded_at, parent_id, parent_version,
                    ),
                )
            return positions

    def _read(self, conversation_id: str, after_version: int, to_version: int | None) -> list[RawRow]:
        sql = f"SELECT {_COLUMNS} FROM events WHERE conversation_id = ? AND version > ?"
        params: tuple[object, ...] = (conversation_id, after_version)
        if to_version is not None:
            sql += " AND version <= ?"
            params += (to_version,)
        with self._lock, self._errors():
            rows = self._conn.execute(sql + " ORDER BY version", params).fetchall()
        return [RawRow(*row) for row in rows]

    def _read_all(self, after_position: int, limit: int) -> list[RawRow]:
        with self._lock, self._errors():
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?",
                (after_position, limit),
            ).fetchall()
        return [RawRow(*row) for row in rows]

    def _stream_ids(self) -> list[str]:
        with self._lock, self._errors():
            ids = {row[0] for row in self._conn.execute("SELECT conversation_id FROM streams")}
            ids.update(
                row[0] for row in self._conn.execute("SELECT DISTINCT conversation_id FROM events")
            )
        return sorted(ids)

    def _find_event_ids(self, event_ids: Sequence[str]) -> dict[str, tuple[str, int, int]]:
        marks = ", ".join("?" for _ in event_ids)
        with self._lock, self._errors():
            rows = self._conn.execute(
                f"SELECT event_id, conversation_id, version, position FROM events "
                f"WHERE event_id IN ({marks})",
                tuple(event_ids),
            ).fetchall()
        return {row[0]: (row[1], row[2], row[3]) for row in rows}

    def stream_info(self, conversation_id: str) -> StreamInfo | None:
        with self._lock, self._errors():
            row = self._conn.execute(
                "SELECT conversation_id, version, created_at, updated_at, parent_id, "
                "parent_version FROM streams WHERE conversation_id = ?",
                (conversation_id,),
            ).fetchone()
        return _info(row) if row else None

    def _conversations(self, limit: int | None, parent_id: str | None) -> list[StreamInfo]:
        sql = (
            "SELECT conversation_id, version, created_at, updated_at, parent_id, parent_version "
            "FROM streams"
        )
        params: tuple[object, ...] = ()
        if parent_id is not None:
            sql += " WHERE parent_id = ?"
            params = (parent_id,)
        sql += " ORDER BY updated_at DESC, conversation_id"
        if limit is not None:
            sql += " LIMIT ?"
            params += (limit,)
        with self._lock, self._errors():
            return [_info(row) for row in self._conn.execute(sql, params)]

    def save_snapshot(self, snapshot: Snapshot) -> None:
        with self._lock, self._errors():
            self._conn.execute(
                "INSERT INTO snapshots (conversation_id, name, version, state) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (conversation_id, name) DO UPDATE SET version = excluded.version, "
                "state = excluded.state WHERE excluded.version > snapshots.version",
                (snapshot.conversation_id, snapshot.name, snapshot.version, snapshot.state),
            )

    def load_snapshot(self, conversation_id: str, name: str) -> Snapshot | None:
        with self._lock, self._errors():
            row = self._conn.execute(
                "SELECT version, state FROM snapshots WHERE conversation_id = ? AND name = ?",
                (conversation_id, name),
            ).fetchone()
        if row is None:
            return None
        return Snapshot(conversation_id=conversation_id, name=name, version=row[0], state=row[1])

    def run_in_transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(connection)`` in one ``BEGIN IMMEDIATE`` transaction on this store's
        sqlite3 connection (see :meth:`EventStore.run_in_transaction`). Other threads of
        this store wait meanwhile, other processes' writers up to their busy timeout."""
        with self._lock, self._errors(), self._transaction():
            return work(self._conn)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    # ----------------------------------------------------------------- helpers

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate sqlite3's errors into the library's, with what to do about them."""
        if self._closed:
            raise StoreError(f"the store {self.path} is closed")
        try:
            yield
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(f"{self.path}: {exc}") from None
        except sqlite3.OperationalError as exc:
            raise StoreUnavailableError(self._explain(exc)) from None
        except sqlite3.DatabaseError as exc:
            raise StoreUnavailableError(self._explain(exc)) from None

    def _explain(self, exc: sqlite3.Error) -> str:
        text = str(exc)
        lowered = text.lower()
        if "locked" in lowered or "busy" in lowered:
            return (
                f"{self.path} is locked by another connection for longer than the busy "
                f"timeout ({self.busy_timeout:g} s); nothing was written. Retry, or open "
                "the store with a longer busy_timeout"
            )
        if "readonly" in lowered or "read-only" in lowered:
            return (
                f"{self.path} is read-only; nothing was written. Check the file's and its "
                "folder's permissions (SQLite also writes the -wal and -shm files beside it)"
            )
        if "disk is full" in lowered or "database or disk is full" in lowered:
            return (
                f"the disk holding {self.path} is full; nothing was written and everything "
                "already committed is intact. Free some space and retry"
            )
        if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
            return (
                f"{self.path} is corrupt or is not a chatledger database ({text}); restore it "
                "from a backup or an export"
            )
        if "unable to open" in lowered:
            return f"cannot open {self.path} ({text}); check that the path is writable"
        if "immutable" in lowered:
            return f"{self.path}: chatledger events are immutable and cannot be changed"
        return f"{self.path}: {text}"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _info(row: tuple[object, ...]) -> StreamInfo:
    return StreamInfo(
        conversation_id=str(row[0]),
        version=int(row[1]),  # type: ignore[call-overload]
        created_at=str(row[2]),
        updated_at=str(row[3]),
        parent_id=row[4] if isinstance(row[4], str) else None,
        parent_version=row[5] if isinstance(row[5], int) else None,
    )
