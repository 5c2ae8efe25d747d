"""The store contract every log backend implements, and the logic they share.

A store keeps streams of events, one stream per conversation, each with gapless
versions 1, 2, 3 ... and a store-wide ``position`` order. Backends implement a handful
of primitives (``_append``, ``_read``, ...); hashing, validation, idempotent retries and
subscriptions are written once here. Reading rows is :mod:`chatledger.events.rows`,
checking them :mod:`chatledger.events.verification`.
"""

from __future__ import annotations

import abc
import contextlib
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any, NamedTuple, Protocol, TypeVar, runtime_checkable

import msgspec

from ..errors import IntegrityError, InvalidInputError, StoreError
from .envelope import (
    NewEvent,
    RecordedEvent,
    canonical_json,
    spliced_event_hash,
    utc_now,
    validate_conversation_id,
    validate_event_id,
)
from .erasure import has_content, hashed_data, new_salt
from .kinds import ContentErased, ConversationStarted, EventData, data_to_builtins
from .memo import AppendMemo
from .rows import (
    HeadEvidence,
    RawRow,
    StreamRow,
    head_error,
    head_problem,
    parent_of_data,
    parent_of_rows,
)
from .rows import row_to_event as _row_to_event
from .tree import TreeRow, check_tree
from .verification import Problem, SnapshotRow, VerificationReport, verify_log_tables

__all__ = [
    "INLINE_READ_MODELS",
    "AdvancingReadModel",
    "EventStore",
    "InlineReadModel",
    "PreparedEvent",
    "Problem",
    "RawRow",
    "Snapshot",
    "StreamInfo",
    "SummaryAdvance",
    "TreeRow",
    "VerificationReport",
    "parent_of",
    "parent_of_rows",
    "prepared_rows",
]

T = TypeVar("T")
_Store = TypeVar("_Store", bound="EventStore")

_encode = msgspec.json.encode
_decode = msgspec.json.decode


class StreamInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a store knows of a stream without reading its events."""

    conversation_id: str
    version: int
    created_at: str
    updated_at: str
    parent_id: str | None = None
    parent_version: int | None = None


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """A projection's state at ``version`` of a stream, so a resume need not start at 1."""

    conversation_id: str
    name: str
    version: int
    state: bytes


class PreparedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event ready to be written: encoded, versioned and hashed."""

    conversation_id: str
    version: int
    event_id: str
    type: str
    schema_version: int
    data: bytes
    metadata: bytes
    recorded_at: str
    hash: str
    #: See :class:`~chatledger.events.rows.RawRow` (docs/erasure.md).
    content_salt: str | None = None


def prepared_rows(
    conversation_id: str, prepared: Sequence[PreparedEvent], positions: Sequence[int] = ()
) -> list[RawRow]:
    """``prepared`` as stored rows (what the read models apply and reads decode), at
    ``positions``; before the append has positions, 0 (the read models never look at
    them)."""
    if positions and len(positions) != len(prepared):
        raise ValueError(f"{len(positions)} positions for {len(prepared)} events")
    return [
        RawRow(
            conversation_id,
            event.version,
            positions[index] if positions else 0,
            event.event_id,
            event.type,
            event.schema_version,
            event.data,
            event.metadata,
            event.recorded_at,
            event.hash,
            event.content_salt,
        )
        for index, event in enumerate(prepared)
    ]


class EncodedEvent(NamedTuple):
    """A new event encoded once, before anything is written: ``data`` and ``metadata``
    as stored, and the canonical encodings of what the hash covers: the metadata a
    reader will decode, and the data with each content value replaced by its commitment
    under ``content_salt`` (None when the event holds no content; docs/erasure.md)."""

    event: NewEvent
    data: bytes
    metadata: bytes
    canonical_data: bytes
    canonical_metadata: bytes
    content_salt: str | None = None


class EncodedBatch(list[EncodedEvent]):
    """The encoded events of one append. A backend that wrote them records what it wrote
    with :func:`wrote`, so that :meth:`EventStore.just_appended` need not read it back."""

    written: list[PreparedEvent] | None = None


def wrote(events: Sequence[EncodedEvent], prepared: list[PreparedEvent]) -> None:
    """Record that ``prepared`` (numbered and chained ``events``) was written, at the
    point where a backend's append wrote them (not on an idempotent retry)."""
    if isinstance(events, EncodedBatch):
        events.written = prepared


