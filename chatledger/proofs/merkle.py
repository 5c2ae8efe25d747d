"""The RFC 9162 Merkle tree over the log: hashing, roots, proofs and their verification.

Hashing is exactly RFC 9162 section 2.1.1 (the same as RFC 6962, Certificate Transparency,
Go's checksum database and every C2SP transparency log)::

    leaf hash   = SHA-256(0x00 || leaf input)
    node hash   = SHA-256(0x01 || left || right)
    empty tree  = SHA-256()                      (of nothing)

A tree of ``n`` leaves splits at ``k``, the largest power of two below ``n``: its root is
``node(MTH(leaves[0:k]), MTH(leaves[k:n]))``. So every hash a root or a proof needs is a
*complete subtree* (``2**level`` leaves starting at ``index * 2**level``, a perfect binary
tree that never changes once its last leaf is appended) or a right-edge fold of a few of
them. A store keeps the complete subtree hashes it has computed (a :class:`HashSource`),
and a proof reads them instead of hashing the log again; only the partial right edge is
computed (Russ Cox, "Transparent Logs for Skeptical Clients"; C2SP tlog-tiles).

Proof generation follows RFC 9162 sections 2.1.3.1 (``PATH``) and 2.1.4.1 (``PROOF``);
verification is written step by step as sections 2.1.3.2 and 2.1.4.2 write it.

This module is pure: no I/O, no import from the rest of chatledger except its errors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..errors import IntegrityError, InvalidInputError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_TREE_SIZE",
    "CompactRange",
    "ConsistencyProof",
    "HashSource",
    "InclusionProof",
    "MemoryTree",
    "Node",
    "StoredNode",
    "TreeHead",
    "consistency_path",
    "consistency_proof",
    "covering_nodes",
    "inclusion_path",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "root_of_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

#: Bytes in every hash (SHA-256).
HASH_SIZE = 32
#: The root of the tree with no leaves: SHA-256 of the empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()
#: The largest tree size accepted anywhere (store positions are signed 64-bit integers).
MAX_TREE_SIZE = 2**63 - 1
#: No proof of a tree of at most MAX_TREE_SIZE leaves is longer than this.
MAX_PROOF_LENGTH = 64

#: A complete subtree: ``(level, index)`` covers leaves ``[index * 2**level, (index + 1) *
#: 2**level)``. Level 0 nodes are the leaf hashes themselves.
Node = tuple[int, int]

_sha256 = hashlib.sha256


def leaf_hash(leaf_input: bytes) -> bytes:
    """RFC 9162 leaf hash: ``SHA-256(0x00 || leaf_input)``."""
    return _sha256(b"\x00" + leaf_input).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: ``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


@dataclass(frozen=True)
class TreeHead:
    """A tree size and the root hash of the first ``size`` leaves."""

    size: int
    root_hash: bytes

    def __post_init__(self) -> None:
        _check_size(self.size, "tree size")
        _check_hash(self.root_hash, "root hash")


@dataclass(frozen=True)
class StoredNode:
    """A complete subtree hash a :class:`CompactRange` produced, for a store to keep."""

    level: int
    index: int
    hash: bytes


class HashSource(Protocol):
    """Where a tree's hashes are read from: a store's tables, or memory.

    Proofs and roots ask for complete subtrees (see :data:`Node`). A source answers with
    the ones it keeps; every other one is computed from the leaf hashes under it. A store
    that keeps complete subtrees at levels 8 and above therefore reads at most 255 leaf
    hashes and about ``log2(size)`` stored hashes per proof.
    """

    def subtree_hashes(self, nodes: Collection[Node]) -> Mapping[Node, bytes]:
        """The stored hashes of those of ``nodes`` the source keeps (any subset, even none)."""
        ...

    def leaf_hashes(self, start: int, end: int) -> Sequence[bytes]:
        """The leaf hashes (``leaf_hash`` of each leaf input) of leaves ``[start, end)``."""
        ...


# -- ranges and complete subtrees -----------------------------------------------------------


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n >= 2``): RFC 9162's ``k``."""
    return 1 << ((n - 1).bit_length() - 1)


