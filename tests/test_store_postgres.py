"""The PostgreSQL store: the store contract, then what only it does.

Its schema and migrations, ordering that readers can trust while writers run in
parallel (deterministically, then with 8 processes), live subscriptions, error
translation, and faults: a connection killed mid-append, the server restarted. Every test
runs on a scratch database of this module; the restart test stops the local server and
always starts it again. PostgreSQL unreachable means failures, not skips.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import chatledger
from chatledger.client.transports.scripted import ScriptedTransport
from chatledger.errors import (
    ConcurrencyError,
    IntegrityError,
    InvalidInputError,
    StoreError,
    StoreUnavailableError,
)
from chatledger.events import (
    EventStore,
    MemoryStore,
    NewEvent,
    RecordedEvent,
    SQLiteStore,
    TurnRewound,
    UserMessageAdded,
    open_store,
)
from chatledger.events.postgres import PostgresStore
from chatledger.events.postgres import schema as pg_schema
from chatledger.events.postgres import store as pg_store
from tests.store_contract import StoreContract, events_after, message, new_id, start, started
from tests.support.narrow import text_of
from tests.support.postgres import (
    Collector,
    append_to_own,
    append_to_shared,
    backend_waiting,
    barrier,
    connect,
    ensure_server_running,
    pg_ctlcluster,
    run_processes,
    scratch_database,
)

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with scratch_database() as url:
        yield url


@pytest.fixture
def store(database_url: str) -> Iterator[PostgresStore]:
    with PostgresStore(database_url) as store:
        yield store


@pytest.fixture
def raw(database_url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    with connect(database_url) as conn:
        yield conn


class TestPostgresStore(StoreContract):
    @pytest.fixture(autouse=True)
    def _database(self, database_url: str) -> None:
        self.url = database_url

    def make_store(self, tmp_path: Path) -> EventStore:
        return PostgresStore(self.url)


def readable_end(store: EventStore) -> int:
    """The position after which nothing is readable now."""
    events = events_after(store, 0)
    return events[-1].position if events else 0


def document(
    store: PostgresStore,
    conversation_id: str,
    events: list[NewEvent],
    after: int = 0,
    prev_hash: str = "",
) -> str:
    """The JSON argument of chatledger_append for ``events``, hashed as the store would."""
    prepared = store._prepare(conversation_id, [store._encode(e) for e in events], after, prev_hash)
    return pg_store._encode_events(
        [
            pg_store._EventRow(
                event_id=e.event_id,
                type=e.type,
                schema_version=e.schema_version,
                data=e.data.decode(),
                metadata=e.metadata.decode(),
                recorded_at=e.recorded_at,
                hash=e.hash,
            )
            for e in prepared
        ]
    ).decode()


APPEND_SQL = (
    "SELECT positions, version, head_hash FROM public.chatledger_append(%s, %s, %s, %s, NULL, NULL)"
)


# ----------------------------------------------------------------------------- schema


MIGRATION_NAMES = [
    "001_events",
    "002_streams",
    "003_events_are_immutable",
    "004_snapshots",
    "005_allocate_positions",
    "006_append",
    "007_no_index_on_updated_at",
    "008_views_for_sql_readers",
    "009_merkle_nodes",
    "010_erasable_content",
    "011_conversation_read_models",
]

C = "C"
EXPECTED_COLUMNS = {  # name, type, nullable, collation (ids and times compare byte by byte)
    "chatledger_migrations": [
        ("name", "text", "NO", None),
        ("applied_at", "timestamp with time zone", "NO", None),
    ],
    "events": [
        ("position", "bigint", "NO", None),
        ("conversation_id", "text", "NO", C),
        ("version", "bigint", "NO", None),
        ("event_id", "text", "NO", C),
        ("type", "text", "NO", None),
        ("schema_version", "integer", "NO", None),
        ("data", "text", "NO", None),
        ("metadata", "text", "NO", None),
        ("recorded_at", "text", "NO", C),
        ("hash", "text", "NO", None),
        ("xid", "xid8", "NO", None),
        ("content_salt", "text", "YES", None),
    ],
    "snapshots": [
        ("conversation_id", "text", "NO", C),
        ("name", "text", "NO", C),
        ("version", "bigint", "NO", None),
        ("state", "bytea", "NO", None),
    ],
    "streams": [
        ("conversation_id", "text", "NO", C),
        ("version", "bigint", "NO", None),
        ("head_hash", "text", "NO", None),
        ("created_at", "text", "NO", C),
        ("updated_at", "text", "NO", C),
        ("parent_id", "text", "YES", C),
        ("parent_version", "bigint", "YES", None),
    ],
    # The Merkle tree's complete subtrees (docs/proofs.md).
    "merkle_nodes": [
        ("level", "smallint", "NO", None),
        ("idx", "bigint", "NO", None),
        ("hash", "bytea", "NO", None),
        ("last_position", "bigint", "NO", None),
    ],
    # The conversation read models (docs/stores.md, "Read models").
    "chat_summaries": [
        ("conversation_id", "text", "NO", C),
        ("model", "text", "NO", None),
        ("title", "text", "NO", None),
        ("turns", "bigint", "NO", None),
        ("version", "bigint", "NO", None),
        ("head_hash", "text", "NO", None),
        ("created_at", "text", "NO", C),
        ("updated_at", "text", "NO", C),
        ("parent_id", "text", "YES", C),
        ("parent_version", "bigint", "YES", None),
        ("state", "text", "NO", None),
    ],
    "chat_contents": [
        ("conversation_id", "text", "NO", C),
        ("span", "bigint", "NO", None),
        ("turn", "bigint", "NO", None),
        ("version", "bigint", "NO", None),
        ("loaded", "integer", "NO", None),
        ("flags", "text", "NO", None),
        ("contents", "bytea", "NO", None),
        ("curated", "bytea", "YES", None),
    ],
    # The views for SQL readers (chatledger/events/views.py, docs/integrations.md).
    "chat_conversations": [
        ("conversation_id", "text", "YES", C),
        ("kind", "text", "YES", None),
        ("model", "text", "YES", None),
        ("title", "text", "YES", None),
        ("user_messages", "bigint", "YES", None),
        ("total_tokens", "numeric", "YES", None),
        ("events", "bigint", "YES", None),
        ("actor", "text", "YES", None),
        ("created_at", "text", "YES", C),
        ("updated_at", "text", "YES", C),
        ("parent_id", "text", "YES", C),
        ("parent_version", "bigint", "YES", None),
    ],
    "chat_messages": [
        ("conversation_id", "text", "YES", C),
        ("version", "bigint", "YES", None),
        ("item_index", "bigint", "YES", None),
        ("position", "bigint", "YES", None),
        ("turn", "numeric", "YES", None),
        ("role", "text", "YES", None),
        ("kind", "text", "YES", None),
        ("text", "text", "YES", None),
        ("model", "text", "YES", None),
        ("model_version", "text", "YES", None),
        ("prompt_tokens", "numeric", "YES", None),
        ("output_tokens", "numeric", "YES", None),
        ("total_tokens", "numeric", "YES", None),
        ("finish_reason", "text", "YES", None),
        ("latency_ms", "numeric", "YES", None),
        ("current", "boolean", "YES", None),
        ("actor", "text", "YES", None),
        ("recorded_at", "text", "YES", C),
        ("event_type", "text", "YES", None),
    ],
}

EXPECTED_INDEXES = {
    (
        "chatledger_migrations",
        "CREATE UNIQUE INDEX chatledger_migrations_pkey ON {s}.chatledger_migrations USING btree (name)",
    ),
    ("events", 'CREATE UNIQUE INDEX events_pkey ON {s}.events USING btree ("position")'),
    (
        "events",
        "CREATE UNIQUE INDEX events_stream ON {s}.events USING btree (conversation_id, version)",
    ),
    ("events", "CREATE UNIQUE INDEX events_event_id ON {s}.events USING btree (event_id)"),
    (
        "snapshots",
        "CREATE UNIQUE INDEX snapshots_pkey ON {s}.snapshots USING btree (conversation_id, name)",
    ),
    ("streams", "CREATE UNIQUE INDEX streams_pkey ON {s}.streams USING btree (conversation_id)"),
    (
        "merkle_nodes",
        "CREATE UNIQUE INDEX merkle_nodes_pkey ON {s}.merkle_nodes USING btree (level, idx)",
    ),
    ("streams", "CREATE INDEX streams_parent ON {s}.streams USING btree (parent_id)"),
    (
        "chat_summaries",
        "CREATE UNIQUE INDEX chat_summaries_pkey ON {s}.chat_summaries USING btree (conversation_id)",
    ),
    (
        "chat_summaries",
        "CREATE INDEX chat_summaries_updated ON {s}.chat_summaries "
        "USING btree (updated_at DESC, conversation_id)",
    ),
    (
        "chat_summaries",
        "CREATE INDEX chat_summaries_parent ON {s}.chat_summaries USING btree (parent_id) "
        "WHERE (parent_id IS NOT NULL)",
    ),
    (
        "chat_contents",
        "CREATE UNIQUE INDEX chat_contents_pkey ON {s}.chat_contents "
        "USING btree (conversation_id, span)",
    ),
}


def schema_of(conn: psycopg.Connection[tuple[Any, ...]], schema: str) -> dict[str, Any]:
    columns: dict[str, list[tuple[str, str, str, str | None]]] = {}
    for table, column, kind, nullable, collation in conn.execute(
        "SELECT table_name, column_name, data_type, is_nullable, collation_name "
        "FROM information_schema.columns WHERE table_schema = %s ORDER BY table_name, ordinal_position",
        (schema,),
    ):
        columns.setdefault(table, []).append((column, kind, nullable, collation))
    indexes = set(
        conn.execute(
            "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = %s", (schema,)
        ).fetchall()
    )
    triggers = sorted(
        conn.execute(
            "SELECT t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND NOT t.tgisinternal",
            (schema,),
        ).fetchall()
    )
    functions = sorted(
        row[0]
        for row in conn.execute(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s",
            (schema,),
        )
    )
    sequences = conn.execute(
        "SELECT sequencename, cache_size FROM pg_sequences WHERE schemaname = %s", (schema,)
    ).fetchall()
    return {
        "columns": columns,
        "indexes": indexes,
        "triggers": triggers,
        "functions": functions,
        "sequences": sequences,
    }


@pytest.mark.parametrize("schema", ["public", "chatledger_app"])
def test_migrations_create_exactly_this_schema(schema: str) -> None:
    with scratch_database() as url:
        with PostgresStore(url, schema=schema if schema != "public" else None) as store:
            assert store.applied_migrations() == MIGRATION_NAMES
            with connect(url) as conn:
                found = schema_of(conn, schema)
        assert found["columns"] == EXPECTED_COLUMNS
        s = "public" if schema == "public" else schema
        assert found["indexes"] == {(table, sql.format(s=s)) for table, sql in EXPECTED_INDEXES}
        refuse = (
            "chatledger_refuse_change()" if s == "public" else f"{s}.chatledger_refuse_change()"
        )
        assert found["triggers"] == [
            (
                "events_no_truncate",
                f"CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON {s}.events "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {refuse}",
            ),
            (
                "events_no_update_or_delete",
                f"CREATE TRIGGER events_no_update_or_delete BEFORE DELETE OR UPDATE ON {s}.events "
                f"FOR EACH ROW EXECUTE FUNCTION {refuse}",
            ),
        ]
        assert found["functions"] == [
            "chatledger_allocate_positions",
            "chatledger_append",
            "chatledger_append_summarised",
            "chatledger_refuse_change",
        ]
        # CACHE 1: nextval hands out increasing values across sessions (see the docstring).
        assert found["sequences"] == [("events_position_seq", 1)]
        # Reopening applies nothing new.
        with PostgresStore(url, schema=schema if schema != "public" else None) as store:
            assert store.applied_migrations() == MIGRATION_NAMES
        with connect(url) as conn:
            rows = conn.execute(f'SELECT count(*) FROM "{schema}".chatledger_migrations').fetchone()
            assert rows == (len(MIGRATION_NAMES),)


def open_and_append(url: str, schema: str, start: Any) -> list[str]:
    start.wait()
    with PostgresStore(url, schema=schema, pool_max=1) as store:
        cid = f"opener-{uuid.uuid4()}"
        store.append(cid, [started()], expected_version=0)
        return store.applied_migrations()


def test_processes_opening_a_fresh_schema_at_once_migrate_it_once(database_url: str) -> None:
    schema = f"fresh_{uuid.uuid4().hex[:8]}"
    gate = barrier(6)
    results = run_processes(open_and_append, [(database_url, schema, gate)] * 6)
    assert results == [MIGRATION_NAMES] * 6
    with connect(database_url) as conn:
        assert conn.execute(f"SELECT count(*) FROM {schema}.chatledger_migrations").fetchone() == (
            len(MIGRATION_NAMES),
        )
        assert conn.execute(f"SELECT count(*) FROM {schema}.events").fetchone() == (6,)


def test_events_cannot_be_updated_deleted_or_truncated(
    store: PostgresStore, raw: psycopg.Connection[Any]
) -> None:
    cid = new_id()
    start(store, cid, message(1))
    for statement in (
        "UPDATE events SET data = '{}' WHERE conversation_id = %s",
        "DELETE FROM events WHERE conversation_id = %s",
    ):
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="immutable"):
            raw.execute(statement, (cid,))
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="immutable"):
        raw.execute("TRUNCATE events CASCADE")
    assert store.verify(cid).ok


def test_data_is_stored_as_the_json_text_that_was_hashed(
    store: PostgresStore, raw: psycopg.Connection[Any]
) -> None:
    cid = new_id()
    start(store, cid, message(1, text='quotes " \\ and ✓ and \x00 and \n'))
    stored = raw.execute(
        "SELECT data FROM events WHERE conversation_id = %s ORDER BY version", (cid,)
    ).fetchall()
    assert stored[1][0].startswith('{"turn":1,"content":')
    assert "\\u0000" in stored[1][0]
    assert store.verify(cid).ok


# ----------------------------------------------------------------------------- location, errors


def test_location_never_holds_the_password(database_url: str) -> None:
    with_password = database_url.replace("postgres@", "postgres:s3cret-pass-1234@", 1)
    with PostgresStore(with_password) as store:  # trust auth: the password is not checked
        assert "s3cret" not in store.location
        assert store.location == database_url
        assert "s3cret" not in repr(chatledger.Client(store=store))
    bad = with_password.rsplit("/", 1)[0] + "/no_such_database_here"
    with pytest.raises(StoreUnavailableError) as caught:
        PostgresStore(bad)
    assert "s3cret" not in str(caught.value)
    assert "no_such_database_here" in str(caught.value)
    assert "does not exist" in str(caught.value)


def test_an_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(StoreUnavailableError) as caught:
        PostgresStore("postgresql://postgres@127.0.0.1:1/test", connect_timeout=2)
    text = str(caught.value)
    assert "postgresql://postgres@127.0.0.1:1/test" in text
    assert "check that the server is running" in text


def test_urls_and_options(database_url: str) -> None:
    with PostgresStore(database_url + "?schema=other_place&application_name=cl-test") as store:
        assert store.schema == "other_place"
        assert store.location == database_url + "?schema=other_place"
        start(store, new_id())
    with open_store(database_url.replace("postgresql://", "postgresql+psycopg://")) as store:
        assert isinstance(store, PostgresStore)
    for bad in ({"schema": "x; DROP"}, {"pool_min": 3, "pool_max": 2}, {"connect_timeout": 0}):
        with pytest.raises(InvalidInputError):
            PostgresStore(database_url, **bad)


def test_a_pool_with_every_connection_busy_says_so(database_url: str) -> None:
    with PostgresStore(database_url, pool_max=1, connect_timeout=1) as store:
        holding, release = threading.Event(), threading.Event()

        def hold(connection: Any) -> None:
            holding.set()
            release.wait(30)

        thread = threading.Thread(target=store.run_in_transaction, args=(hold,))
        thread.start()
        holding.wait(30)
        try:
            with pytest.raises(StoreUnavailableError, match="busy"):
                store.stream_info(new_id())
        finally:
            release.set()
            thread.join()
        assert store.stream_info(new_id()) is None


def test_a_closed_store_refuses_work(database_url: str) -> None:
    store = PostgresStore(database_url)
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.read(new_id())


def test_run_in_transaction_commits_or_rolls_back(
    store: PostgresStore, raw: psycopg.Connection[Any]
) -> None:
    table = f"t_{uuid.uuid4().hex[:8]}"
    store.run_in_transaction(lambda c: c.execute(f"CREATE TABLE {table} (x int NOT NULL)"))
    store.run_in_transaction(lambda c: c.execute(f"INSERT INTO {table} VALUES (1)"))

    def failing(connection: Any) -> None:
        connection.execute(f"INSERT INTO {table} VALUES (2)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.run_in_transaction(failing)
    with pytest.raises(IntegrityError):
        store.run_in_transaction(lambda c: c.execute(f"INSERT INTO {table} VALUES (NULL)"))
    assert raw.execute(f"SELECT x FROM {table}").fetchall() == [(1,)]
    with pytest.raises(StoreError, match="MemoryStore keeps no database"):
        MemoryStore().run_in_transaction(lambda c: None)


# ----------------------------------------------------------------------------- ordering


def test_a_reader_stops_before_an_append_still_in_flight(
    store: PostgresStore, raw: psycopg.Connection[Any]
) -> None:
    """The skip scenario, step by step: A takes a lower position and stays open while B
    commits a higher one. B is committed, yet a reader following positions must not
    return it until A has ended; then it returns both, in position order."""
    a, b = new_id(), new_id()
    before = readable_end(store)
    raw.execute("BEGIN")
    first = started()
    appended = raw.execute(APPEND_SQL, (a, 0, "", document(store, a, [first]))).fetchone()
    assert appended is not None
    positions_a = appended[0]
    positions_b = start(store, b, message(1))
    assert positions_b[0] > positions_a[0]
    assert [e.version for e in store.read(b)] == [1, 2]  # committed and readable by stream

    assert events_after(store, before) == []  # but not past A's position
    subscriber = Collector(store, before)
    subscriber.start()
    time.sleep(0.3)
    assert subscriber.events == []

    raw.execute("COMMIT")
    everything = events_after(store, before)
    assert [e.position for e in everything] == positions_a + positions_b
    deadline = time.monotonic() + 30
    while len(subscriber.events) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    subscriber.stop.set()
    subscriber.join()
    assert [e.position for e in subscriber.events] == positions_a + positions_b
    assert subscriber.error is None


def test_an_aborted_append_releases_what_came_after_it(
    store: PostgresStore, raw: psycopg.Connection[Any]
) -> None:
    """A rolls back: B becomes readable, with no notification for it (the subscriber
    finds it by polling), and A's position is a gap."""
    a, b = new_id(), new_id()
    before = readable_end(store)
    subscriber = Collector(store, before)
    subscriber.start()
    raw.execute("BEGIN")
    appended = raw.execute(APPEND_SQL, (a, 0, "", document(store, a, [started()]))).fetchone()
    assert appended is not None
    positions_a = appended[0]
    positions_b = start(store, b)
    time.sleep(0.3)
    assert subscriber.events == []
    raw.execute("ROLLBACK")
    deadline = time.monotonic() + 30
    while not subscriber.events and time.monotonic() < deadline:
        time.sleep(0.01)
    subscriber.stop.set()
    subscriber.join()
    assert [e.position for e in subscriber.events] == positions_b
    assert [e.position for e in events_after(store, before)] == positions_b
    assert positions_a[0] < positions_b[0]
    assert store.read(a) == []


