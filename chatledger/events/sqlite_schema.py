"""The SQLite store's schema: named, ordered migrations, and what ``verify`` compares a
file's schema with.

Migrations are functions of a sqlite-utils ``Database``, applied in one ``BEGIN
IMMEDIATE`` transaction and recorded by name in ``_chatledger_migrations`` (see
:meth:`chatledger.events.sqlite.SQLiteStore`). The tables: ``events`` (unique on
``(conversation_id, version)`` and ``event_id``; triggers refuse DELETE, an INSERT OR
REPLACE over an event, and every UPDATE but an erasure: docs/erasure.md), ``streams``
(each conversation's head), ``snapshots``, ``merkle_nodes`` (the Merkle tree's complete
subtrees, see docs/proofs.md).
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Callable
from typing import NamedTuple

import sqlite_utils

from .views import SQLITE_VIEWS, SQLITE_VIEWS_007

__all__ = ["MIGRATIONS", "Migration", "schema_differences"]

Migration = Callable[[sqlite_utils.Database], None]


def _m001_events(db: sqlite_utils.Database) -> None:
    db["events"].create(  # type: ignore[union-attr]
        {
            "position": int,
            "conversation_id": str,
            "version": int,
            "event_id": str,
            "type": str,
            "schema_version": int,
            "data": str,
            "metadata": str,
            "recorded_at": str,
            "hash": str,
        },
        pk="position",
        not_null={
            "conversation_id",
            "version",
            "event_id",
            "type",
            "schema_version",
            "data",
            "metadata",
            "recorded_at",
            "hash",
        },
    )
    db["events"].create_index(  # type: ignore[union-attr]
        ["conversation_id", "version"], index_name="events_stream", unique=True
    )
    db["events"].create_index(  # type: ignore[union-attr]
        ["event_id"], index_name="events_event_id", unique=True
    )


def _m002_streams(db: sqlite_utils.Database) -> None:
    db["streams"].create(  # type: ignore[union-attr]
        {
            "conversation_id": str,
            "version": int,
            "head_hash": str,
            "created_at": str,
            "updated_at": str,
            "parent_id": str,
            "parent_version": int,
        },
        pk="conversation_id",
        not_null={"version", "head_hash", "created_at", "updated_at"},
    )
    db["streams"].create_index(["updated_at"], index_name="streams_updated")  # type: ignore[union-attr]
    db["streams"].create_index(["parent_id"], index_name="streams_parent")  # type: ignore[union-attr]


def _m003_events_are_immutable(db: sqlite_utils.Database) -> None:
    for action in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER events_no_{action.lower()} BEFORE {action} ON events "
            f"BEGIN SELECT RAISE(ABORT, 'chatledger events are immutable'); END"
        )


def _m004_snapshots(db: sqlite_utils.Database) -> None:
    db["snapshots"].create(  # type: ignore[union-attr]
        {"conversation_id": str, "name": str, "version": int, "state": bytes},
        pk=("conversation_id", "name"),
        not_null={"version", "state"},
    )


def _m005_events_are_never_replaced(db: sqlite_utils.Database) -> None:
    # INSERT OR REPLACE deletes the old row without firing DELETE triggers: refuse any
    # insert that would collide with a stored event, before conflict resolution runs.
    db.execute(
        "CREATE TRIGGER events_no_replace BEFORE INSERT ON events WHEN EXISTS ("
        "SELECT 1 FROM events WHERE position = NEW.position OR event_id = NEW.event_id "
        "OR (conversation_id = NEW.conversation_id AND version = NEW.version)) "
        "BEGIN SELECT RAISE(ABORT, 'chatledger events are immutable'); END"
    )


def _m006_no_index_on_updated_at(db: sqlite_utils.Database) -> None:
    # Every append moves its stream's updated_at, so this index cost a page write per
    # append (about 10% of an append, measured) while saving a listing almost nothing:
    # listings order by (updated_at, conversation_id), which sorts anyway (20 of 100,000
    # conversations: 9 ms with it, 14 ms without).
    db.execute("DROP INDEX IF EXISTS streams_updated")


def _m007_views_for_sql_readers(db: sqlite_utils.Database) -> None:
    # chat_conversations and chat_messages, for Datasette or any SQL tool (see views.py and
    # docs/integrations.md): stored queries only, so appends cost nothing more.
    for statement in SQLITE_VIEWS_007.values():
        db.execute(statement)


def _m008_merkle_nodes(db: sqlite_utils.Database) -> None:
    # The Merkle tree's complete subtrees of 256 leaves and more (docs/proofs.md): filled
    # lazily when a checkpoint or a proof is made, never by an append; a cache that
    # verification recomputes from the events.
    db.execute(
        "CREATE TABLE merkle_nodes (level INTEGER NOT NULL, idx INTEGER NOT NULL, "
        "hash BLOB NOT NULL, last_position INTEGER NOT NULL, PRIMARY KEY (level, idx)) "
        "WITHOUT ROWID"
    )


#: What an erasure may change in an event row, and nothing else: its data and its
#: content_salt, from a salt to "" (see docs/erasure.md). Every other column, the hash
#: first, stays as it was; verify checks that the new data holds placeholders whose
#: commitments are the hashed ones.
_ONLY_ERASURE = (
    "NOT (OLD.content_salt IS NOT NULL AND length(OLD.content_salt) = 64 "
    "AND NEW.content_salt IS '' AND NEW.position IS OLD.position "
    "AND NEW.conversation_id IS OLD.conversation_id AND NEW.version IS OLD.version "
    "AND NEW.event_id IS OLD.event_id AND NEW.type IS OLD.type "
    "AND NEW.schema_version IS OLD.schema_version AND NEW.metadata IS OLD.metadata "
    "AND NEW.recorded_at IS OLD.recorded_at AND NEW.hash IS OLD.hash)"
)


def _m009_erasable_content(db: sqlite_utils.Database) -> None:
    # Each event's content salt beside it (docs/erasure.md); NULL for the events written
    # before, whose hashes cover their data as stored. The UPDATE trigger now lets
    # exactly an erasure through.
    db.execute("ALTER TABLE events ADD COLUMN content_salt TEXT")
    # The views read parts only where they are an array (an erased event holds a
    # placeholder there): made again as views.py writes them now.
    for name, statement in SQLITE_VIEWS.items():
        db.execute(f"DROP VIEW IF EXISTS {name}")
        db.execute(statement)
    db.execute("DROP TRIGGER events_no_update")
    db.execute(
        f"CREATE TRIGGER events_no_update BEFORE UPDATE ON events WHEN {_ONLY_ERASURE} "
        "BEGIN SELECT RAISE(ABORT, 'chatledger events are immutable'); END"
    )


MIGRATIONS: list[tuple[str, Migration]] = [
    ("001_events", _m001_events),
    ("002_streams", _m002_streams),
    ("003_events_are_immutable", _m003_events_are_immutable),
    ("004_snapshots", _m004_snapshots),
    ("005_events_are_never_replaced", _m005_events_are_never_replaced),
    ("006_no_index_on_updated_at", _m006_no_index_on_updated_at),
    ("007_views_for_sql_readers", _m007_views_for_sql_readers),
    ("008_merkle_nodes", _m008_merkle_nodes),
    ("009_erasable_content", _m009_erasable_content),
]

#: The migrations of this release, as they were when the module was loaded: what the
#: schema check compares a file with.
_RELEASED_MIGRATIONS = tuple(MIGRATIONS)


# ----------------------------------------------------------------------------- verify

#: The log's own tables (another program's tables beside them are not looked at).
_OWN_TABLES = ("_chatledger_migrations", "events", "streams", "snapshots", "merkle_nodes")


class _Schema(NamedTuple):
    """The parts of a schema that ``verify`` compares, table by table."""

    #: table -> its columns as PRAGMA table_info gives them (name, type, notnull, pk).
    columns: dict[str, list[tuple[object, ...]]]
    #: table -> {index name: (unique, columns)}.
    indexes: dict[str, dict[str, tuple[bool, tuple[object, ...]]]]
    #: table -> {trigger name: its SQL, whitespace normalised}.
    triggers: dict[str, dict[str, str]]


def _schema_of(conn: sqlite3.Connection) -> _Schema:
    columns: dict[str, list[tuple[object, ...]]] = {}
    indexes: dict[str, dict[str, tuple[bool, tuple[object, ...]]]] = {}
    triggers: dict[str, dict[str, str]] = {table: {} for table in _OWN_TABLES}
    for table in _OWN_TABLES:
        info = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
        if not info:
            continue
        columns[table] = [(row[1], str(row[2]).upper(), row[3], row[5]) for row in info]
        indexes[table] = {
            str(row[1]): (
                bool(row[2]),
                tuple(col[2] for col in conn.execute(f'PRAGMA index_info("{row[1]}")')),
            )
            for row in conn.execute(f'PRAGMA index_list("{table}")')
        }
    for name, table, sql in conn.execute(
        "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger'"
    ):
        if table in triggers:
            triggers[table][str(name)] = " ".join(str(sql).split())
    return _Schema(columns, indexes, triggers)


@functools.cache
def _expected_schema() -> _Schema:
    """What the migrations make, read from a scratch database they ran in."""
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        conn.execute(
            "CREATE TABLE _chatledger_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        db = sqlite_utils.Database(conn, execute_plugins=False)
        for _, migration in _RELEASED_MIGRATIONS:
            migration(db)
        return _schema_of(conn)


def schema_differences(conn: sqlite3.Connection) -> list[str]:
    """What ``verify`` finds missing or changed in the file's schema, against what the
    migrations make: tables and their columns, indexes (the unique ones keep versions and
    event ids unique), the triggers that keep events immutable, and no other trigger on the
    log's tables (it could change what the library writes)."""
    return _differences(_expected_schema(), _schema_of(conn))


def _differences(expected: _Schema, found: _Schema) -> list[str]:
    problems: list[str] = []
    for table, columns in expected.columns.items():
        if table not in found.columns:
            problems.append(f"the table {table} is missing")
            continue
        if found.columns[table] != columns:
            problems.append(f"the table {table} does not have the columns chatledger made")
        for name, (unique, indexed) in expected.indexes[table].items():
            if name.startswith("sqlite_autoindex_"):
                # A primary key's index: its name follows the table's definition.
                if (unique, indexed) not in found.indexes[table].values():
                    problems.append(f"the primary key index of {table} is missing")
            elif found.indexes[table].get(name) != (unique, indexed):
                what = "unique index" if unique else "index"
                problems.append(f"the {what} {name} on {table} is missing or changed")
        for name, sql in expected.triggers[table].items():
            if found.triggers[table].get(name) != sql:
                problems.append(
                    f"the trigger {name} on {table} is missing or changed: events are no "
                    "longer protected from being changed or replaced"
                )
        for name in sorted(found.triggers[table].keys() - expected.triggers[table].keys()):
            problems.append(
                f"the trigger {name} on {table} is not chatledger's: it may change what the "
                "library writes"
            )
    return problems
