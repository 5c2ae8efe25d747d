"""``verify`` checks every table the library reads, not only the events: snapshots (their
anchors: a stream with events, a version it has) and the schema the migrations made
(the triggers that keep events immutable, the unique keys, the functions appends run,
every migration recorded), on SQLite and PostgreSQL. Each test edits a real database
the way someone with write access could, and expects ``verify`` to name the change.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import chatledger
from chatledger.client.transports.scripted import ScriptedTransport
from chatledger.errors import IntegrityError
from chatledger.events import EventStore, Snapshot, SQLiteStore
from chatledger.events.postgres import PostgresStore
from chatledger.readmodels import POSITIONS_TABLE, ProjectionRunner, TokenUsageByModel, Transaction
from tests.faults import ledger
from tests.faults.store_faults import Backend, backend_for
from tests.store_contract import message, new_id, start
from tests.support.postgres import connect, scratch_database
from tests.test_projection_runner import add, fill, last_position


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with scratch_database("chatledger_tables") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    return backend_for(request.param, tmp_path, url)


def problems(store: EventStore, conversation_id: str | None = None) -> list[str]:
    return [str(problem) for problem in store.verify(conversation_id).problems]


def snapshot(cid: str, version: int) -> Snapshot:
    return Snapshot(conversation_id=cid, name="history", version=version, state=b"state")


# ----------------------------------------------------------------------------- snapshots


def test_a_snapshot_past_the_last_event_is_named(backend: Backend) -> None:
    with backend.open() as store:
        cid = new_id()
        start(store, cid, message(1), message(2))
        store.save_snapshot(snapshot(cid, 3))
        assert store.verify().ok
        backend.execute("UPDATE snapshots SET version = 7 WHERE conversation_id = %s", (cid,))
        for found in (problems(store), problems(store, cid)):
            assert any(cid in p and "snapshot" in p and "version 7" in p for p in found), found
    ledger.record("store", f"snapshot-anchor/{backend.name}", faults=1)


def test_a_snapshot_of_a_conversation_with_no_events_is_named(backend: Backend) -> None:
    with backend.open() as store:
        ghost = new_id()
        store.save_snapshot(snapshot(ghost, 1))
        found = problems(store)
        assert any(ghost in p and "with no events" in p for p in found), found
        assert any(ghost in p for p in problems(store, ghost))
    ledger.record("store", f"snapshot-orphan/{backend.name}", faults=1)


# ----------------------------------------------------------------------------- schema


SQLITE_EDITS = {
    "dropped-trigger": ("DROP TRIGGER events_no_delete", "events_no_delete"),
    "replaced-trigger": (
        "DROP TRIGGER events_no_update; CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
        "WHEN 0 BEGIN SELECT RAISE(ABORT, 'chatledger events are immutable'); END",
        "events_no_update",
    ),
    "foreign-trigger": (
        "CREATE TRIGGER shadow AFTER INSERT ON events BEGIN "
        "UPDATE streams SET updated_at = '2999' WHERE conversation_id = NEW.conversation_id; END",
        "shadow",
    ),
    "dropped-unique-index": (
        "DROP INDEX events_event_id; CREATE INDEX events_event_id ON events (event_id)",
        "events_event_id",
    ),
    "forgotten-migration": (
        "DELETE FROM _chatledger_migrations WHERE name = '005_events_are_never_replaced'",
        "005_events_are_never_replaced",
    ),
}


@pytest.mark.parametrize("edit", list(SQLITE_EDITS))
def test_a_changed_sqlite_schema_is_named(tmp_path: Path, edit: str) -> None:
    statements, named = SQLITE_EDITS[edit]
    path = tmp_path / "schema.db"
    with SQLiteStore(path) as store:
        start(store, new_id(), message(1))
        assert store.verify().ok
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.executescript(statements)
        found = problems(store)
        assert any(named in p for p in found), found
    ledger.record("store", "schema/sqlite", faults=1)


POSTGRES_EDITS = {
    "disabled-trigger": (
        "ALTER TABLE events DISABLE TRIGGER events_no_update_or_delete",
        "events_no_update_or_delete on events is disabled",
    ),
    "dropped-trigger": ("DROP TRIGGER events_no_truncate ON events", "events_no_truncate"),
    "foreign-trigger": (
        "CREATE FUNCTION shadow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$; "
        "CREATE TRIGGER shadow BEFORE INSERT ON streams FOR EACH ROW EXECUTE FUNCTION shadow()",
        "shadow",
    ),
    "replaced-append": (
        "CREATE OR REPLACE FUNCTION chatledger_append(p_conversation_id text, "
        "p_expected_version bigint, p_expected_hash text, p_events json, p_parent_id text, "
        "p_parent_version bigint, OUT positions bigint[], OUT version bigint, "
        "OUT head_hash text) LANGUAGE plpgsql AS $$ BEGIN RETURN; END $$",
        "chatledger_append",
    ),
    "dropped-unique-constraint": (
        "ALTER TABLE events DROP CONSTRAINT events_stream",
        "events_stream",
    ),
    "forgotten-migration": (
        "DELETE FROM chatledger_migrations WHERE name = '006_append'",
        "006_append",
    ),
}


@pytest.mark.parametrize("edit", list(POSTGRES_EDITS))
def test_a_changed_postgres_schema_is_named(postgres_url: str, edit: str) -> None:
    statements, named = POSTGRES_EDITS[edit]
    schema = f"schema_{uuid.uuid4().hex[:10]}"
    with PostgresStore(postgres_url, schema=schema) as store:
        start(store, new_id(), message(1))
        assert store.verify().ok
        with connect(postgres_url) as conn:
            conn.execute(f"SET search_path TO {schema}")
            conn.execute(statements)
        found = problems(store)
        assert any(named in p for p in found), found
    ledger.record("store", "schema/postgres", faults=1)


# ----------------------------------------------------------------------------- damaged snapshot rows


@pytest.mark.parametrize(
    ("column", "value"), [("version", "three"), ("version", 2.5), ("state", "not bytes")]
)
def test_a_damaged_snapshot_row_is_ignored_by_reads_and_named_by_verify(
    tmp_path: Path, column: str, value: object
) -> None:
    """SQLite keeps whatever a column is given: a snapshot row whose version is not an
    integer, or whose state is text, is a damaged cache. A resume must not crash on it
    (it starts from the events instead) and verify names it."""
    path = tmp_path / "snapshots.db"
    with SQLiteStore(path) as store:
        transport = ScriptedTransport().enqueue("one")
        client = chatledger.Client(store=store, transport=transport)
        chat = client.chats.create(model="m")
        chat.send_message("hello")
        store.save_snapshot(
            Snapshot(conversation_id=chat.id, name="conversation", version=3, state=b"\x80")
        )
        with contextlib.closing(sqlite3.connect(path)) as conn, conn:
            conn.execute(f"UPDATE snapshots SET {column} = ?", (value,))
        assert store.load_snapshot(chat.id, "conversation") is None
        resumed = chatledger.Client(store=store).chats.get(chat.id)
        assert [content.role for content in resumed.get_history()] == ["user", "model"]
        found = problems(store)
        assert any(chat.id in p and "snapshot" in p and "damaged" in p for p in found), found
    ledger.record("store", "snapshot-damaged/sqlite", faults=1)


# ----------------------------------------------------------------------------- the runner's position


def run_or_hang(runner: ProjectionRunner) -> BaseException | int:
    """``runner.run_once()`` in a thread: what it raised or returned. Still running after
    30 s (it takes milliseconds) fails the test: it would never have returned."""
    outcome: list[BaseException | int] = []

    def work() -> None:
        try:
            outcome.append(runner.run_once())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(30)
    assert outcome, "run_once was still running after 30 s: it spins"
    return outcome[0]


def positions_table(store: EventStore, statement: str, params: tuple[Any, ...] = ()) -> None:
    """Change the runner's positions table behind its back (someone with the database)."""
    store.run_in_transaction(lambda conn: Transaction(conn).execute(statement, params))