def test_a_writer_waiting_for_its_conversation_holds_no_reader_back(
    store: PostgresStore, raw: psycopg.Connection[Any]
) -> None:
    """The conversation lock takes no transaction id: while one append waits for
    another writer of its conversation, appends elsewhere stay readable."""
    a, b = new_id(), new_id()
    start(store, a)
    before = readable_end(store)
    raw.execute("BEGIN")
    raw.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (a,))
    waiting = threading.Thread(
        target=store.append, args=(a, [message(1)]), kwargs={"expected_version": 1}
    )
    waiting.start()
    time.sleep(0.2)
    positions_b = start(store, b)
    assert [e.position for e in events_after(store, before)] == positions_b
    raw.execute("COMMIT")
    waiting.join()
    assert [e.version for e in store.read(a)] == [1, 2]


def test_the_head_is_read_after_the_lock_is_taken(
    store: PostgresStore, database_url: str, raw: psycopg.Connection[Any]
) -> None:
    """A writer that waited for the conversation lock sees what its holder committed
    (the head is read by a statement that starts after the lock is granted)."""
    cid = new_id()
    start(store, cid)
    head = store.read(cid)[-1]
    raw.execute("BEGIN")
    raw.execute(APPEND_SQL, (cid, 1, head.hash, document(store, cid, [message(1)], 1, head.hash)))
    outcome: list[Any] = []

    def second() -> None:
        with connect(database_url) as other:
            outcome.append(
                other.execute(
                    APPEND_SQL,
                    (cid, 1, head.hash, document(store, cid, [message(2)], 1, head.hash)),
                ).fetchone()
            )

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.2)
    raw.execute("COMMIT")
    thread.join()
    positions, version, _ = outcome[0]
    assert positions is None  # not a unique violation: it saw version 2 and wrote nothing
    assert version == 2


