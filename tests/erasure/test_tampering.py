"""What verify and the triggers say when someone changes erased or erasable content by
hand (docs/erasure.md), and how events written before erasure existed are treated."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from click.testing import CliRunner

import chatledger
from chatledger.events import (
    ContentErased,
    ConversationStarted,
    ModelResponded,
    NewEvent,
    SQLiteStore,
    UserMessageAdded,
)
from chatledger.events.erasing import erase
from chatledger.events.erasure import ERASED, commitment, erase_data
from chatledger.events.postgres import PostgresStore
from tests.cli_support import run
from tests.support.gemini_server import text_response
from tests.support.legacy_log import write_legacy_events
from tests.support.postgres import connect, scratch_database

SECRET = "the-secret-SENTENCE-5521"
REPLY = "the-model-said-REPLY-6632"


def _message(text: str, turn: int = 1) -> UserMessageAdded:
    return UserMessageAdded(turn=turn, content={"role": "user", "parts": [{"text": text}]})


def _conversation(store: chatledger.EventStore, cid: str = "c1") -> str:
    store.append(
        cid,
        [
            NewEvent(data=ConversationStarted(model="m")),
            NewEvent(data=_message(SECRET)),
            NewEvent(data=ModelResponded(turn=1, response=text_response(REPLY))),
            NewEvent(data=_message("second", turn=2)),
        ],
        expected_version=0,
    )
    return cid


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "log.db"


@pytest.fixture
def store(path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(path) as store:
        yield store


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def _without_trigger(path: Path, sql: str, params: tuple[Any, ...]) -> None:
    """Run ``sql`` with the UPDATE trigger dropped, then put it back as it was (verify
    checks the triggers too): what someone with write access to the file can do."""
    conn = _raw(path)
    try:
        (trigger,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'events_no_update'"
        ).fetchone()
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute(sql, params)
        conn.execute(trigger)
    finally:
        conn.close()


def _row(path: Path, version: int) -> tuple[str, str | None, int]:
    conn = _raw(path)
    try:
        data, salt, position = conn.execute(
            "SELECT data, content_salt, position FROM events WHERE version = ?", (version,)
        ).fetchone()
    finally:
        conn.close()
    return data, salt, position


def _compact(value: Any) -> str:
    """``value`` encoded as chatledger stores data (compact, keys in order)."""
    return msgspec.json.encode(value).decode()


def _reasons(store: chatledger.EventStore) -> list[str]:
    return [f"v{p.version}: {p.reason}" for p in store.verify().problems]


def test_the_trigger_lets_only_an_erasure_through(store: SQLiteStore, path: Path) -> None:
    _conversation(store)
    data, salt, _ = _row(path, 2)
    assert salt is not None and len(salt) == 64
    conn = _raw(path)
    try:
        for sql in (
            "UPDATE events SET metadata = '{}' WHERE version = 2",
            "UPDATE events SET data = '{}' WHERE version = 2",  # salt kept: not an erasure
            "UPDATE events SET data = '{}', content_salt = '' WHERE version = 1",  # no salt
            "UPDATE events SET content_salt = '', hash = 'x' WHERE version = 2",
            "UPDATE events SET content_salt = '', version = 9 WHERE version = 2",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="immutable"):
                conn.execute(sql)
    finally:
        conn.close()
    assert _row(path, 2) == (data, salt, _row(path, 2)[2])
    assert store.verify().ok


def test_erased_content_put_back_is_detected(store: SQLiteStore, path: Path) -> None:
    cid = _conversation(store)
    original, _, _ = _row(path, 2)
    erase(store, conversation_id=cid, reason="asked", actor="dpo")
    assert store.verify().ok
    # The content restored from a backup, without its salt (erasure dropped it).
    _without_trigger(path, "UPDATE events SET data = ? WHERE version = 2", (original,))
    assert any("holds content, not a placeholder" in r for r in _reasons(store))


def test_a_changed_placeholder_is_detected(store: SQLiteStore, path: Path) -> None:
    cid = _conversation(store)
    erase(store, conversation_id=cid, reason="asked", actor="dpo")
    data, _, _ = _row(path, 2)
    changed = json.loads(data)
    changed["content"]["parts"] = {ERASED: "0" * 64}
    _without_trigger(path, "UPDATE events SET data = ? WHERE version = 2", (_compact(changed),))
    assert _reasons(store) == ["v2: hash mismatch: the event was modified, or an earlier one was"]


def test_changed_live_content_or_salt_is_detected(store: SQLiteStore, path: Path) -> None:
    _conversation(store)
    data, salt, _ = _row(path, 2)
    _without_trigger(
        path,
        "UPDATE events SET data = ? WHERE version = 2",
        (data.replace(SECRET, "something else"),),
    )
    assert _reasons(store) == ["v2: hash mismatch: the event was modified, or an earlier one was"]
    _without_trigger(path, "UPDATE events SET data = ? WHERE version = 2", (data,))
    assert store.verify().ok
    assert salt is not None
    _without_trigger(path, "UPDATE events SET content_salt = ? WHERE version = 2", ("0" * 64,))
    assert _reasons(store) == ["v2: hash mismatch: the event was modified, or an earlier one was"]
    _without_trigger(path, "UPDATE events SET content_salt = NULL WHERE version = 2", ())
    assert _reasons(store) == ["v2: hash mismatch: the event was modified, or an earlier one was"]


def test_an_erasure_without_its_content_erased_event_is_detected(
    store: SQLiteStore, path: Path
) -> None:
    _conversation(store)
    data, salt, _ = _row(path, 2)
    assert salt is not None
    # A correct placeholder, through the trigger, but not by chatledger erase: nothing
    # records who erased it, or why.
    value = json.loads(data)
    value["content"]["parts"] = {
        ERASED: commitment(salt, "content.parts", value["content"]["parts"])
    }
    conn = _raw(path)
    try:
        conn.execute(
            "UPDATE events SET data = ?, content_salt = '' WHERE version = 2",
            (_compact(value),),
        )
    finally:
        conn.close()
    reasons = _reasons(store)
    assert len(reasons) == 1
    assert reasons[0].startswith("v2: its content was erased, but no later content_erased")


def test_events_written_before_erasure_verify_and_are_reported_not_erasable(
    path: Path,
) -> None:
    SQLiteStore(path).close()
    write_legacy_events(path, "old", [ConversationStarted(model="m"), _message(SECRET)])
    with SQLiteStore(path) as store:
        store.append("old", [NewEvent(data=_message("new text", 2))], expected_version=2)
        assert store.verify().ok
        report = erase(store, conversation_id="old", reason="asked", actor="dpo")
        # The new event is erased; the old one is listed, and left as it was.
        assert report.events == 1
        assert report.not_erasable == [("old", 2)]
        events = store.read("old")
        assert [e.erased for e in events] == [False, False, True, False]
        assert events[1].data == _message(SECRET)
        last = events[-1].data
        assert isinstance(last, ContentErased)
        assert last.not_erasable == [2]
        assert store.verify().ok
    result = run(CliRunner(), path, "erase", "old", "--reason", "again")
    assert result.exit_code == 1
    assert "cannot be erased in place: old v2" in result.output


def test_the_cli_erases_and_shows_placeholders(path: Path) -> None:
    with SQLiteStore(path) as store:
        _conversation(store)
    runner = CliRunner()
    before = run(runner, path, "show", "c1").output
    assert SECRET in before and REPLY in before
    result = run(runner, path, "--actor", "dpo", "erase", "c1", "--reason", "ticket 7")
    assert result.exit_code == 0, result.output
    assert "Erased the content of 3 events in 1 conversation" in result.output
    shown = run(runner, path, "show", "c1").output
    assert SECRET not in shown and REPLY not in shown and "[erased]" in shown
    log = run(runner, path, "log", "c1").output
    assert SECRET not in log and REPLY not in log and "content_erased" in log and "[erased]" in log
    assert "No problems found" in run(runner, path, "verify").output
    with SQLiteStore(path) as store:
        erased = store.read("c1")[-1]
        assert erased.actor == "dpo"
        replay = pytest.raises(chatledger.ChatStateError, match="erased")
        with replay:
            chatledger.replay_conversation(store, "c1")
    for blob in (p.read_bytes() for p in path.parent.glob("log.db*")):
        assert SECRET.encode() not in blob and REPLY.encode() not in blob
    refused = run(runner, path, "erase", "--reason", "r")
    assert refused.exit_code != 0
    assert "exactly one of" in refused.output


def test_postgres_lets_only_an_erasure_through_and_verify_catches_tampering() -> None:
    with scratch_database("chatledger_erasure") as url, PostgresStore(url) as store:
        cid = _conversation(store)
        with connect(url) as conn:
            for sql in (
                "UPDATE events SET metadata = '{}' WHERE version = 2",
                "UPDATE events SET data = '{}' WHERE version = 2",
                "UPDATE events SET data = '{}', content_salt = '' WHERE version = 1",
                "UPDATE events SET content_salt = '', hash = 'x' WHERE version = 2",
                "DELETE FROM events WHERE version = 2",
            ):
                with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
                    conn.execute(sql)
        (original,) = (r.data for r in store._read(cid, 1, 2))
        erase(store, conversation_id=cid, reason="asked", actor="dpo", vacuum=True)
        assert store.verify().ok
        assert [e.erased for e in store.read(cid)] == [False, True, True, True, False]
        with connect(url) as conn:
            conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_or_delete")
            conn.execute("UPDATE events SET data = %s WHERE version = 2", (original,))
            conn.execute("ALTER TABLE events ENABLE TRIGGER events_no_update_or_delete")
        assert any("holds content, not a placeholder" in r for r in _reasons(store))


NOT_AS_WRITTEN = (
    "v2: its data is not stored as chatledger writes it (a repeated key, or written outside "
    "chatledger), so other readers (the SQL views) may see other content than the hash covers"
)


def _with_repeated_key(data: str, salt: str, first: Any) -> str:
    """Regression: the erased data of the row ``data`` (salt ``salt``), with a ``content``
    key ``first`` written before the correct placeholder. chatledger reads the last key;
    SQLite's json_extract (the chat_messages view) and a raw read of the file the first."""
    erased = _compact(erase_data("user_message_added", json.loads(data), salt))
    return '{"content":' + _compact(first) + "," + erased[1:]


