"""The PostgreSQL store: one log for many processes and hosts, with live subscriptions.

Connections come from a psycopg 3 pool (``pool_min`` .. ``pool_max``), in autocommit
mode with explicit transactions. Durability is the server's: with PostgreSQL's defaults
(``fsync = on``, ``synchronous_commit = on``) an append has returned only once its commit
is flushed to the server's WAL. Concurrent appends share WAL flushes (group commit),
because nothing below holds a lock from one append's first write until its commit.

The schema (``chatledger_migrations``, ``events``, ``streams``, ``snapshots``,
``merkle_nodes``, the read models' two tables, four functions) is created by named, ordered migrations (:mod:`.schema`), applied under a
transaction-level advisory lock so that several processes opening a fresh database at
once are safe. A
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
While it listens, a subscriber's connection holds a shared advisory lock
(``LISTENERS_LOCK_CLASS``, keyed by its channel; released when its session ends); the
append's post-commit statement try-locks it exclusively and, when that succeeds (nobody
listens), sends no NOTIFY, so a log without subscribers pays for none. A subscriber
reads once more after it listens: an append that committed before it registered is read
then.

The conversation read models (``chat_summaries``, ``chat_contents``) are written in the
append's transaction: ``chatledger_append_summarised`` appends as ``chatledger_append``
does, then advances the summary from the state the caller computed its rows from (only
if the row still holds that state: version, head hash, md5) and inserts the new contents
rows; otherwise the append rolls back and is redone in a transaction where the read
models fold (``PostgresStore._write_folded``). See docs/stores.md, "Read models".

Connections (:mod:`.connection`): pooled connections the server has closed (after a
restart, all of them) are dropped before use, and a read that fails on a dead connection
without an answer is retried on another. When an append's connection is lost, the store settles what
happened: once the server no longer lists the old session, its transaction is over, so
the events are either there (the append succeeded, and returns its positions) or never
will be (:class:`StoreUnavailableError`, "nothing was written"). If the server cannot
be asked (it is down), the error says so: re-appending the same events (the same event
ids) then writes them, or returns the original positions if the first attempt went
through.

The package: :mod:`.schema` (migrations), :mod:`.connection` (the pool, lost connections,
psycopg's errors as the library's) and :mod:`.store` (the SQL of appends, reads,
snapshots and subscriptions). ``docs/stores.md`` says the same for users.
"""

from __future__ import annotations

from .schema import (
    LISTENERS_LOCK_CLASS,
    MIGRATIONS,
    MIGRATIONS_LOCK_CLASS,
    POSITIONS_LOCK_CLASS,
)
from .store import PostgresStore

__all__ = [
    "LISTENERS_LOCK_CLASS",
    "MIGRATIONS",
    "MIGRATIONS_LOCK_CLASS",
    "POSITIONS_LOCK_CLASS",
    "PostgresStore",
]
