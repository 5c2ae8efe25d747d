"""Another application's database is never changed by opening it as a log.

SQLite: a file that is not empty and holds no chatledger log (another program's tables,
in rollback or WAL mode) is refused with a clear error, and left byte for byte as it was,
with no ``-wal``, ``-shm`` or ``-journal`` file beside it; the command line exits 1 with
one line. ``create_in_existing=True`` (through ``open_store`` too) adds the log's tables
beside the others. An empty file, or a database with nothing in it, becomes a new log.

PostgreSQL: a schema that holds another application's tables and no chatledger log is
refused, unchanged; ``create_in_existing=True`` adds the log beside them, and a schema of
its own is created.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from chatledger.cli import cli
from chatledger.errors import StoreUnavailableError
from chatledger.events import SQLiteStore, open_store
from chatledger.events.postgres import PostgresStore
from tests.faults import ledger
from tests.store_contract import message, new_id, start
from tests.support.postgres import connect, scratch_database


def another_programs_database(path: Path, *, wal: bool) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        if wal:
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("CREATE INDEX users_name ON users (name)")
        conn.execute("INSERT INTO users (name) VALUES ('ada'), ('grace')")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def beside(path: Path) -> list[str]:
    """The files next to ``path`` that SQLite makes (journal, WAL, shared memory)."""
    return sorted(
        p.name
        for p in path.parent.iterdir()
        if p.name != path.name and p.name.startswith(path.name)
    )


@pytest.mark.parametrize("wal", [False, True], ids=["rollback", "wal"])
def test_another_programs_sqlite_file_is_refused_byte_for_byte(tmp_path: Path, wal: bool) -> None:
    path = tmp_path / "other.db"
    another_programs_database(path, wal=wal)
    before = digest(path)
    assert beside(path) == []

    with pytest.raises(StoreUnavailableError) as caught:
        SQLiteStore(path)
    text = str(caught.value)
    assert str(path) in text and "not a chatledger database" in text
    assert "users" in text and "create_in_existing=True" in text and "nothing was changed" in text
    # Through open_store and the command line, the same.
    with pytest.raises(StoreUnavailableError, match="not a chatledger database"):
        open_store(str(path))
    result = CliRunner().invoke(cli, ["--db", str(path), "ls"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "not a chatledger" in lines[0]

    assert digest(path) == before
    assert beside(path) == []
    with contextlib.closing(sqlite3.connect(path)) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master ORDER BY name")]
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert names == ["users", "users_name"]
    assert mode == ("wal" if wal else "delete")
    ledger.record("store", "foreign-database/sqlite", faults=3)


def test_a_log_is_created_in_an_existing_database_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    another_programs_database(path, wal=False)
    with open_store(str(path), create_in_existing=True) as store:
        cid = new_id()
        start(store, cid, message(1))
        assert store.verify().ok
    # Now it holds a log: it opens as one, with no option, and the other tables are intact.
    with SQLiteStore(path) as store:
        assert [event.version for event in store.read(cid)] == [1, 2]
        assert store.verify().ok
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT name FROM users ORDER BY id").fetchall() == [
            ("ada",),
            ("grace",),
        ]


def test_an_empty_database_file_becomes_a_log(tmp_path: Path) -> None:
    """A SQLite file with nothing in it (not even another program's tables) is no one's
    data: like an empty file, it becomes a new log."""
    path = tmp_path / "blank.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("VACUUM")  # a valid, empty database
    with SQLiteStore(path) as store:
        start(store, new_id(), message(1))
        assert store.verify().ok


def test_a_clash_with_create_in_existing_changes_nothing(tmp_path: Path) -> None:
    """Asked to create the log beside tables one of which has a name the log uses: the
    migration fails, is rolled back, and the file is as it was (not even in WAL mode)."""
    path = tmp_path / "clash.db"
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, title TEXT)")
    before = digest(path)
    with pytest.raises(StoreUnavailableError):
        SQLiteStore(path, create_in_existing=True)
    assert digest(path) == before
    assert beside(path) == []


# ----------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with scratch_database("chatledger_foreign") as url:
        yield url


def relations(url: str, schema: str) -> list[str]:
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s ORDER BY c.relname",
            (schema,),
        ).fetchall()
        functions = conn.execute(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %s",
            (schema,),
        ).fetchone()
    return [str(row[0]) for row in rows] + [f"{functions[0] if functions else 0} functions"]


def test_a_postgres_schema_with_another_applications_tables_is_refused(
    postgres_url: str,
) -> None:
    schema = f"app_{uuid.uuid4().hex[:10]}"
    with connect(postgres_url) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.orders (id serial PRIMARY KEY, total numeric)")
    before = relations(postgres_url, schema)

    with pytest.raises(StoreUnavailableError) as caught:
        PostgresStore(postgres_url, schema=schema)
    text = str(caught.value)
    assert schema in text and "orders" in text and "nothing was changed" in text
    assert "create_in_existing=True" in text and "?schema=" in text
    assert relations(postgres_url, schema) == before

    with PostgresStore(postgres_url, schema=schema, create_in_existing=True) as store:
        cid = new_id()
        start(store, cid, message(1))
        assert store.verify().ok
    with PostgresStore(postgres_url, schema=schema) as store:  # a log now: no option needed
        assert [event.version for event in store.read(cid)] == [1, 2]
    with connect(postgres_url) as conn:
        assert conn.execute(f"SELECT count(*) FROM {schema}.orders").fetchone() == (0,)
    ledger.record("store", "foreign-database/postgres", faults=1)


def test_a_new_schema_of_its_own_is_created(postgres_url: str) -> None:
    schema = f"own_{uuid.uuid4().hex[:10]}"
    with PostgresStore(f"{postgres_url}?schema={schema}") as store:
        start(store, new_id(), message(1))
        assert store.verify().ok


def test_the_command_line_creates_a_log_in_an_existing_database_only_when_asked(
    tmp_path: Path,
) -> None:
    """The refusal names ``--create-in-existing``: the option exists, and does that."""
    path = tmp_path / "app.db"
    another_programs_database(path, wal=False)
    refused = CliRunner().invoke(cli, ["--db", str(path), "ls"])
    assert refused.exit_code == 1 and "--create-in-existing" in refused.output
    created = CliRunner().invoke(cli, ["--db", str(path), "--create-in-existing", "ls"])
    assert created.exit_code == 0, created.output
    with contextlib.closing(sqlite3.connect(path)) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        users = conn.execute("SELECT count(*) FROM users").fetchone()[0]
    assert {"users", "events", "streams"} <= names and users > 0
    # Now a chatledger log: opened without the option from here on.
    assert CliRunner().invoke(cli, ["--db", str(path), "ls"]).exit_code == 0
    ledger.record("store", "foreign-database/cli", faults=1)
