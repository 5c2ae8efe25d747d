"""The Merkle tree kept in the stores: the same roots and proofs as the tree computed in
memory from read_all's events, kept lazily (appends never touch it), on every backend."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from chatledger.errors import IntegrityError, NotFoundError
from chatledger.events import EventStore
from chatledger.events.postgres import PostgresStore
from chatledger.proofs.checkpoint import read_checkpoint_file
from chatledger.proofs.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    verify_consistency,
    verify_inclusion,
)
from chatledger.proofs.merkle import leaf_hash as rfc_leaf_hash
from chatledger.proofs.note import Signer
from chatledger.proofs.sinks import FileSink
from chatledger.proofs.tree import StoreTree, check_tree, checkpoint_problem
from tests.store_contract import events_after, message, new_id, started
from tests.support.postgres import connect

StoreFactory = Callable[[], EventStore]


def add_conversation(store: EventStore, events: int) -> str:
    """A conversation of ``events`` events (conversation_started, then messages), once
    every event of the store is readable.

    On PostgreSQL, read_all and the tree hold only the events below the visibility
    horizon: a transaction still open anywhere on the server holds newer commits back.
    """
    cid = new_id()
    batch = [started(), *(message(turn=i + 1, text=f"m{i}") for i in range(events - 1))]
    for start in range(0, len(batch), 200):
        store.append(cid, batch[start : start + 200], expected_version=start)
    total = sum(info.version for info in store.conversations())
    deadline = time.monotonic() + 60
    while len(events_after(store, 0)) != total:
        assert time.monotonic() < deadline, "the events never became readable"
        time.sleep(0.1)
    return cid


def memory_tree(store: EventStore) -> MemoryTree:
    """The tree computed from scratch in memory from what read_all returns."""
    return MemoryTree.of([bytes.fromhex(event.hash) for event in events_after(store, 0)])


def test_an_empty_store_has_the_empty_tree(make_store: StoreFactory) -> None:
    store = make_store()
    head = StoreTree(store).update()
    assert (head.size, head.root_hash) == (0, EMPTY_ROOT)


def test_roots_and_proofs_match_the_tree_of_read_all_at_every_size(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    tree = StoreTree(store)
    sizes = []
    for count in (1, 254, 1, 300, 470, 9):  # crosses 256, 512 and 1024
        add_conversation(store, count)
        head = tree.update()
        expected = memory_tree(store)
        assert head.size == expected.size
        assert head.root_hash == expected.root()
        sizes.append(head.size)
    reference = memory_tree(store)
    leaves = [bytes.fromhex(event.hash) for event in events_after(store, 0)]
    for old in sizes:
        assert tree.root(old) == MemoryTree.of(leaves[:old]).root()
        for new in sizes:
            if old <= new:
                consistency = tree.consistency_proof(old, new)
                verify_consistency(
                    old,
                    new,
                    MemoryTree.of(leaves[:old]).root(),
                    MemoryTree.of(leaves[:new]).root(),
                    consistency.path,
                )
    events = events_after(store, 0)
    for index in (0, 1, 255, 256, 257, 511, 512, 700, len(events) - 1):
        proof, located = tree.inclusion_proof(events[index].event_id)
        assert located.leaf_index == index
        assert located.leaf == bytes.fromhex(events[index].hash)
        verify_inclusion(
            rfc_leaf_hash(located.leaf), index, reference.size, proof.path, reference.root()
        )
        with pytest.raises(IntegrityError):
            verify_inclusion(
                rfc_leaf_hash(leaves[index - 1]),
                index,
                reference.size,
                proof.path,
                reference.root(),
            )
    # Against an older size: the proof leads to that size's root.
    proof, located = tree.inclusion_proof(events[300].event_id, 512)
    verify_inclusion(
        rfc_leaf_hash(located.leaf), 300, 512, proof.path, MemoryTree.of(leaves[:512]).root()
    )
    with pytest.raises(NotFoundError, match="newer checkpoint"):
        tree.inclusion_proof(events[600].event_id, 512)
    with pytest.raises(IntegrityError, match="fewer than"):
        tree.consistency_proof(10, len(events) + 1)
    with pytest.raises(NotFoundError):
        tree.inclusion_proof("no-such-event")


def test_appends_never_write_the_tree_and_the_stored_subtrees_are_the_complete_ones(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    add_conversation(store, 700)
    assert store._tree_frontier(8) is None  # nothing until a checkpoint or a proof
    tree = StoreTree(store)
    tree.update()
    events = events_after(store, 0)
    reference = MemoryTree.of([bytes.fromhex(e.hash) for e in events])
    stored = store._tree_nodes([(8, 0), (8, 1), (9, 0), (8, 2), (10, 0)])
    assert set(stored) == {(8, 0), (8, 1), (9, 0)}  # 700 leaves: two blocks and their parent
    for node, row in stored.items():
        assert row.hash == reference.stored[node]
        assert row.last_position == events[((node[1] + 1) << node[0]) - 1].position
    check = check_tree(store, [256, 700])
    assert check.stored_problems == []
    assert check.head() == reference.head()
    assert check.roots == {
        256: MemoryTree.of([bytes.fromhex(e.hash) for e in events[:256]]).root(),
        700: reference.root(),
    }


def test_concurrent_extenders_agree(make_store: StoreFactory) -> None:
    store = make_store()
    add_conversation(store, 1500)
    others = [make_store() for _ in range(3)]
    heads = []
    errors: list[BaseException] = []

    def extend(on: EventStore) -> None:
        try:
            heads.append(StoreTree(on).update())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=extend, args=(other,)) for other in others]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert {head for head in heads} == {memory_tree(store).head()}
    assert check_tree(store).stored_problems == []


def test_a_changed_stored_subtree_is_named_by_check_tree_and_plain_verify(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    add_conversation(store, 600)
    StoreTree(store).update()
    row = store._tree_nodes([(8, 1)])[(8, 1)]
    # Replace the row (the put keeps an existing row, so go under it).
    if hasattr(store, "_tree"):
        store._tree[(8, 1)] = row._replace(hash=bytes(32))  # memory store
    elif hasattr(store, "_conn"):
        store._conn.execute(
            "UPDATE merkle_nodes SET hash = zeroblob(32) WHERE level = 8 AND idx = 1"
        )
    else:
        store.run_in_transaction(
            lambda conn: conn.execute(
                "UPDATE merkle_nodes SET hash = decode(repeat('00', 32), 'hex') WHERE level = 8 AND idx = 1"
            )
        )
    check = check_tree(store)
    assert check.first_stored_difference == (256, 512)
    assert any("[256, 512)" in problem for problem in check.stored_problems)
    report = store.verify()
    assert any("[256, 512)" in str(problem) for problem in report.problems), report.problems


def test_a_periodic_checkpointer_signs_the_store_as_it_grows(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    store = make_store()
    signer = Signer.generate("chatledger.test/periodic")
    path = tmp_path / "checkpoints"
    tree = StoreTree(store)
    with tree.checkpointer(signer, [FileSink(path)], every_events=100, poll_seconds=0.02):
        for _ in range(5):
            add_conversation(store, 120)
            deadline = time.monotonic() + 30
            while not path.exists() or read_checkpoint_file(path, [signer.verifier])[-1].size < sum(
                info.version for info in store.conversations()
            ):
                assert time.monotonic() < deadline, "no checkpoint of the new events"
                time.sleep(0.02)
    signed = read_checkpoint_file(path, [signer.verifier])
    sizes = [item.size for item in signed]
    assert sizes == sorted(sizes) and sizes[-1] == 600 and len(sizes) >= 5
    check = check_tree(store, sizes)
    assert [checkpoint_problem(check, item.checkpoint) for item in signed] == [None] * len(signed)


@pytest.mark.postgres
def test_postgres_keeps_events_of_later_transactions_out_while_an_older_one_is_open(
    postgres_url: str,
) -> None:
    """A transaction that took its id first could still commit an event with a lower
    position: until it ends, nothing after it enters the tree (read_all's horizon)."""
    schema = f"proofs_{uuid.uuid4().hex[:12]}"
    with PostgresStore(postgres_url, schema=schema, pool_min=0, pool_max=2) as store:
        add_conversation(store, 300)
        tree = StoreTree(store)
        assert tree.update().size == 300
        with connect(postgres_url) as older:
            older.autocommit = False
            older.execute("SELECT pg_current_xact_id()")  # an id, older than what follows
            cid = new_id()
            store.append(cid, [started(), message(1)], expected_version=0)
            assert StoreTree(store).update().size == 300
            with pytest.raises(NotFoundError, match="not in the Merkle tree yet"):
                StoreTree(store).inclusion_proof(store.read(cid)[1].event_id)
            older.rollback()
        deadline = time.monotonic() + 60
        while tree.update().size != 302:
            assert time.monotonic() < deadline, "the events never entered the tree"
            time.sleep(0.1)
        assert tree.update() == memory_tree(store).head()