def test_a_repeated_key_in_erased_data_is_detected(store: SQLiteStore, path: Path) -> None:
    cid = _conversation(store)
    data, salt, _ = _row(path, 2)
    assert salt
    original = json.loads(data)["content"]
    forged: dict[str, Any] = {"role": "user", "parts": [{"text": "I consent to everything"}]}
    for first in (original, forged):  # content kept, or content forged
        _without_trigger(  # (put the live row back; the trigger allows only erasures)
            path, "UPDATE events SET data = ?, content_salt = ? WHERE version = 2", (data, salt)
        )
        assert store.verify().ok
        conn = _raw(path)
        try:  # through the trigger: it allows exactly this update (an erasure's)
            conn.execute(
                "UPDATE events SET data = ?, content_salt = '' WHERE version = 2",
                (_with_repeated_key(data, salt, first),),
            )
            (shown,) = conn.execute(
                "SELECT text FROM chat_messages WHERE conversation_id = ? AND version = 2",
                (cid,),
            ).fetchone()
        finally:
            conn.close()
        assert shown == first["parts"][0]["text"]  # what the SQL view shows
        assert store.read(cid)[1].erased  # what chatledger reads: a valid placeholder
        assert _reasons(store) == [NOT_AS_WRITTEN]
    # A legitimate erasure later records it (content_erased covers v2): still detected.
    erase(store, conversation_id=cid, reason="asked", actor="dpo")
    assert _reasons(store) == [NOT_AS_WRITTEN]


