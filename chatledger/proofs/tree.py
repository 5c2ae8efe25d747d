"""The Merkle tree over a store's events, kept in the store, and its verification.

The leaves are the store's events in :meth:`~chatledger.events.store.EventStore.read_all`
order, each leaf's input the event's 32-byte hash; leaf *i* is the (*i* + 1)-th event
(its rank, not its position: PostgreSQL's positions may have gaps). The store keeps the
hashes of the complete subtrees of 256 leaves and more (``merkle_nodes``), each with the
position of its last leaf, so that a leaf's rank and the leaves under a subtree are found
with an index lookup.

The table is kept **lazily**: appends never touch it. :meth:`StoreTree.update` (called by
every checkpoint, head and proof) reads the events after the last complete block of 256
leaves, hashes them onto the right edge and inserts the subtrees they complete, with an
insert that keeps a row already there: concurrent updaters compute the same rows from the
same events. On PostgreSQL only events below the visibility horizon ``read_all`` uses are
read, so a transaction committing late with a lower position can never reorder leaves.

Verification never trusts the table: :func:`check_tree` recomputes the tree from the
events themselves, compares it with a signed checkpoint's size and root, and compares the
stored subtrees with it. See ``docs/proofs.md``.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import IntegrityError, InvalidInputError, NotFoundError
from ..events.tree import BATCH, BLOCK_LEVEL, TreeCheck, TreeRow, check_tree, leaf_input
from .checkpoint import Checkpoint, SignedCheckpoint, make_checkpoint
from .merkle import (
    EMPTY_ROOT,
    MAX_TREE_SIZE,
    CompactRange,
    ConsistencyProof,
    InclusionProof,
    Node,
    TreeHead,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
)
from .note import Signer
from .sinks import Checkpointer, CheckpointSink

if TYPE_CHECKING:
    from ..events.store import EventStore

__all__ = [
    "BLOCK_LEVEL",
    "LocatedEvent",
    "StoreTree",
    "TreeCheck",
    "check_tree",
    "checkpoint_problem",
    "verify_checkpoints",
]

_BLOCK = 1 << BLOCK_LEVEL


@dataclass(frozen=True)
class LocatedEvent:
    """An event's place in the tree: its leaf index and leaf input (the event's hash)."""

    event_id: str
    conversation_id: str
    version: int
    position: int
    leaf_index: int
    leaf: bytes


class StoreTree:
    """The RFC 9162 Merkle tree over every event of ``store``, kept in the store.

    A :class:`~chatledger.proofs.merkle.HashSource`: roots and proofs read the stored
    subtrees and at most 255 leaves under each missing one. Every method that needs the
    tree first extends it with the events appended since (:meth:`update`).

    ``store`` is a SQLite, PostgreSQL or memory store.
    """

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._known: TreeHead | None = None  # the head the last update() returned
        self._edge: CompactRange | None = None  # its right edge, and the position of its
        self._after = 0  # last leaf: the next update reads only the events after it

    # -- the HashSource protocol -----------------------------------------------------------

    def subtree_hashes(self, nodes: Collection[Node]) -> Mapping[Node, bytes]:
        """The stored hashes of those of ``nodes`` the store keeps."""
        return {node: row.hash for node, row in self.store._tree_nodes(list(nodes)).items()}

    def leaf_hashes(self, start: int, end: int) -> Sequence[bytes]:
        """The leaf hashes of leaves ``[start, end)``, read from the events."""
        return [leaf_hash(value) for value in self._leaf_inputs(start, end)]

    def _leaf_inputs(self, start: int, end: int) -> list[bytes]:
        if end <= start:
            return []
        block = start >> BLOCK_LEVEL
        after = 0
        if block:
            row = self.store._tree_nodes([(BLOCK_LEVEL, block - 1)]).get((BLOCK_LEVEL, block - 1))
            if row is None:
                raise IntegrityError(
                    f"{self.store.location}: the Merkle tree's table lacks the subtree of leaves "
                    f"[{(block - 1) << BLOCK_LEVEL}, {block << BLOCK_LEVEL}): it was changed. "
                    "Run `chatledger verify`; deleting the table's rows (DELETE FROM "
                    "merkle_nodes) lets the next checkpoint rebuild it from the events"
                )
            after = row.last_position
        first = block << BLOCK_LEVEL
        rows = self.store._leaf_rows(after, end - first)
        return [leaf_input(position, value) for position, value in rows[start - first :]]

    # -- keeping the tree ------------------------------------------------------------------

    def update(self) -> TreeHead:
        """Extend the stored tree with every event appended since; return its head.

        Costs O(N + log size) for N new events: the first call reads the right edge from
        about ``log2(size)`` stored subtrees and the events after the last complete block
        of 256; later calls on this object keep the edge in memory and read only the
        events appended since (one query when there are none).
        """
        store = self.store
        with self._lock:
            if self._edge is not None:
                edge, after = self._edge.copy(), self._after
            else:
                frontier = store._tree_frontier(BLOCK_LEVEL)
                if frontier is None:
                    edge, after = CompactRange(), 0
                else:
                    edge = CompactRange.from_source(self, (frontier.idx + 1) << BLOCK_LEVEL)
                    after = frontier.last_position
            while True:
                rows = store._leaf_rows(after, BATCH)
                if not rows:
                    break
                start = edge.size
                finished = edge.extend(
                    [leaf_hash(leaf_input(position, value)) for position, value in rows],
                    min_level=BLOCK_LEVEL,
                )
                store._tree_put(
                    [_row(node.level, node.index, node.hash, rows, start) for node in finished]
                )
                after = rows[-1][0]
                if len(rows) < BATCH:
                    break
            self._edge, self._after = edge, after
            self._known = edge.head()
            return self._known

    def head(self) -> TreeHead:
        """The size and root of the tree of every event (after :meth:`update`)."""
        return self.update()

    def checkpoint(self, signer: Signer) -> tuple[Checkpoint, str]:
        """Sign the tree head now: the :class:`Checkpoint` and its signed note.

        Write the note somewhere the database's writers cannot change it (see
        :mod:`chatledger.proofs.sinks`); a copy kept in the store would prove nothing.
        """
        return make_checkpoint(self.update(), signer)

    def checkpointer(
        self,
        signer: Signer,
        sinks: Iterable[CheckpointSink],
        *,
        every_events: int | None = None,
        every_seconds: float | None = None,
        poll_seconds: float = 1.0,
    ) -> Checkpointer:
        """A :class:`~chatledger.proofs.sinks.Checkpointer` of this store's tree.

        Started (``with tree.checkpointer(...):`` or ``.start()``), a background thread
        extends the tree every ``poll_seconds`` and signs its head to every sink once it
        grew by ``every_events`` events, or grew at all and ``every_seconds`` passed; on
        stop it signs once more if the tree moved. It reads the store, so any process
        (the one appending, or another) can run it.
        """
        return Checkpointer(
            self.update,
            signer,
            sinks,
            every_events=every_events,
            every_seconds=every_seconds,
            poll_seconds=poll_seconds,
        )

    # -- proofs ----------------------------------------------------------------------------

    def locate(self, event_id: str) -> LocatedEvent:
        """Where the event ``event_id`` is in the tree (after :meth:`update`).

        Raises NotFoundError when the store has no such event, or when it is not in the
        tree yet (on PostgreSQL, an event whose transaction committed after an older one
        still open).
        """
        self.update()
        return self._locate(event_id)

    def _locate(self, event_id: str) -> LocatedEvent:
        return self._locate_in_block(event_id)[0]

    def _locate_in_block(self, event_id: str) -> tuple[LocatedEvent, _Block]:
        """The event's place, and the leaves of its block of 256 (read to find it)."""
        if not isinstance(event_id, str) or not event_id:
            raise InvalidInputError("an event id is a non-empty string")
        found = self.store._rows_with_event_ids([event_id])
        if not found:
            raise NotFoundError(f"no event {event_id!r} in {self.store.location}")
        event = found[0]
        before = self.store._tree_before(BLOCK_LEVEL, event.position)
        first = 0 if before is None else (before.idx + 1) << BLOCK_LEVEL
        after = 0 if before is None else before.last_position
        rows = self.store._leaf_rows(after, _BLOCK)
        for offset, (position, value) in enumerate(rows):
            if position == event.position:
                located = LocatedEvent(
                    event.event_id,
                    event.conversation_id,
                    event.version,
                    event.position,
                    first + offset,
                    leaf_input(position, value),
                )
                return located, _Block(self, first, [leaf_input(p, v) for p, v in rows])
        raise NotFoundError(
            f"event {event_id!r} is not in the Merkle tree yet: it committed after a "
            "transaction that is still open; try again in a moment"
        )

    def inclusion_proof(
        self, event_id: str, size: int | None = None
    ) -> tuple[InclusionProof, LocatedEvent]:
        """The proof that event ``event_id`` is in the tree of ``size`` leaves (default:
        the whole tree now), with where the event is."""
        head, fresh = self._head_for(size)
        size = self._checked_size(size, head)
        try:
            event, block = self._locate_in_block(event_id)
        except NotFoundError:
            if fresh:
                raise
            self.update()  # the event may be newer than the tree this object last saw
            event, block = self._locate_in_block(event_id)
        if event.leaf_index >= size:
            raise NotFoundError(
                f"event {event_id!r} is leaf {event.leaf_index} of the tree, after the "
                f"{size} a tree of that size holds: prove it against a newer checkpoint"
            )
        return inclusion_proof(block, event.leaf_index, size), event

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> ConsistencyProof:
        """The proof that the tree of ``new_size`` leaves (default: now) extends the tree
        of ``old_size`` leaves."""
        head, _ = self._head_for(new_size)
        new_size = self._checked_size(new_size, head)
        self._checked_size(old_size, head)
        return consistency_proof(self, old_size, new_size)

    def root(self, size: int) -> bytes:
        """The root of the tree of the first ``size`` leaves (from the stored subtrees)."""
        from .merkle import root

        head, _ = self._head_for(size)
        return root(self, self._checked_size(size, head))

    def _head_for(self, size: int | None) -> tuple[TreeHead, bool]:
        """The head this object last saw when it covers ``size`` (the stored subtrees of
        the first ``size`` leaves are then all kept); else a fresh :meth:`update`. And
        whether it is fresh."""
        known = self._known
        if size is not None and known is not None and size <= known.size:
            return known, False
        return self.update(), True

    def _checked_size(self, size: int | None, head: TreeHead) -> int:
        if size is None:
            return head.size
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_TREE_SIZE:
            raise InvalidInputError("a tree size is an integer >= 0")
        if size > head.size:
            raise IntegrityError(
                f"{self.store.location} holds {head.size} events, fewer than the {size} of "
                "the tree asked for: events were deleted or the store was rolled back to an "
                "older copy (or this is another log)"
            )
        return size


