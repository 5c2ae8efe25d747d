"""The RFC 9162 tree: published vectors, an independent reference, property tests, tampering."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Collection, Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatledger.errors import IntegrityError, InvalidInputError
from chatledger.proofs import merkle
from chatledger.proofs.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MemoryTree,
    Node,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

# -- an independent implementation: RFC 9162 section 2.1.1 and 2.1.3.1/2.1.4.1, literally ---


def ref_mth(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) exactly as RFC 9162 section 2.1.1 defines it, recursively."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:])).digest()


def ref_path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]), RFC 9162 section 2.1.3.1."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: Sequence[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b), RFC 9162 section 2.1.4.1."""
    n = len(leaves)
    if m == n:
        return [] if b else [ref_mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*ref_subproof(m, leaves[:k], b), ref_mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_mth(leaves[:k])]


def ref_proof(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    return ref_subproof(m, leaves, True) if 0 < m < len(leaves) else []


def leaves_of(count: int, salt: int = 0) -> list[bytes]:
    return [hashlib.sha256(f"{salt}:{i}".encode()).digest() for i in range(count)]


# -- published vectors ----------------------------------------------------------------------
# transparency-dev/merkle proof/verify_test.go and rfc6962/rfc6962_test.go (also the values
# of Certificate Transparency's merkle_tree_test); Go's golang.org/x/mod/sumdb/tlog.

VECTOR_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
VECTOR_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf number counted from 1, tree size, proof)
VECTOR_INCLUSION = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        2,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
VECTOR_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


def test_hashing_matches_the_published_rfc6962_vectors() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert leaf_hash(b"L123456").hex() == (
        "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    )
    assert node_hash(b"N123", b"N456").hex() == (
        "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    )
    # Go's sumdb: RecordHash("hello world"), as in tlog's TestFormatTree.
    assert base64.b64encode(leaf_hash(b"hello world")).decode() == (
        "TszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0="
    )


@pytest.mark.parametrize("min_level", [0, 1, 2, 64])
def test_roots_of_the_published_vector_trees(min_level: int) -> None:
    tree = MemoryTree.of(VECTOR_LEAVES, min_stored_level=min_level)
    for size, expected in enumerate(VECTOR_ROOTS, start=1):
        assert root(tree, size).hex() == expected
        assert MemoryTree.of(VECTOR_LEAVES[:size]).root().hex() == expected
    assert root(tree, 0) == EMPTY_ROOT


@pytest.mark.parametrize(("leaf", "size", "expected"), VECTOR_INCLUSION)
def test_inclusion_proofs_of_the_published_vectors(
    leaf: int, size: int, expected: list[str]
) -> None:
    tree = MemoryTree.of(VECTOR_LEAVES, min_stored_level=1)
    proof = inclusion_proof(tree, leaf - 1, size)
    assert [value.hex() for value in proof.path] == expected
    target = bytes.fromhex(VECTOR_ROOTS[size - 1])
    verify_inclusion(leaf_hash(VECTOR_LEAVES[leaf - 1]), leaf - 1, size, proof.path, target)
    for probe in inclusion_probes(leaf_hash(VECTOR_LEAVES[leaf - 1]), leaf - 1, size, proof.path):
        with pytest.raises((IntegrityError, InvalidInputError)):
            verify_inclusion(*probe[:4], probe[4] if probe[4] is not None else target)


@pytest.mark.parametrize(("old", "new", "expected"), VECTOR_CONSISTENCY)
def test_consistency_proofs_of_the_published_vectors(
    old: int, new: int, expected: list[str]
) -> None:
    tree = MemoryTree.of(VECTOR_LEAVES, min_stored_level=1)
    proof = consistency_proof(tree, old, new)
    assert [value.hex() for value in proof.path] == expected
    old_root, new_root = bytes.fromhex(VECTOR_ROOTS[old - 1]), bytes.fromhex(VECTOR_ROOTS[new - 1])
    verify_consistency(old, new, old_root, new_root, proof.path)
    if proof.path:
        for probe in consistency_probes(old, new, old_root, new_root, proof.path):
            with pytest.raises((IntegrityError, InvalidInputError)):
                verify_consistency(*probe)


def test_consistency_edge_cases_of_the_published_suite() -> None:
    some = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 5, EMPTY_ROOT, some, [])  # every tree extends the empty tree
    verify_consistency(3, 3, some, some, [])
    for args in [
        (1, 1, some, EMPTY_ROOT, []),  # same size, different roots
        (1, 0, some, EMPTY_ROOT, []),  # time travel to the past
        (2, 1, some, EMPTY_ROOT, []),
        (1, 2, some, EMPTY_ROOT, []),  # empty proof
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT]),  # roots match but the proof is not empty
        (0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT]),
        (1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT]),
        (0, 3, some, some, []),  # an empty tree has the empty root
    ]:
        with pytest.raises(IntegrityError):
            verify_consistency(*args)