#: Per thread: (store id, conversation id, positions, prepared events) of the last append.
_JUST_APPENDED = threading.local()


def parent_of(events: Sequence[EncodedEvent]) -> tuple[str | None, int | None]:
    """The parent stream and version named by a new stream's first event, if forked."""
    first = events[0][0].data
    if isinstance(first, ConversationStarted) and first.parent is not None:
        return first.parent.conversation_id, first.parent.version
    return None, None


#: The columns a backend reads for a head row checked against its events (see
#: :func:`checked_head`): the ``streams`` row, then the stream's highest version, the hash
#: and time of the event at the row's version, the time of version 1, and (only when the
#: parent is checked) version 1's ``type`` and ``data``.
HEAD_COLUMNS = (
    "conversation_id",
    "version",
    "head_hash",
    "created_at",
    "updated_at",
    "parent_id",
    "parent_version",
    "last_version",
    "event_hash",
    "event_recorded_at",
    "first_recorded_at",
    "first_type",
    "first_data",
)


def checked_head(location: str, row: Sequence[Any], *, with_parent: bool) -> StreamInfo:
    """A stream's head row (as :data:`HEAD_COLUMNS`) as a :class:`StreamInfo`, once
    checked against what its events say; :class:`IntegrityError` naming the conversation
    when they disagree. ``with_parent``: the row holds version 1's type
    and data, and its parent is checked too (a JSON decode of the first event)."""
    head = StreamRow(*row[:7])
    evidence = HeadEvidence(
        row[7],
        row[8],
        row[9],
        row[10],
        parent_of_data(row[11], row[12]) if with_parent else None,
    )
    problem = head_problem(head, evidence)
    if problem is not None:
        raise head_error(location, head.conversation_id, problem)
    return StreamInfo(
        conversation_id=str(head.conversation_id),
        version=head.version,
        created_at=str(head.created_at),
        updated_at=str(head.updated_at),
        parent_id=head.parent_id if isinstance(head.parent_id, str) else None,
        parent_version=(
            int(head.parent_version)
            if isinstance(head.parent_version, int) and not isinstance(head.parent_version, bool)
            else None
        ),
    )


def _difference(stored: RawRow, new: EncodedEvent) -> str | None:
    """What differs between a stored event and one appended again with its id, or None."""
    if stored.type != new.event.type:
        return f"another type ({stored.type!s:.60}, not {new.event.type})"
    if stored.schema_version != new.event.schema_version:
        return (
            f"another schema_version ({stored.schema_version!s:.20}, not "
            f"{new.event.schema_version})"
        )
    if stored.content_salt == "":
        return "data since erased (an erased event cannot be appended again)"
    for part, text, canonical in (
        ("data", stored.data, canonical_json(_decode(new.data))),
        ("metadata", stored.metadata, new.canonical_metadata),
    ):
        try:
            same = canonical_json(_decode(text) if text else {}) == canonical
        except (msgspec.DecodeError, RecursionError, UnicodeError, InvalidInputError):
            same = False
        if not same:
            return f"other {part}"
    return None


