"""Group commit on SQLite (docs/performance.md, docs/stores.md): appends that threads
start while the store is busy are committed together, in one transaction and one sync,
each with its own expected-version check and its own outcome.

The groups here are made deterministic: the test holds the store's lock while the
threads queue their appends, then lets go; SQLite's own trace of the statements it ran
shows how many transactions committed them. Real SQLite files throughout.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatledger import MemoryStore, SQLiteStore
from chatledger.errors import ConcurrencyError, IntegrityError, StoreError
from chatledger.events.envelope import NewEvent
from chatledger.events.kinds import ConversationStarted, UserMessageAdded


def started() -> NewEvent:
    return NewEvent(data=ConversationStarted(model="m"), metadata={"actor": "t"})


def message(turn: int, text: str = "hi") -> NewEvent:
    return NewEvent(
        data=UserMessageAdded(turn=turn, content={"role": "user", "parts": [{"text": text}]}),
        metadata={"actor": "t"},
    )


@pytest.fixture(params=["NORMAL", "FULL"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "group.db", synchronous=request.param)
    yield store
    store.close()


def statements(store: SQLiteStore) -> list[str]:
    """Every SQL statement the store's connection runs from now on."""
    seen: list[str] = []
    store._conn.set_trace_callback(seen.append)
    return seen


def in_one_group(store: SQLiteStore, calls: list[Callable[[], Any]]) -> list[Any]:
    """Run ``calls`` (appends) in threads that all queue while the store is held, so that
    one group commits them; return each call's result or exception, in order."""
    outcomes: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            outcomes[index] = calls[index]()
        except Exception as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
    with store._lock:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        # One thread leads (it waits for the lock), the others queue behind it.
        while len(store._pending) < len(calls) - 1:
            assert time.monotonic() < deadline, "the appends never queued"
            time.sleep(0.005)
    for thread in threads:
        thread.join(30)
    return outcomes


def test_queued_appends_share_one_transaction(store: SQLiteStore) -> None:
    ids = [str(uuid.uuid4()) for _ in range(8)]
    seen = statements(store)
    outcomes = in_one_group(
        store,
        [functools.partial(store.append, cid, [started()], expected_version=0) for cid in ids],
    )
    assert all(isinstance(positions, list) and len(positions) == 1 for positions in outcomes)
    assert sorted(p[0] for p in outcomes) == list(range(1, 9))
    assert seen.count("BEGIN IMMEDIATE") == 1
    assert seen.count("COMMIT") == 1
    for cid in ids:
        assert [event.type for event in store.read(cid)] == ["conversation_started"]
    assert store.verify().ok


def test_each_append_of_a_group_keeps_its_own_check_and_error(store: SQLiteStore) -> None:
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    for cid in (a, b, c):
        store.append(cid, [started()], expected_version=0)
    taken = message(1)
    store.append(c, [taken], expected_version=1)
    seen = statements(store)
    outcomes = in_one_group(
        store,
        [
            lambda: store.append(a, [message(1, "first")], expected_version=1),
            lambda: store.append(b, [message(1)], expected_version=5),  # stale
            # An event id another conversation already has: refused, nothing written.
            lambda: store.append(
                b, [NewEvent(event_id=taken.event_id, data=taken.data)], expected_version=1
            ),
            lambda: store.append(c, [message(2)], expected_version=2),
        ],
    )
    assert isinstance(outcomes[0], list)
    assert isinstance(outcomes[1], ConcurrencyError)
    assert isinstance(outcomes[2], IntegrityError)
    assert taken.event_id in str(outcomes[2])
    assert isinstance(outcomes[3], list)
    assert seen.count("COMMIT") == 1
    assert [event.version for event in store.read(a)] == [1, 2]
    assert [event.version for event in store.read(b)] == [1]
    assert [event.version for event in store.read(c)] == [1, 2, 3]
    assert store.verify().ok


def test_two_appends_at_one_version_in_a_group_one_wins(store: SQLiteStore) -> None:
    """The second sees the first's write inside the shared transaction, as it would
    after the first's commit."""
    cid = str(uuid.uuid4())
    store.append(cid, [started()], expected_version=0)
    outcomes = in_one_group(
        store,
        [
            lambda: store.append(cid, [message(1, "one")], expected_version=1),
            lambda: store.append(cid, [message(1, "two")], expected_version=1),
        ],
    )
    assert sum(isinstance(outcome, list) for outcome in outcomes) == 1
    (lost,) = [outcome for outcome in outcomes if isinstance(outcome, ConcurrencyError)]
    assert "version" in str(lost)
    assert [event.version for event in store.read(cid)] == [1, 2]
    assert store.verify().ok