def test_a_repeated_key_or_other_encoding_in_live_rows_is_detected(
    store: SQLiteStore, path: Path
) -> None:
    _conversation(store)
    data, _, _ = _row(path, 2)
    value = json.loads(data)
    # The hash covers the last "content"; a reader taking the first sees forged text.
    forged = '{"content":{"role":"user","parts":[{"text":"forged"}]},' + data[1:]
    assert json.loads(forged) == value
    spaced = json.dumps(value)  # same value, another encoding
    for changed in (forged, spaced):
        _without_trigger(path, "UPDATE events SET data = ? WHERE version = 2", (changed,))
        assert _reasons(store) == [NOT_AS_WRITTEN]
    _without_trigger(path, "UPDATE events SET data = ? WHERE version = 2", (data,))
    assert store.verify().ok
    store.append(
        "c1", [NewEvent(data=_message("third", 3), metadata={"actor": "app"})], expected_version=4
    )
    conn = _raw(path)
    try:
        (metadata,) = conn.execute("SELECT metadata FROM events WHERE version = 5").fetchone()
    finally:
        conn.close()
    assert metadata == '{"actor":"app"}'
    repeated = '{"actor":"someone else","actor":"app"}'  # the hash covers the last
    _without_trigger(path, "UPDATE events SET metadata = ? WHERE version = 5", (repeated,))
    assert _reasons(store) == [NOT_AS_WRITTEN.replace("v2: its data", "v5: its metadata")]