def _is_count(value: object) -> bool:
    """An int >= 0 (a bool is not a version)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class InlineReadModel(Protocol):
    """Tables a database store keeps up to date in each append's own transaction (the
    conversation read models of :mod:`chatledger.readmodels.conversations`, which
    registers itself in :data:`INLINE_READ_MODELS`; see docs/stores.md, "Read models").

    The store calls :meth:`appended` after writing an append's events (or an import's
    rows) and the stream's head, before COMMIT, and :meth:`rebuild_all` in the migration
    that creates the tables, so an existing log is filled in that migration. Both get
    the store's DB-API connection inside the transaction; an exception rolls the append
    back."""

    def appended(
        self,
        connection: Any,
        conversation_id: str,
        rows: Sequence[RawRow],
        memo: AppendMemo | None = None,
    ) -> None:
        """Update the tables for ``rows``, just written to ``conversation_id``. ``memo``:
        what this model may keep between appends of the store (an append's own, see
        :mod:`chatledger.events.memo`); None when the store gives none (an import)."""

    def rebuild_all(self, connection: Any) -> None:
        """Write the tables again from the log, for every conversation."""


class SummaryAdvance(NamedTuple):
    """What an append changes in a conversation's summary and contents rows, computed
    before the append from the summary's state (:meth:`AdvancingReadModel.advance`):
    a store that writes the rows itself, in the append's one statement (PostgreSQL),
    sends these."""

    model: str
    #: The first words of the new contents' first user message (kept only where the
    #: summary has no title yet).
    title: str
    turns: int
    created_at: str
    updated_at: str
    #: The new ``state`` column (JSON text).
    state: str
    #: The new contents rows: (span, turn, version, loaded, flags, contents, curated).
    contents: list[tuple[int, int, int, int, str, bytes, bytes | None]]


@runtime_checkable
class AdvancingReadModel(InlineReadModel, Protocol):
    """An inline read model that can compute an append's rows before the append."""

    def advance(self, state: str | None, rows: Sequence[RawRow]) -> SummaryAdvance | None:
        """The rows ``rows`` (about to be appended) make from a summary whose state is
        ``state`` (None: the stream is new); None when they need a fold of the log."""


#: The inline read models every SQLite store keeps (filled when :mod:`chatledger` is
#: imported: this layer never imports the read models itself).
INLINE_READ_MODELS: list[InlineReadModel] = []