def test_a_retry_in_a_group_returns_the_first_positions(store: SQLiteStore) -> None:
    cid = str(uuid.uuid4())
    first = [started()]
    outcomes = in_one_group(
        store,
        [
            lambda: store.append(cid, first, expected_version=0),
            lambda: store.append(cid, first, expected_version=0),
        ],
    )
    assert outcomes[0] == outcomes[1]
    assert len(store.read(cid)) == 1


def test_a_group_that_cannot_commit_fails_every_append_alike(store: SQLiteStore) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    outcomes: list[Any] = [None] * 3

    def run(index: int) -> None:
        try:
            outcomes[index] = store.append(ids[index], [started()], expected_version=0)
        except Exception as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(index,)) for index in range(3)]
    with store._lock:
        for thread in threads:
            thread.start()
        while len(store._pending) < 2:
            time.sleep(0.005)
        store.close()  # the group's transaction cannot begin
    for thread in threads:
        thread.join(30)
    assert all(isinstance(outcome, StoreError) for outcome in outcomes)
    assert all("closed" in str(outcome) for outcome in outcomes)
    assert len({id(outcome) for outcome in outcomes}) == 3  # an exception each
    with SQLiteStore(store.path) as reopened:
        assert reopened.conversations() == []


def test_many_threads_many_conversations_all_recorded(store: SQLiteStore) -> None:
    """Free-running: 8 threads x 25 appends, each thread its own conversation."""
    ids = [str(uuid.uuid4()) for _ in range(8)]
    errors: list[BaseException] = []

    def writer(cid: str) -> None:
        try:
            store.append(cid, [started()], expected_version=0)
            for turn in range(1, 25):
                store.append(cid, [message(turn)], expected_version=turn)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(cid,)) for cid in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    for cid in ids:
        assert [event.version for event in store.read(cid)] == list(range(1, 26))
    report = store.verify()
    assert report.ok, report.problems


# ------------------------------------------------------------- what an append wrote


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        with SQLiteStore(tmp_path / "written.db") as store:
            yield store
    elif request.param == "memory":
        yield MemoryStore()
    else:
        from chatledger.events.postgres import PostgresStore
        from tests.support.postgres import scratch_database

        with scratch_database("chatledger_written") as url, PostgresStore(url) as store:
            yield store


def test_just_appended_is_what_a_read_returns(any_store: Any) -> None:
    """The events an append wrote, given without a read, equal what the read returns."""
    cid = str(uuid.uuid4())
    positions = any_store.append(cid, [started()], expected_version=0)
    assert any_store.just_appended(cid, positions) == any_store.read(cid)
    positions = any_store.append(cid, [message(1, "é \u2028 x"), message(2)], expected_version=1)
    written = any_store.just_appended(cid, positions)
    assert written is not None and [event.version for event in written] == [2, 3]
    assert written == any_store.read(cid, after_version=1)
    # Asked once per append; not for another conversation or other positions.
    assert any_store.just_appended(cid, positions) is None
    other = any_store.append(str(uuid.uuid4()), [started()], expected_version=0)
    assert any_store.just_appended(cid, other) is None


def test_just_appended_is_unknown_for_an_idempotent_retry(any_store: Any) -> None:
    cid = str(uuid.uuid4())
    first = [started()]
    any_store.append(cid, first, expected_version=0)
    again = any_store.append(cid, first, expected_version=0)  # nothing written
    assert any_store.just_appended(cid, again) is None


def test_just_appended_comes_from_the_thread_that_appended(tmp_path: Path) -> None:
    """In a group, the leader writes every append: each thread still gets its own."""
    with SQLiteStore(tmp_path / "threads.db") as store:
        ids = [str(uuid.uuid4()) for _ in range(4)]

        def append_and_get(cid: str) -> Any:
            positions = store.append(cid, [started()], expected_version=0)
            return store.just_appended(cid, positions)

        outcomes = in_one_group(store, [functools.partial(append_and_get, cid) for cid in ids])
        for cid, written in zip(ids, outcomes, strict=True):
            assert written == store.read(cid)