def test_positions_are_allocated_by_the_first_write_only(
    raw: psycopg.Connection[Any], store: PostgresStore
) -> None:
    raw.execute("BEGIN")
    raw.execute("CREATE TEMP TABLE scratch (x int)")
    raw.execute("INSERT INTO scratch VALUES (1)")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="first write"):
        raw.execute("SELECT chatledger_allocate_positions(1)")
    raw.execute("ROLLBACK")


# ----------------------------------------------------------------------------- concurrency


def test_eight_processes_appending_to_one_conversation(database_url: str) -> None:
    cid = new_id()
    with PostgresStore(database_url) as store:
        start(store, cid)
    writers, each = 8, 500
    gate = barrier(writers)
    run_processes(append_to_shared, [(database_url, cid, w, each, gate) for w in range(writers)])
    with PostgresStore(database_url) as store:
        events = store.read(cid)
        assert [e.version for e in events] == list(range(1, writers * each + 2))
        written = [(e.metadata["writer"], e.metadata["n"]) for e in events[1:]]
        assert sorted(written) == [(w, n) for w in range(writers) for n in range(each)]
        for w in range(writers):
            assert [n for writer, n in written if writer == w] == list(range(each))
        assert len({e.event_id for e in events}) == len(events)
        report = store.verify(cid)
        assert report.ok, report.problems
        assert report.events_checked == writers * each + 1


