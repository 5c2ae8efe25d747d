"""The read models' memo between a SQLite store's appends (chatledger/events/memo.py):
used when the store's own connection wrote the summary row, never when anything else may
have changed it since (another process, another store on the file, a rollback, an
erasure, a rebuild, the caller's own SQL).

Every test checks the read models against a fold of the log (``verify``) after the
append that follows the event which must invalidate the memo: a stale memo would write
a summary that differs from the fold. Real SQLite files, real processes."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import chatledger
from chatledger.client.transports.scripted import ScriptedTransport
from chatledger.events import (
    ConversationStarted,
    ModelCallStarted,
    NewEvent,
    SQLiteStore,
    UserMessageAdded,
)
from chatledger.events import store as store_module
from chatledger.events.memo import AppendMemo
from chatledger.readmodels import rebuild


def started() -> NewEvent:
    return NewEvent(data=ConversationStarted(model="gemini-2.5-flash"))


def user(text: str, turn: int) -> NewEvent:
    return NewEvent(
        data=UserMessageAdded(turn=turn, content={"role": "user", "parts": [{"text": text}]})
    )


def call_started(turn: int) -> NewEvent:
    return NewEvent(
        data=ModelCallStarted(turn=turn, model="gemini-2.5-flash", contents_sha256="0" * 64)
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "memo.db"


@pytest.fixture
def store(path: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(path)
    yield opened
    opened.close()


def statements(store: SQLiteStore) -> list[str]:
    seen: list[str] = []
    store._conn.set_trace_callback(seen.append)
    return seen


def summary_reads(seen: list[str]) -> int:
    return sum(1 for sql in seen if sql.startswith("SELECT version, state, title"))


def head_reads(seen: list[str]) -> int:
    return sum(1 for sql in seen if sql.startswith("SELECT s.version, s.head_hash, e.hash"))


def state_of(path: Path, conversation_id: str) -> str:
    with sqlite3.connect(path) as conn:
        row = conn.execute(
            "SELECT state FROM chat_summaries WHERE conversation_id = ?", (conversation_id,)
        ).fetchone()
    conn.close()
    return str(row[0])


def assert_read_models_match(store: SQLiteStore) -> None:
    report = chatledger.verify_log(store)
    assert report.problems == [], report.problems
    assert report.read_models_checked >= 1


def test_consecutive_appends_use_the_memo_and_write_what_a_fold_gives(
    store: SQLiteStore,
) -> None:
    store.append("c", [started()], expected_version=0)
    seen = statements(store)
    for turn in range(1, 6):
        store.append("c", [user(f"message {turn}", turn)], expected_version=turn)
    # The first append after opening has the memo of the conversation_started append.
    assert summary_reads(seen) == 0 and head_reads(seen) == 0
    assert len(store._memo) == 2  # its head and its summary state
    assert_read_models_match(store)


def test_another_process_appending_invalidates_the_memo(path: Path, store: SQLiteStore) -> None:
    store.append("c", [started(), user("one", 1)], expected_version=0)
    context = multiprocessing.get_context("spawn")
    child = context.Process(target=_append_in_another_process, args=(str(path), 2, "two", 2))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    seen = statements(store)
    store.append("c", [user("three", 3)], expected_version=3)
    # Read again: the memo could not vouch for the rows.
    assert summary_reads(seen) == 1 and head_reads(seen) == 1
    assert '"three"' in state_of(path, "c")
    assert_read_models_match(store)


def _append_in_another_process(path: str, after: int, text: str, turn: int) -> None:
    other = SQLiteStore(path)
    try:
        other.append("c", [user(text, turn)], expected_version=after)
    finally:
        other.close()


def test_another_store_on_the_same_file_invalidates_the_memo(
    path: Path, store: SQLiteStore
) -> None:
    other = SQLiteStore(path)
    try:
        store.append("c", [started()], expected_version=0)
        for version in range(1, 7):
            writer = store if version % 2 else other
            writer.append("c", [user(f"message {version}", version)], expected_version=version)
        # Another connection's write to any table, even one the memo does not cover.
        other.append("d", [started()], expected_version=0)
        seen = statements(store)
        store.append("c", [user("last", 7)], expected_version=7)
        assert summary_reads(seen) == 1
    finally:
        other.close()
    assert_read_models_match(store)


def test_another_connection_rewriting_a_summary_at_the_same_version_invalidates_the_memo(
    path: Path, store: SQLiteStore
) -> None:
    # An erasure changes the rows, not the stream's version: only data_version tells.
    store.append("c", [started(), user("a secret to erase", 1)], expected_version=0)
    other = SQLiteStore(path)
    try:
        chatledger.erase(other, conversation_id="c", reason="asked", actor="test")
    finally:
        other.close()
    version = store.stream_info("c").version  # type: ignore[union-attr]
    seen = statements(store)
    store.append("c", [call_started(1)], expected_version=version)
    assert summary_reads(seen) == 1
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT state FROM chat_summaries").fetchall()
    conn.close()
    assert not any("secret" in str(row[0]) for row in rows)
    assert chatledger.verify_log(store).problems == []


def test_any_write_by_another_connection_invalidates_the_memo(
    path: Path, store: SQLiteStore
) -> None:
    store.append("c", [started(), user("one", 1)], expected_version=0)
    other = SQLiteStore(path)
    try:
        other.run_in_transaction(
            lambda conn: conn.execute("UPDATE chat_summaries SET title = 'edited elsewhere'")
        )
    finally:
        other.close()
    seen = statements(store)
    store.append("c", [call_started(1)], expected_version=2)
    assert summary_reads(seen) == 1
    # The append started from the row as it is (the edit carried forward, not masked by
    # what this process remembered): verify names it.
    report = chatledger.verify_log(store)
    assert [p.conversation_id for p in report.problems] == ["c"]
    assert "summary differs from the log (title)" in report.problems[0].reason


class _FailingReadModel:
    """A second inline read model that fails the appends of one conversation, after the
    conversation read models have done their work (and kept it in the memo)."""

    def __init__(self, conversation_id: str, error: BaseException) -> None:
        self.conversation_id = conversation_id
        self.error = error
        self.failed = 0

    def appended(
        self,
        connection: Any,
        conversation_id: str,
        rows: Any,
        memo: AppendMemo | None = None,
    ) -> None:
        if conversation_id == self.conversation_id:
            self.failed += 1
            raise self.error

    def rebuild_all(self, connection: Any) -> None:
        pass


@pytest.fixture
def failing() -> Iterator[list[Any]]:
    added: list[Any] = []
    yield added
    for model in added:
        store_module.INLINE_READ_MODELS.remove(model)


def test_a_rolled_back_append_leaves_the_memo_at_the_committed_state(
    path: Path, store: SQLiteStore, failing: list[Any]
) -> None:
    store.append("c", [started(), user("kept", 1)], expected_version=0)
    model = _FailingReadModel("c", RuntimeError("refused"))
    store_module.INLINE_READ_MODELS.append(model)
    failing.append(model)
    with pytest.raises(RuntimeError, match="refused"):
        store.append("c", [user("rolled back", 2)], expected_version=2)
    assert model.failed == 1
    store_module.INLINE_READ_MODELS.remove(model)
    failing.clear()
    assert store.stream_info("c") is not None and store.stream_info("c").version == 2  # type: ignore[union-attr]
    store.append("c", [user("after", 2)], expected_version=2)
    state = state_of(path, "c")
    assert "rolled back" not in state and '"after"' in state
    assert_read_models_match(store)


def test_a_failed_append_in_a_group_is_forgotten_and_the_others_kept(
    path: Path, store: SQLiteStore, failing: list[Any]
) -> None:
    for conversation_id in ("a", "b"):
        store.append(conversation_id, [started()], expected_version=0)
    model = _FailingReadModel("b", RuntimeError("refused"))
    store_module.INLINE_READ_MODELS.append(model)
    failing.append(model)
    # Three appends in one group (as test_group_commit.py builds them): a, b (fails),
    # then a again, which starts from what the group's first append left.
    requests = [
        store_module.EncodedBatch([store._encode(user("a1", 1))]),
        store_module.EncodedBatch([store._encode(user("b1", 1))]),
        store_module.EncodedBatch([store._encode(user("a2", 2))]),
    ]
    from chatledger.events.sqlite import _AppendRequest

    group = [
        _AppendRequest("a", requests[0], 1),
        _AppendRequest("b", requests[1], 1),
        _AppendRequest("a", requests[2], 2),
    ]
    with store._lock:
        store._pending.extend(group[1:])
        store._commit_group(group[0])
    assert group[0].error is None and group[2].error is None
    assert isinstance(group[1].error, RuntimeError)
    store_module.INLINE_READ_MODELS.remove(model)
    failing.clear()
    assert ("conversations", "b") not in store._memo._entries
    assert ("conversations", "a") in store._memo._entries
    store.append("b", [user("b again", 1)], expected_version=1)
    store.append("a", [user("a3", 3)], expected_version=3)
    assert "b1" not in state_of(path, "b")
    assert_read_models_match(store)


def test_a_group_that_fails_whole_leaves_nothing_in_the_memo(
    path: Path, store: SQLiteStore, failing: list[Any]
) -> None:
    store.append("c", [started()], expected_version=0)
    # Not an Exception: the whole transaction rolls back (as for an interrupt).
    model = _FailingReadModel("c", KeyboardInterrupt())
    store_module.INLINE_READ_MODELS.append(model)
    failing.append(model)
    with pytest.raises(KeyboardInterrupt):
        store.append("c", [user("interrupted", 1)], expected_version=1)
    store_module.INLINE_READ_MODELS.remove(model)
    failing.clear()
    assert len(store._memo) == 0
    store.append("c", [user("after", 1)], expected_version=1)
    assert "interrupted" not in state_of(path, "c")
    assert_read_models_match(store)


def test_erasure_and_rebuild_clear_the_memo(path: Path) -> None:
    transport = ScriptedTransport()
    with chatledger.Client(store=str(path), transport=transport) as client:
        store = client.store
        assert isinstance(store, SQLiteStore)
        chat = client.chats.create(model="gemini-2.5-flash")
        transport.enqueue("A reply to erase.")
        chat.send_message("A secret to erase")
        assert len(store._memo) == 2
        chatledger.erase(store, conversation_id=chat.id, reason="asked", actor="test")
        assert len(store._memo) == 0
        chat = client.chats.get(chat.id)
        transport.enqueue("After the erasure.")
        chat.send_message("A new message")
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT state FROM chat_summaries").fetchall()
            rows += conn.execute("SELECT contents FROM chat_contents").fetchall()
        conn.close()
        assert not any(b"secret" in _bytes(row[0]) for row in rows)
        assert_read_models_match(store)
        rebuild(store)
        assert len(store._memo) == 0
        transport.enqueue("After the rebuild.")
        chat.send_message("Another message")
        assert_read_models_match(store)


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def test_the_callers_own_sql_clears_the_memo(path: Path, store: SQLiteStore) -> None:
    store.append("c", [started(), user("one", 1)], expected_version=0)
    # A write through the store's own connection, which data_version does not see.
    store.run_in_transaction(
        lambda conn: conn.execute(
            "UPDATE chat_summaries SET state = replace(state, '\"one\"', '\"forged\"')"
        )
    )
    seen = statements(store)
    store.append("c", [call_started(1)], expected_version=2)
    assert summary_reads(seen) == 1
    # The append started from the row as it is: it carried the edit forward, and verify
    # names the read model (it never silently holds what the log does not say).
    report = chatledger.verify_log(store)
    assert [p.conversation_id for p in report.problems] == ["c"]
    assert "state differs" in report.problems[0].reason


def test_threads_appending_through_groups_keep_the_read_models_exact(path: Path) -> None:
    store = SQLiteStore(path, synchronous="FULL")
    try:
        errors: list[BaseException] = []

        def work(conversation_id: str) -> None:
            try:
                store.append(conversation_id, [started()], expected_version=0)
                for turn in range(1, 16):
                    events = [user(f"{conversation_id} {turn}", turn), call_started(turn)]
                    store.append(conversation_id, events, expected_version=2 * turn - 1)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(f"t{n}",)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert_read_models_match(store)
    finally:
        store.close()


def test_the_memo_is_bounded() -> None:
    memo = AppendMemo()
    conn = sqlite3.connect(":memory:")
    try:
        memo.begin(conn)
        for key in range(AppendMemo.MAX_ENTRIES + 10):
            memo.put(key, key)
        memo.commit()
        assert len(memo) == AppendMemo.MAX_ENTRIES
        memo.begin(conn)
        assert memo.take(0) is None  # the oldest were forgotten
        assert memo.take(AppendMemo.MAX_ENTRIES + 9) == AppendMemo.MAX_ENTRIES + 9
        memo.rollback()
        # Taken, then rolled back: gone (the object may have been changed in place).
        memo.begin(conn)
        assert memo.take(AppendMemo.MAX_ENTRIES + 9) is None
        memo.rollback()
    finally:
        conn.close()


def test_an_import_clears_the_memo(path: Path, store: SQLiteStore) -> None:
    store.append("c", [started(), user("one", 1)], expected_version=0)
    rows = store._read("c", 0, None)
    target = SQLiteStore(path.with_name("imported.db"))
    try:
        target.append("x", [started()], expected_version=0)  # fills the memo
        assert len(target._memo) == 2
        target._import_rows("c", rows, 0)
        assert len(target._memo) == 0
        target.append("x", [user("after the import", 1)], expected_version=1)
        assert_read_models_match(target)
    finally:
        target.close()
