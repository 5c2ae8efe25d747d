"""What an inline read model may keep in memory between the appends of one store.

An append's read-model work starts from what the tables hold for its conversation (for
the conversation read models: the summary row and its decoded ``state``). Reading and
decoding that again on every append is most of the read model's cost, although the
store's own connection wrote it one append earlier. An :class:`AppendMemo` keeps what a
read model wrote, per key, for the next append of the same store, as long as it is
certain to be what the database holds:

- **Only what committed.** What a read model leaves in an open transaction is staged;
  the store moves it into the memo after its COMMIT, and drops it when the transaction
  (or the append's savepoint in a group) rolls back.
- **Only while no other connection wrote.** SQLite's ``PRAGMA data_version`` changes
  when another connection (another process, or another store on the same file) commits,
  and only then. It is read once per write transaction, under the write lock, before the
  memo is first used in it: if it moved since the memo was filled, everything in the memo
  is forgotten.
- **Only while this connection wrote nothing else.** Every write of the store's own
  connection other than an append (an import, an erasure, a rebuild, a migration, any
  :meth:`~chatledger.events.store.EventStore.run_in_transaction`) clears the memo.
- **Taken, not shared.** :meth:`take` removes an entry: the read model may change the
  object in place, and must :meth:`put` what it then wrote. An entry is never both in the
  memo and in a read model's hands, so a failure half-way leaves nothing behind.

A miss is always safe: the read model reads the tables, as it would without a memo.
"""

from __future__ import annotations

import sqlite3
from typing import Any

__all__ = ["AppendMemo"]


class AppendMemo:
    """A transactional in-memory cache of read-model state for one SQLite connection
    (see the module docstring). Not thread-safe: the store uses it under its lock."""

    #: The most entries kept (the least recently written are forgotten first).
    MAX_ENTRIES = 512

    __slots__ = ("_checked", "_connection", "_entries", "_staged", "_touched", "_version")

    def __init__(self) -> None:
        self._entries: dict[Any, Any] = {}
        self._staged: dict[Any, Any] = {}
        self._version: int | None = None
        self._connection: sqlite3.Connection | None = None
        self._checked = False
        #: The keys taken or put since :meth:`mark` (one append of a group).
        self._touched: set[Any] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def begin(self, connection: sqlite3.Connection) -> None:
        """A write transaction of ``connection`` began (the store holds its write lock)."""
        self._staged.clear()
        self._touched.clear()
        self._connection = connection
        self._checked = False

    def mark(self) -> None:
        """One append of the transaction starts (under its own savepoint in a group)."""
        self._touched.clear()

    def forget_marked(self) -> None:
        """The append since :meth:`mark` failed and its savepoint was rolled back: forget
        every key it took or put (what it took may have been changed in place)."""
        for key in self._touched:
            self.discard(key)
        self._touched.clear()

    def _check(self) -> None:
        """Forget everything if another connection committed since the memo was filled;
        once per transaction, under the write lock."""
        if self._checked:
            return
        self._checked = True
        if self._connection is None:
            self._entries.clear()
            return
        version = self._connection.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:
            self._entries.clear()
            self._version = version

    def take(self, key: Any) -> Any | None:
        """The entry of ``key`` as the database holds it in this transaction, removed
        from the memo (None: not known; read the tables)."""
        if self._connection is None:
            return None
        self._check()
        self._touched.add(key)
        if key in self._staged:
            return self._staged.pop(key)
        return self._entries.pop(key, None)

    def put(self, key: Any, value: Any) -> None:
        """What the read model just wrote for ``key`` in this transaction."""
        if self._connection is None:
            return
        self._check()
        self._touched.add(key)
        self._staged[key] = value

    def discard(self, key: Any) -> None:
        """Forget ``key`` (its rows were written some other way, or its write failed)."""
        self._staged.pop(key, None)
        self._entries.pop(key, None)

    def commit(self) -> None:
        """The transaction committed: what it staged is now what the database holds."""
        entries = self._entries
        for key, value in self._staged.items():
            entries.pop(key, None)
            entries[key] = value  # the most recently written last
        self._staged.clear()
        self._touched.clear()
        self._connection = None
        while len(entries) > self.MAX_ENTRIES:
            del entries[next(iter(entries))]

    def rollback(self) -> None:
        """The transaction rolled back: nothing it staged was written."""
        self._staged.clear()
        self._touched.clear()
        self._connection = None

    def clear(self) -> None:
        """Forget everything (the connection wrote something other than an append)."""
        self._entries.clear()
        self._staged.clear()
        self._touched.clear()
        self._connection = None
