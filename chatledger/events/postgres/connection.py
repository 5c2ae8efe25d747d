"""Connections to PostgreSQL: the pool, what a lost connection means, and psycopg's errors
as the library's.

:class:`Connections` runs an operation on a pooled connection (autocommit, explicit
transactions). Pooled connections the server has closed (after a restart, all of them)
are dropped before use, and a read that fails on a dead connection without an answer is
retried on another. An operation records how far it got in a :class:`Progress`, so that
a failure can say whether anything was written: before ``BEGIN`` was answered, nothing
was; after ``COMMIT`` was sent on a connection that then died, only the server can tell
(the store settles an append by asking it, see ``PostgresStore._settle``).

Errors are told apart by psycopg's error classes (``psycopg.errors.UniqueViolation``,
``SerializationFailure``, ...), never by bare SQLSTATE strings.
"""

from __future__ import annotations

import contextlib
import select
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors

from ...errors import IntegrityError, StoreError, StoreUnavailableError

__all__ = [
    "Connection",
    "Connections",
    "OutcomeUnknown",
    "Progress",
    "connection_lost",
    "first_line",
    "location_of",
    "split_url",
    "wait_for_notification",
]

T = TypeVar("T")
Connection = psycopg.Connection[tuple[Any, ...]]

#: The server ended the session: shutdown, crash, restart or pg_terminate_backend.
SESSION_ENDED: tuple[type[psycopg.Error], ...] = (
    pg_errors.AdminShutdown,
    pg_errors.CrashShutdown,
    pg_errors.CannotConnectNow,
    pg_errors.IdleSessionTimeout,
)
#: SQLSTATE class 08: the connection itself failed.
CONNECTION_EXCEPTIONS: tuple[type[psycopg.Error], ...] = (
    pg_errors.ConnectionException,
    pg_errors.ConnectionDoesNotExist,
    pg_errors.ConnectionFailure,
    pg_errors.SqlclientUnableToEstablishSqlconnection,
    pg_errors.SqlserverRejectedEstablishmentOfSqlconnection,
    pg_errors.TransactionResolutionUnknown,
    pg_errors.ProtocolViolation,
)
#: SQLSTATE class 53 other than a full disk: the server is out of something.
OUT_OF_RESOURCES: tuple[type[psycopg.Error], ...] = (
    pg_errors.InsufficientResources,
    pg_errors.OutOfMemory,
    pg_errors.TooManyConnections,
    pg_errors.ConfigurationLimitExceeded,
)
#: The schema (or something in it) is not there.
SCHEMA_MISSING: tuple[type[psycopg.Error], ...] = (
    pg_errors.UndefinedTable,
    pg_errors.UndefinedFunction,
    pg_errors.InvalidSchemaName,
)


class Progress:
    """How far one operation got on its connection, to judge a failure."""

    __slots__ = ("answered", "backend_pid", "commit_sent", "writing")

    def __init__(self, *, writing: bool) -> None:
        self.writing = writing
        self.answered = False
        self.commit_sent = False
        self.backend_pid = 0


class OutcomeUnknown(Exception):
    """An append's connection died after its COMMIT may have run (the store settles it)."""

    def __init__(self, cause: str, detail: str, backend_pid: int) -> None:
        super().__init__(detail)
        self.cause, self.detail, self.backend_pid = cause, detail, backend_pid


#: Called with a psycopg error the server answered with; returns the library's error for
#: it when the caller knows better than :meth:`Connections.translate`, else None.
Refine = Callable[[psycopg.Error], StoreError | None]


