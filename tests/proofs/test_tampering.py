"""The tampering suite: whoever holds the database rewrites history after a checkpoint,
fixing every hash chain and head row so that plain ``verify`` has nothing to say, and
``verify --checkpoint`` catches every case; the honest log passes, also after more appends.

On a real SQLite file (the triggers dropped and put back, positions renumbered so that no
gap shows) and on real PostgreSQL as a superuser (``session_replication_role = replica``
bypasses the triggers). The attacker also empties the Merkle tree's table, so that the
tree the store keeps agrees with the rewritten log: verification recomputes it from the
events and never trusts that table.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from chatledger.cli import cli
from chatledger.events import EventStore, NewEvent, SQLiteStore, UserMessageAdded
from chatledger.events.postgres import PostgresStore
from chatledger.events.rows import RawRow, row_to_event
from chatledger.events.store import EncodedEvent
from chatledger.proofs.checkpoint import iter_notes
from chatledger.proofs.note import Signer, write_private_key
from chatledger.proofs.tree import StoreTree
from chatledger.readmodels import rebuild as rebuild_read_models
from tests.store_contract import message, new_id, started
from tests.support.postgres import connect

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "verify_export.py"
CONVERSATIONS = 30
EVENTS_EACH = 20  # 600 events: two complete blocks of 256 leaves, and a partial one


class Log:
    """A log on one backend: its --db value, a store, and raw SQL under the library."""

    def __init__(self, kind: str, tmp_path: Path, postgres_url: str | None) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        if kind == "sqlite":
            self.path = tmp_path / "log.db"
            self.db = str(self.path)
        else:
            assert postgres_url is not None
            self.schema = f"tamper_{uuid.uuid4().hex[:10]}"
            self.base_url = postgres_url
            self.db = f"{postgres_url}?schema={self.schema}"

    def store(self) -> EventStore:
        if self.kind == "sqlite":
            return SQLiteStore(self.path)
        return PostgresStore(self.db, pool_min=0, pool_max=2)

    @contextlib.contextmanager
    def raw(self) -> Iterator[Callable[..., list[tuple[Any, ...]]]]:
        """``execute(sql, *params)`` with the library's protections out of the way."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.path, isolation_level=None)
            triggers = conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'"
            ).fetchall()
            conn.execute("BEGIN IMMEDIATE")
            for name, _ in triggers:
                conn.execute(f"DROP TRIGGER {name}")

            def execute(sql: str, *params: object) -> list[tuple[Any, ...]]:
                return conn.execute(sql, params).fetchall()

            try:
                yield execute
                for _, sql in triggers:  # put back exactly: the schema check sees nothing
                    conn.execute(sql)
                conn.execute("COMMIT")
            finally:
                conn.close()
        else:
            pg = connect(self.base_url)
            pg.autocommit = False
            pg.execute("SET session_replication_role = replica")
            pg.execute(f"SET search_path TO {self.schema}")

            def execute(sql: str, *params: object) -> list[tuple[Any, ...]]:
                cursor = pg.execute(sql.replace("?", "%s"), params)
                return cursor.fetchall() if cursor.description else []

            try:
                yield execute
                pg.commit()
            finally:
                pg.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Log:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    return Log(request.param, tmp_path, url)


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, str]:
    signer = Signer.generate("chatledger.test/tamper")
    path = tmp_path / "log.key"
    write_private_key(path, signer)
    return path, signer.verifier.verifier_key


def run(log: Log, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--db", log.db, *args], catch_exceptions=False)


def fill(store: EventStore, conversations: int = CONVERSATIONS) -> list[str]:
    """Conversations whose events interleave in position order."""
    ids = [new_id() for _ in range(conversations)]
    for cid in ids:
        store.append(cid, [started()], expected_version=0)
    for round_ in range(1, EVENTS_EACH, 2):
        for cid in ids:
            events = [message(turn=round_, text=f"{cid} {round_}"), message(turn=round_ + 1)]
            store.append(cid, events[: EVENTS_EACH - round_], expected_version=round_)
    return ids


def settle(log: Log) -> int:
    """Wait until the tree covers every event in the table, and return how many.

    On PostgreSQL the tree (like read_all) holds only the events below the visibility
    horizon: while a transaction anywhere on the server (another test, another program)
    is still open, newer commits wait outside it."""
    with log.raw() as execute:
        count = int(execute("SELECT count(*) FROM events")[0][0])
    deadline = time.monotonic() + 60
    with log.store() as store:
        while StoreTree(store).update().size != count:
            assert time.monotonic() < deadline, "the tree never covered every event"
            time.sleep(0.1)
    return count


def checkpoint(log: Log, key: tuple[Path, str], output: Path) -> None:
    settle(log)
    result = run(log, "checkpoint", "--key", str(key[0]), "-o", str(output))
    assert result.exit_code == 0, result.output


def verify(log: Log, *args: str) -> Result:
    return run(log, "verify", *args)


def verify_checkpoint(log: Log, key: tuple[Path, str], head: Path) -> Result:
    settle(log)
    return verify(log, "--checkpoint", str(head), "--verifier-key", key[1])


def problems(result: Result) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("Problem: ")]


