"""The Merkle tree over the log as a store keeps it, and its recomputation from the events.

The leaves are the store's events in :meth:`~chatledger.events.store.EventStore.read_all`
order, each leaf's input the event's 32-byte hash (RFC 9162 hashing,
:mod:`chatledger.proofs.merkle`). A store keeps the hashes of the complete subtrees of
``2**BLOCK_LEVEL`` = 256 leaves and more (:class:`TreeRow`, in ``merkle_nodes``), a cache
that :func:`check_tree` recomputes and compares, never trusts. Keeping it up to date and
making proofs from it: :class:`chatledger.proofs.tree.StoreTree`. See docs/proofs.md.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from ..errors import IntegrityError
from ..proofs.merkle import CompactRange, TreeHead, leaf_hash

__all__ = [
    "BLOCK_LEVEL",
    "TreeCheck",
    "TreeRow",
    "TreeTables",
    "check_tree",
    "leaf_input",
]

#: The lowest level of subtree a store keeps: blocks of 2**8 = 256 leaves.
BLOCK_LEVEL = 8
#: Events read per query while extending or recomputing the tree.
BATCH = 10_000
#: How many stored subtrees that disagree with the events are described one by one.
_MAX_NAMED = 10


class TreeRow(NamedTuple):
    """A complete subtree of the log's Merkle tree as a store keeps it: leaves
    ``[idx * 2**level, (idx + 1) * 2**level)``, their RFC 9162 hash, and the store
    position of the last of them."""

    level: int
    idx: int
    hash: bytes
    last_position: int


class TreeTables(Protocol):
    """What the tree reads and writes in a store (every backend's ``_tree_*`` and
    ``_leaf_rows`` primitives; see :class:`~chatledger.events.store.EventStore`)."""

    location: str

    def _leaf_rows(self, after_position: int, limit: int) -> list[tuple[int, str]]: ...

    def _tree_nodes(self, nodes: Sequence[tuple[int, int]]) -> dict[tuple[int, int], TreeRow]: ...

    def _tree_frontier(self, level: int) -> TreeRow | None: ...


def leaf_input(position: object, value: object) -> bytes:
    """The leaf input of an event: the raw bytes of its hex ``hash``."""
    if isinstance(value, str) and len(value) == 64:
        try:
            return binascii.unhexlify(value)
        except (binascii.Error, ValueError):
            pass
    raise IntegrityError(
        f"the event at position {position} has a damaged hash ({str(value)[:70]!r}), not 64 hex "
        "digits: no tree can include it; run `chatledger verify` to see what else is damaged"
    )


# -- verification: the tree recomputed from the events ---------------------------------------


@dataclass
class TreeCheck:
    """The tree recomputed from the events, compared with checkpoints and the stored tree."""

    size: int = 0
    """How many events the log holds now (the leaves ``read_all`` reads)."""
    root_hash: bytes = b""
    """The root of all of them, recomputed."""
    roots: dict[int, bytes] = field(default_factory=dict)
    """The recomputed root at each size asked for that the log reaches."""
    stored_problems: list[str] = field(default_factory=list)
    """Stored subtrees that disagree with the events (or name leaves the log lacks)."""
    first_stored_difference: tuple[int, int] | None = None
    """The first block of leaves ``[start, end)`` whose stored hash differs from the events."""

    def head(self) -> TreeHead:
        return TreeHead(self.size, self.root_hash)


def check_tree(store: TreeTables, sizes: Iterable[int] = ()) -> TreeCheck:
    """Recompute the tree from every event of ``store``; compare the stored subtrees.

    Returns the recomputed head, the root at each of ``sizes`` the log reaches, and every
    stored subtree that does not match the events (its hash or its last leaf's position),
    or that covers leaves the log does not have. Reads the events once, in batches.
    """
    wanted = sorted({size for size in sizes if size > 0})
    check = TreeCheck()
    edge = CompactRange()
    after = 0
    pending = list(wanted)
    named = 0
    while True:
        rows = store._leaf_rows(after, BATCH)
        if not rows:
            break
        hashes = [leaf_hash(leaf_input(position, value)) for position, value in rows]
        start = edge.size
        finished = []
        offset = 0
        while pending and pending[0] <= start + len(hashes):
            cut = pending.pop(0) - start
            finished.extend(edge.extend(hashes[offset:cut], min_level=BLOCK_LEVEL))
            offset = cut
            check.roots[edge.size] = edge.root()
        finished.extend(edge.extend(hashes[offset:], min_level=BLOCK_LEVEL))
        stored = store._tree_nodes([(node.level, node.index) for node in finished])
        for node in finished:
            row = stored.get((node.level, node.index))
            if row is None:
                continue
            last = int(rows[((node.index + 1) << node.level) - 1 - start][0])
            if row.hash == node.hash and row.last_position == last:
                continue
            lo, hi = node.index << node.level, (node.index + 1) << node.level
            if node.level == BLOCK_LEVEL and check.first_stored_difference is None:
                check.first_stored_difference = (lo, hi)
            if named < _MAX_NAMED:
                what = "hash" if row.hash != node.hash else "last position"
                check.stored_problems.append(
                    f"the stored Merkle subtree of leaves [{lo}, {hi}) has a {what} the events "
                    "do not give (the merkle_nodes table was changed, or events were changed "
                    "after the tree covered them)"
                )
            named += 1
        after = rows[-1][0]
        if len(rows) < BATCH:
            break
    if named > _MAX_NAMED:
        check.stored_problems.append(
            f"{named - _MAX_NAMED} more stored Merkle subtrees do not match the events"
        )
    check.size = edge.size
    check.root_hash = edge.root()
    for level in range(BLOCK_LEVEL, 64):
        top = store._tree_frontier(level)
        if top is not None and (top.idx + 1) << level > check.size:
            check.stored_problems.append(
                f"the stored Merkle subtree of leaves [{top.idx << level}, "
                f"{(top.idx + 1) << level}) covers events the log does not hold (events "
                f"deleted, or the store rolled back; the log holds {check.size})"
            )
    return check