def test_a_subscriber_sees_every_event_of_eight_writers_once_in_order(database_url: str) -> None:
    """8 processes append to 8 conversations while a subscriber follows positions; the
    subscriber must see exactly what the log holds afterwards, in the same order. Five
    rounds: it must never fail."""
    with PostgresStore(database_url) as store:
        for round_ in range(5):
            cids = [new_id() for _ in range(8)]
            for cid in cids:
                start(store, cid)
            before = readable_end(store)
            subscriber = Collector(store, before)
            subscriber.start()
            gate = barrier(8)
            written = run_processes(
                append_to_own,
                [(database_url, cid, 60, round_ * 8 + n, gate) for n, cid in enumerate(cids)],
            )
            expected = {event_id for ids in written for event_id in ids}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if expected <= {e.event_id for e in subscriber.events}:
                    break
                time.sleep(0.02)
            subscriber.stop.set()
            subscriber.join()
            assert subscriber.error is None
            seen = subscriber.events
            positions = [e.position for e in seen]
            assert positions == sorted(set(positions)), "out of order or repeated"
            logged = events_after(store, before)
            assert [e.event_id for e in seen] == [e.event_id for e in logged][: len(seen)]
            mine = [e.event_id for e in seen if e.conversation_id in cids]
            assert len(mine) == len(set(mine)) == len(expected)
            assert set(mine) == expected
            for cid, ids in zip(cids, written, strict=True):
                assert [e.event_id for e in seen if e.conversation_id == cid] == ids