def test_a_deleted_position_row_is_an_error_then_a_rebuild(backend: Backend) -> None:
    with backend.open() as store:
        deleted_position_row(store)


def deleted_position_row(store: EventStore) -> None:
    expected = fill(store, conversations=2, responses=5)
    runner = ProjectionRunner(store, TokenUsageByModel(), batch=4)
    runner.run_once()
    assert TokenUsageByModel.totals(store) == expected
    positions_table(
        store, f"DELETE FROM {POSITIONS_TABLE} WHERE name = ?", (runner.read_model.name,)
    )
    more = fill(store, conversations=1, responses=3)

    raised = run_or_hang(runner)
    assert isinstance(raised, IntegrityError), raised
    assert "position" in str(raised) and "missing" in str(raised)

    # Started again, the runner rebuilds the read model from the first event: its
    # position and its tables are one unit. Nothing is counted twice.
    again = ProjectionRunner(store, TokenUsageByModel(), batch=4)
    again.run_once()
    assert TokenUsageByModel.totals(store) == add(expected, more)
    ledger.record("store", f"runner-position-deleted/{type(store).__name__}", faults=1)


def test_a_position_past_the_log_is_an_error(backend: Backend) -> None:
    with backend.open() as store:
        position_past_the_log(store)


def position_past_the_log(store: EventStore) -> None:
    fill(store, conversations=1, responses=3)
    runner = ProjectionRunner(store, TokenUsageByModel())
    runner.run_once()
    for bad in (last_position(store) + 1000, -3):
        positions_table(
            store,
            f"UPDATE {POSITIONS_TABLE} SET position = ? WHERE name = ?",
            (bad, runner.read_model.name),
        )
        for fresh in (runner, ProjectionRunner(store, TokenUsageByModel())):
            raised = run_or_hang(fresh)
            assert isinstance(raised, IntegrityError), raised
            assert str(bad) in str(raised)
    ledger.record("store", f"runner-position-moved/{type(store).__name__}", faults=2)


# ----------------------------------------------------------------------------- retries


def test_a_retry_with_other_content_is_refused(backend: Backend) -> None:
    """An append that reuses stored event ids with other data is no retry: refused,
    naming the event, and the stored event is kept (see the store contract)."""
    with backend.open() as store:
        cid = new_id()
        original = message(1, "hello")
        start(store, cid, original)
        before = store.read(cid)
        forged = message(1, "I never said that", event_id=original.event_id)
        with pytest.raises(IntegrityError, match=original.event_id):
            store.append(cid, [forged], expected_version=1)
        assert store.read(cid) == before
    ledger.record("store", f"conflicting-retry/{backend.name}", faults=1)
