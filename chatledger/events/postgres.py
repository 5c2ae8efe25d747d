"""The PostgreSQL store: one log for many processes and hosts, with live subscriptions.

Connections come from a psycopg 3 pool (``pool_min`` .. ``pool_max``), in autocommit
mode with explicit transactions. Durability is the server's: with PostgreSQL's defaults
(``fsync = on``, ``synchronous_commit = on``) an append has returned only once its commit
is flushed to the server's WAL. Concurrent appends share WAL flushes (group commit),
because nothing below holds a lock from one append's first write until its commit.

The schema (``chatledger_migrations``, ``events``, ``streams``, ``snapshots``, three
functions) is created by named, ordered migrations, applied under a transaction-level
advisory lock so that several processes opening a fresh database at once are safe. A
trigger refuses UPDATE, DELETE and TRUNCATE on ``events``. ``data`` and ``metadata`` are
``text``: the JSON exactly as written, so the hash chain verifies from what is read back.
Ids and times are ``text COLLATE "C"``: compared byte by byte, as SQLite does, whatever
the database's locale.

Ordering readers can trust
--------------------------
A sequence hands out positions in the order appends *reach* it, but transactions commit
in any order: a reader that returned position 12 and moved on would never see position
11 if its transaction committed a moment later. The eventsourcing library avoids that
with ``LOCK TABLE ... IN EXCLUSIVE MODE``, which serialises every writer until its commit
(and so every commit's WAL flush). Here writers on different conversations run in
parallel, and readers stop short of any transaction that could still commit an earlier
position:

1. The first write of every append is ``chatledger_allocate_positions(n)``: under a
   session-level advisory lock held for a few microseconds (never until commit), it
   assigns the transaction its id (``pg_current_xact_id()``) and takes ``n`` values from
   the position sequence (``CACHE 1``, so values are increasing across sessions), then
   releases the lock. Transaction ids are assigned in increasing order too, so among
   appends, transaction-id order *is* position order. Each row stores its transaction's
   id (the ``xid`` column, ``xid8``). The function refuses to run in a transaction that
   already has an id.
2. Readers that follow positions (:meth:`read_all`, :meth:`subscribe`) return only rows
   whose ``xid`` is below ``pg_snapshot_xmin(pg_current_snapshot())`` of the very
   statement that reads them: every transaction with a smaller id has ended, committed
   or rolled back, before that snapshot was taken (an id is visible as running to every
   snapshot taken after it is assigned).

Why a reader never skips: suppose a read returns an event at position ``p`` from
transaction ``X`` (``X < xmin``), and an event at position ``q < p`` commits after that
read, in transaction ``Y``. By 1., ``Y < X``, so ``Y < xmin``: ``Y`` had ended before the
read's snapshot. Had it committed, the same read would have seen its event and returned
it before ``p``; had it rolled back, it never commits. Either way, a contradiction.

What it costs: a reader waits for the slowest append in flight (strictly, for every
transaction anywhere in the cluster that was given an id before the append it wants to
return). Delivery is delayed, never lost; do not leave transactions that wrote something
idle (``idle_in_transaction_session_timeout`` helps). Positions have gaps (a rolled-back
append's positions are never used), so ``gapless_positions`` is False.

An append is one call, ``chatledger_append``, in one round trip: it takes a
transaction-level advisory lock on the conversation id (which, unlike ``SELECT ... FOR
UPDATE``, assigns no transaction id), reads the stream's head in a new statement (so a
new snapshot, after the lock), and only if the head is the version *and hash* the caller
expected does it allocate positions (1.), insert the events and move the head. A
mismatch is thus found before any position is taken, and a writer waiting for another
writer of its conversation holds no reader back. The unique (conversation_id, version)
constraint stays the backstop. The events are hashed in Python before the call, against
the head hash the store remembers from its last append or read of the conversation (any
(version, hash) pair stays true: events are immutable); when it has none, it reads the
head first.

Live subscriptions LISTEN on a dedicated connection. The append's NOTIFY is sent right
after its COMMIT, in the same message but in a transaction of its own, committed without
waiting for a WAL flush: NOTIFY gives its transaction an id and takes PostgreSQL's
database-wide notification lock at commit, holding it until the commit is done, so a
NOTIFY in the append's transaction (or a flushed one after it) would serialise every
writer behind one flush at a time. A notification names the last position its append
committed; a subscriber that has heard of a position it cannot read yet (an older
transaction is still open) polls sooner until it can. A notification lost in a crash
costs a subscriber one poll; so does an older transaction rolling back (which releases
newer events without a notification): subscribers poll every ``poll_interval`` as well.

Connections: pooled connections the server has closed (after a restart, all of them)
are dropped before use, and a read that fails on a dead connection without an answer is
retried on another. When an append's connection is lost, the store settles what
happened: once the server no longer lists the old session, its transaction is over, so
the events are either there (the append succeeded, and returns its positions) or never
will be (:class:`StoreUnavailableError`, "nothing was written"). If the server cannot
be asked (it is down), the error says so: re-appending the same events (the same event
ids) then writes them, or returns the original positions if the first attempt went
through.
"""