# ----------------------------------------------------------------------------- rewrites


def fix_head(execute: Callable[..., list[tuple[Any, ...]]], cid: str) -> None:
    """Make the head row agree with the stream's (rewritten) last event."""
    last = execute(
        "SELECT version, hash, recorded_at FROM events WHERE conversation_id = ? "
        "ORDER BY version DESC LIMIT 1",
        cid,
    )[0]
    execute(
        "UPDATE streams SET version = ?, head_hash = ?, updated_at = ? WHERE conversation_id = ?",
        last[0],
        last[1],
        last[2],
        cid,
    )


def close_gaps(log: Log, execute: Callable[..., list[tuple[Any, ...]]]) -> None:
    """SQLite's positions are gapless and verify checks them: renumber, in order."""
    if log.kind != "sqlite":
        return  # PostgreSQL's positions have gaps anyway
    rows = execute("SELECT position FROM events ORDER BY position")
    for rank, (position,) in enumerate(rows, start=1):
        if position != rank:
            execute("UPDATE events SET position = ? WHERE position = ?", rank, position)


def delete_newest_turn(log: Log, execute: Callable[..., list[tuple[Any, ...]]]) -> None:
    cid, version = execute(
        "SELECT conversation_id, version FROM events ORDER BY position DESC LIMIT 1"
    )[0]
    execute("DELETE FROM events WHERE conversation_id = ? AND version > ?", cid, version - 2)
    fix_head(execute, cid)
    close_gaps(log, execute)


def delete_conversation(log: Log, execute: Callable[..., list[tuple[Any, ...]]]) -> None:
    cid = execute("SELECT conversation_id FROM events WHERE position = 40")[0][0]
    execute("DELETE FROM events WHERE conversation_id = ?", cid)
    execute("DELETE FROM streams WHERE conversation_id = ?", cid)
    execute("DELETE FROM snapshots WHERE conversation_id = ?", cid)
    close_gaps(log, execute)


def edit_and_rehash(log: Log, execute: Callable[..., list[tuple[Any, ...]]]) -> None:
    """Change what the user said in one event, and re-hash the rest of its chain exactly
    as the library hashes (so the chain, the head and every check of it agree)."""
    cid = execute("SELECT conversation_id FROM events WHERE position = 100")[0][0]
    rows = execute(
        "SELECT version, event_id, type, schema_version, data, metadata, recorded_at, hash "
        "FROM events "
        "WHERE conversation_id = ? ORDER BY version",
        cid,
    )
    prev_hash = rows[0][7]
    for version, event_id, kind, schema_version, data, metadata, recorded_at, _ in rows[1:]:
        event = row_to_event(
            RawRow(cid, version, 0, event_id, kind, schema_version, data, metadata, recorded_at, "")
        )
        payload = event.data
        if version == 2:
            assert isinstance(payload, UserMessageAdded)
            payload = UserMessageAdded(
                turn=payload.turn,
                content={"role": "user", "parts": [{"text": "something I never said"}]},
            )
        new = NewEvent(data=payload, event_id=event_id, metadata=event.metadata)
        encoded: EncodedEvent = EventStore._encode(new)
        prepared = EventStore._prepare(cid, [encoded], version - 1, prev_hash, recorded_at)[0]
        execute(
            "UPDATE events SET data = ?, hash = ?, content_salt = ? "
            "WHERE conversation_id = ? AND version = ?",
            prepared.data.decode(),
            prepared.hash,
            prepared.content_salt,
            cid,
            version,
        )
        prev_hash = prepared.hash
    fix_head(execute, cid)