# ----------------------------------------------------------------------------- subscriptions


def test_a_notification_wakes_a_subscriber_long_before_its_poll(store: PostgresStore) -> None:
    before = readable_end(store)
    stop = threading.Event()
    seen: list[RecordedEvent] = []
    guard = threading.Timer(30, stop.set)
    guard.start()
    cid = new_id()

    def write() -> None:
        time.sleep(0.3)
        start(store, cid)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        # A poll every 120 s: only a notification can deliver within the 30 s guard.
        for event in store.subscribe(before, poll_interval=120, stop=stop):
            seen.append(event)
            stop.set()
    finally:
        guard.cancel()
        writer.join()
    assert [e.conversation_id for e in seen] == [cid]


def test_a_notification_names_the_last_position_of_its_append(
    store: PostgresStore, raw: psycopg.Connection[Any]
) -> None:
    raw.execute(store._sql_listen)  # listens as a subscriber does (registered)
    cid = new_id()
    positions = start(store, cid, message(1), message(2))
    with pytest.raises(ConcurrencyError):
        store.append(cid, [message(3)], expected_version=1)  # writes nothing, announces nothing
    notes = list(raw.notifies(timeout=5, stop_after=1)) + list(raw.notifies(timeout=0.5))
    assert [n.payload for n in notes] == [str(positions[-1])]


