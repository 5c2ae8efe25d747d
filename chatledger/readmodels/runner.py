"""The projection runner: keep read models beside the log up to date, exactly once.

A :class:`ProjectionRunner` follows the store (:meth:`EventStore.subscribe_batches`:
catch-up, then live) and hands each batch of events to a :class:`ReadModel`, which writes
its tables through a :class:`Transaction`. The position the read model has reached is
stored in the same transaction as its rows (table ``chatledger_projections``), through
:meth:`EventStore.run_in_transaction`, so a crash at any point leaves both as they were
after the last committed batch: a restarted runner neither skips an event nor applies
one twice. Several runners of the same read model may run at once (on several hosts):
each batch moves the stored position with a compare-and-set, and a runner that finds it
moved resumes from there.

The example read model is :class:`~chatledger.readmodels.token_usage.TokenUsageByModel`.
"""

from __future__ import annotations

import abc
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from ..errors import IntegrityError, InvalidInputError
from ..events.envelope import RecordedEvent, utc_now
from ..events.store import EventStore

__all__ = ["POSITIONS_TABLE", "ProjectionRunner", "ReadModel", "Transaction", "qmark_to_format"]

POSITIONS_TABLE = "chatledger_projections"


class Cursor(Protocol):
    """What :meth:`Transaction.execute` returns (a sqlite3 or psycopg cursor)."""

    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Transaction:
    """One transaction of the store's database, as a read model writes through it.

    :meth:`execute` takes SQL with ``?`` placeholders on both databases (on PostgreSQL
    they become psycopg's ``%s``; a ``?`` inside a quoted string or identifier is left
    alone, so write PostgreSQL's ``?`` jsonb operators as functions). ``connection`` is
    the underlying sqlite3 or psycopg connection, and ``dialect`` says which.
    """

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.dialect = "sqlite" if isinstance(connection, sqlite3.Connection) else "postgresql"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        if self.dialect == "postgresql":
            sql = qmark_to_format(sql)
        cursor: Cursor = self.connection.execute(sql, tuple(params))
        return cursor


def qmark_to_format(sql: str) -> str:
    """``?`` placeholders to ``%s`` (and ``%`` to ``%%``), outside quotes."""
    out: list[str] = []
    quote = ""
    for char in sql:
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "?":
            out.append("%s")
            continue
        if char == "%":
            out.append("%%")
            continue
        out.append(char)
    return "".join(out)


class ReadModel(abc.ABC):
    """Tables derived from the log, kept in the store's database by a runner."""

    #: Unique among the read models of a store: the runner's position is kept under it.
    name: str = ""

    @abc.abstractmethod
    def setup(self, tx: Transaction) -> None:
        """Create the tables if they are missing (runs before every start)."""

    @abc.abstractmethod
    def handle(self, tx: Transaction, events: list[RecordedEvent]) -> None:
        """Apply a batch of events, in position order, in the runner's transaction."""

    def reset(self, tx: Transaction) -> None:  # noqa: B027 - optional for read models
        """Empty the tables (after :meth:`setup`): the runner starts the read model from
        the log's first event, because it has no position for it (a first run, or its
        position row was deleted). Override it: rows kept from before would be counted
        again."""


class _Moved(Exception):
    """Another runner of the same read model advanced the stored position."""