def swap_events(log: Log, execute: Callable[..., list[tuple[Any, ...]]]) -> None:
    """Swap the positions of two neighbours of different conversations, keeping each
    conversation's positions increasing with its versions (so no check of a chain sees it)."""
    rows = execute("SELECT position, conversation_id, version FROM events ORDER BY position")
    by_stream = {(cid, version): position for position, cid, version in rows}
    for (p1, c1, v1), (p2, c2, v2) in itertools.pairwise(rows):
        if c1 == c2 or p2 < 50:
            continue
        after_1 = by_stream.get((c1, v1 + 1))
        before_2 = by_stream.get((c2, v2 - 1))
        if (after_1 is None or after_1 > p2) and (before_2 is None or before_2 < p1):
            execute("UPDATE events SET position = ? WHERE position = ?", -1, p1)
            execute("UPDATE events SET position = ? WHERE position = ?", p1, p2)
            execute("UPDATE events SET position = ? WHERE position = ?", p2, -1)
            return
    raise AssertionError("no two events to swap")


REWRITES = {
    "delete the newest turn": delete_newest_turn,
    "delete a whole conversation": delete_conversation,
    "edit an event and re-hash its chain": edit_and_rehash,
    "swap two events": swap_events,
}


# ----------------------------------------------------------------------------- tests


def test_the_honest_log_extends_every_checkpoint_also_after_more_appends(
    log: Log, key: tuple[Path, str], tmp_path: Path
) -> None:
    head = tmp_path / "checkpoints"
    with log.store() as store:
        ids = fill(store)
    checkpoint(log, key, head)
    result = verify_checkpoint(log, key, head)
    assert result.exit_code == 0, result.output
    assert "the log extends it" in result.stdout
    assert "recomputed from the events: 600 events" in result.stdout
    with log.store() as store:
        store.append(ids[3], [message(turn=99)], expected_version=EVENTS_EACH)
        fill(store, 2)
    checkpoint(log, key, head)  # appended: the file now holds both
    result = verify_checkpoint(log, key, head)
    assert result.exit_code == 0, result.output
    assert result.stdout.count("the log extends it") == 2
    assert "recomputed from the events: 641 events" in result.stdout

    # The proofs a third party checks: consistency between the two, inclusion in the
    # newer one, and an export whose every event proves into it.
    first = tmp_path / "first"
    notes = list(iter_notes(head.read_text(encoding="utf-8").splitlines(keepends=True)))
    assert len(notes) == 2
    first.write_text(notes[0], encoding="utf-8")
    consistency = run(
        log, "prove", "--from", str(first), "--to", str(head), "--verifier-key", key[1]
    )
    assert consistency.exit_code == 0, consistency.output
    assert '"old_size":600,"new_size":641' in consistency.stdout
    inclusion = run(log, "prove", ids[3], "--checkpoint", str(head))
    assert inclusion.exit_code == 0, inclusion.output
    assert len(inclusion.stdout.splitlines()) == EVENTS_EACH + 1
    export = tmp_path / "export.jsonl"
    exported = run(log, "export", ids[3], "--proofs", "--checkpoint", str(head), "-o", str(export))
    assert exported.exit_code == 0, exported.output
    checked = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            str(export),
            "--checkpoint",
            str(head),
            "--verifier-key",
            key[1],
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "21 proven in the checkpoint of 641 events, 0 problems" in checked.stdout