def test_appends_notify_only_while_a_subscriber_listens(
    store: PostgresStore, raw: psycopg.Connection[Any], database_url: str
) -> None:
    """A NOTIFY costs an append a transaction of its own: none is sent while no
    subscriber holds the listeners' lock; one is, once a subscriber listens, and again
    none once its connection is gone."""
    raw.execute(sql.SQL("LISTEN {}").format(sql.Identifier(store.channel)))  # unregistered

    def heard() -> list[str]:
        return [n.payload for n in raw.notifies(timeout=0.5)]

    start(store, new_id())
    assert heard() == []
    with connect(database_url) as subscriber:
        subscriber.execute(store._sql_listen)
        positions = start(store, new_id(), message(1))
        assert heard() == [str(positions[-1])]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and raw.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::oid",
        (pg_schema.LISTENERS_LOCK_CLASS,),
    ).fetchone() != (0,):
        time.sleep(0.01)  # the subscriber's backend is ending
    start(store, new_id())
    assert heard() == []


def test_a_subscription_survives_losing_its_listening_connection(
    store: PostgresStore, raw: psycopg.Connection[Any]
) -> None:
    before = readable_end(store)
    subscriber = Collector(store, before)
    subscriber.start()
    first, second = new_id(), new_id()
    start(store, first)
    deadline = time.monotonic() + 30
    while not subscriber.events and time.monotonic() < deadline:
        time.sleep(0.01)
    killed = raw.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%%' AND datname = current_database()"
    ).fetchall()
    assert killed
    start(store, second)
    while len(subscriber.events) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    subscriber.stop.set()
    subscriber.join()
    assert subscriber.error is None
    assert [e.conversation_id for e in subscriber.events] == [first, second]