class ProjectionRunner:
    """Feeds a read model every event of ``store``, exactly once, in order.

    ``batch`` is the most events handled in one transaction. The store must keep a
    database (SQLite or PostgreSQL): the read model's tables live beside the log.
    """

    def __init__(self, store: EventStore, read_model: ReadModel, *, batch: int = 500) -> None:
        if not read_model.name or not read_model.name.isprintable():
            raise InvalidInputError("a read model needs a printable name")
        if not isinstance(batch, int) or batch < 1:
            raise InvalidInputError("batch must be a positive integer")
        self.store = store
        self.read_model = read_model
        self.batch = batch
        self._ready = False

    def setup(self) -> None:
        """Create the positions table and the read model's tables (idempotent). A read
        model with no position row starts from the first event, its tables emptied
        (:meth:`ReadModel.reset`): its position and its rows are one unit."""

        def work(connection: Any) -> None:
            tx = Transaction(connection)
            if tx.dialect == "postgresql":
                # CREATE TABLE IF NOT EXISTS races with itself: one runner at a time.
                tx.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (POSITIONS_TABLE,))
            tx.execute(
                f"CREATE TABLE IF NOT EXISTS {POSITIONS_TABLE} (name TEXT PRIMARY KEY, "
                "position BIGINT NOT NULL, updated_at TEXT NOT NULL)"
            )
            created = tx.execute(
                f"INSERT INTO {POSITIONS_TABLE} (name, position, updated_at) VALUES (?, 0, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (self.read_model.name, utc_now()),
            ).rowcount
            self.read_model.setup(tx)
            if created == 1:
                self.read_model.reset(tx)

        self.store.run_in_transaction(work)
        self._ready = True

    @property
    def position(self) -> int:
        """The position of the last event the read model has applied (committed).

        Raises :class:`IntegrityError` when the stored position is missing (its row was
        deleted while the runner ran), not a position, or past the log's last event (the
        log was restored from an older backup, or the row edited): the read model cannot
        know which events it holds, and going on would skip or repeat them."""
        if not self._ready:
            self.setup()

        def work(connection: Any) -> object:
            row = (
                Transaction(connection)
                .execute(
                    f"SELECT position FROM {POSITIONS_TABLE} WHERE name = ?",
                    (self.read_model.name,),
                )
                .fetchone()
            )
            return row[0] if row else None

        position = self.store.run_in_transaction(work)
        if position is None:
            raise self._damaged(
                f"its position is missing from {POSITIONS_TABLE} (the row was deleted while it ran)"
            )
        if not isinstance(position, int) or isinstance(position, bool) or position < 0:
            raise self._damaged(
                f"its position in {POSITIONS_TABLE} is {position!r:.40}, not a position"
            )
        if position > 0:
            found = self.store.read_all(after_position=position - 1, limit=1)
            if not found or found[0].position != position:
                raise self._damaged(
                    f"its position in {POSITIONS_TABLE} is {position}, but the log has no "
                    f"event at position {position} (the log was restored from an older "
                    "backup than the read model, or the row edited)"
                )
        return position

    def _damaged(self, reason: str) -> IntegrityError:
        return IntegrityError(
            f"read model {self.read_model.name!r} in {self.store.location}: {reason}. It "
            "cannot know which events it holds; nothing was applied. Rebuild it from the "
            f"log: delete its row from {POSITIONS_TABLE} and run the runner again (it "
            "starts from the first event, its tables emptied)"
        )

    def run_once(self) -> int:
        """Apply every event committed so far; return how many were applied."""
        position, applied = self.position, 0
        while True:
            events = self.store.read_all(after_position=position, limit=self.batch)
            if not events:
                return applied
            try:
                position = self._apply(position, events)
                applied += len(events)
            except _Moved:
                position = self.position

    def run(self, *, stop: threading.Event | None = None, poll_interval: float = 0.05) -> None:
        """Follow the store until ``stop`` is set: catch up, then apply new events as
        they are committed. Errors (a store that became unreachable) are raised; call
        ``run`` again to resume from the last committed batch."""
        while stop is None or not stop.is_set():
            position = self.position
            batches = self.store.subscribe_batches(
                position, stop=stop, poll_interval=poll_interval, batch=self.batch
            )
            try:
                for events in batches:
                    position = self._apply(position, events)
                return
            except _Moved:
                continue  # another runner got there first: resume from its position
            finally:
                batches.close()

    def _apply(self, after: int, events: list[RecordedEvent]) -> int:
        """Apply ``events`` and move the position from ``after``, in one transaction."""
        last = events[-1].position

        def work(connection: Any) -> None:
            tx = Transaction(connection)
            # First: takes the row's lock on PostgreSQL, so a second runner waits here.
            moved = tx.execute(
                f"UPDATE {POSITIONS_TABLE} SET position = ?, updated_at = ? "
                "WHERE name = ? AND position = ?",
                (last, utc_now(), self.read_model.name, after),
            ).rowcount
            if moved != 1:
                raise _Moved
            self.read_model.handle(tx, events)

        self.store.run_in_transaction(work)
        return last