def covering_nodes(start: int, end: int) -> list[Node]:
    """The complete subtrees that make up leaves ``[start, end)``, left to right.

    Each is the largest aligned power of two that fits; for ``[0, n)`` they are the set
    bits of ``n``, highest first. For every range a root or proof needs (RFC 9162's
    recursion only produces ranges that start at a multiple of a power of two at least as
    large as the range) the range's hash is the right fold of these nodes' hashes.
    """
    nodes: list[Node] = []
    while start < end:
        level = (end - start).bit_length() - 1
        if start:
            level = min(level, (start & -start).bit_length() - 1)
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def _fold_right(hashes: Sequence[bytes]) -> bytes:
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def _perfect_root(hashes: Sequence[bytes]) -> bytes:
    """The root of a perfect tree (``len(hashes)`` is a power of two)."""
    level = list(hashes)
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def root_of_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """The root of the tree whose leaf hashes are ``hashes`` (all in memory)."""
    if not hashes:
        return EMPTY_ROOT
    nodes = covering_nodes(0, len(hashes))
    parts = [_perfect_root(hashes[i << lvl : (i + 1) << lvl]) for lvl, i in nodes]
    return _fold_right(parts)


def _resolve(source: HashSource, nodes: Iterable[Node]) -> dict[Node, bytes]:
    """The hash of every node: stored ones read, the others computed from leaf hashes.

    Missing nodes whose leaves touch are computed from one read of their joint span.
    """
    wanted = sorted(set(nodes), key=lambda node: node[1] << node[0])
    if not wanted:
        return {}
    found: dict[Node, bytes] = {}
    for node, value in source.subtree_hashes(wanted).items():
        if node in found or node not in wanted:
            continue
        _check_stored(value, f"the stored hash of subtree {node}")
        found[node] = value
    missing = [node for node in wanted if node not in found]
    spans: list[tuple[int, int, list[Node]]] = []
    for level, index in missing:
        lo, hi = index << level, (index + 1) << level
        if spans and lo <= spans[-1][1]:
            first, last, members = spans[-1]
            spans[-1] = (first, max(last, hi), [*members, (level, index)])
        else:
            spans.append((lo, hi, [(level, index)]))
    for lo, hi, members in spans:
        leaves = source.leaf_hashes(lo, hi)
        if len(leaves) != hi - lo:
            raise IntegrityError(
                f"the tree's source returned {len(leaves)} leaf hashes for leaves "
                f"[{lo}, {hi}), not {hi - lo}: the store is missing leaves"
            )
        for leaf in leaves:
            _check_stored(leaf, "a stored leaf hash")
        for level, index in members:
            start = (index << level) - lo
            found[(level, index)] = _perfect_root(leaves[start : start + (1 << level)])
    return found