@pytest.mark.parametrize("rewrite", list(REWRITES))
def test_every_rewrite_after_a_checkpoint_is_detected_and_plain_verify_sees_none(
    log: Log, key: tuple[Path, str], tmp_path: Path, rewrite: str
) -> None:
    head = tmp_path / "checkpoint"
    with log.store() as store:
        ids = fill(store)
        assert store.verify().ok
    checkpoint(log, key, head)
    with log.raw() as execute:
        REWRITES[rewrite](log, execute)
        execute("DELETE FROM merkle_nodes")  # so the kept tree agrees with the new log
    # A consistent rewrite fixes the derived tables too: the read models (which a plain
    # verify compares with the log, on SQLite and PostgreSQL) are written again from the
    # new log.
    with log.store() as store:
        rebuild_read_models(store)
    # The chains were fixed: without a checkpoint, nothing shows.
    plain = verify(log)
    assert plain.exit_code == 0, plain.output
    assert problems(plain) == []
    # With it, the rewrite is found, by recomputing the tree from the events.
    result = verify_checkpoint(log, key, head)
    assert result.exit_code == 1, result.output
    assert "the log does NOT extend it" in result.stdout
    found = problems(result)
    assert len(found) == 1, found
    if rewrite == "delete the newest turn":
        assert "the log holds only 598" in found[0]
    elif rewrite == "delete a whole conversation":
        assert f"the log holds only {600 - EVENTS_EACH}" in found[0]
    else:
        assert "first 600 events no longer hash to the root the checkpoint signed" in found[0]
    # Appending more never hides it: the first 600 events are what is compared.
    with log.store() as store:
        fill(store, 2)
        assert len(ids) == CONVERSATIONS
    result = verify_checkpoint(log, key, head)
    assert result.exit_code == 1
    assert (
        "first 600 events no longer hash to the root the checkpoint signed" in problems(result)[0]
    )
    # And no proof is made against the checkpoint any more.
    proof = run(log, "prove", ids[0], "--checkpoint", str(head))
    assert proof.exit_code == 1
    assert "no longer holds what the checkpoint signed" in proof.output


#: What a PostgreSQL log is rolled back with: every table the store keeps (a restored
#: backup of the database), the read models included.
ROLLED_BACK_TABLES = (
    "events",
    "streams",
    "snapshots",
    "merkle_nodes",
    "chat_summaries",
    "chat_contents",
)


def test_rolling_the_store_back_to_an_older_copy_is_detected(
    log: Log, key: tuple[Path, str], tmp_path: Path
) -> None:
    head = tmp_path / "checkpoint"
    with log.store() as store:
        fill(store, 10)
    if log.kind == "sqlite":
        copy = tmp_path / "older.db"
        with (
            contextlib.closing(sqlite3.connect(log.path)) as source,
            contextlib.closing(sqlite3.connect(copy)) as target,
        ):
            source.backup(target)
    else:
        with log.raw() as execute:
            for table in ROLLED_BACK_TABLES:
                execute(f"CREATE TABLE older_{table} AS SELECT * FROM {table}")
    with log.store() as store:
        fill(store, 5)
    checkpoint(log, key, head)
    if log.kind == "sqlite":
        for suffix in ("-wal", "-shm"):
            Path(str(log.path) + suffix).unlink(missing_ok=True)
        shutil.copyfile(copy, log.path)
    else:
        with log.raw() as execute:
            for table in ROLLED_BACK_TABLES:
                execute(f"DELETE FROM {table}")
                execute(f"INSERT INTO {table} SELECT * FROM older_{table}")
                execute(f"DROP TABLE older_{table}")
    plain = verify(log)
    assert plain.exit_code == 0, plain.output
    result = verify_checkpoint(log, key, head)
    assert result.exit_code == 1, result.output
    assert "the log holds only 200" in problems(result)[0]
    assert "rolled back" in problems(result)[0]


def test_the_kept_tree_left_as_it_was_shows_an_edit_even_to_plain_verify(
    log: Log, key: tuple[Path, str], tmp_path: Path
) -> None:
    with log.store() as store:
        fill(store)
    checkpoint(log, key, tmp_path / "checkpoint")
    with log.raw() as execute:
        edit_and_rehash(log, execute)  # position 100: in the first block of 256
    result = verify(log)
    assert result.exit_code == 1
    assert any("[0, 256)" in line for line in problems(result)), result.stdout


def test_a_checkpoint_signed_by_another_key_or_changed_is_refused(
    log: Log, key: tuple[Path, str], tmp_path: Path
) -> None:
    head = tmp_path / "checkpoint"
    with log.store() as store:
        fill(store, 2)
    checkpoint(log, key, head)
    other = Signer.generate("chatledger.test/tamper").verifier.verifier_key
    result = verify(log, "--checkpoint", str(head), "--verifier-key", other)
    assert result.exit_code == 1
    assert "Error:" in result.output and "PRIVATE" not in result.output
    lines = head.read_text().split("\n")
    lines[1] = str(int(lines[1]) - 1)  # claim a smaller tree
    head.write_text("\n".join(lines))
    result = verify_checkpoint(log, key, head)
    assert result.exit_code == 1
    assert "Error:" in result.output