def test_single_leaf_inclusion_edge_cases() -> None:
    value = leaf_hash(b"data")
    verify_inclusion(value, 0, 1, [], value)
    some = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
    for index, size in [(0, 0), (1, 0), (2, 1), (1, 1)]:
        with pytest.raises(IntegrityError):
            verify_inclusion(some, index, size, [], EMPTY_ROOT)
    with pytest.raises(InvalidInputError):
        verify_inclusion(b"", 0, 1, [], value)  # a hash of the wrong size


# -- tampering probes (the families of transparency-dev's corruptInclusionProof) --------------


def flip(value: bytes, bit: int) -> bytes:
    return bytes([value[0] ^ (1 << bit), *value[1:]])


def inclusion_probes(
    leaf: bytes, index: int, size: int, path: Sequence[bytes]
) -> list[tuple[bytes, int, int, list[bytes], bytes | None]]:
    """Every way to get an inclusion proof wrong; the root slot None means the right root."""
    some = hashlib.sha256(b"some other hash").digest()
    path = list(path)
    probes: list[tuple[bytes, int, int, list[bytes], bytes | None]] = []
    for wrong_index in {index - 1, index + 1, index ^ 2} - {index}:
        if wrong_index >= 0:
            probes.append((leaf, wrong_index, size, path, None))
    # Not size +- 1: a proof for one of the leftmost leaves need not pin the size down
    # (the signed checkpoint does), so only sizes that change the tree's height.
    for wrong_size in {size * 2, size // 2} - {size}:
        probes.append((leaf, index, wrong_size, path, None))
    probes += [
        (some, index, size, path, None),
        (flip(leaf, 0), index, size, path, None),
        (leaf, index, size, path, EMPTY_ROOT),
        (leaf, index, size, path, some),
        (leaf, index, size, [*path, some], None),
        (leaf, index, size, [some, *path], None),
        (leaf, index, size, [*path, EMPTY_ROOT], None),
    ]
    for position in range(len(path)):
        wrong = list(path)
        wrong[position] = flip(wrong[position], 3)
        probes.append((leaf, index, size, wrong, None))
    if path:
        probes.append((leaf, index, size, path[:-1], None))
        probes.append((leaf, index, size, path[1:], None))
    if len(path) > 1:
        probes.append((leaf, index, size, [path[0], some, *path[1:]], None))
        probes.append((leaf, index, size, [path[1], path[0], *path[2:]], None))
    return probes


def consistency_probes(
    old: int, new: int, old_root: bytes, new_root: bytes, path: Sequence[bytes]
) -> list[tuple[int, int, bytes, bytes, list[bytes]]]:
    some = hashlib.sha256(b"some other hash").digest()
    path = list(path)
    probes = []
    for wrong_old in {old - 1, old + 1, old ^ 2} - {old}:
        if wrong_old >= 0:
            probes.append((wrong_old, new, old_root, new_root, path))
    for wrong_new in {new * 2, new // 2} - {new}:
        probes.append((old, wrong_new, old_root, new_root, path))
    probes += [
        (old, new, some, new_root, path),
        (old, new, old_root, some, path),
        (old, new, new_root, old_root, path),
        (old, new, old_root, new_root, []),
        (old, new, old_root, new_root, [*path, some]),
        (old, new, old_root, new_root, [*path, old_root]),
        (old, new, old_root, new_root, [*path, new_root]),
        (old, new, old_root, new_root, [some, *path]),
        (old, new, old_root, new_root, [old_root, *path]),
        (old, new, old_root, new_root, [new_root, *path]),
        (old, new, old_root, new_root, [path[0], *path]),
        (old, new, old_root, new_root, path[:-1]),
    ]
    for position in range(len(path)):
        wrong = list(path)
        wrong[position] = flip(wrong[position], 4)
        probes.append((old, new, old_root, new_root, wrong))
    return [probe for probe in probes if probe != (old, new, old_root, new_root, path)]


# -- properties against the reference --------------------------------------------------------

sizes = st.one_of(st.integers(1, 70), st.integers(250, 600))
levels = st.sampled_from([0, 1, 3, 8, 64])


@settings(max_examples=60, deadline=None)
@given(size=sizes, salt=st.integers(0, 10**6), level=levels, data=st.data())
def test_every_inclusion_proof_matches_the_reference_and_verifies(
    size: int, salt: int, level: int, data: st.DataObject
) -> None:
    leaves = leaves_of(size, salt)
    tree = MemoryTree.of(leaves, min_stored_level=level)
    expected_root = ref_mth(leaves)
    assert tree.root() == expected_root
    assert root(tree, size) == expected_root
    indexes = {0, size - 1, data.draw(st.integers(0, size - 1))}
    for index in indexes:
        proof = inclusion_proof(tree, index, size)
        assert list(proof.path) == ref_path(index, leaves)
        proof.verify(leaf_hash(leaves[index]), expected_root)
        for leaf, i, n, path, target in inclusion_probes(
            leaf_hash(leaves[index]), index, size, proof.path
        ):
            with pytest.raises((IntegrityError, InvalidInputError)):
                verify_inclusion(leaf, i, n, path, target or expected_root)


@settings(max_examples=60, deadline=None)
@given(size=sizes, salt=st.integers(0, 10**6), level=levels, data=st.data())
def test_every_consistency_proof_matches_the_reference_and_verifies(
    size: int, salt: int, level: int, data: st.DataObject
) -> None:
    leaves = leaves_of(size, salt)
    tree = MemoryTree.of(leaves, min_stored_level=level)
    new_root = ref_mth(leaves)
    olds = {0, 1, size, data.draw(st.integers(0, size)), data.draw(st.integers(0, size))}
    for old in olds:
        if old > size:
            continue
        proof = consistency_proof(tree, old, size)
        assert list(proof.path) == ref_proof(old, leaves)
        old_root = ref_mth(leaves[:old])
        proof.verify(old_root, new_root)
        if 0 < old < size:
            for probe in consistency_probes(old, size, old_root, new_root, proof.path):
                with pytest.raises((IntegrityError, InvalidInputError)):
                    verify_consistency(*probe)


def test_every_pair_of_small_trees_is_consistent() -> None:
    leaves = leaves_of(34)
    tree = MemoryTree.of(leaves, min_stored_level=2)
    roots = [ref_mth(leaves[:n]) for n in range(35)]
    for new in range(35):
        for old in range(new + 1):
            proof = consistency_proof(tree, old, new)
            assert list(proof.path) == ref_proof(old, leaves[:new])
            verify_consistency(old, new, roots[old], roots[new], proof.path)
        for index in range(new):
            path = inclusion_proof(tree, index, new).path
            verify_inclusion(leaf_hash(leaves[index]), index, new, path, roots[new])


@settings(max_examples=40, deadline=None)
@given(size=st.integers(2, 200), salt=st.integers(0, 10**6), data=st.data())
def test_an_edited_leaf_breaks_the_proofs_across_it(
    size: int, salt: int, data: st.DataObject
) -> None:
    """A changed, dropped or swapped leaf before the old size fails the consistency proof."""
    leaves = leaves_of(size, salt)
    old = data.draw(st.integers(1, size - 1))
    old_root = ref_mth(leaves[:old])
    victim = data.draw(st.integers(0, old - 1))
    tampered = list(leaves)
    kind = data.draw(st.sampled_from(["edit", "delete", "swap"]))
    if kind == "edit":
        tampered[victim] = hashlib.sha256(b"forged" + tampered[victim]).digest()
    elif kind == "delete":
        del tampered[victim]
        tampered.append(hashlib.sha256(b"padding").digest())
    else:
        other = data.draw(st.integers(0, size - 1).filter(lambda i: i != victim))
        tampered[victim], tampered[other] = tampered[other], tampered[victim]
    forged = MemoryTree.of(tampered, min_stored_level=2)
    proof = consistency_proof(forged, old, size)
    with pytest.raises(IntegrityError):
        verify_consistency(old, size, old_root, forged.root(), proof.path)
    # And what now stands at the victim's place cannot be proven in the signed tree.
    path = inclusion_proof(forged, victim, size).path
    with pytest.raises(IntegrityError):
        verify_inclusion(leaf_hash(tampered[victim]), victim, size, path, ref_mth(leaves))


# -- the right edge --------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(chunks=st.lists(st.integers(0, 300), min_size=1, max_size=6), level=levels)
def test_compact_range_appends_in_chunks_and_yields_every_complete_subtree(
    chunks: list[int], level: int
) -> None:
    leaves = leaves_of(sum(chunks))
    hashes = [leaf_hash(value) for value in leaves]
    edge = CompactRange()
    produced: dict[Node, bytes] = {}
    done = 0
    for count in chunks:
        for node in edge.extend(hashes[done : done + count], min_level=level):
            assert (node.level, node.index) not in produced
            produced[(node.level, node.index)] = node.hash
        done += count
        assert edge.size == done
        assert edge.root() == ref_mth(leaves[:done])
        rebuilt = CompactRange.from_source(MemoryTree.of(leaves[:done], 3), done)
        assert rebuilt.hashes == edge.hashes
    # Exactly the complete subtrees at `level` and up, each with its reference hash.
    expected = {
        (lvl, i)
        for lvl in range(level, 64)
        for i in range((done >> lvl) if lvl < 64 else 0)
        if (i + 1) << lvl <= done
    }
    assert set(produced) == expected
    for (lvl, i), value in produced.items():
        assert value == ref_mth(leaves[i << lvl : (i + 1) << lvl])


def test_compact_range_rejects_a_wrong_edge() -> None:
    with pytest.raises(InvalidInputError):
        CompactRange(3, [EMPTY_ROOT])
    with pytest.raises(InvalidInputError):
        CompactRange(1, [b"short"])
    edge = CompactRange()
    with pytest.raises(InvalidInputError):
        edge.extend([b"not a hash"])


def test_proofs_read_stored_subtrees_not_the_whole_log() -> None:
    """With levels >= 8 stored, a proof at 20,000 leaves reads at most 255 leaves + a few nodes."""
    leaves = leaves_of(20_000)
    tree = MemoryTree.of(leaves, min_stored_level=8)
    expected = ref_mth(leaves)
    tree.reads = 0
    assert root(tree, 20_000) == expected
    assert tree.reads <= 255 + 15
    for index in (0, 4_097, 19_999):
        tree.reads = 0
        proof = inclusion_proof(tree, index, 20_000)
        proof.verify(leaf_hash(leaves[index]), expected)
        assert tree.reads <= 2 * 255 + 30
    tree.reads = 0
    consistency = consistency_proof(tree, 12_345, 20_000)
    consistency.verify(ref_mth(leaves[:12_345]), expected)
    assert tree.reads <= 3 * 255 + 45


class _Damaged:
    """A source whose stored hashes or leaves are damaged."""

    def __init__(self, tree: MemoryTree, *, bad_node: bool = False, short: bool = False):
        self.tree, self.bad_node, self.short = tree, bad_node, short

    def subtree_hashes(self, nodes: Collection[Node]) -> Mapping[Node, bytes]:
        found = dict(self.tree.subtree_hashes(nodes))
        if self.bad_node:
            return {node: b"x" * 31 for node in found}
        return found

    def leaf_hashes(self, start: int, end: int) -> Sequence[bytes]:
        values = self.tree.leaf_hashes(start, end)
        return values[:-1] if self.short else values


def test_a_damaged_source_is_an_integrity_error() -> None:
    tree = MemoryTree.of(leaves_of(600), min_stored_level=2)
    with pytest.raises(IntegrityError, match="damaged"):
        root(_Damaged(tree, bad_node=True), 600)
    with pytest.raises(IntegrityError, match="missing leaves"):
        inclusion_proof(_Damaged(tree, short=True), 5, 7)


def test_bad_arguments_are_invalid_input() -> None:
    tree = MemoryTree.of(leaves_of(5))
    calls: list[Callable[[], object]] = [
        lambda: inclusion_proof(tree, 5, 5),
        lambda: inclusion_proof(tree, -1, 5),
        lambda: consistency_proof(tree, 6, 5),
        lambda: root(tree, -1),
        lambda: root(tree, True),
        lambda: verify_inclusion(EMPTY_ROOT, 0, 1, "abc", EMPTY_ROOT),  # type: ignore[arg-type]
        lambda: verify_inclusion(EMPTY_ROOT, 0, 1, [EMPTY_ROOT] * 65, EMPTY_ROOT),
        lambda: verify_consistency(1, 2**63, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT]),
        lambda: MemoryTree(-1),
    ]
    for call in calls:
        with pytest.raises(InvalidInputError):
            call()


def test_covering_nodes_decompose_ranges_into_aligned_subtrees() -> None:
    assert merkle.covering_nodes(0, 13) == [(3, 0), (2, 2), (0, 12)]
    assert merkle.covering_nodes(4, 7) == [(1, 2), (0, 6)]
    assert merkle.covering_nodes(0, 0) == []
    for start in range(40):
        for end in range(start, 80):
            covered: list[int] = []
            for level, index in merkle.covering_nodes(start, end):
                lo = index << level
                assert lo % (1 << level) == 0
                covered.extend(range(lo, lo + (1 << level)))
            assert covered == list(range(start, end))