def _range_hashes(source: HashSource, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    per_range = [covering_nodes(lo, hi) for lo, hi in ranges]
    hashes = _resolve(source, (node for nodes in per_range for node in nodes))
    return [_fold_right([hashes[node] for node in nodes]) for nodes in per_range]


# -- roots and proofs from a source ----------------------------------------------------------


def root(source: HashSource, size: int) -> bytes:
    """The root hash of the first ``size`` leaves of ``source`` (RFC 9162 ``MTH``)."""
    _check_size(size, "tree size")
    if size == 0:
        return EMPTY_ROOT
    return _range_hashes(source, [(0, size)])[0]


def inclusion_path(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form the inclusion proof of leaf ``index``, bottom up.

    RFC 9162 section 2.1.3.1: ``PATH(m, D[n])`` for ``n > 1`` is ``PATH(m, D[0:k]) :
    MTH(D[k:n])`` when ``m < k``, else ``PATH(m - k, D[k:n]) : MTH(D[0:k])``.
    """
    _check_size(size, "tree size")
    _check_index(index, size)
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()
    return ranges


def consistency_path(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form the consistency proof from ``old_size`` to ``new_size``.

    RFC 9162 section 2.1.4.1: ``PROOF(m, D[n]) = SUBPROOF(m, D[n], true)``, where
    ``SUBPROOF(m, D[m], true)`` is empty, ``SUBPROOF(m, D[m], false)`` is ``MTH(D[m])``,
    and for ``m < n``: ``SUBPROOF(m, D[0:k], b) : MTH(D[k:n])`` when ``m <= k``, else
    ``SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])``. The proof from an empty tree, and to
    a tree of the same size, is empty.
    """
    _check_size(old_size, "old tree size")
    _check_size(new_size, "new tree size")
    if old_size > new_size:
        raise InvalidInputError(
            f"a consistency proof goes from an older tree to a newer one: the old size "
            f"{old_size} is larger than the new size {new_size}"
        )
    ranges: list[tuple[int, int]] = []
    if old_size == 0:
        return ranges
    lo, hi, m, whole = 0, new_size, old_size, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
            m -= k
            whole = False
    if not whole:
        ranges.append((lo, hi))
    ranges.reverse()
    return ranges


@dataclass(frozen=True)
class InclusionProof:
    """Leaf ``leaf_index`` is in the tree of ``tree_size`` leaves: the sibling hashes, bottom up."""

    leaf_index: int
    tree_size: int
    path: tuple[bytes, ...]

    def verify(self, leaf_hash: bytes, root_hash: bytes) -> None:
        """Raise IntegrityError unless this proof leads from ``leaf_hash`` to ``root_hash``."""
        verify_inclusion(leaf_hash, self.leaf_index, self.tree_size, self.path, root_hash)


@dataclass(frozen=True)
class ConsistencyProof:
    """The tree of ``new_size`` leaves extends the tree of ``old_size``: RFC 9162 hashes."""

    old_size: int
    new_size: int
    path: tuple[bytes, ...]

    def verify(self, old_root: bytes, new_root: bytes) -> None:
        """Raise IntegrityError unless this proof links ``old_root`` to ``new_root``."""
        verify_consistency(self.old_size, self.new_size, old_root, new_root, self.path)


def inclusion_proof(source: HashSource, index: int, size: int) -> InclusionProof:
    """The inclusion proof of leaf ``index`` in the tree of the first ``size`` leaves."""
    path = _range_hashes(source, inclusion_path(index, size))
    return InclusionProof(index, size, tuple(path))


def consistency_proof(source: HashSource, old_size: int, new_size: int) -> ConsistencyProof:
    """The proof that the tree of ``new_size`` leaves extends the tree of ``old_size``."""
    path = _range_hashes(source, consistency_path(old_size, new_size))
    return ConsistencyProof(old_size, new_size, tuple(path))


# -- verification, as RFC 9162 writes it -----------------------------------------------------


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes
) -> None:
    """Check an inclusion proof (RFC 9162 section 2.1.3.2); raise IntegrityError if it fails.

    ``leaf_hash`` is the leaf's hash (:func:`leaf_hash` of its input), ``proof`` the
    inclusion path from the leaf's sibling up. Malformed arguments (a hash that is not 32
    bytes, a negative number) raise InvalidInputError.
    """
    _check_hash(leaf_hash, "leaf hash")
    _check_hash(root_hash, "root hash")
    _check_count(index, "leaf index")
    _check_size(size, "tree size")
    _check_path(proof)
    # 1. If leaf_index >= tree_size, fail.
    if index >= size:
        raise IntegrityError(
            f"the inclusion proof names leaf {index} of a tree of {size} leaves, which has no "
            "such leaf"
        )
    # 2. Set fn to leaf_index and sn to tree_size - 1.  3. Set r to hash.
    fn, sn, r = index, size - 1, leaf_hash
    # 4. For each value p in the inclusion_path array:
    for p in proof:
        if sn == 0:
            raise IntegrityError(
                f"the inclusion proof of leaf {index} in a tree of {size} leaves has "
                f"{len(proof)} hashes, more than the tree is high"
            )
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    # 5. Compare sn to 0 and r against the root hash.
    if sn != 0:
        raise IntegrityError(
            f"the inclusion proof of leaf {index} in a tree of {size} leaves has only "
            f"{len(proof)} hashes, too few to reach the root"
        )
    if r != root_hash:
        raise IntegrityError(
            f"the inclusion proof of leaf {index} does not lead to the root of the tree of "
            f"{size} leaves: the leaf, its index, the tree size, the proof or the root differs "
            "from what the log holds"
        )


def verify_consistency(
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
) -> None:
    """Check a consistency proof (RFC 9162 section 2.1.4.2); raise IntegrityError if it fails.

    Beyond the RFC's ``0 < first < second``: from an empty tree the proof must be empty
    and ``old_root`` the empty tree's root; between equal sizes it must be empty and the
    two roots equal.
    """
    _check_size(old_size, "old tree size")
    _check_size(new_size, "new tree size")
    _check_hash(old_root, "old root hash")
    _check_hash(new_root, "new root hash")
    _check_path(proof)
    if old_size > new_size:
        raise IntegrityError(
            f"the newer tree has {new_size} leaves, fewer than the {old_size} of the older one: "
            "the log was truncated or rolled back"
        )
    if old_size == 0 or old_size == new_size:
        if proof:
            raise IntegrityError(
                f"a consistency proof from size {old_size} to size {new_size} must be empty, "
                f"and this one has {len(proof)} hashes"
            )
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise IntegrityError("the older tree has no leaves but its root is not the empty root")
        if old_size == new_size and old_root != new_root:
            raise IntegrityError(
                f"two trees of {old_size} leaves have different roots: the log was changed "
                "(an event edited, removed, reordered or replaced)"
            )
        return
    # 1. If consistency_path is an empty array, fail.
    if not proof:
        raise IntegrityError(
            f"the consistency proof from size {old_size} to size {new_size} is empty"
        )
    path = list(proof)
    # 2. If first is an exact power of 2, prepend first_hash to the consistency_path array.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # 3. Set fn to first - 1 and sn to second - 1.
    fn, sn = old_size - 1, new_size - 1
    # 4. If LSB(fn) is set, right-shift both fn and sn equally until LSB(fn) is not set.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. Set both fr and sr to the first value in the consistency_path array.
    fr = sr = path[0]
    # 6. For each subsequent value c in the consistency_path array:
    for c in path[1:]:
        if sn == 0:
            raise IntegrityError(
                f"the consistency proof from size {old_size} to size {new_size} has more "
                "hashes than the trees need"
            )
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # 7. fr must equal first_hash, sr second_hash, and sn must be 0.
    if sn != 0:
        raise IntegrityError(
            f"the consistency proof from size {old_size} to size {new_size} has too few hashes"
        )
    if fr != old_root:
        raise IntegrityError(
            f"the log's first {old_size} leaves no longer hash to the older root: an event "
            "before that point was edited, removed, reordered or replaced (or the proof is "
            "not for these trees)"
        )
    if sr != new_root:
        raise IntegrityError(
            f"the consistency proof does not lead to the newer root of {new_size} leaves: the "
            "proof or the newer tree head differs from what the log holds"
        )


# -- the right edge: appending leaves in O(N + log size) -----------------------------------


class CompactRange:
    """The right edge of a tree: the hashes of the complete subtrees that make up ``[0, size)``.

    One hash per set bit of ``size``, highest level first (:func:`covering_nodes`). That
    is all an appender needs: :meth:`extend` adds N leaves with about N node hashes and
    returns every complete subtree it finished, and :meth:`root` folds the edge. A store
    rebuilds it after a restart with :meth:`from_source` (``popcount(size)`` reads).
    """

    __slots__ = ("_edge", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        _check_size(size, "tree size")
        if len(hashes) != size.bit_count():
            raise InvalidInputError(
                f"the right edge of a tree of {size} leaves has {size.bit_count()} hashes, "
                f"not {len(hashes)}"
            )
        for value in hashes:
            _check_hash(value, "right-edge hash")
        self._size = size
        self._edge = list(hashes)

    @classmethod
    def from_source(cls, source: HashSource, size: int) -> CompactRange:
        """The right edge of the first ``size`` leaves of ``source``."""
        _check_size(size, "tree size")
        nodes = covering_nodes(0, size)
        hashes = _resolve(source, nodes)
        return cls(size, [hashes[node] for node in nodes])

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The right-edge hashes, highest level first."""
        return tuple(self._edge)

    def nodes(self) -> list[Node]:
        """The complete subtrees the right edge holds, in the order of :attr:`hashes`."""
        return covering_nodes(0, self._size)

    def root(self) -> bytes:
        """The root hash of the tree so far."""
        return _fold_right(self._edge) if self._edge else EMPTY_ROOT

    def head(self) -> TreeHead:
        """The tree size and root."""
        return TreeHead(self._size, self.root())

    def extend(self, leaf_hashes: Iterable[bytes], *, min_level: int = 0) -> list[StoredNode]:
        """Append leaves (their leaf hashes); return the finished subtrees at ``min_level`` or up.

        Level 0 subtrees are the leaves themselves. A store that keeps levels 8 and up
        passes ``min_level=8`` and writes what comes back.
        """
        finished: list[StoredNode] = []
        edge = self._edge
        size = self._size
        for value in leaf_hashes:
            _check_hash(value, "leaf hash")
            if size >= MAX_TREE_SIZE:
                raise InvalidInputError(f"a tree holds at most {MAX_TREE_SIZE} leaves")
            if min_level == 0:
                finished.append(StoredNode(0, size, value))
            level, bits = 0, size
            while bits & 1:
                value = node_hash(edge.pop(), value)
                level += 1
                bits >>= 1
                if level >= min_level:
                    finished.append(StoredNode(level, size >> level, value))
            edge.append(value)
            size += 1
        self._size = size
        return finished

    def copy(self) -> CompactRange:
        """An independent copy (for example, to try an append before committing it)."""
        return CompactRange(self._size, self._edge)


class MemoryTree:
    """A tree held in memory: every leaf hash, and complete subtrees at ``min_stored_level`` up.

    It is a :class:`HashSource`, as a store's tables will be: proofs read its stored
    subtrees and compute only what lies below ``min_stored_level`` or on the right edge.
    ``min_stored_level=0`` keeps every node; a level above 63 keeps none, so that every
    hash is computed from the leaves (the way ``verify`` recomputes a tree from the log).
    """

    def __init__(self, min_stored_level: int = 8) -> None:
        if isinstance(min_stored_level, bool) or not isinstance(min_stored_level, int):
            raise InvalidInputError("min_stored_level must be an int")
        if min_stored_level < 0:
            raise InvalidInputError("min_stored_level cannot be negative")
        self.min_stored_level = min_stored_level
        self._leaves: list[bytes] = []
        self._stored: dict[Node, bytes] = {}
        self._range = CompactRange()
        self.reads = 0
        """How many hashes the proofs and roots asked for (stored and leaf hashes)."""

    @classmethod
    def of(cls, leaf_inputs: Iterable[bytes], min_stored_level: int = 8) -> MemoryTree:
        """A tree of these leaf inputs."""
        tree = cls(min_stored_level)
        tree.append(leaf_inputs)
        return tree

    @property
    def size(self) -> int:
        """The number of leaves."""
        return self._range.size

    @property
    def stored(self) -> Mapping[Node, bytes]:
        """The complete subtree hashes kept (read only)."""
        return self._stored

    def append(self, leaf_inputs: Iterable[bytes]) -> list[StoredNode]:
        """Append leaves by their inputs; return the complete subtrees newly stored."""
        return self.append_hashes([leaf_hash(value) for value in leaf_inputs])

    def append_hashes(self, hashes: Sequence[bytes]) -> list[StoredNode]:
        """Append leaves by their leaf hashes; return the complete subtrees newly stored."""
        finished = self._range.extend(hashes, min_level=self.min_stored_level)
        self._leaves.extend(hashes)
        for node in finished:
            self._stored[(node.level, node.index)] = node.hash
        return finished

    def root(self) -> bytes:
        """The root of the whole tree, from the right edge."""
        return self._range.root()

    def head(self) -> TreeHead:
        """The size and root of the whole tree."""
        return self._range.head()

    def subtree_hashes(self, nodes: Collection[Node]) -> Mapping[Node, bytes]:
        found = {node: self._stored[node] for node in nodes if node in self._stored}
        self.reads += len(found)
        return found

    def leaf_hashes(self, start: int, end: int) -> Sequence[bytes]:
        self.reads += max(0, end - start)
        return self._leaves[start:end]


# -- argument checks -------------------------------------------------------------------------


def _check_count(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"the {what} must be an integer, not {type(value).__name__}")
    if value < 0:
        raise InvalidInputError(f"the {what} cannot be negative ({value})")
    if value > MAX_TREE_SIZE:
        raise InvalidInputError(f"the {what} {value} is larger than {MAX_TREE_SIZE}")


def _check_size(value: object, what: str) -> None:
    _check_count(value, what)


def _check_index(index: int, size: int) -> None:
    _check_count(index, "leaf index")
    if index >= size:
        raise InvalidInputError(f"leaf {index} is not in a tree of {size} leaves")


def _check_hash(value: object, what: str) -> None:
    if not isinstance(value, bytes):
        raise InvalidInputError(f"the {what} must be bytes, not {type(value).__name__}")
    if len(value) != HASH_SIZE:
        raise InvalidInputError(f"the {what} is {len(value)} bytes, not {HASH_SIZE}")


def _check_stored(value: object, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise IntegrityError(
            f"{what} is not a {HASH_SIZE}-byte hash: the tree's tables are damaged"
        )


def _check_path(proof: object) -> None:
    if isinstance(proof, (str, bytes)) or not isinstance(proof, Sequence):
        raise InvalidInputError("a proof must be a sequence of 32-byte hashes")
    if len(proof) > MAX_PROOF_LENGTH:
        raise InvalidInputError(
            f"a proof has at most {MAX_PROOF_LENGTH} hashes; this one has {len(proof)}"
        )
    for position, value in enumerate(proof):
        _check_hash(value, f"proof hash {position}")