# ----------------------------------------------------------------------------- faults


def test_a_connection_killed_mid_append(database_url: str, raw: psycopg.Connection[Any]) -> None:
    """The append waits inside its transaction (the test holds the position lock); its
    backend is terminated: a clear error, nothing written, and re-appending the same
    events writes them exactly once."""
    name = f"victim-{uuid.uuid4().hex[:8]}"
    with PostgresStore(f"{database_url}?application_name={name}") as store:
        cid = new_id()
        events = [started(), message(1)]
        raw.execute(
            "SELECT pg_advisory_lock(%s, hashtext('public'))", (pg_schema.POSITIONS_LOCK_CLASS,)
        )
        errors: list[BaseException] = []

        def append() -> None:
            try:
                store.append(cid, events, expected_version=0)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=append)
        thread.start()
        try:
            pid = backend_waiting(raw, name)
            raw.execute("SELECT pg_terminate_backend(%s)", (pid,))
            thread.join(30)
        finally:
            raw.execute(
                "SELECT pg_advisory_unlock(%s, hashtext('public'))",
                (pg_schema.POSITIONS_LOCK_CLASS,),
            )
        assert len(errors) == 1 and isinstance(errors[0], StoreUnavailableError), errors
        assert "nothing was written" in str(errors[0])
        assert store.read(cid) == []
        assert store.stream_info(cid) is None

        positions = store.append(cid, events, expected_version=0)
        assert [e.event_id for e in store.read(cid)] == [e.event_id for e in events]
        assert store.append(cid, events, expected_version=0) == positions
        assert store.verify(cid).ok


class CommitThenWait(PostgresStore):
    """Waits, after its append's COMMIT, for a lock the test holds: a connection lost
    there lost an append that was written."""

    hold = 0

    def _statements(self) -> None:
        super()._statements()
        wait = sql.SQL("; SELECT pg_advisory_lock({})").format(sql.Literal(self.hold))
        # Both appends: without and with the read models' rows.
        self._sql_append = sql.Composed([self._sql_append, wait])
        self._sql_append_summarised = sql.Composed([self._sql_append_summarised, wait])


def test_a_connection_lost_after_commit_is_settled_as_written(
    database_url: str, raw: psycopg.Connection[Any]
) -> None:
    name = f"late-{uuid.uuid4().hex[:8]}"
    CommitThenWait.hold = 424242
    raw.execute("SELECT pg_advisory_lock(424242)")
    with CommitThenWait(f"{database_url}?application_name={name}") as store:
        cid = new_id()
        events = [started(), message(1)]
        outcome: list[Any] = []
        thread = threading.Thread(
            target=lambda: outcome.append(store.append(cid, events, expected_version=0))
        )
        thread.start()
        try:
            raw.execute("SELECT pg_terminate_backend(%s)", (backend_waiting(raw, name),))
            thread.join(30)
        finally:
            raw.execute("SELECT pg_advisory_unlock(424242)")
        assert len(outcome) == 1  # no error: the store found the append committed
        assert outcome[0] == [e.position for e in store.read(cid)]


class FailsAfterCommit(PostgresStore):
    """A statement after the append's COMMIT (in the same message) fails."""

    def _statements(self) -> None:
        super()._statements()
        self._sql_append = sql.Composed([self._sql_append, sql.SQL("; SELECT 1/0")])
        self._sql_append_summarised = sql.Composed(
            [self._sql_append_summarised, sql.SQL("; SELECT 1/0")]
        )


def test_a_failure_after_commit_is_not_a_failed_append(database_url: str) -> None:
    with FailsAfterCommit(database_url) as store:
        cid = new_id()
        positions = start(store, cid, message(1))
        assert [e.position for e in store.read(cid)] == positions