def test_postgres_catches_a_repeated_key_in_erased_data() -> None:
    with scratch_database("chatledger_erasure") as url, PostgresStore(url) as store:
        cid = _conversation(store)
        (row,) = store._read(cid, 1, 2)
        data = row.data if isinstance(row.data, str) else bytes(row.data).decode()
        assert row.content_salt
        original = json.loads(data)["content"]
        with connect(url) as conn:  # the trigger allows this update: an erasure's
            conn.execute(
                "UPDATE events SET data = %s, content_salt = '' WHERE conversation_id = %s "
                "AND version = 2",
                (_with_repeated_key(data, row.content_salt, original), cid),
            )
            found = conn.execute(
                "SELECT data FROM events WHERE conversation_id = %s AND version = 2", (cid,)
            ).fetchone()
        assert found is not None
        (stored,) = found
        assert stored.count('"content":') == 2  # a text column keeps both keys
        assert store.read(cid)[1].erased
        assert _reasons(store) == [NOT_AS_WRITTEN]
        erase(store, conversation_id=cid, reason="asked", actor="dpo")
        assert _reasons(store) == [NOT_AS_WRITTEN]


def _verifier() -> Any:
    spec = importlib.util.spec_from_file_location(
        "verify_export", Path(__file__).resolve().parents[2] / "examples" / "verify_export.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_standalone_verifier_checks_erased_exports(store: SQLiteStore) -> None:
    cid = _conversation(store)
    erase(store, conversation_id=cid, reason="asked", actor="dpo")
    lines = list(chatledger.export_conversation(store, cid))
    verify = _verifier().verify
    assert verify(lines) == (1, 5, [])
    assert all(SECRET not in line for line in lines)
    # A placeholder changed: its commitment is no longer the hashed one.
    second = json.loads(lines[1])
    second["data"]["content"]["parts"] = {ERASED: "1" * 64}
    changed = [lines[0], json.dumps(second), *lines[2:]]
    assert verify(changed)[2] == [f"{cid} v2: hash mismatch (modified, reordered or forged)"]
    # Content put back without its salt.
    second["data"]["content"]["parts"] = [{"text": SECRET}]
    restored = [lines[0], json.dumps(second), *lines[2:]]
    assert verify(restored)[2] == [f"{cid} v2: it is erased, but content.parts holds content"]
    # The content_erased event dropped (the shorter chain is still a chain).
    assert verify(lines[:-1])[2] == [
        f"{cid} v2: erased, but no content_erased event records it",
        f"{cid} v3: erased, but no content_erased event records it",
        f"{cid} v4: erased, but no content_erased event records it",
    ]
    # And an import refuses a salt that is not one.
    bad = json.loads(lines[0]) | {"content_salt": "zz"}
    with (
        SQLiteStore(":memory:") as copy,
        pytest.raises(chatledger.InvalidInputError, match="content_salt"),
    ):
        chatledger.import_lines(copy, [json.dumps(bad), *lines[1:]])


def test_the_standalone_verifier_refuses_repeated_keys(store: SQLiteStore) -> None:
    cid = _conversation(store)
    lines = list(chatledger.export_conversation(store, cid))
    assert _verifier().verify(lines) == (1, 4, [])
    # v2's data with forged content before the real (hashed) one
    forged = lines[1].replace('"data":{', '"data":{"content":{"role":"user","parts":[]},', 1)
    assert forged != lines[1] and json.loads(forged) == json.loads(lines[1])  # the last wins
    with pytest.raises(ValueError, match="repeats a key"):
        _verifier().verify([lines[0], forged, *lines[2:]])
