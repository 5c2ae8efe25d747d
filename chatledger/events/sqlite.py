"""The SQLite store: the embedded default. One file, shared safely by several processes.

Defaults: WAL journal (readers never block the writer), ``synchronous=NORMAL`` (a commit
survives a process crash; the last transactions may be lost on power failure, as with
most embedded logs), a busy timeout so concurrent writers wait instead of failing, and
``BEGIN IMMEDIATE`` for appends so the version check and the insert are one atomic step.
Positions are SQLite rowids assigned inside that write lock, so they are in commit order
and gapless: a reader following positions can never skip a late commit.

The schema is created by named, ordered migrations (sqlite-utils, in
:mod:`chatledger.events.sqlite_schema`), recorded in ``_chatledger_migrations``. Triggers
refuse UPDATE and DELETE on ``events``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import sqlite_utils

from ..errors import (
    ConcurrencyError,
    IntegrityError,
    StoreError,
    StoreUnavailableError,
)
from .envelope import utc_now
from .memo import AppendMemo
from .rows import StreamRow, head_error, missing_head_reason
from .sqlite_schema import MIGRATIONS, READ_MODEL_MIGRATIONS, schema_differences
from .store import (
    INLINE_READ_MODELS,
    EncodedEvent,
    EventStore,
    PreparedEvent,
    Problem,
    RawRow,
    Snapshot,
    StreamInfo,
    TreeRow,
    VerificationReport,
    checked_head,
    parent_of,
    parent_of_rows,
    prepared_rows,
    wrote,
)
from .verification import SnapshotRow

__all__ = ["MIGRATIONS", "SQLiteStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


_COLUMNS = (
    "conversation_id, version, position, event_id, type, schema_version, data, metadata, "
    "recorded_at, hash, content_salt"
)


def _head_sql(source: str, *, with_parent: bool) -> str:
    """The head rows of ``source`` (``streams``, or a subquery of it) with what their
    events say (:data:`chatledger.events.store.HEAD_COLUMNS`): index lookups, plus the
    first event's data when the parent is checked."""
    first = ", f.type, f.data" if with_parent else ", NULL, NULL"
    return (
        "SELECT s.conversation_id, s.version, s.head_hash, s.created_at, s.updated_at, "
        "s.parent_id, s.parent_version, (SELECT max(m.version) FROM events AS m "
        "WHERE m.conversation_id = s.conversation_id), h.hash, h.recorded_at, f.recorded_at"
        f"{first} FROM {source} AS s "
        "LEFT JOIN events AS h ON h.conversation_id = s.conversation_id AND h.version = s.version "
        "LEFT JOIN events AS f ON f.conversation_id = s.conversation_id AND f.version = 1"
    )


#: One conversation's head row checked against its events, in one statement (so one
#: snapshot): always one row, whose head columns are NULL when there is no head row, and
#: whose last_version then says whether the conversation has events all the same.
_STREAM_INFO_SQL = (
    "SELECT s.conversation_id, s.version, s.head_hash, s.created_at, s.updated_at, "
    "s.parent_id, s.parent_version, (SELECT max(m.version) FROM events AS m "
    "WHERE m.conversation_id = q.cid), h.hash, h.recorded_at, f.recorded_at, f.type, f.data "
    "FROM (SELECT ? AS cid) AS q LEFT JOIN streams AS s ON s.conversation_id = q.cid "
    "LEFT JOIN events AS h ON h.conversation_id = s.conversation_id AND h.version = s.version "
    "LEFT JOIN events AS f ON f.conversation_id = s.conversation_id AND f.version = 1"
)


#: A stream's head (version, hash) in the store's AppendMemo, as its last append wrote it.
_HEAD = "head"

#: The most appends one transaction commits (a group commit; see SQLiteStore._append).
GROUP_MAX = 64


class _AppendRequest:
    """One caller's append, waiting for (or done by) a group commit."""

    __slots__ = (
        "conversation_id",
        "done",
        "error",
        "events",
        "expected_version",
        "positions",
        "wake",
    )

    def __init__(
        self, conversation_id: str, events: list[EncodedEvent], expected_version: int
    ) -> None:
        self.conversation_id = conversation_id
        self.events = events
        self.expected_version = expected_version
        self.positions: list[int] | None = None
        self.error: BaseException | None = None
        self.done = False
        #: For an append that waits: set when it is done, or handed the next group's lead.
        self.wake: threading.Event | None = None

    def outcome(self) -> list[int]:
        """The positions written, or the append's own error raised."""
        if self.error is not None:
            raise self.error
        assert self.positions is not None
        return self.positions


