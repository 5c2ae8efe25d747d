"""The PostgreSQL store's SQL: appends, reads, snapshots and subscriptions.

How the pieces fit (ordering readers can trust, one round trip per append, settling an
append whose connection was lost) is the package docstring, :mod:`chatledger.events.postgres`.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, TypeVar, cast

import msgspec
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ...errors import (
    ConcurrencyError,
    IntegrityError,
    InvalidInputError,
    StoreError,
    StoreUnavailableError,
    register_secret,
)
from ..envelope import RecordedEvent
from ..rows import StreamRow, head_error, missing_head_reason
from ..store import (
    INLINE_READ_MODELS,
    AdvancingReadModel,
    EncodedEvent,
    EventStore,
    PreparedEvent,
    RawRow,
    Snapshot,
    StreamInfo,
    SummaryAdvance,
    TreeRow,
    checked_head,
    parent_of,
    parent_of_rows,
    prepared_rows,
    wrote,
)
from ..verification import SnapshotRow
from .connection import (
    Connection,
    Connections,
    OutcomeUnknown,
    Progress,
    first_line,
    location_of,
    split_url,
    wait_for_notification,
)
from .schema import LISTENERS_LOCK_CLASS, SCHEMA_NAME, check_server, migrate, schema_problems

__all__ = ["PostgresStore"]

T = TypeVar("T")

_COLUMNS = (
    "conversation_id, version, position, event_id, type, schema_version, data, metadata, "
    "recorded_at, hash, content_salt"
)


_HEADS_KEPT = 10_000
#: Summary states kept (each a few KB: the last response is in it).
_STATES_KEPT = 1_000


class _SummaryMoved(Exception):
    """The summary was not at the state an append's read-model rows were computed from:
    nothing was written."""


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


class _EventRow(msgspec.Struct, array_like=False):
    """An event as chatledger_append reads it (data and metadata: their JSON text)."""

    event_id: str
    type: str
    schema_version: int
    data: str
    metadata: str
    recorded_at: str
    hash: str
    content_salt: str | None = None


_encode_events = msgspec.json.Encoder().encode


class PostgresStore(EventStore):
    """The log in a PostgreSQL database (14 or later; uses ``xid8`` snapshots).

    ``url`` is a ``postgresql://`` URL (or a libpq ``key=value`` string); a ``schema``
    query parameter or argument puts the tables in that schema (created if missing)
    instead of ``public``. ``pool_min`` and ``pool_max`` size the connection pool;
    ``connect_timeout`` is how long an operation waits for a connection (the server
    unreachable, or every pooled connection busy) before raising
    :class:`StoreUnavailableError`.

    A schema that holds another application's tables and no chatledger log is refused
    and left unchanged, unless ``create_in_existing=True`` asks for the log's tables to be
    added beside them; a schema of its own (``?schema=chatledger``) is created.
    """

    gapless_positions = False
    keeps_tree = True

    def __init__(
        self,
        url: str,
        *,
        pool_min: int = 1,
        pool_max: int = 10,
        schema: str | None = None,
        connect_timeout: float = 10.0,
        create_in_existing: bool = False,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise InvalidInputError("a PostgreSQL store needs a postgresql:// URL")
        if not (
            isinstance(pool_min, int)
            and isinstance(pool_max, int)
            and 0 <= pool_min <= pool_max
            and pool_max >= 1
        ):
            raise InvalidInputError("pool sizes need 0 <= pool_min <= pool_max and pool_max >= 1")
        if connect_timeout <= 0:
            raise InvalidInputError("connect_timeout must be positive")
        conninfo, url_schema = split_url(url)
        self.schema = schema or url_schema or "public"
        if not SCHEMA_NAME.fullmatch(self.schema):
            raise InvalidInputError(
                "schema must be 1 to 63 letters, digits and underscores, not starting with a digit"
            )
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError as exc:
            raise InvalidInputError(f"not a valid PostgreSQL URL: {exc}") from None
        password = params.get("password")
        if isinstance(password, str):
            register_secret(password)
        self.location = location_of(params, self.schema)
        self.pool_min, self.pool_max = pool_min, pool_max
        self.connect_timeout = connect_timeout
        extra: dict[str, Any] = {"client_encoding": "UTF8"}
        if "connect_timeout" not in params:
            extra["connect_timeout"] = max(2, round(connect_timeout))
        if "application_name" not in params:
            extra["application_name"] = "chatledger"
        self.channel = f"chatledger_{self.schema}"[:63]
        self._heads: dict[str, tuple[int, str]] = {}
        # A conversation's summary state (docs/stores.md, "Read models") at a (version,
        # head hash), with its md5: the next append advances it without reading it.
        self._states: dict[str, tuple[int, str, str, str]] = {}
        self._statements()
        self._db = Connections(
            make_conninfo(conninfo, **extra),
            location=self.location,
            schema=self.schema,
            pool_min=pool_min,
            pool_max=pool_max,
            connect_timeout=connect_timeout,
        )
        with self._db.direct() as conn:
            check_server(conn, self.location)
            migrate(
                conn,
                self.schema,
                location=self.location,
                create_in_existing=create_in_existing,
            )
        self._db.open(wait=pool_min > 0)

    # ----------------------------------------------------------------- schema

    def _statements(self) -> None:
        s = sql.Identifier(self.schema)
        listeners = sql.Literal(LISTENERS_LOCK_CLASS)

        def q(text: str) -> sql.Composed:
            return sql.SQL(text).format(schema=s)

        self._sql_append = sql.SQL(
            "BEGIN; SELECT positions, version, head_hash FROM {schema}.chatledger_append("
            "%s, %s, %s, %s, %s, %s); COMMIT; "
            # Its own transaction, committed without waiting for a WAL flush: a lost
            # notification costs a subscriber one poll interval, a flush would hold
            # PostgreSQL's notification lock (and so every other writer) meanwhile.
            # The payload is the append's last position (see subscribe_batches). Only
            # when a subscriber listens (see _sql_listen): else no NOTIFY at all.
            "SELECT set_config('synchronous_commit', 'off', true), "
            "pg_notify({channel}, current_setting('chatledger.notify_position', true)) "
            "WHERE current_setting('chatledger.notify_position', true) <> '' "
            "AND NOT pg_try_advisory_xact_lock({listeners}, hashtext({channel}))"
        ).format(schema=s, channel=sql.Literal(self.channel), listeners=listeners)
        # The same with the read models' rows in the append's transaction (see _write).
        self._sql_append_summarised = sql.SQL(
            "BEGIN; SELECT positions, version, head_hash FROM "
            "{schema}.chatledger_append_summarised(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "%s, %s, %s); COMMIT; "
            "SELECT set_config('synchronous_commit', 'off', true), "
            "pg_notify({channel}, current_setting('chatledger.notify_position', true)) "
            "WHERE current_setting('chatledger.notify_position', true) <> '' "
            "AND NOT pg_try_advisory_xact_lock({listeners}, hashtext({channel}))"
        ).format(schema=s, channel=sql.Literal(self.channel), listeners=listeners)
        # An append inside a transaction the read models then write in (_write_folded).
        self._sql_append_only = q(
            "SELECT positions, version, head_hash FROM {schema}.chatledger_append("
            "%s, %s, %s, %s, %s, %s)"
        )
        self._sql_notify = sql.SQL(
            "SELECT set_config('synchronous_commit', 'off', true), pg_notify({channel}, %s) "
            "WHERE NOT pg_try_advisory_xact_lock({listeners}, hashtext({channel}))"
        ).format(channel=sql.Literal(self.channel), listeners=listeners)
        # The head, checked against its event, and the summary's state when it is there.
        self._sql_head = q(
            "SELECT s.version, s.head_hash, e.hash, c.version, c.head_hash, c.state "
            "FROM {schema}.streams AS s "
            "LEFT JOIN {schema}.events AS e "
            "ON e.conversation_id = s.conversation_id AND e.version = s.version "
            "LEFT JOIN {schema}.chat_summaries AS c ON c.conversation_id = s.conversation_id "
            "WHERE s.conversation_id = %s"
        )
        self._sql_summary_state = q(
            "SELECT version, head_hash, state FROM {schema}.chat_summaries "
            "WHERE conversation_id = %s"
        )
        self._sql_read = q(
            f"SELECT {_COLUMNS} FROM {{schema}}.events WHERE conversation_id = %s AND version > %s"
        )
        # The reader's bound: see the module docstring.
        self._sql_read_all = q(
            f"SELECT {_COLUMNS} FROM {{schema}}.events WHERE position > %s "
            "AND xid < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY position LIMIT %s"
        )
        self._sql_stream_ids = q(
            "SELECT conversation_id FROM {schema}.streams "
            "UNION SELECT DISTINCT conversation_id FROM {schema}.events"
        )
        self._sql_rows_with_ids = q(
            f"SELECT {_COLUMNS} FROM {{schema}}.events WHERE event_id = ANY(%s)"
        )
        self._sql_find_ids = q(
            "SELECT event_id, conversation_id, version, position FROM {schema}.events "
            "WHERE event_id = ANY(%s)"
        )
        # One statement, so one snapshot: always one row, whose head columns are NULL
        # when there is no head row (last_version then says whether there are events).
        self._sql_stream_info = q(
            "SELECT s.conversation_id, s.version, s.head_hash, s.created_at, s.updated_at, "
            "s.parent_id, s.parent_version, (SELECT max(m.version) FROM {schema}.events AS m "
            "WHERE m.conversation_id = q.cid), h.hash, h.recorded_at, f.recorded_at, f.type, "
            'f.data FROM (SELECT %s::text COLLATE "C" AS cid) AS q '
            "LEFT JOIN {schema}.streams AS s ON s.conversation_id = q.cid "
            "LEFT JOIN {schema}.events AS h "
            "ON h.conversation_id = s.conversation_id AND h.version = s.version "
            "LEFT JOIN {schema}.events AS f "
            "ON f.conversation_id = s.conversation_id AND f.version = 1"
        )
        self._sql_stream_rows = q(
            "SELECT conversation_id, version, head_hash, created_at, updated_at, parent_id, "
            "parent_version FROM {schema}.streams"
        )
        self._sql_snapshot_rows = q("SELECT conversation_id, name, version FROM {schema}.snapshots")
        self._sql_save_snapshot = q(
            "INSERT INTO {schema}.snapshots AS old (conversation_id, name, version, state) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (conversation_id, name) DO UPDATE "
            "SET version = excluded.version, state = excluded.state "
            "WHERE excluded.version > old.version"
        )
        self._sql_delete_snapshot = q(
            "DELETE FROM {schema}.snapshots WHERE conversation_id = %s AND name = %s"
        )
        self._sql_load_snapshot = q(
            "SELECT version, state FROM {schema}.snapshots WHERE conversation_id = %s AND name = %s"
        )
        # The Merkle tree (docs/proofs.md): its leaves are what read_all returns, so only
        # events below the same visibility horizon.
        self._sql_leaf_rows = q(
            "SELECT position, hash FROM {schema}.events WHERE position > %s "
            "AND xid < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY position LIMIT %s"
        )
        self._sql_tree_nodes = q(
            "SELECT n.level, n.idx, n.hash, n.last_position FROM {schema}.merkle_nodes AS n "
            "JOIN unnest(%s::smallint[], %s::bigint[]) AS w(level, idx) "
            "ON n.level = w.level AND n.idx = w.idx"
        )
        self._sql_tree_frontier = q(
            "SELECT level, idx, hash, last_position FROM {schema}.merkle_nodes "
            "WHERE level = %s ORDER BY idx DESC LIMIT 1"
        )
        self._sql_tree_before = q(
            "SELECT level, idx, hash, last_position FROM {schema}.merkle_nodes "
            "WHERE level = %s AND last_position < %s ORDER BY idx DESC LIMIT 1"
        )
        self._sql_tree_put = q(
            "INSERT INTO {schema}.merkle_nodes (level, idx, hash, last_position) "
            "SELECT * FROM unnest(%s::smallint[], %s::bigint[], %s::bytea[], %s::bigint[]) "
            "ON CONFLICT (level, idx) DO NOTHING"
        )
        # A subscriber holds a shared advisory lock (its session's: released when that
        # connection ends, however) while it listens; an append whose exclusive try-lock
        # on it succeeds knows nobody listens and sends no NOTIFY (a NOTIFY is a
        # transaction of its own, with an id and a commit record: about 15% of an
        # append). A subscriber reads once more after listening, so an append that
        # committed before it registered is never missed.
        self._sql_listen = sql.SQL(
            "LISTEN {}; SELECT pg_advisory_lock_shared({listeners}, hashtext({channel}))"
        ).format(
            sql.Identifier(self.channel), listeners=listeners, channel=sql.Literal(self.channel)
        )
        self._sql_search_path = sql.SQL("SET LOCAL search_path TO {}, public").format(s)
        begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        self._sql_begin_read: sql.SQL | sql.Composed = (
            sql.SQL(begin)
            if self.schema == "public"
            else sql.Composed([sql.SQL(begin + "; "), self._sql_search_path])
        )

    def _head_sql(self, source: sql.Composable, *, with_parent: bool) -> sql.Composed:
        """The head rows of ``source`` (the streams table, or a subquery of it) with what
        their events say (:data:`chatledger.events.store.HEAD_COLUMNS`): index lookups,
        plus the first event's data when the parent is checked."""
        first = ", f.type, f.data" if with_parent else ", NULL, NULL"
        return sql.SQL(
            "SELECT s.conversation_id, s.version, s.head_hash, s.created_at, s.updated_at, "
            "s.parent_id, s.parent_version, (SELECT max(m.version) FROM {schema}.events AS m "
            "WHERE m.conversation_id = s.conversation_id), h.hash, h.recorded_at, f.recorded_at"
            + first
            + " FROM {source} AS s LEFT JOIN {schema}.events AS h "
            "ON h.conversation_id = s.conversation_id AND h.version = s.version "
            "LEFT JOIN {schema}.events AS f "
            "ON f.conversation_id = s.conversation_id AND f.version = 1"
        ).format(schema=sql.Identifier(self.schema), source=source)

    def applied_migrations(self) -> list[str]:
        table = sql.SQL("{}.chatledger_migrations").format(sql.Identifier(self.schema))
        return self._run(
            lambda conn, _: [
                row[0]
                for row in conn.execute(sql.SQL("SELECT name FROM {} ORDER BY name").format(table))
            ],
            writing=False,
        )

    # ----------------------------------------------------------------- appends

    def _append(
        self,
        conversation_id: str,
        events: list[EncodedEvent],
        expected_version: int,
    ) -> list[int]:
        event_ids = [event.event_id for event, *_ in events]
        parent_id, parent_version = parent_of(events) if expected_version == 0 else (None, None)
        for _ in range(3):
            prev_hash = self._head_hash(conversation_id, expected_version)
            if isinstance(prev_hash, int):
                return self._mismatch(conversation_id, events, expected_version, prev_hash)
            prepared = self._prepare(conversation_id, events, expected_version, prev_hash)
            try:
                positions, version = self._write_with_read_models(
                    conversation_id,
                    expected_version,
                    prev_hash,
                    prepared,
                    parent_id,
                    parent_version,
                )
            except OutcomeUnknown as unknown:
                return self._settle(unknown, conversation_id, event_ids)
            if positions is not None:
                wrote(events, prepared)
                return positions
            if version != expected_version:
                return self._mismatch(conversation_id, events, expected_version, version)
            # Same version, another head hash than the one remembered: read the head
            # again (checked against its event) and hash again.
            self._heads.pop(conversation_id, None)
        raise StoreError(f"{self.location}: the head of {conversation_id} keeps changing; retry")

    def _import_rows(
        self, conversation_id: str, rows: list[RawRow], after_version: int
    ) -> list[int]:
        prev_hash = self._head_hash(conversation_id, after_version)
        if isinstance(prev_hash, int):
            self.stream_info(conversation_id)  # a head row the events contradict: say so
            raise ConcurrencyError(conversation_id, after_version, prev_hash)
        prepared = [
            PreparedEvent(
                conversation_id=conversation_id,
                version=row.version,
                event_id=row.event_id,
                type=row.type,
                schema_version=row.schema_version,
                data=_bytes(row.data),
                metadata=_bytes(row.metadata),
                recorded_at=row.recorded_at,
                hash=row.hash,
                content_salt=row.content_salt,
            )
            for row in rows
        ]
        parent_id, parent_version = parent_of_rows(rows) if after_version == 0 else (None, None)
        try:
            # An import may bring a fork before its parent: the read models fold it (or
            # its forks) in the same transaction.
            positions, version = self._write_folded(
                conversation_id, after_version, prev_hash, prepared, parent_id, parent_version
            )
        except OutcomeUnknown as unknown:
            return self._settle(unknown, conversation_id, [row.event_id for row in rows])
        if positions is None:
            self.stream_info(conversation_id)
            raise ConcurrencyError(conversation_id, after_version, version)
        return positions

    def _head_hash(self, conversation_id: str, version: int) -> str | int:
        """The hash of the stream's event at ``version`` (the head the caller expects),
        from memory or from the database; or the actual head version if it is not there.
        A read of the head also keeps the summary's state, when it is at that head."""
        if version == 0:
            return ""
        known = self._heads.get(conversation_id)
        if known is not None and known[0] == version:
            return known[1]
        rows = self._fetch(self._sql_head, (conversation_id,))
        if not rows or int(rows[0][0]) != version:
            return int(rows[0][0]) if rows else 0
        if rows[0][1] != rows[0][2]:
            # The head row's hash is not its event's: never chain onto it.
            self.stream_info(conversation_id)
            raise head_error(
                self.location, conversation_id, "its head row does not match its last event"
            )
        self._remember(conversation_id, version, str(rows[0][1]))
        if rows[0][5] is not None:
            self._remember_state(conversation_id, rows[0][3], rows[0][4], rows[0][5])
        return str(rows[0][1])

    def _remember(self, conversation_id: str, version: int, head_hash: str) -> None:
        """Keep a (version, hash) of the stream: the next append after it needs no read.
        Any pair stays true (events are immutable); the newest known is the useful one."""
        known = self._heads.get(conversation_id)
        if known is None or known[0] <= version:
            if len(self._heads) >= _HEADS_KEPT:
                self._heads.clear()
            self._heads[conversation_id] = (version, head_hash)

    def _remember_state(
        self, conversation_id: str, version: int, head_hash: str, state: str
    ) -> None:
        """Keep the summary's state at (version, head_hash). Unlike a head, a state can be
        replaced at the same head (an erasure, a rebuild): the append that advances it
        checks its md5 first."""
        if len(self._states) >= _STATES_KEPT:
            self._states.clear()
        self._states[conversation_id] = (int(version), str(head_hash), state, _md5(state))

    def _summary_state(
        self, conversation_id: str, version: int, head_hash: str
    ) -> tuple[str, str] | None:
        """The summary's state at (version, head_hash) and its md5, remembered or read;
        None when the summary is not at that head (missing, behind, damaged)."""
        known = self._states.get(conversation_id)
        if known is None or known[:2] != (version, head_hash):
            rows = self._fetch(self._sql_summary_state, (conversation_id,))
            if not rows:
                return None
            self._remember_state(conversation_id, *rows[0])
            known = self._states[conversation_id]
            if known[:2] != (version, head_hash):
                return None
        return known[2], known[3]

    def _mismatch(
        self,
        conversation_id: str,
        events: list[EncodedEvent],
        expected_version: int,
        actual: int,
    ) -> list[int]:
        # Before a writer is told to catch up and retry: the head row must agree with the
        # events (with a deleted or moved head row, it would retry forever).
        self.stream_info(conversation_id)
        retried = self._retried_positions(
            conversation_id, [event.event_id for event, *_ in events], events
        )
        if retried is not None:
            return retried
        raise ConcurrencyError(conversation_id, expected_version, actual)

    # ----------------------------------------------------------------- the read models

    def _read_model(self) -> AdvancingReadModel | None:
        """The conversation read models, when they are the only inline read model and
        can compute an append's rows before it (else every append folds in its
        transaction, :meth:`_write_folded`)."""
        if len(INLINE_READ_MODELS) == 1 and hasattr(INLINE_READ_MODELS[0], "advance"):
            # (not isinstance: a runtime Protocol check costs more than the rest of this)
            return cast(AdvancingReadModel, INLINE_READ_MODELS[0])
        return None

    def _write_with_read_models(
        self,
        conversation_id: str,
        expected_version: int,
        prev_hash: str,
        prepared: list[PreparedEvent],
        parent_id: str | None,
        parent_version: int | None,
    ) -> tuple[list[int] | None, int]:
        """Append ``prepared`` and advance the conversation read models in the same
        transaction: in one round trip when the rows can be computed before the append
        from the summary's state (the usual append), else with the read models folding
        in the append's transaction."""
        if not INLINE_READ_MODELS:
            return self._write(
                conversation_id, expected_version, prev_hash, prepared, parent_id, parent_version
            )
        model = self._read_model()
        advance: SummaryAdvance | None = None
        state: tuple[str, str] | None = ("", "")
        if model is not None:
            if expected_version:
                state = self._summary_state(conversation_id, expected_version, prev_hash)
            if state is not None:
                advance = model.advance(state[0] or None, prepared_rows(conversation_id, prepared))
        if advance is not None and state is not None:
            try:
                return self._write(
                    conversation_id,
                    expected_version,
                    prev_hash,
                    prepared,
                    parent_id,
                    parent_version,
                    advance=(state[1], advance),
                )
            except _SummaryMoved:
                pass  # the summary moved behind this store: fold, below
        self._states.pop(conversation_id, None)
        return self._write_folded(
            conversation_id, expected_version, prev_hash, prepared, parent_id, parent_version
        )

    def _write_folded(
        self,
        conversation_id: str,
        expected_version: int,
        prev_hash: str,
        prepared: list[PreparedEvent],
        parent_id: str | None,
        parent_version: int | None,
    ) -> tuple[list[int] | None, int]:
        """The append, then every inline read model's :meth:`appended` (which reads and
        writes its rows, folding the log where it must), in one transaction; then the
        NOTIFY. Several round trips: used for imports, forks, rewinds, replaced histories
        and summaries that are not at the stream's head."""
        params = (
            conversation_id,
            expected_version,
            prev_hash,
            _document(prepared),
            parent_id,
            parent_version,
        )

        def write(conn: Connection, progress: Progress) -> tuple[list[int] | None, int]:
            conn.execute("BEGIN")
            progress.answered = True
            progress.backend_pid = conn.info.backend_pid
            try:
                if self.schema != "public":
                    conn.execute(self._sql_search_path)  # the read models name no schema
                row = conn.execute(self._sql_append_only, params).fetchone()
                assert row is not None
                if row[0] is None:
                    conn.execute("ROLLBACK")
                    return None, int(row[1])
                positions = [int(position) for position in row[0]]
                rows = prepared_rows(conversation_id, prepared, positions)
                for read_model in INLINE_READ_MODELS:
                    read_model.appended(conn, conversation_id, rows)
            except BaseException:
                if not conn.broken:
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("ROLLBACK")
                raise
            progress.commit_sent = True
            conn.execute("COMMIT")
            self._remember(conversation_id, int(row[1]), str(row[2]))
            # Its own transaction, not flushed (see _statements): a notification lost
            # costs a subscriber one poll, never the append.
            with contextlib.suppress(psycopg.Error):
                conn.execute(self._sql_notify, (str(positions[-1]),))
            return positions, int(row[1])

        return self._run(
            write, writing=True, conversation_id=conversation_id, expected_version=expected_version
        )

    def _write(
        self,
        conversation_id: str,
        expected_version: int,
        prev_hash: str,
        prepared: list[PreparedEvent],
        parent_id: str | None,
        parent_version: int | None,
        *,
        advance: tuple[str, SummaryAdvance] | None = None,
    ) -> tuple[list[int] | None, int]:
        """One round trip: BEGIN; lock, check the head, allocate, insert (and, with
        ``advance``: the md5 of the summary's state it was computed from, and what it
        writes, advance the read models); COMMIT; NOTIFY.

        Returns the positions and the new head version, or (None, actual version) when
        the head was not (expected_version, prev_hash): then nothing was written. Raises
        :class:`_SummaryMoved` when the summary was not at that state (nothing written)."""
        # The events travel as one JSON document: psycopg adapts one string much faster
        # than arrays of JSON text.
        document = _document(prepared)
        query: sql.Composed = self._sql_append
        params: tuple[object, ...] = (
            conversation_id,
            expected_version,
            prev_hash,
            document,
            parent_id,
            parent_version,
        )
        if advance is not None:
            md5, rows = advance
            query = self._sql_append_summarised
            params += (
                md5,
                rows.model,
                rows.title,
                rows.turns,
                rows.created_at,
                rows.updated_at,
                rows.state,
                # (json, not its parts: the server parses it once, in json_to_recordset)
                _encode_contents([_ContentJson(*row) for row in rows.contents]).decode("utf-8")
                if rows.contents
                else None,
            )
        event_ids = [event.event_id for event in prepared]

        def write(conn: Connection, progress: Progress) -> tuple[list[int] | None, int]:
            # Several statements in one message (client-side binding, simple protocol):
            # the server stops at the first that fails, so COMMIT runs only after a
            # successful append; the NOTIFY runs after COMMIT, in a transaction of its own.
            cursor = psycopg.ClientCursor(conn)
            progress.backend_pid = conn.info.backend_pid
            progress.commit_sent = True
            try:
                cursor.execute(query, params)
            except psycopg.Error as exc:
                if conn.broken:
                    raise  # settled by _settle
                progress.commit_sent = False  # the server answered
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("ROLLBACK")  # the append failed: COMMIT never ran
                    if isinstance(exc, pg_errors.SerializationFailure) and (
                        "read model of" in first_line(exc)
                    ):
                        raise _SummaryMoved from None
                    raise
                # Out of the transaction: COMMIT failed, or it succeeded and the NOTIFY after
                # it did not. Only the events can tell.
                found = {
                    row[0]: int(row[3]) for row in conn.execute(self._sql_find_ids, (event_ids,))
                }
                if len(found) < len(event_ids):
                    raise
                if advance is None:
                    self._states.pop(conversation_id, None)
                return [found[event_id] for event_id in event_ids], expected_version + len(
                    event_ids
                )
            progress.answered = True
            cursor.nextset()
            row = cursor.fetchone()
            assert row is not None
            positions = [int(position) for position in row[0]] if row[0] is not None else None
            if positions is not None:
                # Only the head this append wrote: a head row that did not match is not
                # to be trusted (verify, or the next read, says why).
                self._remember(conversation_id, int(row[1]), str(row[2]))
                if advance is not None:
                    self._remember_state(conversation_id, row[1], row[2], advance[1].state)
            return positions, int(row[1])

        return self._run(
            write, writing=True, conversation_id=conversation_id, expected_version=expected_version
        )

    def _settle(
        self, unknown: OutcomeUnknown, conversation_id: str, event_ids: list[str]
    ) -> list[int]:
        """The connection died while an append was committing: find out what happened.

        Once the server no longer lists the session, its transaction is over (a backend
        rolls back before it leaves): the events are there, or they never will be."""
        try:
            with psycopg.connect(self._db.conninfo, autocommit=True, connect_timeout=2) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (unknown.backend_pid,)
                ).fetchone()
                alive = bool(row and row[0])
                found = [] if alive else conn.execute(self._sql_find_ids, (event_ids,)).fetchall()
        except psycopg.Error as exc:
            raise StoreUnavailableError(
                f"{unknown.cause} while an append to PostgreSQL at {self.location} was "
                f"committing ({unknown.detail}), and the server cannot say yet whether it was "
                f"written ({first_line(exc)}). Re-append the same events (the same event ids) "
                "once it is reachable: if the first attempt went through, the retry returns "
                "its positions and writes nothing"
            ) from None
        if alive:
            raise StoreUnavailableError(
                f"{unknown.cause} while an append to PostgreSQL at {self.location} was "
                f"committing ({unknown.detail}); the server still runs that session, so it may "
                "yet be written. Re-append the same events (the same event ids): if it went "
                "through, the retry returns its positions and writes nothing"
            )
        if found:
            positions = self._retried_positions(conversation_id, event_ids)
            if positions is not None:
                return positions  # it was committed: the append succeeded
        raise StoreUnavailableError(
            f"{unknown.cause} during an append to PostgreSQL at {self.location} "
            f"({unknown.detail}); nothing was written (the server ended that session without "
            "committing it). Retry"
        )

    # ----------------------------------------------------------------- reads

    def _read(
        self, conversation_id: str, after_version: int, to_version: int | None
    ) -> list[RawRow]:
        query: sql.Composed = self._sql_read
        params: tuple[object, ...] = (conversation_id, after_version)
        if to_version is not None:
            query = sql.Composed([query, sql.SQL(" AND version <= %s")])
            params += (to_version,)
        query = sql.Composed([query, sql.SQL(" ORDER BY version")])
        rows = self._rows(query, params)
        if rows:
            self._remember(conversation_id, rows[-1].version, rows[-1].hash)
        return rows

    def _read_all(self, after_position: int, limit: int) -> list[RawRow]:
        return self._rows(self._sql_read_all, (after_position, limit))

    def _rows(self, query: sql.Composed, params: tuple[object, ...]) -> list[RawRow]:
        rows = self._fetch(query, params)
        return [RawRow(*row) for row in rows]

    def _fetch(self, query: sql.Composed, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        def fetch(conn: Connection, progress: Progress) -> list[tuple[Any, ...]]:
            rows: list[tuple[Any, ...]] = conn.execute(query, params).fetchall()
            progress.answered = True
            return rows

        return self._run(fetch, writing=False)

    def _stream_ids(self) -> list[str]:
        return sorted(str(row[0]) for row in self._fetch(self._sql_stream_ids))

    def _rows_with_event_ids(self, event_ids: Sequence[str]) -> list[RawRow]:
        return self._rows(self._sql_rows_with_ids, (list(event_ids),))

    def stream_info(self, conversation_id: str) -> StreamInfo | None:
        """:meth:`EventStore.stream_info`, its head row checked against the events."""
        row = self._fetch(self._sql_stream_info, (conversation_id,))[0]
        if row[0] is not None:
            return checked_head(self.location, row, with_parent=True)
        if row[7] is not None:
            raise head_error(self.location, conversation_id, missing_head_reason(row[7]))
        return None

    def _conversations(self, limit: int | None, parent_id: str | None) -> list[StreamInfo]:
        # The page of head rows first, then what their events say, row by row (index
        # lookups; the first event's data only for a listing of forks).
        order = sql.SQL(" ORDER BY updated_at DESC, conversation_id")
        parts: list[sql.Composable] = [
            sql.SQL("(SELECT * FROM {}.streams").format(sql.Identifier(self.schema))
        ]
        params: tuple[object, ...] = ()
        if parent_id is not None:
            parts.append(sql.SQL(" WHERE parent_id = %s"))
            params = (parent_id,)
        parts.append(order)
        if limit is not None:
            parts.append(sql.SQL(" LIMIT %s"))
            params += (limit,)
        parts.append(sql.SQL(")"))
        with_parent = parent_id is not None
        query = sql.Composed(
            [
                self._head_sql(sql.Composed(parts), with_parent=with_parent),
                sql.SQL(" ORDER BY s.updated_at DESC, s.conversation_id"),
            ]
        )
        return [
            checked_head(self.location, row, with_parent=with_parent)
            for row in self._fetch(query, params)
        ]

    def _schema_problems(self) -> list[str]:
        return self._run(lambda conn, _: schema_problems(conn, self.schema), writing=False)

    def _stream_rows(self, conversation_id: str | None) -> list[StreamRow]:
        query: sql.Composed = self._sql_stream_rows
        params: tuple[object, ...] = ()
        if conversation_id is not None:
            query = sql.Composed([query, sql.SQL(" WHERE conversation_id = %s")])
            params = (conversation_id,)
        return [StreamRow(*row) for row in self._fetch(query, params)]

    def _snapshot_rows(self, conversation_id: str | None) -> list[SnapshotRow]:
        query: sql.Composed = self._sql_snapshot_rows
        params: tuple[object, ...] = ()
        if conversation_id is not None:
            query = sql.Composed([query, sql.SQL(" WHERE conversation_id = %s")])
            params = (conversation_id,)
        return [SnapshotRow(*row) for row in self._fetch(query, params)]

    def save_snapshot(self, snapshot: Snapshot) -> None:
        def save(conn: Connection, progress: Progress) -> None:
            conn.execute(
                self._sql_save_snapshot,
                (snapshot.conversation_id, snapshot.name, snapshot.version, snapshot.state),
            )
            progress.answered = True

        self._run(save, writing=False)

    def delete_snapshot(self, conversation_id: str, name: str) -> bool:
        def delete(conn: Connection, progress: Progress) -> bool:
            cursor = conn.execute(self._sql_delete_snapshot, (conversation_id, name))
            progress.answered = True
            return cursor.rowcount > 0

        return self._run(delete, writing=False)

    def load_snapshot(self, conversation_id: str, name: str) -> Snapshot | None:
        rows = self._fetch(self._sql_load_snapshot, (conversation_id, name))
        if not rows:
            return None
        return Snapshot(
            conversation_id=conversation_id,
            name=name,
            version=int(rows[0][0]),
            state=bytes(rows[0][1]),
        )

    # ----------------------------------------------------------------- the Merkle tree

    def _leaf_rows(self, after_position: int, limit: int) -> list[tuple[int, str]]:
        return [
            (int(row[0]), row[1])
            for row in self._fetch(self._sql_leaf_rows, (after_position, limit))
        ]

    def _tree_nodes(self, nodes: Sequence[tuple[int, int]]) -> dict[tuple[int, int], TreeRow]:
        wanted = list(dict.fromkeys(nodes))
        if not wanted:
            return {}
        rows = self._fetch(
            self._sql_tree_nodes, ([node[0] for node in wanted], [node[1] for node in wanted])
        )
        return {(int(r[0]), int(r[1])): _tree_row(r) for r in rows}

    def _tree_frontier(self, level: int) -> TreeRow | None:
        rows = self._fetch(self._sql_tree_frontier, (level,))
        return _tree_row(rows[0]) if rows else None

    def _tree_before(self, level: int, position: int) -> TreeRow | None:
        rows = self._fetch(self._sql_tree_before, (level, position))
        return _tree_row(rows[0]) if rows else None

    def _tree_put(self, rows: Sequence[TreeRow]) -> None:
        if not rows:
            return
        params = (
            [row.level for row in rows],
            [row.idx for row in rows],
            [row.hash for row in rows],
            [row.last_position for row in rows],
        )

        def put(conn: Connection, progress: Progress) -> None:
            conn.execute(self._sql_tree_put, params)
            progress.answered = True

        self._run(put, writing=False)

    # ----------------------------------------------------------------- subscriptions

    def subscribe_batches(
        self,
        after_position: int = 0,
        *,
        poll_interval: float = 0.05,
        stop: threading.Event | None = None,
        batch: int = 500,
    ) -> Generator[list[RecordedEvent], None, None]:
        """Catch up from the log, then wake on LISTEN/NOTIFY (a dedicated connection,
        opened once caught up), polling every ``poll_interval`` seconds as well: an event
        can become readable without a notification of its own (when an older transaction
        ends). A notification names the last position its append committed; while such
        a position is not readable yet (an older transaction is still open), this polls
        sooner, backing off from 10 ms to ``poll_interval``. If the listening connection
        fails, this polls and listens again later; a failed read raises."""
        position = heard = after_position
        listener: Connection | None = None
        backoff = 0.01
        try:
            while stop is None or not stop.is_set():
                events = self.read_all(after_position=position, limit=batch)
                if events:
                    yield events
                    position = events[-1].position
                if len(events) == batch:
                    continue
                if listener is None:
                    listener = self._listen()
                    if listener is not None:
                        continue  # read once more: a commit may have come before LISTEN
                if heard > position:
                    pause, backoff = min(backoff, poll_interval), backoff * 2
                else:
                    pause, backoff = poll_interval, 0.01
                if listener is not None:
                    heard = max(heard, wait_for_notification(listener, pause, stop))
                    if not listener.closed:
                        continue
                    listener.close()  # poll meanwhile; listen again after the next read
                    listener = None
                if stop is not None:
                    stop.wait(pause)
                else:
                    time.sleep(pause)
        finally:
            if listener is not None:
                listener.close()

    def _listen(self) -> Connection | None:
        return self._db.listener(self._sql_listen)

    # ----------------------------------------------------------------- erasure

    def _erase_rows(
        self, erasures: Sequence[tuple[int, str, bytes]], snapshots_of: Sequence[str]
    ) -> int:
        update = sql.SQL(
            "UPDATE {schema}.events SET data = %s, content_salt = '' "
            "WHERE position = %s AND content_salt = %s"
        ).format(schema=sql.Identifier(self.schema))
        delete = sql.SQL("DELETE FROM {schema}.snapshots WHERE conversation_id = ANY(%s)").format(
            schema=sql.Identifier(self.schema)
        )

        def erase(conn: Connection) -> int:
            erased = 0
            for position, salt, data in erasures:
                erased += conn.execute(update, (data.decode("utf-8"), position, salt)).rowcount
            conn.execute(delete, (list(snapshots_of),))
            return erased

        return self.run_in_transaction(erase)

    def _purge_erased(self, vacuum: bool) -> list[str]:
        if not vacuum:
            return [
                f"PostgreSQL keeps the old row versions in the events table's files until "
                f"they are rewritten: run `chatledger erase --vacuum` (VACUUM FULL of "
                f"{self.schema}.events, snapshots, chat_summaries and chat_contents) to remove "
                "them, and see "
                "docs/erasure.md for its WAL, replicas and backups"
            ]
        with self._db.direct() as conn:
            # The read models copy content too (rewritten by the erasure's hook).
            for table in ("events", "snapshots", "chat_summaries", "chat_contents"):
                conn.execute(
                    sql.SQL("VACUUM FULL {}.{}").format(
                        sql.Identifier(self.schema), sql.Identifier(table)
                    )
                )
            try:
                # Flushes the rewritten files now (needs the pg_checkpoint role).
                conn.execute("CHECKPOINT")
            except psycopg.Error:
                return [
                    "VACUUM FULL ran; CHECKPOINT was refused (it needs the pg_checkpoint "
                    "role), so the server writes the rewritten files at its next checkpoint"
                ]
        return []

    # ----------------------------------------------------------------- transactions

    def run_in_transaction(self, work: Callable[[Any], T]) -> T:
        """Run ``work(connection)`` in one transaction on a pooled psycopg connection:
        committed if it returns, rolled back if it raises (see
        :meth:`EventStore.run_in_transaction`). psycopg uses ``%s`` placeholders. With
        a ``schema`` other than ``public``, the transaction's search_path is that schema,
        then ``public``."""

        def transaction(conn: Connection, progress: Progress) -> T:
            conn.execute("BEGIN")
            progress.answered = True
            if self.schema != "public":
                # Read models live beside the log, in its schema.
                conn.execute(self._sql_search_path)
            try:
                result = work(conn)
            except BaseException:
                if not conn.broken:
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("ROLLBACK")
                raise
            progress.commit_sent = True
            conn.execute("COMMIT")
            return result

        return self._run(transaction, writing=True)

    def run_read(self, work: Callable[[Any], T]) -> T:
        """Run ``work(connection)`` in one read-only REPEATABLE READ transaction (one
        snapshot for all its statements, as :meth:`EventStore.run_read` promises), with
        the search_path of :meth:`run_in_transaction`."""

        def read(conn: Connection, progress: Progress) -> T:
            conn.execute(self._sql_begin_read)
            progress.answered = True
            try:
                return work(conn)
            finally:
                if not conn.broken:
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("ROLLBACK")

        return self._run(read, writing=False)

    # ----------------------------------------------------------------- connections

    def _run(
        self,
        operation: Callable[[Connection, Progress], T],
        *,
        writing: bool,
        conversation_id: str | None = None,
        expected_version: int | None = None,
    ) -> T:
        """Run ``operation`` on a pooled connection (see :meth:`Connections.run`); for an
        append (``conversation_id`` given), a write that collides with another writer's
        is a :class:`ConcurrencyError`."""
        if conversation_id is None:
            return self._db.run(operation, writing=writing)

        def conflict(exc: psycopg.Error) -> StoreError | None:
            moved = (
                isinstance(exc, pg_errors.UniqueViolation)
                and exc.diag.constraint_name in {"events_stream", "streams_pkey"}
            ) or (
                isinstance(exc, pg_errors.SerializationFailure)
                and "moved from version" in first_line(exc)
            )
            if not moved:
                return None
            try:
                # With a deleted or moved head row, this is no race a retry would win.
                version = self._head_version(conversation_id)
            except IntegrityError as damaged:
                return damaged
            return ConcurrencyError(conversation_id, expected_version or 0, version)

        return self._db.run(operation, writing=writing, refine=conflict)

    def _head_version(self, conversation_id: str) -> int:
        info = self.stream_info(conversation_id)
        return info.version if info else 0

    def close(self) -> None:
        self._db.close()


def _bytes(value: bytes | str) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def _tree_row(row: Sequence[Any]) -> TreeRow:
    return TreeRow(int(row[0]), int(row[1]), bytes(row[2]), int(row[3]))


class _ContentJson(msgspec.Struct):
    """A contents row as chatledger_append_summarised reads it (bytes: base64)."""

    span: int
    turn: int
    version: int
    loaded: int
    flags: str
    contents: bytes
    curated: bytes | None


#: The new contents rows as one JSON argument (psycopg quotes one string much faster than
#: seven arrays, and the server parses it once).
_encode_contents = msgspec.json.Encoder().encode


def _document(prepared: Sequence[PreparedEvent]) -> str:
    """The events as chatledger_append reads them: one JSON document."""
    return _encode_events(
        [
            _EventRow(
                event_id=event.event_id,
                type=event.type,
                schema_version=event.schema_version,
                data=event.data.decode("utf-8"),
                metadata=event.metadata.decode("utf-8"),
                recorded_at=event.recorded_at,
                hash=event.hash,
                content_salt=event.content_salt,
            )
            for event in prepared
        ]
    ).decode("utf-8")