def _row(
    level: int, index: int, value: bytes, rows: Sequence[tuple[int, str]], start: int
) -> TreeRow:
    last_leaf = ((index + 1) << level) - 1
    return TreeRow(level, index, value, int(rows[last_leaf - start][0]))


class _Block:
    """A :class:`StoreTree` with the leaves of one block already read (one proof's
    worth: the proof of a leaf needs the other leaves of its block)."""

    def __init__(self, tree: StoreTree, first: int, inputs: list[bytes]) -> None:
        self.tree, self.first, self.inputs = tree, first, inputs

    def subtree_hashes(self, nodes: Collection[Node]) -> Mapping[Node, bytes]:
        return self.tree.subtree_hashes(nodes)

    def leaf_hashes(self, start: int, end: int) -> Sequence[bytes]:
        if self.first <= start and end <= self.first + len(self.inputs):
            return [
                leaf_hash(value) for value in self.inputs[start - self.first : end - self.first]
            ]
        return self.tree.leaf_hashes(start, end)


def checkpoint_problem(check: TreeCheck, checkpoint: Checkpoint) -> str | None:
    """Why the log (recomputed in ``check``) does not extend ``checkpoint``, or None.

    The log extends a checkpoint of size *n* exactly when its first *n* events hash to
    the checkpoint's root: the tree is recomputed from the events, never read from the
    store's table.
    """
    size = checkpoint.size
    if size > check.size:
        return (
            f"the checkpoint signed {size} events but the log holds only {check.size}: events "
            "were deleted or the store was rolled back to an older copy"
        )
    found = check.roots.get(size, EMPTY_ROOT if size == 0 else None)
    if found is None:  # pragma: no cover - check_tree computes every size asked for
        raise InvalidInputError(f"the tree was not recomputed at size {size}")
    if found == checkpoint.root_hash:
        return None
    where = ""
    first = check.first_stored_difference
    if first is not None and first[0] < size:
        where = (
            f"; the first block of events whose hashes differ from the tree the store kept "
            f"is leaves [{first[0]}, {min(first[1], size)})"
        )
    return (
        f"the log's first {size} events no longer hash to the root the checkpoint signed: an "
        "event among them was edited (and its chain re-hashed), deleted, inserted or moved, "
        f"or the store was replaced{where}"
    )


def verify_checkpoints(
    store: EventStore, signed: Sequence[SignedCheckpoint]
) -> tuple[TreeCheck, list[tuple[SignedCheckpoint, str | None]]]:
    """Recompute the tree from the events of ``store`` (one pass); each checkpoint with
    why the log does not extend it (None: it does). What ``chatledger verify
    --checkpoint`` and ``chatledger serve``'s audit run."""
    check = check_tree(store, [item.size for item in signed])
    return check, [(item, checkpoint_problem(check, item.checkpoint)) for item in signed]