from __future__ import annotations

import contextlib
import re
import select
import threading
import time
import urllib.parse
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any, TypeVar

import msgspec
import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..errors import (
    ConcurrencyError,
    IntegrityError,
    InvalidInputError,
    StoreError,
    StoreUnavailableError,
    register_secret,
)
from .envelope import RecordedEvent
from .store import (
    EncodedEvent,
    EventStore,
    PreparedEvent,
    RawRow,
    Snapshot,
    StreamInfo,
    parent_of,
    parent_of_rows,
)
from .views import POSTGRES_VIEWS

__all__ = ["MIGRATIONS", "PostgresStore"]

T = TypeVar("T")
Connection = psycopg.Connection[tuple[Any, ...]]

#: advisory lock classes ("chlg" and the next value), keyed by hashtext(schema)
POSITIONS_LOCK_CLASS = 1667787879
MIGRATIONS_LOCK_CLASS = 1667787880

# ----------------------------------------------------------------------------- migrations

# Each migration is SQL with {schema} (an identifier) and {schema_name} (a literal).
MIGRATIONS: list[tuple[str, str]] = [
    (
        "001_events",
        """
        CREATE SEQUENCE {schema}.events_position_seq AS bigint CACHE 1;
        CREATE TABLE {schema}.events (
            position bigint PRIMARY KEY,
            conversation_id text COLLATE "C" NOT NULL,
            version bigint NOT NULL,
            event_id text COLLATE "C" NOT NULL,
            type text NOT NULL,
            schema_version integer NOT NULL,
            data text NOT NULL,
            metadata text NOT NULL,
            recorded_at text COLLATE "C" NOT NULL,
            hash text NOT NULL,
            xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
            CONSTRAINT events_stream UNIQUE (conversation_id, version),
            CONSTRAINT events_event_id UNIQUE (event_id)
        );
        ALTER SEQUENCE {schema}.events_position_seq OWNED BY {schema}.events.position;
        """,
    ),
    (
        "002_streams",
        """
        CREATE TABLE {schema}.streams (
            conversation_id text COLLATE "C" PRIMARY KEY,
            version bigint NOT NULL,
            head_hash text NOT NULL,
            created_at text COLLATE "C" NOT NULL,
            updated_at text COLLATE "C" NOT NULL,
            parent_id text COLLATE "C",
            parent_version bigint
        );
        CREATE INDEX streams_updated ON {schema}.streams (updated_at);
        CREATE INDEX streams_parent ON {schema}.streams (parent_id);
        """,
    ),
    (
        "003_events_are_immutable",
        """
        CREATE FUNCTION {schema}.chatledger_refuse_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'chatledger events are immutable' USING ERRCODE = 'integrity_constraint_violation';
        END
        $$;
        CREATE TRIGGER events_no_update_or_delete BEFORE UPDATE OR DELETE ON {schema}.events
            FOR EACH ROW EXECUTE FUNCTION {schema}.chatledger_refuse_change();
        CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON {schema}.events
            FOR EACH STATEMENT EXECUTE FUNCTION {schema}.chatledger_refuse_change();
        """,
    ),
    (
        "004_snapshots",
        """
        CREATE TABLE {schema}.snapshots (
            conversation_id text COLLATE "C" NOT NULL,
            name text COLLATE "C" NOT NULL,
            version bigint NOT NULL,
            state bytea NOT NULL,
            PRIMARY KEY (conversation_id, name)
        );
        """,
    ),
    (
        "005_allocate_positions",
        # See the module docstring: the transaction id and the positions are assigned
        # together under a lock held for microseconds, so their orders agree. The
        # exception block makes sure a cancelled call never keeps the session lock.
        """
        CREATE FUNCTION {schema}.chatledger_allocate_positions(n integer) RETURNS bigint[]
        LANGUAGE plpgsql AS $$
        DECLARE
            positions bigint[];
        BEGIN
            IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
                RAISE EXCEPTION 'chatledger positions must be allocated by the first write of a transaction'
                    USING ERRCODE = 'object_not_in_prerequisite_state';
            END IF;
            BEGIN
                PERFORM pg_advisory_lock(1667787879, hashtext({schema_name}));
                PERFORM pg_current_xact_id();
                SELECT array_agg(allocated.p ORDER BY allocated.p) INTO positions
                FROM (SELECT nextval('{schema}.events_position_seq') AS p
                      FROM generate_series(1, n)) AS allocated;
                PERFORM pg_advisory_unlock(1667787879, hashtext({schema_name}));
            EXCEPTION WHEN OTHERS OR query_canceled THEN
                PERFORM pg_advisory_unlock_all();
                RAISE;
            END;
            RETURN positions;
        END
        $$;
        """,
    ),
    (
        "006_append",
        # One call per append: lock the conversation, check its head, and only then
        # allocate positions and write. See the module docstring.
        """
        CREATE FUNCTION {schema}.chatledger_append(
            p_conversation_id text,
            p_expected_version bigint,
            p_expected_hash text,
            p_events json,
            p_parent_id text,
            p_parent_version bigint,
            OUT positions bigint[],
            OUT version bigint,
            OUT head_hash text
        )
        LANGUAGE plpgsql AS $$
        DECLARE
            n integer := json_array_length(p_events);
            last json := p_events -> (n - 1);
        BEGIN
            -- What the NOTIFY after COMMIT announces ('' for nothing): a session setting.
            PERFORM set_config('chatledger.notify_position', '', false);
            -- Takes no transaction id, so waiting here holds no reader back.
            PERFORM pg_advisory_xact_lock(hashtextextended(p_conversation_id, 0));
            -- A new statement, so a new snapshot: it sees what the lock's last holder wrote.
            SELECT s.version, s.head_hash INTO version, head_hash
            FROM {schema}.streams AS s WHERE s.conversation_id = p_conversation_id;
            IF coalesce(version, 0) <> p_expected_version
                    OR coalesce(head_hash, '') <> coalesce(p_expected_hash, '') THEN
                version := coalesce(version, 0);
                RETURN;  -- positions NULL: the head is not what the caller hashed against
            END IF;
            positions := {schema}.chatledger_allocate_positions(n);
            INSERT INTO {schema}.events (position, conversation_id, version, event_id, type,
                schema_version, data, metadata, recorded_at, hash)
            SELECT positions[e.i], p_conversation_id, p_expected_version + e.i, e.event_id,
                e.type, e.schema_version, e.data, e.metadata, e.recorded_at, e.hash
            FROM ROWS FROM (json_to_recordset(p_events) AS (event_id text, type text,
                schema_version integer, data text, metadata text, recorded_at text, hash text))
                WITH ORDINALITY AS e(event_id, type, schema_version, data, metadata, recorded_at,
                hash, i);
            version := p_expected_version + n;
            head_hash := last ->> 'hash';
            PERFORM set_config('chatledger.notify_position', positions[n]::text, false);
            IF p_expected_version = 0 THEN
                INSERT INTO {schema}.streams (conversation_id, version, head_hash, created_at,
                    updated_at, parent_id, parent_version)
                VALUES (p_conversation_id, version, head_hash, p_events -> 0 ->> 'recorded_at',
                    last ->> 'recorded_at', p_parent_id, p_parent_version);
            ELSE
                UPDATE {schema}.streams AS s SET version = chatledger_append.version,
                    head_hash = chatledger_append.head_hash, updated_at = last ->> 'recorded_at'
                WHERE s.conversation_id = p_conversation_id;
            END IF;
        END
        $$;
        """,
    ),
    (
        "007_no_index_on_updated_at",
        # Every append moves its stream's updated_at: with an index on it, no update of the
        # head could be HOT, so each append also wrote an index entry (and its WAL).
        # Listings order by (updated_at, conversation_id) and sort anyway.
        """
        DROP INDEX IF EXISTS {schema}.streams_updated;
        """,
    ),
    (
        "008_views_for_sql_readers",
        # chat_conversations and chat_messages, for any SQL tool (see views.py and
        # docs/integrations.md): stored queries only, so appends cost nothing more.
        ";\n".join(POSTGRES_VIEWS.values()),
    ),
]