class EventStore(abc.ABC):
    """The append-only log. One contract, tested once, for every backend.

    Thread-safe: one store object may be shared by the threads of a process; several
    processes (and, for PostgreSQL, hosts) may share the same underlying database.
    """

    #: A store URL or path describing where the log lives (never includes a password).
    location: str = ""
    #: Whether positions are gapless store-wide (so ``verify`` can detect deleted rows).
    gapless_positions: bool = False
    #: Whether the store keeps the Merkle tree's subtrees (``_tree_*``; docs/proofs.md).
    keeps_tree: bool = False

    # ----------------------------------------------------------------- the contract

    def append(
        self,
        conversation_id: str,
        events: Sequence[NewEvent],
        *,
        expected_version: int,
    ) -> list[int]:
        """Append ``events`` atomically after ``expected_version``; return their positions.

        ``expected_version`` is the version the stream must be at (0: it must not exist
        yet). On a mismatch, if every event id of ``events`` is already in this stream,
        this is a retry of an append that went through and the original positions are
        returned; otherwise :class:`ConcurrencyError` is raised and nothing is written.
        """
        validate_conversation_id(conversation_id)
        if not events:
            raise InvalidInputError("append needs at least one event")
        if not _is_count(expected_version):
            raise InvalidInputError("expected_version must be an integer >= 0")
        for event in events:
            if not isinstance(event, NewEvent):
                raise InvalidInputError(
                    f"events must be NewEvent objects, got {type(event).__name__}"
                )
        ids = [validate_event_id(event.event_id) for event in events]
        if len(set(ids)) != len(ids):
            raise InvalidInputError("the events of one append must have distinct event_ids")
        if expected_version == 0 and not isinstance(events[0].data, ConversationStarted):
            raise InvalidInputError("a conversation's first event must be conversation_started")
        # verify() rejects a conversation_started anywhere but version 1: never write one.
        if any(isinstance(event.data, ConversationStarted) for event in events[1:]) or (
            expected_version > 0 and isinstance(events[0].data, ConversationStarted)
        ):
            raise InvalidInputError("conversation_started can only be a conversation's first event")
        if any(isinstance(event.data, ContentErased) for event in events):
            raise InvalidInputError(
                "content_erased events are written by erase only (chatledger.erase, "
                "`chatledger erase`), which erases the content they record"
            )
        encoded = EncodedBatch(self._encode(event) for event in events)
        positions = self._append(conversation_id, encoded, expected_version)
        _JUST_APPENDED.last = (id(self), conversation_id, positions, encoded.written)
        return positions

    def just_appended(
        self, conversation_id: str, positions: list[int]
    ) -> list[RecordedEvent] | None:
        """The events that this thread's last :meth:`append` (which returned
        ``positions``) wrote to ``conversation_id``, as :meth:`read` would return them,
        without reading them back; None when this store cannot tell (an idempotent retry,
        another backend): then read them. Asked once per append."""
        last = getattr(_JUST_APPENDED, "last", None)
        _JUST_APPENDED.last = None
        if last is None:
            return None
        store, appended_to, appended_at, written = last
        if (
            store != id(self)
            or appended_to != conversation_id
            or appended_at is not positions
            or written is None
            or len(written) != len(positions)
        ):
            return None
        # Decoded and checked as a read decodes the rows; only the round trip is saved.
        return [_row_to_event(row) for row in prepared_rows(conversation_id, written, positions)]

    def read(
        self,
        conversation_id: str,
        *,
        after_version: int = 0,
        to_version: int | None = None,
    ) -> list[RecordedEvent]:
        """The events of one stream with ``after_version < version <= to_version``.

        An unknown conversation reads as an empty list. The versions read must follow on
        from ``after_version`` with no gap, in the stream asked for: a missing event (a
        damaged or edited database) is an IntegrityError, never a history silently
        without it.
        """
        validate_conversation_id(conversation_id)
        if not _is_count(after_version) or not (to_version is None or _is_count(to_version)):
            raise InvalidInputError("after_version and to_version must be integers >= 0")
        events = [
            _row_to_event(row) for row in self._read(conversation_id, after_version, to_version)
        ]
        for expected, event in enumerate(events, start=after_version + 1):
            if event.version != expected or event.conversation_id != conversation_id:
                raise IntegrityError(
                    f"{self.location}: conversation {conversation_id}: reading from version "
                    f"{after_version + 1}, found {event.conversation_id} v{event.version} where "
                    f"v{expected} belongs (events deleted, or the database damaged); nothing "
                    "was changed. Run `chatledger verify` to find every damaged event"
                )
        return events

    def read_all(self, *, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Up to ``limit`` events of every stream with ``position > after_position``, in
        position order. A reader following positions never misses an event committed
        later with a lower position."""
        if not _is_count(after_position):
            raise InvalidInputError("after_position must be an integer >= 0")
        if not _is_count(limit) or limit == 0:
            raise InvalidInputError("limit must be positive")
        rows = self._read_all(after_position, limit)
        last = after_position
        for row in rows:
            # Only a damaged file goes backwards; a reader following positions (subscribe)
            # would otherwise read the same events forever.
            if not isinstance(row.position, int) or row.position <= last:
                raise IntegrityError(
                    f"{self.location}: the positions go back from {last} to {row.position!r}: "
                    "the log is damaged; run verify"
                )
            last = row.position
        return [_row_to_event(row) for row in rows]

    def subscribe(
        self,
        after_position: int = 0,
        *,
        poll_interval: float = 0.05,
        stop: threading.Event | None = None,
        batch: int = 500,
    ) -> Iterator[RecordedEvent]:
        """Every event after ``after_position`` exactly once, in order: the log so far,
        then new events as they are committed, until ``stop`` is set.

        Resume after a restart by passing the position of the last event handled.
        """
        with contextlib.closing(
            self.subscribe_batches(
                after_position, poll_interval=poll_interval, stop=stop, batch=batch
            )
        ) as batches:
            for events in batches:
                yield from events

    def subscribe_batches(
        self,
        after_position: int = 0,
        *,
        poll_interval: float = 0.05,
        stop: threading.Event | None = None,
        batch: int = 500,
    ) -> Generator[list[RecordedEvent], None, None]:
        """:meth:`subscribe`, a page of up to ``batch`` events at a time (never an empty
        one), for consumers that handle events in batches: a projection runner commits
        each batch in one transaction."""
        position = after_position
        while stop is None or not stop.is_set():
            events = self.read_all(after_position=position, limit=batch)
            if events:
                yield events
                position = events[-1].position
            if len(events) < batch:
                self._wait_for_new(position, poll_interval, stop)

    def run_in_transaction(self, work: Callable[[Any], T]) -> T:
        """Run ``work(connection)`` in one transaction of the store's database and return
        its result: committed if ``work`` returns, rolled back if it raises.

        ``connection`` is the backend's DB-API connection (``sqlite3`` with ``?``
        placeholders; ``psycopg`` with ``%s``). It is for tables kept beside the log,
        such as a read model and the position it has reached, which then commit together
        (see :mod:`chatledger.readmodels`). Do not append events or call other
        methods of this store inside ``work``, and do not change the log's own tables.
        Database errors are raised as :class:`StoreError` subclasses. A store without a
        database (memory) raises :class:`StoreError`.
        """
        raise StoreError(
            f"{type(self).__name__} keeps no database to run a transaction in; "
            "use a SQLite or PostgreSQL store"
        )

    def run_read(self, work: Callable[[Any], T]) -> T:
        """Run ``work(connection)`` in one read-only transaction of the store's database
        (one consistent snapshot of every table, without taking the write lock) and
        return its result. Same connection and placeholders as :meth:`run_in_transaction`;
        ``work`` must not write. A store without a database raises :class:`StoreError`."""
        raise StoreError(f"{type(self).__name__} keeps no database to read a snapshot of")

    @abc.abstractmethod
    def stream_info(self, conversation_id: str) -> StreamInfo | None:
        """The stream's head and times, or None for an unknown conversation."""

    def conversations(
        self,
        *,
        limit: int | None = None,
        parent_id: str | None = None,
    ) -> list[StreamInfo]:
        """The streams, most recently updated first; with ``parent_id``, its direct forks."""
        if limit is not None and (not _is_count(limit) or limit == 0):
            raise InvalidInputError("limit must be a positive integer or None")
        if parent_id is not None:
            validate_conversation_id(parent_id)
        return self._conversations(limit, parent_id)

    @abc.abstractmethod
    def _conversations(self, limit: int | None, parent_id: str | None) -> list[StreamInfo]: ...

    @abc.abstractmethod
    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` (replacing an older one of the same name). Snapshots are a
        cache derived from the log, not part of it."""

    @abc.abstractmethod
    def delete_snapshot(self, conversation_id: str, name: str) -> bool:
        """Forget the snapshot of that name, if any (a snapshot found not to match the
        log is deleted, then written again). Returns whether there was one."""

    @abc.abstractmethod
    def load_snapshot(self, conversation_id: str, name: str) -> Snapshot | None:
        """The latest snapshot of that name, or None."""

    def verify(self, conversation_id: str | None = None) -> VerificationReport:
        """Check hash chains and envelope invariants of one stream or of every stream
        (see :mod:`chatledger.events.verification`).

        Every problem names the event where it was found. The log is never modified.
        """
        report = verify_log_tables(self, conversation_id)
        if conversation_id is None and self.keeps_tree:
            report.problems.extend(self._tree_problems())
        return report

    def _tree_problems(self) -> list[Problem]:
        """The stored Merkle subtrees that disagree with the events (see
        :func:`chatledger.proofs.tree.check_tree`): proofs are made from them."""
        try:
            problems = check_tree(self).stored_problems
        except IntegrityError:
            # An event's hash is damaged (not hex): the chains' check names that event,
            # and no tree can be recomputed to compare the stored one with.
            return []
        return [Problem(conversation_id="(merkle tree)", version=None, reason=p) for p in problems]

    def import_stream(self, conversation_id: str, rows: Sequence[RawRow]) -> list[int]:
        """Write a stream exactly as given: versions, event ids, times, metadata and hashes
        kept, positions assigned by this store. For imports (see
        :func:`chatledger.events.audit.import_lines`, which verifies first).

        If the store already has the stream, the rows must continue it: the stored events
        must be the rows' first ones (same ids and hashes); only the rest is written.
        Returns the positions of the rows written.
        """
        validate_conversation_id(conversation_id)
        rows = sorted(rows, key=lambda row: row.version)
        if not rows or [row.version for row in rows] != list(range(1, len(rows) + 1)):
            raise IntegrityError(f"{conversation_id}: an imported stream needs versions 1..n")
        if any(row.conversation_id != conversation_id for row in rows):
            raise IntegrityError(f"{conversation_id}: rows of another conversation in its import")
        stored = self._read(conversation_id, 0, None)
        if [(r.event_id, r.hash) for r in stored] != [
            (r.event_id, r.hash) for r in rows[: len(stored)]
        ]:
            raise IntegrityError(
                f"conversation {conversation_id} is already in {self.location} with different "
                "events; nothing was imported"
            )
        if len(stored) >= len(rows):
            return []
        return self._import_rows(conversation_id, rows[len(stored) :], len(stored))

    def _import_rows(
        self, conversation_id: str, rows: list[RawRow], after_version: int
    ) -> list[int]:
        """Insert pre-hashed ``rows`` (versions after ``after_version``) atomically; fail
        with ConcurrencyError if the stream is no longer at ``after_version``."""
        raise StoreError(f"{type(self).__name__} cannot import streams yet")

    def _erase_rows(
        self, erasures: Sequence[tuple[int, str, bytes]], snapshots_of: Sequence[str]
    ) -> int:
        """In one transaction: give each event at ``position`` whose content salt is still
        ``salt`` the erased ``data`` (and an empty salt), and delete every snapshot of the
        conversations ``snapshots_of``. Returns how many events were erased (one already
        erased meanwhile is skipped). See :mod:`chatledger.events.erasing`."""
        raise StoreError(f"{type(self).__name__} cannot erase content")

    def _purge_erased(self, vacuum: bool) -> list[str]:
        """Make erased content unreadable from the database's files (docs/erasure.md);
        returns notes on what could not be done, or remains to be done."""
        return []

    def _secure_deletes(self) -> contextlib.AbstractContextManager[None]:
        """While this is entered, what this store's connection deletes or overwrites is
        zeroed in its files, not left in free space (the erasure hooks run under it)."""
        return contextlib.nullcontext()

    def close(self) -> None:  # noqa: B027 - optional for backends
        """Release connections. The store cannot be used afterwards."""

    def __enter__(self: _Store) -> _Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- backend primitives

    @abc.abstractmethod
    def _append(
        self, conversation_id: str, events: list[EncodedEvent], expected_version: int
    ) -> list[int]:
        """Atomically check the head, chain, and write. Use :meth:`_prepare` for rows."""

    @abc.abstractmethod
    def _read(
        self, conversation_id: str, after_version: int, to_version: int | None
    ) -> list[RawRow]: ...

    @abc.abstractmethod
    def _read_all(self, after_position: int, limit: int) -> list[RawRow]: ...

    @abc.abstractmethod
    def _stream_ids(self) -> list[str]: ...

    @abc.abstractmethod
    def _rows_with_event_ids(self, event_ids: Sequence[str]) -> list[RawRow]:
        """The stored events whose ids are among ``event_ids`` (any stream, any order)."""

    @abc.abstractmethod
    def _stream_rows(self, conversation_id: str | None) -> list[StreamRow]:
        """The head rows as stored (of one stream, or all), for ``verify`` to check."""

    @abc.abstractmethod
    def _snapshot_rows(self, conversation_id: str | None) -> list[SnapshotRow]:
        """The snapshots' anchors (of one stream, or all), for ``verify`` to check."""

    def _schema_problems(self) -> list[str]:
        """What is missing or changed in the database's schema (the triggers that keep
        events immutable, the unique indexes, the recorded migrations...), for a
        whole-log ``verify``. A store without a schema has nothing to say."""
        return []

    def _wait_for_new(
        self, position: int, poll_interval: float, stop: threading.Event | None
    ) -> None:
        if stop is not None:
            stop.wait(poll_interval)
        else:
            time.sleep(poll_interval)

    # ----------------------------------------------------------------- the Merkle tree
    # The tree over the log (chatledger.proofs.tree, docs/proofs.md) keeps the hashes of
    # its complete subtrees of 256 leaves and more in a table of its own, beside the log:
    # a cache that verification recomputes and never trusts. A row is (level, index,
    # hash, last_position): the subtree of leaves [index * 2**level, (index + 1) *
    # 2**level) and the position of its last leaf.

    def _leaf_rows(self, after_position: int, limit: int) -> list[tuple[int, str]]:
        """``(position, hash)`` of up to ``limit`` events after ``after_position``, in
        position order: exactly the events :meth:`read_all` would return."""
        return [(row.position, row.hash) for row in self._read_all(after_position, limit)]

    def _tree_nodes(self, nodes: Sequence[tuple[int, int]]) -> dict[tuple[int, int], TreeRow]:
        """The stored subtree rows among ``nodes`` (``(level, index)`` pairs)."""
        raise StoreError(f"{type(self).__name__} keeps no Merkle tree")

    def _tree_frontier(self, level: int) -> TreeRow | None:
        """The stored subtree of ``level`` with the highest index, or None."""
        raise StoreError(f"{type(self).__name__} keeps no Merkle tree")

    def _tree_before(self, level: int, position: int) -> TreeRow | None:
        """The stored subtree of ``level`` with the highest index whose last leaf is
        before ``position``, or None."""
        raise StoreError(f"{type(self).__name__} keeps no Merkle tree")

    def _tree_put(self, rows: Sequence[TreeRow]) -> None:
        """Keep these subtree rows; a row already kept is left as it is (two extenders
        compute the same rows from the same events)."""
        raise StoreError(f"{type(self).__name__} keeps no Merkle tree")

    # ----------------------------------------------------------------- shared logic

    @staticmethod
    def _encode(event: NewEvent) -> EncodedEvent:
        """Encode data and metadata once, failing before anything is written."""
        if not isinstance(event.data, EventData):
            raise InvalidInputError(
                f"event data must be an event kind, got {type(event.data).__name__}"
            )
        if not isinstance(event.metadata, dict):
            raise InvalidInputError(f"metadata must be a dict, got {type(event.metadata).__name__}")
        try:
            builtins = data_to_builtins(event.data)
            data = _encode(builtins)
            metadata = _encode(event.metadata)
            decoded_data, decoded_metadata = _decode(data), _decode(metadata)
            # The usual case: what a reader will decode equals what was given (no NaN,
            # which msgspec writes as null; no tuple, set or non-string key), so the
            # canonical encoding of the decoded values is the only one needed.
            if decoded_data == builtins and decoded_metadata == event.metadata:
                salt = new_salt() if has_content(event.type, decoded_data) else None
                return EncodedEvent(
                    event,
                    data,
                    metadata,
                    canonical_json(hashed_data(event.type, decoded_data, salt)),
                    canonical_json(decoded_metadata),
                    salt,
                )
        except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError):
            pass  # the careful path below names the problem
        try:
            builtins = data_to_builtins(event.data)
            # msgspec would write NaN and infinity as null (which may not even read back),
            # and a set or bytes in metadata as a list or base64: refuse what the canonical
            # (hashed) encoding refuses.
            for part, value in (("data", builtins), ("metadata", event.metadata)):
                try:
                    canonical_json(value)
                except InvalidInputError as exc:
                    raise ValueError(f"its {part} {str(exc).removeprefix('event data ')}") from None
            data = _encode(builtins)
            metadata = _encode(event.metadata)
            # Hash what a reader will decode, so verification is exact.
            decoded_data = _decode(data)
            salt = new_salt() if has_content(event.type, decoded_data) else None
            canonical_data = canonical_json(hashed_data(event.type, decoded_data, salt))
            canonical_metadata = canonical_json(_decode(metadata))
        except (
            TypeError,
            ValueError,
            OverflowError,
            RecursionError,
            msgspec.EncodeError,
            msgspec.DecodeError,
            InvalidInputError,
        ) as exc:
            raise InvalidInputError(f"{event.type} event cannot be stored as JSON: {exc}") from None
        return EncodedEvent(event, data, metadata, canonical_data, canonical_metadata, salt)

    @staticmethod
    def _prepare(
        conversation_id: str,
        encoded: list[EncodedEvent],
        start_version: int,
        prev_hash: str,
        recorded_at: str | None = None,
    ) -> list[PreparedEvent]:
        """Number and chain events after ``start_version`` / ``prev_hash``."""
        now = recorded_at or utc_now()
        prepared: list[PreparedEvent] = []
        for offset, (
            event,
            data,
            metadata,
            canonical_data,
            canonical_metadata,
            content_salt,
        ) in enumerate(encoded, start=1):
            version = start_version + offset
            digest = spliced_event_hash(
                conversation_id=conversation_id,
                version=version,
                event_id=event.event_id,
                type=event.type,
                schema_version=event.schema_version,
                canonical_data=canonical_data,
                canonical_metadata=canonical_metadata,
                recorded_at=now,
                prev_hash=prev_hash,
            )
            prepared.append(
                PreparedEvent(
                    conversation_id=conversation_id,
                    version=version,
                    event_id=event.event_id,
                    type=event.type,
                    schema_version=event.schema_version,
                    data=data,
                    metadata=metadata,
                    recorded_at=now,
                    hash=digest,
                    content_salt=content_salt,
                )
            )
            prev_hash = digest
        return prepared

    def _retried_positions(
        self,
        conversation_id: str,
        event_ids: Sequence[str],
        events: Sequence[EncodedEvent] | None = None,
    ) -> list[int] | None:
        """Positions of an earlier identical append, or None if these ids are new.

        A retry is a no-op only when it resends the same events: the same ids, in the same
        conversation at consecutive versions, and (when ``events`` are given) the same
        type, schema version, data and metadata. Anything else raises IntegrityError
        naming the event and what differs: silently keeping the old event would drop
        the new one.
        """
        stored = {row.event_id: row for row in self._rows_with_event_ids(event_ids)}
        if not stored:
            return None
        missing = [eid for eid in event_ids if eid not in stored]
        elsewhere = [eid for eid, row in stored.items() if row.conversation_id != conversation_id]
        if missing or elsewhere:
            raise IntegrityError(
                f"event ids {sorted(stored)[:3]} were already appended"
                + (
                    f" to another conversation ({stored[elsewhere[0]].conversation_id!r})"
                    if elsewhere
                    else ""
                )
                + (f", but {missing[:3]} were not" if missing else "")
                + ": an idempotent retry must resend exactly the same events; nothing was "
                "written"
            )
        versions = [stored[eid].version for eid in event_ids]
        if versions != list(range(versions[0], versions[0] + len(versions))):
            raise IntegrityError(
                f"event ids {list(event_ids)[:3]} were already appended, but not as one "
                "append (they are not consecutive in their stream): an idempotent retry must "
                "resend exactly the same events; nothing was written"
            )
        for new in events or ():
            difference = _difference(stored[new.event.event_id], new)
            if difference is not None:
                raise IntegrityError(
                    f"event id {new.event.event_id!r} was already appended to {conversation_id} "
                    f"(v{stored[new.event.event_id].version}) with {difference}: an idempotent "
                    "retry must resend exactly the same events, and new events need new ids; "
                    "nothing was written"
                )
        return [stored[eid].position for eid in event_ids]

    def _find_event_ids(self, event_ids: Sequence[str]) -> dict[str, tuple[str, int, int]]:
        """Map each stored event id among ``event_ids`` to (conversation_id, version, position)."""
        return {
            row.event_id: (row.conversation_id, row.version, row.position)
            for row in self._rows_with_event_ids(event_ids)
        }