def test_a_commit_that_fails_writes_nothing(database_url: str) -> None:
    schema = f"deferred_{uuid.uuid4().hex[:8]}"
    with PostgresStore(database_url, schema=schema) as store, connect(database_url) as conn:
        conn.execute(
            f"CREATE FUNCTION {schema}.no_rewinds() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.type = 'turn_rewound' THEN RAISE EXCEPTION 'no rewinds here' USING ERRCODE = 'check_violation'; "
            "END IF; RETURN NULL; END $$"
        )
        conn.execute(
            f"CREATE CONSTRAINT TRIGGER no_rewinds AFTER INSERT ON {schema}.events "
            f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {schema}.no_rewinds()"
        )
        cid = new_id()
        start(store, cid)
        before = store.read(cid)
        with pytest.raises(IntegrityError, match="no rewinds here"):
            store.append(cid, [message(1), NewEvent(data=TurnRewound(turn=1))], expected_version=1)
        assert store.read(cid) == before
        assert store.append(cid, [message(1)], expected_version=1)


def test_the_server_restarted_under_a_chat(database_url: str, raw: psycopg.Connection[Any]) -> None:
    """While the server is down: clear errors (an append in flight cannot be settled);
    after it is back, the pool reconnects, the unsettled append is re-appended exactly
    once, and the chat goes on with no lost or duplicated events."""
    name = f"restart-{uuid.uuid4().hex[:8]}"
    transport = ScriptedTransport()
    store = PostgresStore(f"{database_url}?application_name={name}", connect_timeout=3)
    client = chatledger.Client(store=store, transport=transport)
    try:
        chat = client.chats.create(model="gemini-test")
        transport.enqueue("before the restart")
        assert chat.send_message("hello").text == "before the restart"

        cid = new_id()
        events = [started(), message(1)]
        errors: list[BaseException] = []

        def append() -> None:
            try:
                store.append(cid, events, expected_version=0)
            except BaseException as exc:
                errors.append(exc)

        raw.execute(
            "SELECT pg_advisory_lock(%s, hashtext('public'))", (pg_schema.POSITIONS_LOCK_CLASS,)
        )
        thread = threading.Thread(target=append)
        thread.start()
        try:
            backend_waiting(raw, name)
            pg_ctlcluster("stop")
            thread.join(60)
            assert len(errors) == 1 and isinstance(errors[0], StoreUnavailableError), errors
            assert "Re-append the same events" in str(errors[0])
            with pytest.raises(StoreUnavailableError) as caught:
                chat.send_message("while it is down")
            assert "check that the server is running" in str(caught.value)
            assert store.location in str(caught.value)
        finally:
            ensure_server_running()

        positions = store.append(cid, events, expected_version=0)
        assert store.append(cid, events, expected_version=0) == positions
        assert [e.event_id for e in store.read(cid)] == [e.event_id for e in events]

        transport.enqueue("after the restart")
        assert chat.send_message("still there?").text == "after the restart"
        logged = store.read(chat.id)
        assert [e.version for e in logged] == list(range(1, len(logged) + 1))
        assert len({e.event_id for e in logged}) == len(logged)
        texts = [
            e.data.content["parts"][0]["text"]
            for e in logged
            if isinstance(e.data, UserMessageAdded)
        ]
        assert texts == ["hello", "still there?"]
        assert store.verify(chat.id).ok
        assert [text_of(c) for c in chat.get_history()] == [
            "hello",
            "before the restart",
            "still there?",
            "after the restart",
        ]
    finally:
        client.close()
        store.close()
        ensure_server_running()


# ----------------------------------------------------------------------------- configuration


def test_client_and_environment_open_the_postgres_store(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = ScriptedTransport().enqueue("hi from postgres")
    with chatledger.Client(store=database_url, transport=transport) as client:
        assert isinstance(client.store, PostgresStore)
        chat = client.chats.create(model="gemini-test")
        chat.send_message("hello")
        cid = chat.id
    monkeypatch.setenv("CHATLEDGER_DB", database_url)
    with chatledger.Client(transport=ScriptedTransport()) as client:
        assert isinstance(client.store, PostgresStore)
        assert [m.role for m in client.chats.get(cid).get_history()] == ["user", "model"]


def test_sqlite_and_postgres_hash_identically(database_url: str, tmp_path: Path) -> None:
    """An event imported from SQLite into PostgreSQL keeps its hash and verifies."""
    from chatledger.events.audit import export_conversation, import_lines

    cid = new_id()
    with SQLiteStore(tmp_path / "source.db") as source:
        start(source, cid, message(1, text="ünïcode ✓"), message(2))
        lines = list(export_conversation(source, cid))
        hashes = [e.hash for e in source.read(cid)]
    with PostgresStore(database_url) as store:
        report = import_lines(store, lines)
        # The file's events, then the turn it left open closed by the import.
        assert report.closed_turns == [(cid, 2)]
        assert [e.hash for e in store.read(cid)][: len(hashes)] == hashes
        assert store.verify(cid).ok