class SQLiteStore(EventStore):
    """The log in one SQLite file.

    ``path`` is a file path (created if missing) or ``":memory:"``. ``busy_timeout`` is how
    long a write waits for another process's write lock before giving up, in seconds.
    ``synchronous`` is SQLite's setting (``NORMAL``: a commit survives a crash of the
    process; ``FULL``: also of the machine).

    A file that is not empty must already hold a chatledger log: another program's
    database is refused (:class:`StoreUnavailableError`) and left byte for byte as it was,
    unless ``create_in_existing=True`` asks for the log's tables to be added to it (the
    file is then switched to WAL, as every log is). An empty file becomes a new log.
    """

    gapless_positions = True
    keeps_tree = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 10.0,
        synchronous: str = "NORMAL",
        create_in_existing: bool = False,
    ) -> None:
        self.path = str(path)
        self.location = f"sqlite:///{self.path}"
        self.busy_timeout = busy_timeout
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError("synchronous must be OFF, NORMAL, FULL or EXTRA")
        self._lock = threading.RLock()
        # Appends waiting to be committed by the next group (see _append).
        self._pending_lock = threading.Lock()
        self._pending: list[_AppendRequest] = []
        self._leading = False  # an append is committing a group (see _append)
        self._closed = False
        #: Whether the file has the inline read models' tables (see _migrate).
        self._inline = False
        #: What the inline read models keep between this store's appends (see memo.py).
        self._memo = AppendMemo()
        if self.path != ":memory:":
            target = Path(self.path).expanduser().resolve()
            if target.is_dir():
                raise StoreUnavailableError(
                    f"cannot open {self.path}: it is a folder, not a database file; give the "
                    f"path of a file (for example {Path(self.path) / 'chatledger.db'})"
                )
            if not target.parent.is_dir():
                raise StoreUnavailableError(
                    f"cannot open {self.path}: the folder {target.parent} does not exist; "
                    "create it first"
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
                self._conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
                # Only reads until the file is known to be a log, a new file, or (when asked)
                # a database to create the log in: another program's database is refused
                # byte for byte as it was (reading a WAL file makes -wal and -shm files,
                # which closing the last connection removes).
                others = [
                    str(row[0])
                    for row in self._conn.execute(
                        "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                        "ORDER BY type = 'table' DESC, name"
                    )
                ]
                if others and "_chatledger_migrations" not in others:
                    if not create_in_existing:
                        raise StoreUnavailableError(self._foreign(others))
                    # Asked for: migrate before switching the file to WAL, so that a
                    # refused one (its tables clash with ours) is left as it was.
                    self._migrate()
                if self.path != ":memory:":
                    self._conn.execute("PRAGMA journal_mode = WAL")
                self._migrate()
            except BaseException:
                # Not a usable store (locked, corrupt...): do not leak the connection.
                self._conn.close()
                raise

    def _foreign(self, names: list[str]) -> str:
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        return (
            f"{self.path} is not a chatledger database: it is another program's SQLite "
            f"database (it holds {shown}, and no chatledger log); nothing was changed. Give "
            "the path of a chatledger log or of a new file; to keep a log inside this "
            "database, beside its tables, open it with create_in_existing=True (the command "
            "line's --create-in-existing)"
        )

    # ----------------------------------------------------------------- schema

    def _migrate(self) -> None:
        conn = self._conn
        # Only read until a migration is due: a read-only file can then still be read, and
        # a file that is refused (another program's database) is left as it was.
        known = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_chatledger_migrations'"
        ).fetchone()
        applied = (
            {row[0] for row in conn.execute("SELECT name FROM _chatledger_migrations")}
            if known
            else set()
        )
        if all(name in applied for name, _ in MIGRATIONS):
            self._inline = applied >= READ_MODEL_MIGRATIONS
            return
        with self._transaction():
            conn.execute(
                "CREATE TABLE IF NOT EXISTS _chatledger_migrations "
                "(name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            # Re-read under the write lock: another process may have migrated meanwhile.
            applied = {row[0] for row in conn.execute("SELECT name FROM _chatledger_migrations")}
            db = sqlite_utils.Database(conn, execute_plugins=False)
            for name, migration in MIGRATIONS:
                if name in applied:
                    continue
                migration(db)
                if name in READ_MODEL_MIGRATIONS:
                    # Existing logs: the read models are filled from the log, in the
                    # migration's transaction.
                    for read_model in INLINE_READ_MODELS:
                        read_model.rebuild_all(conn)
                conn.execute(
                    "INSERT INTO _chatledger_migrations (name, applied_at) VALUES (?, ?)",
                    (name, utc_now()),
                )
                applied.add(name)
            self._inline = applied >= READ_MODEL_MIGRATIONS

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
        events: list[EncodedEvent],
        expected_version: int,
    ) -> list[int]:
        # Group commit (docs/performance.md#group-commit): appends that threads of this
        # process start while another append is committing queue up; when it is done,
        # the first queued leads the next group and commits every queued append in one
        # transaction (one sync). Each append keeps its own version check, its own
        # savepoint and its own outcome: one that fails leaves the others unchanged.
        request = _AppendRequest(conversation_id, events, expected_version)
        if self._lock._is_owned():  # type: ignore[attr-defined]
            # Inside this thread's own transaction (run_in_transaction): alone, never
            # waiting for a leader that waits for this thread's lock.
            with self._lock:
                self._commit_group(request, alone=True)
            return request.outcome()
        with self._pending_lock:
            lead = not self._leading
            if lead:
                self._leading = True
            else:
                request.wake = threading.Event()
                self._pending.append(request)
        if request.wake is not None:
            request.wake.wait()
            if request.done:
                return request.outcome()
            # Handed the lead by the last group's leader: commit the next group.
            with self._pending_lock:
                self._pending.remove(request)
        try:
            with self._lock:
                self._commit_group(request)
        finally:
            with self._pending_lock:
                if self._pending:
                    wake = self._pending[0].wake  # the next leader
                    assert wake is not None
                    wake.set()
                else:
                    self._leading = False
        return request.outcome()

    def _commit_group(self, leader: _AppendRequest, *, alone: bool = False) -> None:
        """Commit ``leader``'s append and (unless ``alone``) the waiting ones, up to
        :data:`GROUP_MAX` in all, in one transaction; called with the store's lock held."""
        group = [leader]
        if not alone:
            with self._pending_lock:
                group.extend(self._pending[: GROUP_MAX - 1])
                del self._pending[: GROUP_MAX - 1]
        conn = self._conn
        try:
            with self._errors():
                conn.execute("BEGIN IMMEDIATE")
                memo = self._memo
                memo.begin(conn)
                try:
                    for request in group:
                        # A group of one needs no savepoint: its transaction is its own.
                        self._append_in_group(request, savepoint=len(group) > 1)
                    if conn.in_transaction:  # (a lone append that failed rolled back)
                        conn.execute("COMMIT")
                        memo.commit()
                    else:
                        memo.rollback()
                except BaseException:
                    memo.rollback()
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        except BaseException as exc:
            # Nothing of the group was written (locked, disk full, closed...): every
            # append of it fails alike.
            for index, request in enumerate(group):
                # Each caller raises an exception object of its own (the same error).
                request.positions, request.error = None, exc if index == 0 else _copy(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            for request in group:
                request.done = True
                if request.wake is not None:
                    request.wake.set()

    def _append_in_group(self, request: _AppendRequest, *, savepoint: bool) -> None:
        """One append of a group, inside the group's transaction, under a savepoint (or,
        alone, the transaction itself): on failure its own writes are undone and its
        error kept for its caller."""
        conn = self._conn
        if savepoint:
            conn.execute("SAVEPOINT chatledger_append")
        undone = False
        self._memo.mark()

        def undo() -> None:
            nonlocal undone
            if not undone and conn.in_transaction:
                undone = True
                conn.execute("ROLLBACK TO chatledger_append" if savepoint else "ROLLBACK")

        try:
            with self._errors():
                request.positions = self.append_in_transaction(
                    conn,
                    request.conversation_id,
                    request.events,
                    request.expected_version,
                    undo,
                )
        except Exception as exc:
            if savepoint and not conn.in_transaction:
                # SQLite rolled the whole transaction back (disk full, I/O error): the
                # group fails with this error, nothing of it written.
                raise
            request.error = exc
            # What its read models took from the memo or left in it was not written.
            self._memo.forget_marked()
            undo()
        if savepoint:
            conn.execute("RELEASE chatledger_append")

    def append_in_transaction(
        self,
        conn: sqlite3.Connection,
        conversation_id: str,
        events: list[EncodedEvent],
        expected_version: int,
        undo: Callable[[], None],
    ) -> list[int]:
        """The unit of work of one append, inside an open write transaction: check the
        expected version and the head, number and chain the events, insert them, move
        the stream's head. Everything an append must write in the same transaction goes
        here (the one function to extend). On a failure it calls ``undo`` (which rolls
        its own writes back) before the reads that explain it, then raises."""
        # The head's hash with the last event's: new events must never chain onto a
        # damaged head (verify would then blame them). When this store's last append of
        # the conversation wrote both and nothing else wrote since (the memo vouches for
        # it, see memo.py), they are what it wrote.
        memo = self._memo
        known = memo.take((_HEAD, conversation_id))
        if known is not None and known[0] == expected_version:
            head = (known[0], known[1], known[1])
        else:
            head = conn.execute(
                "SELECT s.version, s.head_hash, e.hash FROM streams AS s LEFT JOIN events "
                "AS e ON e.conversation_id = s.conversation_id AND e.version = s.version "
                "WHERE s.conversation_id = ?",
                (conversation_id,),
            ).fetchone()
        current = head[0] if head else 0
        if head is None or current != expected_version:
            # A new stream, or a stale expectation: the head row must agree with the
            # events before a writer is told to catch up and retry (with a deleted or
            # moved head, it would retry forever).
            self._check_head(conversation_id)
        if current != expected_version:
            undo()
            retried = self._retried_positions(
                conversation_id, [event.event_id for event, *_ in events], events
            )
            if retried is not None:
                return retried
            raise ConcurrencyError(conversation_id, expected_version, current)
        if head and head[1] != head[2]:
            self._check_head(conversation_id)
            raise head_error(
                self.path, conversation_id, "its head row does not match its last event"
            )
        prepared = self._prepare(conversation_id, events, current, head[1] if head else "")
        positions: list[int] = []
        try:
            self._insert_prepared(conn, conversation_id, prepared, positions)
        except sqlite3.IntegrityError:
            # The head matched, so only an event id another event has, or events past
            # a damaged head, collide here: say which.
            undo()
            self._check_head(conversation_id)
            self._check_ids_are_free(conversation_id, prepared)
            raise
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
        # The inline read models, in the same transaction (and the group's savepoint).
        self._appended(conn, conversation_id, prepared_rows(conversation_id, prepared, positions))
        memo.put((_HEAD, conversation_id), (last.version, last.hash))
        wrote(events, prepared)
        return positions

    @staticmethod
    def _insert_prepared(
        conn: sqlite3.Connection,
        conversation_id: str,
        prepared: Sequence[PreparedEvent],
        positions: list[int],
    ) -> None:
        for event in prepared:
            cursor = conn.execute(
                "INSERT INTO events (conversation_id, version, event_id, type, "
                "schema_version, data, metadata, recorded_at, hash, content_salt) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    event.content_salt,
                ),
            )
            positions.append(int(cursor.lastrowid or 0))

    def _check_head(self, conversation_id: str) -> None:
        """Raise IntegrityError if the stream's head row disagrees with its events (or
        is missing while it has events)."""
        self._checked_info(conversation_id)

    def _check_ids_are_free(self, conversation_id: str, prepared: Sequence[PreparedEvent]) -> None:
        """Raise IntegrityError naming an event id of ``prepared`` that another event
        already has (the insert collided on it)."""
        found = self._find_event_ids([event.event_id for event in prepared])
        for event in prepared:
            if event.event_id in found:
                cid, version, _ = found[event.event_id]
                raise IntegrityError(
                    f"{self.path}: event id {event.event_id!r} is already used by "
                    f"{'this conversation' if cid == conversation_id else cid} v{version}; "
                    "nothing was written. An idempotent retry must resend exactly the same "
                    "events; new events need new ids"
                )

    def verify(self, conversation_id: str | None = None) -> VerificationReport:
        """:meth:`EventStore.verify`; for the whole log, also SQLite's own check of the
        file, which finds damaged indexes that reads would otherwise go through."""
        report = super().verify(conversation_id)
        if conversation_id is None:
            with self._lock, self._errors():
                rows = self._query("PRAGMA integrity_check(20)")
            lines = [
                line
                for row in rows
                for line in str(row[0]).splitlines()
                if line.strip() and not line.startswith("*** in database")
            ]
            truncated = self._truncated()
            if truncated:
                report.problems.append(
                    Problem(conversation_id=self.path, version=None, reason=truncated)
                )
            if lines != ["ok"]:
                report.problems.extend(
                    Problem(
                        conversation_id=self.path,
                        version=None,
                        reason=(
                            f"SQLite's integrity check failed ({line}): the file is damaged; "
                            "restore it from a backup or an export"
                        ),
                    )
                    for line in lines
                )
        return report

    def _truncated(self) -> str | None:
        """Why the file is shorter than its header says, or None. Pages not yet copied
        from the -wal file into the file may legitimately be missing from it, so the
        length is compared only when the -wal file holds no frame. A file cut short
        where it held only free pages (left by read-model rows rewritten) reads as sound
        otherwise: this names it."""
        if self.path == ":memory:":
            return None
        with self._lock, self._errors():
            page_size = int(self._query("PRAGMA page_size")[0][0])
            page_count = int(self._query("PRAGMA page_count")[0][0])
        try:
            size = os.path.getsize(self.path)
            wal = Path(f"{self.path}-wal")
            frames = wal.exists() and wal.stat().st_size > 32  # more than the WAL header
        except OSError:
            return None
        if size % page_size == 0 and (frames or size >= page_size * page_count):
            return None
        return (
            f"the file is {size} bytes, not the {page_size * page_count} its header says "
            f"({page_count} pages of {page_size}): it was truncated or damaged; restore it "
            "from a backup or an export"
        )

    def _stream_rows(self, conversation_id: str | None) -> list[StreamRow]:
        sql = (
            "SELECT conversation_id, version, head_hash, created_at, updated_at, parent_id, "
            "parent_version FROM streams"
        )
        params: tuple[object, ...] = ()
        if conversation_id is not None:
            sql, params = sql + " WHERE conversation_id = ?", (conversation_id,)
        with self._lock, self._errors():
            return [StreamRow(*row) for row in self._query(sql, params)]

    def _snapshot_rows(self, conversation_id: str | None) -> list[SnapshotRow]:
        sql = "SELECT conversation_id, name, version, typeof(state) = 'blob' FROM snapshots"
        params: tuple[object, ...] = ()
        if conversation_id is not None:
            sql, params = sql + " WHERE conversation_id = ?", (conversation_id,)
        with self._lock, self._errors():
            return [
                SnapshotRow(row[0], row[1], row[2], bool(row[3]))
                for row in self._query(sql, params)
            ]

    def _schema_problems(self) -> list[str]:
        """The log's tables, indexes and triggers against what the migrations make (a
        dropped trigger would let events be changed; a dropped unique index, duplicated),
        and every migration recorded."""
        with self._lock, self._errors():
            applied = {row[0] for row in self._query("SELECT name FROM _chatledger_migrations")}
            differences = schema_differences(self._conn)
        problems = [
            f"migration {name} is not recorded in _chatledger_migrations (the table was edited)"
            for name, _ in MIGRATIONS
            if name not in applied
        ]
        return problems + differences

    def _import_rows(
        self, conversation_id: str, rows: list[RawRow], after_version: int
    ) -> list[int]:
        conn = self._conn
        with self._lock, self._errors(), self._transaction():
            head = conn.execute(
                "SELECT version FROM streams WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()
            if head is None or head[0] != after_version:
                self._check_head(conversation_id)
            if (head[0] if head else 0) != after_version:
                raise ConcurrencyError(conversation_id, after_version, head[0] if head else 0)
            positions = []
            for row in rows:
                cursor = conn.execute(
                    "INSERT INTO events (conversation_id, version, event_id, type, "
                    "schema_version, data, metadata, recorded_at, hash, content_salt) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        conversation_id,
                        row.version,
                        row.event_id,
                        row.type,
                        row.schema_version,
                        _text(row.data),
                        _text(row.metadata),
                        row.recorded_at,
                        row.hash,
                        row.content_salt,
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
                        conversation_id,
                        rows[-1].version,
                        rows[-1].hash,
                        rows[0].recorded_at,
                        rows[-1].recorded_at,
                        parent_id,
                        parent_version,
                    ),
                )
            self._appended(
                conn,
                conversation_id,
                [
                    msgspec.structs.replace(row, position=position)
                    for row, position in zip(rows, positions, strict=True)
                ],
            )
            return positions

    def _appended(self, conn: sqlite3.Connection, conversation_id: str, rows: list[RawRow]) -> None:
        """The inline read models' part of an append, in its transaction (docs/stores.md,
        "Read models"); none before the migration that makes their tables."""
        if not self._inline:
            return
        for read_model in INLINE_READ_MODELS:
            read_model.appended(conn, conversation_id, rows, self._memo)

    def _read(
        self, conversation_id: str, after_version: int, to_version: int | None
    ) -> list[RawRow]:
        sql = f"SELECT {_COLUMNS} FROM events WHERE conversation_id = ? AND version > ?"
        params: tuple[object, ...] = (conversation_id, after_version)
        if to_version is not None:
            sql += " AND version <= ?"
            params += (to_version,)
        with self._lock, self._errors():
            rows = self._query(sql + " ORDER BY version", params)
        return [RawRow(*row) for row in rows]

    def _read_all(self, after_position: int, limit: int) -> list[RawRow]:
        with self._lock, self._errors():
            rows = self._query(
                f"SELECT {_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?",
                (after_position, limit),
            )
        return [RawRow(*row) for row in rows]

    def _stream_ids(self) -> list[str]:
        with self._lock, self._errors():
            ids = {row[0] for row in self._query("SELECT conversation_id FROM streams")}
            ids.update(row[0] for row in self._query("SELECT DISTINCT conversation_id FROM events"))
        # A damaged row may hold NULL or a number here: its stream then shows a gap, and
        # verify's position check names the row itself.
        return sorted(cid for cid in ids if isinstance(cid, str))

    def _rows_with_event_ids(self, event_ids: Sequence[str]) -> list[RawRow]:
        marks = ", ".join("?" for _ in event_ids)
        with self._lock, self._errors():
            rows = self._query(
                f"SELECT {_COLUMNS} FROM events WHERE event_id IN ({marks})", tuple(event_ids)
            )
        return [RawRow(*row) for row in rows]

    def stream_info(self, conversation_id: str) -> StreamInfo | None:
        """:meth:`EventStore.stream_info`, its head row checked against the events."""
        return self._checked_info(conversation_id)

    def _checked_info(self, conversation_id: str) -> StreamInfo | None:
        with self._lock, self._errors():
            row = self._query(_STREAM_INFO_SQL, (conversation_id,))[0]
        if row[0] is not None:
            return checked_head(self.path, row, with_parent=True)
        if row[7] is not None:
            raise head_error(self.path, conversation_id, missing_head_reason(row[7]))
        return None

    def _conversations(self, limit: int | None, parent_id: str | None) -> list[StreamInfo]:
        # The page of head rows first, then what their events say, row by row (index
        # lookups; the first event's data only for a listing of forks).
        source = "SELECT * FROM streams"
        params: tuple[object, ...] = ()
        if parent_id is not None:
            source += " WHERE parent_id = ?"
            params = (parent_id,)
        source += " ORDER BY updated_at DESC, conversation_id"
        if limit is not None:
            source += " LIMIT ?"
            params += (limit,)
        sql = (
            _head_sql(f"({source})", with_parent=parent_id is not None)
            + " ORDER BY s.updated_at DESC, s.conversation_id"
        )
        with self._lock, self._errors():
            rows = self._query(sql, params)
        return [checked_head(self.path, row, with_parent=parent_id is not None) for row in rows]

    def save_snapshot(self, snapshot: Snapshot) -> None:
        with self._lock, self._errors():
            self._conn.execute(
                "INSERT INTO snapshots (conversation_id, name, version, state) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (conversation_id, name) DO UPDATE SET version = excluded.version, "
                "state = excluded.state WHERE excluded.version > snapshots.version",
                (snapshot.conversation_id, snapshot.name, snapshot.version, snapshot.state),
            )

    def delete_snapshot(self, conversation_id: str, name: str) -> bool:
        with self._lock, self._errors():
            cursor = self._conn.execute(
                "DELETE FROM snapshots WHERE conversation_id = ? AND name = ?",
                (conversation_id, name),
            )
        return cursor.rowcount > 0

    def load_snapshot(self, conversation_id: str, name: str) -> Snapshot | None:
        with self._lock, self._errors():
            row = self._conn.execute(
                "SELECT version, state FROM snapshots WHERE conversation_id = ? AND name = ?",
                (conversation_id, name),
            ).fetchone()
        if row is None:
            return None
        version, state = row
        if (
            not isinstance(version, int)
            or isinstance(version, bool)
            or not isinstance(state, bytes)
        ):
            # A damaged cache row (SQLite keeps what a column is given): resumes start from
            # the events instead, and verify names it.
            logger.warning(
                "ignoring a damaged snapshot %s of %s in %s; run verify",
                name,
                conversation_id,
                self.path,
            )
            return None
        return Snapshot(conversation_id=conversation_id, name=name, version=version, state=state)

    # ----------------------------------------------------------------- the Merkle tree

    def _leaf_rows(self, after_position: int, limit: int) -> list[tuple[int, str]]:
        with self._lock, self._errors():
            return self._query(
                "SELECT position, hash FROM events WHERE position > ? ORDER BY position LIMIT ?",
                (after_position, limit),
            )

    def _tree_nodes(self, nodes: Sequence[tuple[int, int]]) -> dict[tuple[int, int], TreeRow]:
        found: dict[tuple[int, int], TreeRow] = {}
        wanted = list(dict.fromkeys(nodes))
        with self._lock, self._errors():
            for start in range(0, len(wanted), 400):
                chunk = wanted[start : start + 400]
                marks = " OR ".join("(level = ? AND idx = ?)" for _ in chunk)
                params = tuple(value for node in chunk for value in node)
                for row in self._query(
                    f"SELECT level, idx, hash, last_position FROM merkle_nodes WHERE {marks}",
                    params,
                ):
                    found[(row[0], row[1])] = TreeRow(*row)
        return found

    def _tree_frontier(self, level: int) -> TreeRow | None:
        with self._lock, self._errors():
            rows = self._query(
                "SELECT level, idx, hash, last_position FROM merkle_nodes WHERE level = ? "
                "ORDER BY idx DESC LIMIT 1",
                (level,),
            )
        return TreeRow(*rows[0]) if rows else None

    def _tree_before(self, level: int, position: int) -> TreeRow | None:
        with self._lock, self._errors():
            rows = self._query(
                "SELECT level, idx, hash, last_position FROM merkle_nodes WHERE level = ? "
                "AND last_position < ? ORDER BY idx DESC LIMIT 1",
                (level, position),
            )
        return TreeRow(*rows[0]) if rows else None

    def _tree_put(self, rows: Sequence[TreeRow]) -> None:
        if not rows:
            return
        with self._lock, self._errors(), self._transaction():
            self._conn.executemany(
                "INSERT OR IGNORE INTO merkle_nodes (level, idx, hash, last_position) "
                "VALUES (?, ?, ?, ?)",
                [tuple(row) for row in rows],
            )

    def _erase_rows(
        self, erasures: Sequence[tuple[int, str, bytes]], snapshots_of: Sequence[str]
    ) -> int:
        # secure_delete: the space the old content and snapshots leave is zeroed, in the
        # file and its WAL, rather than left in free space (docs/erasure.md).
        erased = 0
        with self._secure_deletes(), self._transaction():
            for position, salt, data in erasures:
                cursor = self._conn.execute(
                    "UPDATE events SET data = ?, content_salt = '' "
                    "WHERE position = ? AND content_salt = ?",
                    (data.decode("utf-8"), position, salt),
                )
                erased += cursor.rowcount
            for conversation_id in snapshots_of:
                self._conn.execute(
                    "DELETE FROM snapshots WHERE conversation_id = ?", (conversation_id,)
                )
        return erased

    def _purge_erased(self, vacuum: bool) -> list[str]:
        if self.path == ":memory:":
            return []
        notes: list[str] = []
        with self._lock, self._errors():
            if vacuum:
                self._conn.execute("VACUUM")
            busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy and busy[0]:
            notes.append(
                f"another connection to {self.path} was reading, so its WAL file could not be "
                "emptied yet: it may still hold erased content until the next checkpoint "
                "(run `chatledger erase` again with nothing to erase, or close the readers)"
            )
        return notes

    @contextlib.contextmanager
    def _secure_deletes(self) -> Iterator[None]:
        with self._lock, self._errors():
            was = self._conn.execute("PRAGMA secure_delete").fetchone()[0]
            self._conn.execute("PRAGMA secure_delete = ON")
            try:
                yield
            finally:
                self._conn.execute(f"PRAGMA secure_delete = {int(was)}")

    def run_in_transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(connection)`` in one ``BEGIN IMMEDIATE`` transaction on this store's
        sqlite3 connection (see :meth:`EventStore.run_in_transaction`). Other threads of
        this store wait meanwhile, other processes' writers up to their busy timeout."""
        with self._lock, self._errors(own_tables=False), self._transaction():
            return work(self._conn)

    def run_read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(connection)`` in one deferred (read) transaction: one snapshot of
        the file, which never waits for or blocks a writer in WAL mode."""
        with self._lock, self._errors(own_tables=False):
            self._conn.execute("BEGIN")
            try:
                return work(self._conn)
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    # ----------------------------------------------------------------- helpers

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        """The rows of a read. Text that is not UTF-8 (only a damaged file has any) is
        read with the bad bytes replaced, so that the damaged event no longer matches its
        hash and ``verify`` names it, instead of the whole read failing."""
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if not str(exc).startswith("Could not decode to UTF-8"):
                raise
        # Only after a failure: a Python text factory makes every read about twice as slow.
        self._conn.text_factory = _damaged_text
        try:
            return self._conn.execute(sql, params).fetchall()
        finally:
            self._conn.text_factory = str

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # Any write but an append's (an import, an erasure, a rebuild, a migration, the
        # caller's own SQL): the read models' memo can no longer vouch for anything.
        self._memo.clear()
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    @contextlib.contextmanager
    def _errors(self, *, own_tables: bool = True) -> Iterator[None]:
        """Translate sqlite3's errors into the library's, with what to do about them.

        ``own_tables``: the statements inside touch only the log's tables, so a missing
        table or column means a damaged file (not so in :meth:`run_in_transaction`).
        """
        if self._closed:
            raise StoreError(f"the store {self.path} is closed")
        try:
            yield
        except sqlite3.IntegrityError as exc:
            detail = ""
            lowered = str(exc).lower()
            if own_tables and ("unique constraint failed" in lowered or "immutable" in lowered):
                # The library checks versions and event ids first: only a damaged index, or
                # rows another program wrote, can collide here.
                detail = (
                    ": the log's rows and its indexes or stream heads disagree (a damaged "
                    "file, or rows written by another program). Nothing was written; run "
                    "`chatledger verify`"
                )
            raise IntegrityError(f"{self.path}: {exc}{detail}") from None
        except sqlite3.Error as exc:
            raise StoreUnavailableError(self._explain(exc, own_tables=own_tables)) from None
        except UnicodeDecodeError as exc:
            if not own_tables:
                raise
            # sqlite3 decodes SQLite's error messages, which quote the schema's text: a
            # damaged schema can make that fail before any sqlite3 error is raised.
            raise StoreUnavailableError(
                self._corrupt(f"its schema holds text that is not UTF-8: {exc.reason}")
            ) from None

    def _writable(self) -> bool:
        if self.path == ":memory:":
            return True
        path = Path(self.path).expanduser()
        return os.access(path, os.W_OK) and os.access(path.resolve().parent, os.W_OK)

    def _corrupt(self, detail: str) -> str:
        return (
            f"{self.path} is corrupt or is not a chatledger database ({detail}); restore it "
            "from a backup or an export, or give the path of a chatledger database"
        )

    def _explain(self, exc: sqlite3.Error, *, own_tables: bool = True) -> str:
        text = str(exc)
        lowered = text.lower()
        # The result code's name (Python 3.11+) is exact; older Pythons match the text.
        code = getattr(exc, "sqlite_errorname", "") or ""
        if (
            code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
            or "locked" in lowered
            or "busy" in lowered
        ):
            return (
                f"{self.path} is locked by another connection for longer than the busy "
                f"timeout ({self.busy_timeout:g} s); nothing was written. Retry, or open "
                "the store with a longer busy_timeout (chatledger.SQLiteStore(path, "
                "busy_timeout=...))"
            )
        if code.startswith("SQLITE_READONLY") or "readonly" in lowered or "read-only" in lowered:
            if self._writable():
                return (
                    f"SQLite refuses to write {self.path} although the file and its folder "
                    "are writable: its header says a newer SQLite wrote it, or it is damaged. "
                    "Nothing was written; run `chatledger verify`, and restore the file from "
                    "a backup or an export if it is damaged"
                )
            return (
                f"{self.path} is read-only: it can be read but not written, and nothing was "
                "written. To write to it, make the file and its folder writable (SQLite also "
                "writes the -wal and -shm files beside it)"
            )
        if code == "SQLITE_FULL" or "disk is full" in lowered:
            return (
                f"the disk holding {self.path} is full; nothing was written and everything "
                "already committed is intact. Free some space and retry"
            )
        if code.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or any(
            word in lowered
            for word in (
                "not a database",
                "malformed",
                "corrupt",
                "could not decode to utf-8",
                "unsupported file format",
            )
        ):
            return self._corrupt(text)
        if code in ("SQLITE_IOERR_READ", "SQLITE_IOERR_SHORT_READ"):
            return (
                f"could not read {self.path} ({text}): the file may be truncated or the disk "
                "failing; check the disk, or restore the file from a backup or an export"
            )
        if code.startswith("SQLITE_IOERR") or "disk i/o error" in lowered:
            return (
                f"could not {'write' if code else 'read or write'} {self.path} or the -wal "
                f"and -shm files beside it ({text}): "
                "the disk may be full or failing, or the file larger than this process may "
                "write (ulimit -f). The write did not complete; everything committed before "
                "is intact. Check the disk and retry"
            )
        if code.startswith("SQLITE_CANTOPEN") or "unable to open" in lowered:
            return (
                f"cannot open {self.path} ({text}); check that the file and its folder exist "
                "and are writable (SQLite creates the -wal and -shm files beside it, even to "
                "read)"
            )
        if "immutable" in lowered:
            return f"{self.path}: chatledger events are immutable and cannot be changed"
        if own_tables and any(
            words in lowered for words in ("no such table", "no such column", "already exists")
        ):
            return self._corrupt(f"its tables are not the ones chatledger made: {text}")
        return f"{self.path}: {text}"


def _copy(exc: BaseException) -> BaseException:
    try:
        return copy.copy(exc)
    except Exception:  # an exception that cannot be copied is shared
        return exc


def _damaged_text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
