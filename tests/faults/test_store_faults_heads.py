"""The ``streams`` table (each conversation's head) is checked against the events, never
trusted: on SQLite and PostgreSQL, a head row deleted, added, moved behind or ahead of
the events, given another hash, parent or times, is named by ``verify``; appends raise
:class:`IntegrityError` (never a ConcurrencyError a writer would retry forever); reads of
the head (``stream_info``, ``conversations``) raise rather than return what the events
contradict; and a chat's send fails at once instead of spinning.

Each test damages a real database the way someone with write access to it could (plain
SQL on the table), then looks at every code path that reads the row.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import chatledger
from chatledger.client.transports.scripted import ScriptedTransport
from chatledger.errors import ConcurrencyError, IntegrityError
from chatledger.events import EventStore, SQLiteStore
from chatledger.events.audit import export_conversation, import_lines
from tests.faults import ledger
from tests.faults.store_faults import Backend, backend_for
from tests.store_contract import message, new_id, start
from tests.support.postgres import scratch_database

#: How long a send may take before the test calls it a hang (it takes milliseconds).
HANG = 30.0


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with scratch_database("chatledger_heads") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    return backend_for(request.param, tmp_path, url)


def chat_on(store: EventStore, replies: int = 3) -> tuple[chatledger.Client, chatledger.Chat]:
    transport = ScriptedTransport()
    for number in range(replies):
        transport.enqueue(f"reply {number}")
    client = chatledger.Client(store=store, transport=transport, actor="heads")
    return client, client.chats.create(model="gemini-test")


def send_or_hang(chat: chatledger.Chat, text: str) -> BaseException | None:
    """Send in a thread; the exception it raised (None if it returned). A send still
    running after ``HANG`` seconds fails the test: it would never have returned."""
    outcome: list[BaseException | None] = []

    def send() -> None:
        try:
            chat.send_message(text)
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    thread.join(HANG)
    assert outcome, f"send_message({text!r}) was still running after {HANG:g} s: it spins"
    return outcome[0]


def problems(store: EventStore, conversation_id: str | None = None) -> list[str]:
    return [str(problem) for problem in store.verify(conversation_id).problems]


def tally(backend: Backend, attack: str) -> None:
    ledger.record("store", f"damaged-head-{attack}/{backend.name}", faults=1)


# ----------------------------------------------------------------------------- a deleted row


def test_a_deleted_head_row_is_named_and_a_send_fails_at_once(backend: Backend) -> None:
    with backend.open() as store:
        # A chat open before the damage (its projections at the head), as in the report.
        _client, chat = chat_on(store)
        chat.send_message("one")
        cid = chat.id
        before = store.read(cid)
        backend.execute("DELETE FROM streams WHERE conversation_id = %s", (cid,))
        raised = send_or_hang(chat, "two")
        assert isinstance(raised, IntegrityError), raised
        assert "no head row" in str(raised)
        assert store.read(cid) == before

    with backend.open() as store:
        found = problems(store)
        assert any(cid in p and "no head row" in p for p in found), found
        with pytest.raises(IntegrityError, match="no head row"):
            store.stream_info(cid)
        with pytest.raises(IntegrityError, match="no head row"):
            store.append(cid, [message(2)], expected_version=before[-1].version)
        client, _ = chat_on(store)
        with pytest.raises(IntegrityError, match="no head row"):
            client.chats.get(cid).send_message("three")
        assert store.read(cid) == before
    tally(backend, "deleted")


# ----------------------------------------------------------------------------- moved heads


@pytest.mark.parametrize("move", [-1, 1])
def test_a_head_behind_or_ahead_of_the_events_is_named_and_refuses_appends(
    backend: Backend, move: int
) -> None:
    with backend.open() as store:
        cid = new_id()
        start(store, cid, message(1), message(2))
        events = store.read(cid)
        target = events[-1].version + move
        # The most convincing edit: the head's hash is the event's at its new version
        # (ahead, there is none: the hash of the last one).
        head_hash = events[min(target, len(events)) - 1].hash
        backend.execute(
            "UPDATE streams SET version = %s, head_hash = %s WHERE conversation_id = %s",
            (target, head_hash, cid),
        )
    with backend.open() as store:
        found = problems(store)
        assert any(cid in p and f"version {target}" in p for p in found), found
        with pytest.raises(IntegrityError, match=cid):
            store.stream_info(cid)
        for expected in {len(events), target}:
            with pytest.raises(IntegrityError, match="head"):
                store.append(cid, [message(3)], expected_version=expected)
        assert store.read(cid) == events
    tally(backend, "behind" if move < 0 else "ahead")


def test_a_changed_head_hash_is_named_and_nothing_chains_onto_it(backend: Backend) -> None:
    with backend.open() as store:
        cid = new_id()
        start(store, cid, message(1))
        events = store.read(cid)
        # This store object remembers the head from its own append (PostgreSQL does).
        backend.execute(
            "UPDATE streams SET head_hash = %s WHERE conversation_id = %s", ("0" * 64, cid)
        )
        with pytest.raises(IntegrityError, match="head"):
            store.append(cid, [message(2)], expected_version=2)
    with backend.open() as store:
        found = problems(store)
        assert any(cid in p and "hash" in p for p in found), found
        with pytest.raises(IntegrityError, match="head"):
            store.append(cid, [message(2)], expected_version=2)
        with pytest.raises(IntegrityError, match=cid):
            store.stream_info(cid)
        assert store.read(cid) == events
    tally(backend, "hash")


def test_a_head_row_with_no_events_is_named(backend: Backend) -> None:
    with backend.open() as store:
        real = new_id()
        start(store, real, message(1))
        ghost = new_id()
        backend.execute(
            "INSERT INTO streams (conversation_id, version, head_hash, created_at, updated_at) "
            "SELECT %s, version, head_hash, created_at, updated_at FROM streams "
            "WHERE conversation_id = %s",
            (ghost, real),
        )
    with backend.open() as store:
        found = problems(store)
        assert any(ghost in p and "no events" in p for p in found), found
        with pytest.raises(IntegrityError, match=ghost):
            store.stream_info(ghost)
        with pytest.raises(IntegrityError, match=ghost):
            store.conversations()
        # Not "expected version 0, found 2", which a creator would retry forever.
        with pytest.raises(IntegrityError, match="no events"):
            start(store, ghost)
        assert store.read(ghost) == []
    tally(backend, "no-events")


def test_changed_head_times_are_named_and_listings_refuse_them(backend: Backend) -> None:
    with backend.open() as store:
        cid = new_id()
        start(store, cid, message(1))
        backend.execute(
            "UPDATE streams SET updated_at = %s WHERE conversation_id = %s",
            ("2999-01-01T00:00:00.000000Z", cid),
        )
    with backend.open() as store:
        found = problems(store)
        assert any(cid in p and "updated_at" in p for p in found), found
        with pytest.raises(IntegrityError, match="updated_at"):
            store.conversations()
        backend.execute(
            "UPDATE streams SET updated_at = created_at, created_at = %s "
            "WHERE conversation_id = %s",
            ("2000-01-01T00:00:00.000000Z", cid),
        )
        found = problems(store)
        assert any(cid in p and "created_at" in p for p in found), found
        with pytest.raises(IntegrityError, match="created_at"):
            store.stream_info(cid)
    tally(backend, "times")


# ----------------------------------------------------------------------------- parents


@pytest.mark.parametrize("column", ["parent_id", "parent_version"])
def test_a_rewritten_parent_is_named_and_never_shown_or_exported(
    backend: Backend, column: str
) -> None:
    with backend.open() as store:
        client, chat = chat_on(store)
        chat.send_message("one")
        chat.send_message("two")
        fork = chat.fork(turn=1)
        _other_client, other = chat_on(store)
        export = list(export_conversation(store, fork.id))
        value: object = other.id if column == "parent_id" else 2
        backend.execute(
            f"UPDATE streams SET {column} = %s WHERE conversation_id = %s", (value, fork.id)
        )
    with backend.open() as store:
        found = problems(store)
        assert any(fork.id in p and "parent" in p for p in found), found
        with pytest.raises(IntegrityError, match="parent"):
            store.stream_info(fork.id)
        client, _ = chat_on(store)
        with pytest.raises(IntegrityError, match="parent"):
            client.chats.tree(fork.id)
        if column == "parent_id":
            # Listed as another conversation's fork: the listing refuses the row.
            with pytest.raises(IntegrityError, match="parent"):
                store.conversations(parent_id=other.id)
        # The export follows the forks' own (hashed) first events, not the table: the
        # same lines as before, and they import.
        assert list(export_conversation(store, fork.id)) == export
    with SQLiteStore(":memory:") as copy:
        assert import_lines(copy, export).conversations == [chat.id, fork.id]
        assert copy.verify().ok
    tally(backend, f"parent-{column}")


def test_a_head_row_cleared_of_its_parent_is_named(backend: Backend) -> None:
    with backend.open() as store:
        _client, chat = chat_on(store)
        chat.send_message("one")
        fork = chat.fork(turn=1)
        backend.execute(
            "UPDATE streams SET parent_id = NULL, parent_version = NULL WHERE conversation_id = %s",
            (fork.id,),
        )
    with backend.open() as store:
        found = problems(store)
        assert any(fork.id in p and "parent" in p for p in found), found
        with pytest.raises(IntegrityError, match="parent"):
            store.stream_info(fork.id)
    tally(backend, "parent-cleared")


# ----------------------------------------------------------------------------- events with no row


def test_events_with_no_head_row_cannot_be_created_over(backend: Backend) -> None:
    """Creating a conversation with the id of one whose head row is gone: not a
    ConcurrencyError (a creator retries those), not a silent second version 1."""
    with backend.open() as store:
        cid = new_id()
        start(store, cid, message(1))
        events = store.read(cid)
        backend.execute("DELETE FROM streams WHERE conversation_id = %s", (cid,))
    with backend.open() as store:
        try:
            start(store, cid)
        except ConcurrencyError as exc:
            pytest.fail(f"a writer would retry this forever: {exc!r}")
        except IntegrityError as exc:
            assert "no head row" in str(exc)
        else:
            pytest.fail("a conversation was created over existing events")
        assert store.read(cid) == events
    tally(backend, "deleted-create")


# ----------------------------------------------------------------------------- a gap in the events


def test_a_read_across_a_deleted_event_is_an_error(backend: Backend) -> None:
    """The same class of damage in the events themselves: with a middle event deleted (its
    trigger dropped first), a read across the gap raises instead of returning a history
    without it; reads after the gap, and the head, are untouched."""
    with backend.open() as store:
        cid = new_id()
        start(store, cid, message(1), message(2), message(3))
        events = store.read(cid)
        if backend.name == "sqlite":
            backend.execute("DROP TRIGGER events_no_delete", ())
        else:
            backend.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_or_delete", ())
        backend.execute("DELETE FROM events WHERE conversation_id = %s AND version = 2", (cid,))
    with backend.open() as store:
        with pytest.raises(IntegrityError, match="v3 where v2 belongs"):
            store.read(cid)
        with pytest.raises(IntegrityError, match="v2 belongs"):
            chat_on(store)[0].chats.get(cid)
        assert store.read(cid, after_version=2) == events[2:]
        assert any(cid in p and "version gap" in p for p in problems(store))
    tally(backend, "deleted-event")