_COLUMNS = (
    "conversation_id, version, position, event_id, type, schema_version, data, metadata, "
    "recorded_at, hash"
)
_INFO_COLUMNS = "conversation_id, version, created_at, updated_at, parent_id, parent_version"

# SQLSTATEs of a connection that is gone (or going): class 08, and the shutdown family.
_CONNECTION_LOST = {"57P01", "57P02", "57P03", "57P05"}
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


_HEADS_KEPT = 10_000


class _EventRow(msgspec.Struct, array_like=False):
    """An event as chatledger_append reads it (data and metadata: their JSON text)."""

    event_id: str
    type: str
    schema_version: int
    data: str
    metadata: str
    recorded_at: str
    hash: str


_encode_events = msgspec.json.Encoder().encode


class _Progress:
    """How far one operation got on its connection, to judge a failure."""

    __slots__ = ("answered", "backend_pid", "commit_sent", "writing")

    def __init__(self, *, writing: bool) -> None:
        self.writing = writing
        self.answered = False
        self.commit_sent = False
        self.backend_pid = 0


class _OutcomeUnknown(Exception):
    """An append's connection died after its COMMIT may have run (settled by _settle)."""

    def __init__(self, cause: str, detail: str, backend_pid: int) -> None:
        super().__init__(detail)
        self.cause, self.detail, self.backend_pid = cause, detail, backend_pid