class Connections:
    """A pool of connections to one database, and the translation of its failures.

    ``location`` names the database in messages (never with its password); ``schema``
    is named when the schema is missing. The pool opens with :meth:`open`.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        location: str,
        schema: str,
        pool_min: int,
        pool_max: int,
        connect_timeout: float,
    ) -> None:
        self.conninfo = conninfo
        self.location = location
        self.schema = schema
        self.pool_max = pool_max
        self.connect_timeout = connect_timeout
        self.closed = False
        self._close_lock = threading.Lock()
        self.pool: psycopg_pool.ConnectionPool[Connection] = psycopg_pool.ConnectionPool(
            conninfo,
            kwargs={"autocommit": True},
            min_size=pool_min,
            max_size=pool_max,
            timeout=connect_timeout,
            # Give up on a reconnection attempt as soon as a caller would: the next request
            # then tries at once, instead of waiting out the pool's backoff after an outage.
            reconnect_timeout=connect_timeout,
            name=f"chatledger {location}",
            open=False,
        )

    def open(self, *, wait: bool) -> None:
        """Open the pool (``wait``: until ``pool_min`` connections are up); an
        unreachable server is a :class:`StoreUnavailableError` saying why."""
        try:
            self.pool.open(wait=wait, timeout=self.connect_timeout)
        except psycopg.Error as exc:
            self.pool.close()
            raise self.unreachable(exc) from None

    def close(self) -> None:
        """Close the pool; later operations raise :class:`StoreError` (closed)."""
        with self._close_lock:
            if self.closed:
                return
            self.closed = True
        self.pool.close()

    def run(
        self,
        operation: Callable[[Connection, Progress], T],
        *,
        writing: bool,
        refine: Refine | None = None,
    ) -> T:
        """Run ``operation`` on a pooled connection, translating psycopg's errors.

        Pooled connections the server has closed (after a restart, all of them) are
        dropped before use. A read that fails with no answer on a dead connection is
        retried on another. A failure after ``progress.commit_sent`` on a lost connection
        raises :class:`OutcomeUnknown` for the caller to settle.
        """
        if self.closed:
            raise StoreError(f"the store {self.location} is closed")
        attempts = 0
        while True:
            progress = Progress(writing=writing)
            try:
                conn = self.pool.getconn()
            except psycopg_pool.PoolTimeout as exc:
                raise self.unreachable(exc, progress) from None
            except psycopg_pool.PoolClosed:
                raise StoreError(f"the store {self.location} is closed") from None
            try:
                if attempts <= self.pool_max and closed_by_server(conn):
                    attempts += 1
                    continue  # the pool replaces a closed connection
                return operation(conn, progress)
            except psycopg.Error as exc:
                failure, stale = exc, conn.broken and not progress.answered
            finally:
                self.pool.putconn(conn)
            # Translate outside the pool's hands: translating may need a connection.
            if progress.commit_sent and progress.backend_pid and connection_lost(failure):
                raise OutcomeUnknown(cause(failure), first_line(failure), progress.backend_pid)
            if stale and attempts <= self.pool_max:
                attempts += 1
                continue
            refined = refine(failure) if refine is not None else None
            raise (refined or self.translate(failure, progress)) from None

    @contextlib.contextmanager
    def direct(self) -> Iterator[Connection]:
        """A connection of its own (not pooled), in autocommit mode; psycopg's errors
        raised inside are translated."""
        try:
            conn = psycopg.connect(self.conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise self.unreachable(exc) from None
        try:
            with conn:
                yield conn
        except psycopg.Error as exc:
            raise self.translate(exc, Progress(writing=True)) from None

    def listener(self, listen: Any) -> Connection | None:
        """A dedicated connection that has run ``listen`` (a LISTEN statement), or None
        when it cannot be had now (the caller polls meanwhile)."""
        try:
            conn = psycopg.connect(self.conninfo, autocommit=True)
        except psycopg.Error:
            return None
        try:
            conn.execute(listen)
        except psycopg.Error:
            conn.close()
            return None
        return conn

    def unreachable(
        self, exc: BaseException, progress: Progress | None = None
    ) -> StoreUnavailableError:
        """No connection: say why (asking the server directly, if the pool only timed out)."""
        reason = first_line(exc)
        if isinstance(exc, psycopg_pool.PoolTimeout):
            try:
                psycopg.connect(self.conninfo, connect_timeout=2).close()
            except psycopg.Error as direct:
                reason = first_line(direct)
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

    def translate(self, exc: psycopg.Error, progress: Progress) -> StoreError:
        """psycopg's error as the library's, with what to do about it."""
        where = f"PostgreSQL at {self.location}"
        detail = first_line(exc)
        if connection_lost(exc):
            why = cause(exc)
            if progress.commit_sent:
                # Appends are settled before this (see PostgresStore._settle): this is
                # run_in_transaction.
                return StoreUnavailableError(
                    f"{why} while a transaction on {where} was committing ({detail}); it may "
                    "or may not have been committed. Read back what it wrote before retrying "
                    "(a projection runner does: its position is committed with its rows)"
                )
            if progress.writing:
                return StoreUnavailableError(
                    f"{why} during a write to {where} ({detail}); nothing was written "
                    "(the server rolls back an unfinished transaction). Retry once the server "
                    "is reachable"
                )
            return StoreUnavailableError(f"{why} while reading from {where} ({detail}); retry")
        if isinstance(exc, pg_errors.UniqueViolation) and exc.diag.constraint_name == (
            "events_event_id"
        ):
            return IntegrityError(
                f"an event id of this append is already used by another event in {where}; "
                "an idempotent retry must resend exactly the same events"
            )
        if isinstance(exc, psycopg.IntegrityError):  # SQLSTATE class 23
            return IntegrityError(f"{where}: {detail}")
        written = "; nothing was written" if progress.writing and not progress.commit_sent else ""
        if isinstance(exc, (pg_errors.SerializationFailure, pg_errors.DeadlockDetected)):
            return StoreUnavailableError(
                f"{where} rolled the transaction back ({detail}){written}. Retry"
            )
        if isinstance(exc, pg_errors.QueryCanceled):
            return StoreUnavailableError(
                f"{where} cancelled the statement ({detail}: statement_timeout, or "
                f"pg_cancel_backend){written}. Retry, or raise statement_timeout"
            )
        if isinstance(exc, pg_errors.LockNotAvailable):
            return StoreUnavailableError(f"{where}: {detail} (lock_timeout){written}. Retry")
        if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
            return StoreUnavailableError(
                f"{where} is read-only ({detail}): connect to the primary server{written}"
            )
        if isinstance(exc, pg_errors.DiskFull):
            return StoreUnavailableError(
                f"the disk of {where} is full ({detail}){written}; everything committed is "
                "intact. Free some space and retry"
            )
        if isinstance(exc, OUT_OF_RESOURCES):
            return StoreUnavailableError(
                f"{where} is out of resources ({detail}){written}. Retry later"
            )
        if isinstance(exc, pg_errors.InsufficientPrivilege):
            return StoreUnavailableError(
                f"{where}: permission denied ({detail}); grant the user access to the "
                f"{self.schema} schema"
            )
        if isinstance(exc, SCHEMA_MISSING):
            return StoreUnavailableError(
                f"{where}: the chatledger schema {self.schema!r} is missing or incomplete "
                f"({detail}); open the store again to create it"
            )
        return StoreError(f"{where}: {detail}")


# ----------------------------------------------------------------------------- helpers


def closed_by_server(conn: Connection) -> bool:
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


def connection_lost(exc: psycopg.Error) -> bool:
    """Whether ``exc`` means the connection is gone (or going), not that a statement failed."""
    return isinstance(exc, psycopg.InterfaceError) or (
        isinstance(exc, psycopg.OperationalError)
        and (not exc.sqlstate or isinstance(exc, CONNECTION_EXCEPTIONS + SESSION_ENDED))
    )


def cause(exc: psycopg.Error) -> str:
    """Why a connection was lost, in words for an error message."""
    if isinstance(exc, SESSION_ENDED):
        return "the server ended the session (shutdown, restart or pg_terminate_backend)"
    return "the connection to the server was lost"


def wait_for_notification(conn: Connection, timeout: float, stop: threading.Event | None) -> int:
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


def split_url(url: str) -> tuple[str, str | None]:
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


def location_of(params: dict[str, Any], schema: str) -> str:
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


def first_line(exc: BaseException) -> str:
    """An exception's message on one line, for quoting in the library's errors."""
    text = str(exc).strip() or type(exc).__name__
    text = text.removeprefix("connection failed: ")
    return " ".join(text.split())