class PostgresStore(EventStore):
    """The log in a PostgreSQL database (14 or later; uses ``xid8`` snapshots).

    ``url`` is a ``postgresql://`` URL (or a libpq ``key=value`` string); a ``schema``
    query parameter or argument puts the tables in that schema (created if missing)
    instead of ``public``. ``pool_min`` and ``pool_max`` size the connection pool;
    ``connect_timeout`` is how long an operation waits for a connection (the server
    unreachable, or every pooled connection busy) before raising
    :class:`StoreUnavailableError`.
    """

    gapless_positions = False

    def __init__(
        self,
        url: str,
        *,
        pool_min: int = 1,
        pool_max: int = 10,
        schema: str | None = None,
        connect_timeout: float = 10.0,
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
        conninfo, url_schema = _split_url(url)
        self.schema = schema or url_schema or "public"
        if not _SCHEMA_NAME.fullmatch(self.schema):
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
        self.location = _location(params, self.schema)
        self.pool_min, self.pool_max = pool_min, pool_max
        self.connect_timeout = connect_timeout
        extra: dict[str, Any] = {"client_encoding": "UTF8"}
        if "connect_timeout" not in params:
            extra["connect_timeout"] = max(2, round(connect_timeout))
        if "application_name" not in params:
            extra["application_name"] = "chatledger"
        self._conninfo = make_conninfo(conninfo, **extra)
        self.channel = f"chatledger_{self.schema}"[:63]
        self._closed = False
        self._close_lock = threading.Lock()
        self._heads: dict[str, tuple[int, str]] = {}
        self._statements()

        with self._direct_connection() as conn:
            self._check_server(conn)
            self._migrate(conn)
        self._pool: psycopg_pool.ConnectionPool[Connection] = psycopg_pool.ConnectionPool(
            self._conninfo,
            kwargs={"autocommit": True},
            min_size=pool_min,
            max_size=pool_max,
            timeout=connect_timeout,
            # Give up on a reconnection attempt as soon as a caller would: the next request
            # then tries at once, instead of waiting out the pool's backoff after an outage.
            reconnect_timeout=connect_timeout,
            name=f"chatledger {self.location}",
            open=False,
        )
        try:
            self._pool.open(wait=pool_min > 0, timeout=connect_timeout)
        except psycopg.Error as exc:
            self._pool.close()
            raise self._unreachable(exc) from None

    # ----------------------------------------------------------------- schema

    def _statements(self) -> None:
        s = sql.Identifier(self.schema)

        def q(text: str) -> sql.Composed:
            return sql.SQL(text).format(schema=s)

        self._sql_append = sql.SQL(
            "BEGIN; SELECT positions, version, head_hash FROM {schema}.chatledger_append("
            "%s, %s, %s, %s, %s, %s); COMMIT; "
            # Its own transaction, committed without waiting for a WAL flush: a lost
            # notification costs a subscriber one poll interval, a flush would hold
            # PostgreSQL's notification lock (and so every other writer) meanwhile.
            # The payload is the append's last position (see subscribe_batches).
            "SELECT set_config('synchronous_commit', 'off', true), "
            "pg_notify({channel}, current_setting('chatledger.notify_position', true)) "
            "WHERE current_setting('chatledger.notify_position', true) <> ''"
        ).format(schema=s, channel=sql.Literal(self.channel))
        self._sql_head = q(
            "SELECT version, head_hash FROM {schema}.streams WHERE conversation_id = %s"
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
        self._sql_find_ids = q(
            "SELECT event_id, conversation_id, version, position FROM {schema}.events "
            "WHERE event_id = ANY(%s)"
        )
        self._sql_stream_info = q(
            f"SELECT {_INFO_COLUMNS} FROM {{schema}}.streams WHERE conversation_id = %s"
        )
        self._sql_conversations = q(f"SELECT {_INFO_COLUMNS} FROM {{schema}}.streams")
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
        self._sql_listen = sql.SQL("LISTEN {}").format(sql.Identifier(self.channel))
        self._sql_search_path = sql.SQL("SET LOCAL search_path TO {}, public").format(s)

    def _check_server(self, conn: Connection) -> None:
        if conn.info.server_version < 140000:
            raise StoreUnavailableError(
                f"PostgreSQL at {self.location} is version {conn.info.server_version // 10000}; "
                "chatledger needs PostgreSQL 14 or later"
            )
        encoding = conn.execute("SHOW server_encoding").fetchone()
        if encoding is None or str(encoding[0]).upper() not in {"UTF8", "UTF-8"}:
            raise StoreUnavailableError(
                f"the database at {self.location} uses the {encoding[0] if encoding else '?'} "
                "encoding; chatledger stores text as UTF-8: create the database with "
                "ENCODING 'UTF8'"
            )

    def _migrate(self, conn: Connection) -> None:
        s = sql.Identifier(self.schema)
        table = sql.SQL("{}.chatledger_migrations").format(s)
        if self._pending_migrations(conn, table) == []:
            return
        with conn.transaction():
            # Serialise migrators (two processes opening a fresh database at once).
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                (MIGRATIONS_LOCK_CLASS, self.schema),
            )
            if self.schema != "public":
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s))
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, "
                    "applied_at timestamptz NOT NULL DEFAULT now())"
                ).format(table)
            )
            for name in self._pending_migrations(conn, table) or []:
                body = dict(MIGRATIONS)[name]
                conn.execute(sql.SQL(body).format(schema=s, schema_name=sql.Literal(self.schema)))
                conn.execute(sql.SQL("INSERT INTO {} (name) VALUES (%s)").format(table), (name,))

    def _pending_migrations(self, conn: Connection, table: sql.Composable) -> list[str] | None:
        """Migration names not applied yet, or None when there is no migrations table."""
        exists = conn.execute(
            "SELECT to_regclass(quote_ident(%s) || '.chatledger_migrations')", (self.schema,)
        ).fetchone()
        if exists is None or exists[0] is None:
            return None
        applied = {row[0] for row in conn.execute(sql.SQL("SELECT name FROM {}").format(table))}
        return [name for name, _ in MIGRATIONS if name not in applied]

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
                return self._mismatch(conversation_id, event_ids, expected_version, prev_hash)
            prepared = self._prepare(conversation_id, events, expected_version, prev_hash)
            try:
                positions, version = self._write(
                    conversation_id,
                    expected_version,
                    prev_hash,
                    prepared,
                    parent_id,
                    parent_version,
                )
            except _OutcomeUnknown as unknown:
                return self._settle(unknown, conversation_id, event_ids)
            if positions is not None:
                return positions
            if version != expected_version:
                return self._mismatch(conversation_id, event_ids, expected_version, version)
            # Same version, another head hash than the one remembered: hash again.
        raise StoreError(f"{self.location}: the head of {conversation_id} keeps changing; retry")

    def _import_rows(
        self, conversation_id: str, rows: list[RawRow], after_version: int
    ) -> list[int]:
        prev_hash = self._head_hash(conversation_id, after_version)
        if isinstance(prev_hash, int):
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
            )
            for row in rows
        ]
        parent_id, parent_version = parent_of_rows(rows) if after_version == 0 else (None, None)
        try:
            positions, version = self._write(
                conversation_id, after_version, prev_hash, prepared, parent_id, parent_version
            )
        except _OutcomeUnknown as unknown:
            return self._settle(unknown, conversation_id, [row.event_id for row in rows])
        if positions is None:
            raise ConcurrencyError(conversation_id, after_version, version)
        return positions

    def _head_hash(self, conversation_id: str, version: int) -> str | int:
        """The hash of the stream's event at ``version`` (the head the caller expects),
        from memory or from the database; or the actual head version if it is not there."""
        if version == 0:
            return ""
        known = self._heads.get(conversation_id)
        if known is not None and known[0] == version:
            return known[1]
        rows = self._fetch(self._sql_head, (conversation_id,))
        if not rows or int(rows[0][0]) != version:
            return int(rows[0][0]) if rows else 0
        self._remember(conversation_id, version, str(rows[0][1]))
        return str(rows[0][1])

    def _remember(self, conversation_id: str, version: int, head_hash: str) -> None:
        """Keep a (version, hash) of the stream: the next append after it needs no read.
        Any pair stays true (events are immutable); the newest known is the useful one."""
        known = self._heads.get(conversation_id)
        if known is None or known[0] <= version:
            if len(self._heads) >= _HEADS_KEPT:
                self._heads.clear()
            self._heads[conversation_id] = (version, head_hash)

    def _mismatch(
        self, conversation_id: str, event_ids: list[str], expected_version: int, actual: int
    ) -> list[int]:
        retried = self._retried_positions(conversation_id, event_ids)
        if retried is not None:
            return retried
        raise ConcurrencyError(conversation_id, expected_version, actual)

    def _write(
        self,
        conversation_id: str,
        expected_version: int,
        prev_hash: str,
        prepared: list[PreparedEvent],
        parent_id: str | None,
        parent_version: int | None,
    ) -> tuple[list[int] | None, int]:
        """One round trip: BEGIN; lock, check the head, allocate, insert; COMMIT; NOTIFY.

        Returns the positions and the new head version, or (None, actual version) when
        the head was not (expected_version, prev_hash): then nothing was written."""
        # The events travel as one JSON document: psycopg adapts one string much faster
        # than arrays of JSON text.
        document = _encode_events(
            [
                _EventRow(
                    event_id=event.event_id,
                    type=event.type,
                    schema_version=event.schema_version,
                    data=event.data.decode("utf-8"),
                    metadata=event.metadata.decode("utf-8"),
                    recorded_at=event.recorded_at,
                    hash=event.hash,
                )
                for event in prepared
            ]
        ).decode("utf-8")
        params = (conversation_id, expected_version, prev_hash, document, parent_id, parent_version)
        event_ids = [event.event_id for event in prepared]

        def write(conn: Connection, progress: _Progress) -> tuple[list[int] | None, int]:
            # Several statements in one message (client-side binding, simple protocol):
            # the server stops at the first that fails, so COMMIT runs only after a
            # successful append; the NOTIFY runs after COMMIT, in a transaction of its own.
            cursor = psycopg.ClientCursor(conn)
            progress.backend_pid = conn.info.backend_pid
            progress.commit_sent = True
            try:
                cursor.execute(self._sql_append, params)
            except psycopg.Error:
                if conn.broken:
                    raise  # settled by _settle
                progress.commit_sent = False  # the server answered
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("ROLLBACK")  # the append failed: COMMIT never ran
                    raise
                # Out of the transaction: COMMIT failed, or it succeeded and the NOTIFY after
                # it did not. Only the events can tell.
                found = {
                    row[0]: int(row[3]) for row in conn.execute(self._sql_find_ids, (event_ids,))
                }
                if len(found) < len(event_ids):
                    raise
                return [found[event_id] for event_id in event_ids], expected_version + len(
                    event_ids
                )
            progress.answered = True
            cursor.nextset()
            row = cursor.fetchone()
            assert row is not None
            positions = [int(position) for position in row[0]] if row[0] is not None else None
            if row[2] is not None:
                self._remember(conversation_id, int(row[1]), str(row[2]))
            return positions, int(row[1])

        return self._run(
            write, writing=True, conversation_id=conversation_id, expected_version=expected_version
        )

    def _settle(
        self, unknown: _OutcomeUnknown, conversation_id: str, event_ids: list[str]
    ) -> list[int]:
        """The connection died while an append was committing: find out what happened.

        Once the server no longer lists the session, its transaction is over (a backend
        rolls back before it leaves): the events are there, or they never will be."""
        try:
            with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=2) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (unknown.backend_pid,)
                ).fetchone()
                alive = bool(row and row[0])
                found = [] if alive else conn.execute(self._sql_find_ids, (event_ids,)).fetchall()
        except psycopg.Error as exc:
            raise StoreUnavailableError(
                f"{unknown.cause} while an append to PostgreSQL at {self.location} was "
                f"committing ({unknown.detail}), and the server cannot say yet whether it was "
                f"written ({_first_line(exc)}). Re-append the same events (the same event ids) "
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
        def fetch(conn: Connection, progress: _Progress) -> list[tuple[Any, ...]]:
            rows: list[tuple[Any, ...]] = conn.execute(query, params).fetchall()
            progress.answered = True
            return rows

        return self._run(fetch, writing=False)

    def _stream_ids(self) -> list[str]:
        return sorted(str(row[0]) for row in self._fetch(self._sql_stream_ids))

    def _find_event_ids(self, event_ids: Sequence[str]) -> dict[str, tuple[str, int, int]]:
        rows = self._fetch(self._sql_find_ids, (list(event_ids),))
        return {str(row[0]): (str(row[1]), int(row[2]), int(row[3])) for row in rows}

    def stream_info(self, conversation_id: str) -> StreamInfo | None:
        rows = self._fetch(self._sql_stream_info, (conversation_id,))
        return _info(rows[0]) if rows else None

    def _conversations(self, limit: int | None, parent_id: str | None) -> list[StreamInfo]:
        parts: list[sql.Composable] = [self._sql_conversations]
        params: tuple[object, ...] = ()
        if parent_id is not None:
            parts.append(sql.SQL(" WHERE parent_id = %s"))
            params = (parent_id,)
        parts.append(sql.SQL(" ORDER BY updated_at DESC, conversation_id"))
        if limit is not None:
            parts.append(sql.SQL(" LIMIT %s"))
            params += (limit,)
        return [_info(row) for row in self._fetch(sql.Composed(parts), params)]

    def save_snapshot(self, snapshot: Snapshot) -> None:
        def save(conn: Connection, progress: _Progress) -> None:
            conn.execute(
                self._sql_save_snapshot,
                (snapshot.conversation_id, snapshot.name, snapshot.version, snapshot.state),
            )
            progress.answered = True

        self._run(save, writing=False)

    def delete_snapshot(self, conversation_id: str, name: str) -> bool:
        def delete(conn: Connection, progress: _Progress) -> bool:
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
                    heard = max(heard, _wait_for_notification(listener, pause, stop))
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
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error:
            return None
        try:
            conn.execute(self._sql_listen)
        except psycopg.Error:
            conn.close()
            return None
        return conn

    # ----------------------------------------------------------------- transactions

    def run_in_transaction(self, work: Callable[[Any], T]) -> T:
        """Run ``work(connection)`` in one transaction on a pooled psycopg connection:
        committed if it returns, rolled back if it raises (see
        :meth:`EventStore.run_in_transaction`). psycopg uses ``%s`` placeholders. With
        a ``schema`` other than ``public``, the transaction's search_path is that schema,
        then ``public``."""

        def transaction(conn: Connection, progress: _Progress) -> T:
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

    # ----------------------------------------------------------------- connections

    def _run(
        self,
        operation: Callable[[Connection, _Progress], T],
        *,
        writing: bool,
        conversation_id: str | None = None,
        expected_version: int | None = None,
    ) -> T:
        """Run ``operation`` on a pooled connection, translating psycopg's errors.

        Pooled connections the server has closed (after a restart, all of them) are
        dropped before use. A read that fails with no answer on a dead connection is
        retried on another; an append whose connection dies is settled (see _settle).
        """
        if self._closed:
            raise StoreError(f"the store {self.location} is closed")
        attempts = 0
        while True:
            progress = _Progress(writing=writing)
            try:
                conn = self._pool.getconn()
            except psycopg_pool.PoolTimeout as exc:
                raise self._unreachable(exc, progress) from None
            except psycopg_pool.PoolClosed:
                raise StoreError(f"the store {self.location} is closed") from None
            try:
                if attempts <= self.pool_max and _closed_by_server(conn):
                    attempts += 1
                    continue  # the pool replaces a closed connection
                return operation(conn, progress)
            except psycopg.Error as exc:
                failure, stale = exc, conn.broken and not progress.answered
            finally:
                self._pool.putconn(conn)
            # Translate outside the pool's hands: translating may need a connection.
            if progress.commit_sent and progress.backend_pid and _connection_lost(failure):
                raise _OutcomeUnknown(_cause(failure), _first_line(failure), progress.backend_pid)
            if stale and attempts <= self.pool_max:
                attempts += 1
                continue
            raise self._translate(failure, progress, conversation_id, expected_version) from None

    @contextlib.contextmanager
    def _direct_connection(self) -> Iterator[Connection]:
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise self._unreachable(exc) from None
        try:
            with conn:
                yield conn
        except psycopg.Error as exc:
            raise self._translate(exc, _Progress(writing=True), None, None) from None

    def _unreachable(
        self, exc: BaseException, progress: _Progress | None = None
    ) -> StoreUnavailableError:
        """No connection: say why (asking the server directly, if the pool only timed out)."""
        reason = _first_line(exc)
        if isinstance(exc, psycopg_pool.PoolTimeout):
            try:
                psycopg.connect(self._conninfo, connect_timeout=2).close()
            except psycopg.Error as direct:
                reason = _first_line(direct)
            else:
                return StoreUnavailableError(
                    f"all {self.pool_max} connections to PostgreSQL at {self.location} stayed "
                    f"busy for {self.connect_timeout:g} s; nothing was written. Retry, or open "
                    "the store with a larger pool_max or connect_timeout"
                )
        hint = "check that the server is running and reachable, then retry"
        lowered = reason.lower()
        if "does not exist" in lowered:
            hint = "create it (createdb / CREATE ROLE), or fix the URL"
        elif "password" in lowered or "authentication" in lowered:
            hint = "check the user name and password (or PGPASSWORD / ~/.pgpass)"
        elif "starting up" in lowered or "shutting down" in lowered or "recovery" in lowered:
            hint = "the server is restarting: retry in a moment"
        written = "; nothing was written" if progress is not None and progress.writing else ""
        return StoreUnavailableError(
            f"cannot connect to PostgreSQL at {self.location} ({reason}){written}. {hint}"
        )

    def _translate(
        self,
        exc: psycopg.Error,
        progress: _Progress,
        conversation_id: str | None,
        expected_version: int | None,
    ) -> StoreError:
        """psycopg's error as the library's, with what to do about it."""
        where = f"PostgreSQL at {self.location}"
        state = exc.sqlstate or ""
        detail = _first_line(exc)
        if _connection_lost(exc):
            cause = _cause(exc)
            if progress.commit_sent:
                # Appends are settled before this (see _settle): this is run_in_transaction.
                return StoreUnavailableError(
                    f"{cause} while a transaction on {where} was committing ({detail}); it may "
                    "or may not have been committed. Read back what it wrote before retrying "
                    "(a projection runner does: its position is committed with its rows)"
                )
            if progress.writing:
                return StoreUnavailableError(
                    f"{cause} during a write to {where} ({detail}); nothing was written "
                    "(the server rolls back an unfinished transaction). Retry once the server "
                    "is reachable"
                )
            return StoreUnavailableError(f"{cause} while reading from {where} ({detail}); retry")
        if state == "23505":
            constraint = getattr(exc.diag, "constraint_name", None) or ""
            if constraint in {"events_stream", "streams_pkey"} and conversation_id is not None:
                return ConcurrencyError(
                    conversation_id, expected_version or 0, self._head_version(conversation_id)
                )
            if constraint == "events_event_id":
                return IntegrityError(
                    f"an event id of this append is already used by another event in {where}; "
                    "an idempotent retry must resend exactly the same events"
                )
            return IntegrityError(f"{where}: {detail}")
        if state == "40001" and conversation_id is not None and "moved from version" in detail:
            return ConcurrencyError(
                conversation_id, expected_version or 0, self._head_version(conversation_id)
            )
        if state.startswith("23"):
            return IntegrityError(f"{where}: {detail}")
        written = "; nothing was written" if progress.writing and not progress.commit_sent else ""
        if state in {"40001", "40P01"}:
            return StoreUnavailableError(
                f"{where} rolled the transaction back ({detail}){written}. Retry"
            )
        if state == "57014":
            return StoreUnavailableError(
                f"{where} cancelled the statement ({detail}: statement_timeout, or "
                f"pg_cancel_backend){written}. Retry, or raise statement_timeout"
            )
        if state == "55P03":
            return StoreUnavailableError(f"{where}: {detail} (lock_timeout){written}. Retry")
        if state == "25006":
            return StoreUnavailableError(
                f"{where} is read-only ({detail}): connect to the primary server{written}"
            )
        if state == "53100":
            return StoreUnavailableError(
                f"the disk of {where} is full ({detail}){written}; everything committed is "
                "intact. Free some space and retry"
            )
        if state.startswith("53"):
            return StoreUnavailableError(
                f"{where} is out of resources ({detail}){written}. Retry later"
            )
        if state == "42501":
            return StoreUnavailableError(
                f"{where}: permission denied ({detail}); grant the user access to the "
                f"{self.schema} schema"
            )
        if state in {"42P01", "42883", "3F000"}:
            return StoreUnavailableError(
                f"{where}: the chatledger schema {self.schema!r} is missing or incomplete "
                f"({detail}); open the store again to create it"
            )
        return StoreError(f"{where}: {detail}")

    def _head_version(self, conversation_id: str) -> int:
        info = self.stream_info(conversation_id)
        return info.version if info else 0

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._pool.close()


# ----------------------------------------------------------------------------- helpers


def _closed_by_server(conn: Connection) -> bool:
    """Whether an idle connection was closed by the server (without a round trip: an idle
    connection has nothing to read, unless the server sent its last words)."""
    if conn.closed:
        return True
    try:
        for _ in range(3):
            if not select.select([conn.pgconn.socket], [], [], 0)[0]:
                return False
            conn.pgconn.consume_input()
    except (psycopg.Error, OSError, ValueError):
        conn.close()
        return True
    return False


def _connection_lost(exc: psycopg.Error) -> bool:
    state = exc.sqlstate or ""
    return isinstance(exc, psycopg.InterfaceError) or (
        isinstance(exc, psycopg.OperationalError)
        and (not state or state.startswith("08") or state in _CONNECTION_LOST)
    )


def _cause(exc: psycopg.Error) -> str:
    if exc.sqlstate in _CONNECTION_LOST:
        return "the server ended the session (shutdown, restart or pg_terminate_backend)"
    return "the connection to the server was lost"


def _wait_for_notification(conn: Connection, timeout: float, stop: threading.Event | None) -> int:
    """Wait up to ``timeout`` s for notifications (in slices, so that ``stop`` is noticed
    within 0.1 s), then drain the others; return the highest position they announced (0
    if none). A failure leaves ``conn`` closed."""
    deadline = time.monotonic() + timeout
    announced = 0
    try:
        while True:
            notes = list(
                conn.notifies(timeout=min(0.1, max(0.0, deadline - time.monotonic())), stop_after=1)
            )
            if notes:
                break
            if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                return 0
        notes += conn.notifies(timeout=0)
    except psycopg.Error:
        conn.close()
        return 0
    for note in notes:
        if note.payload.isdigit():
            announced = max(announced, int(note.payload))
    return announced


def _split_url(url: str) -> tuple[str, str | None]:
    """The conninfo for libpq, and the ``schema`` query parameter if the URL has one."""
    if url.startswith("postgresql+psycopg://"):
        url = "postgresql://" + url[len("postgresql+psycopg://") :]
    if not url.startswith(("postgresql://", "postgres://")):
        return url, None
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    schema = next((value for key, value in query if key == "schema"), None)
    kept = urllib.parse.urlencode([(key, value) for key, value in query if key != "schema"])
    return urllib.parse.urlunsplit(parts._replace(query=kept)), schema


def _location(params: dict[str, Any], schema: str) -> str:
    """A URL naming the database, never its password."""
    user = params.get("user") or ""
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port")
    dbname = params.get("dbname") or user
    netloc = urllib.parse.quote(str(user), safe="") + "@" if user else ""
    netloc += str(host) if "/" not in str(host) else "localhost"
    if port:
        netloc += f":{port}"
    location = f"postgresql://{netloc}/{urllib.parse.quote(str(dbname), safe='')}"
    if "/" in str(host):
        location += "?host=" + urllib.parse.quote(str(host), safe="/")
    if schema != "public":
        location += (
            ("&" if "?" in location else "?") + "schema=" + urllib.parse.quote(schema, safe="")
        )
    return location


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    text = text.removeprefix("connection failed: ")
    return " ".join(text.split())


def _bytes(value: bytes | str) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def _info(row: tuple[Any, ...]) -> StreamInfo:
    return StreamInfo(
        conversation_id=str(row[0]),
        version=int(row[1]),
        created_at=str(row[2]),
        updated_at=str(row[3]),
        parent_id=row[4] if isinstance(row[4], str) else None,
        parent_version=int(row[5]) if row[5] is not None else None,
    )
