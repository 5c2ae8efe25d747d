"""The contents a store last read from the read model for a conversation are used again
by the next ``chats.get`` on the same client (chatledger/readmodels/conversations.py,
``_Cached``), only while they are what the rows hold: the summary row unchanged, no
other connection having committed, nothing rebuilt since. Real SQLite files; the model
is a ScriptedTransport."""

from __future__ import annotations

import gc
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import chatledger
from chatledger.client._fold import fold_events
from chatledger.client.transports.scripted import ScriptedTransport
from chatledger.projections.history import dump_state
from chatledger.readmodels import conversations, load_state, rebuild


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "chats.db"


@pytest.fixture
def transport() -> ScriptedTransport:
    return ScriptedTransport()


@pytest.fixture
def client(path: Path, transport: ScriptedTransport) -> Iterator[chatledger.Client]:
    with chatledger.Client(store=str(path), transport=transport) as client:
        yield client


def conversation(client: chatledger.Client, transport: ScriptedTransport, turns: int = 3) -> Any:
    chat = client.chats.create(model="gemini-2.5-flash")
    for turn in range(turns):
        transport.enqueue(f"Reply {turn}.")
        chat.send_message(f"Message {turn}")
    return chat


class Statements:
    """The SQL a store's connection runs (its trace callback)."""

    def __init__(self, store: Any) -> None:
        self.seen: list[str] = []
        store._conn.set_trace_callback(self.seen.append)

    def contents_reads(self) -> int:
        found = [sql for sql in self.seen if "FROM chat_contents" in sql]
        self.seen.clear()
        return len(found)


def edit(path: Path, sql: str, *params: Any) -> None:
    """A change made by another connection (another program, another process)."""
    connection = sqlite3.connect(path)
    with connection:
        connection.execute(sql, params)
    connection.close()


def test_a_second_get_reads_no_contents_rows_and_returns_the_same_history(
    path: Path, transport: ScriptedTransport
) -> None:
    with chatledger.Client(store=str(path), transport=transport) as writer:
        chat = conversation(writer, transport)
        expected = chat.get_history()
    with chatledger.Client(store=str(path), transport=transport) as client:
        statements = Statements(client.store)
        first = client.chats.get(chat.id)
        assert statements.contents_reads() == 1
        second = client.chats.get(chat.id)
        assert statements.contents_reads() == 0  # from the cache
        assert first.get_history() == second.get_history() == expected
        assert second.get_history(curated=True) == first.get_history(curated=True)
        assert second.get_context() == first.get_context()
        assert second.usage == first.usage
        # The state is the fold's, every field.
        loaded = load_state(client.store, chat.id)
        assert loaded is not None
        assert statements.contents_reads() == 0
        history, usage, _ = fold_events(client.store, chat.id, use_snapshot=False)
        assert dump_state(loaded[0]) == dump_state(history)
        assert msgspec.to_builtins(loaded[1]) == msgspec.to_builtins(usage)


def test_chats_from_the_cache_are_independent(
    client: chatledger.Client, transport: ScriptedTransport
) -> None:
    chat = conversation(client, transport)
    first = client.chats.get(chat.id)
    second = client.chats.get(chat.id)
    expected = chat.get_history()
    # Sending on one chat changes neither the other chat's state nor the cached copy.
    transport.enqueue("Only on the first.")
    first.send_message("Only here")
    assert second.get_history() == expected
    assert len(first.get_history()) == len(expected) + 2
    # Changing the objects a chat returned changes nothing it keeps.
    returned = second.get_history()
    returned[0].parts[0].text = "changed"  # type: ignore[index]
    returned.pop()
    assert second.get_history() == expected
    third = client.chats.get(chat.id)  # at the new head: read again
    assert third.get_history() == first.get_history()
    assert client.chats.get(chat.id).get_history() == first.get_history()
    assert chatledger.verify_log(client.store).ok


def test_an_append_by_another_process_is_read(
    path: Path, client: chatledger.Client, transport: ScriptedTransport
) -> None:
    chat = conversation(client, transport)
    client.chats.get(chat.id)  # cached
    with chatledger.Client(store=str(path), transport=transport) as other:
        transport.enqueue("From the other process.")
        other.chats.get(chat.id).send_message("Elsewhere")
        expected = other.chats.get(chat.id).get_history()
    statements = Statements(client.store)
    got = client.chats.get(chat.id).get_history()
    assert statements.contents_reads() == 1
    assert got == expected and got[-1].parts[0].text == "From the other process."  # type: ignore[index]


@pytest.mark.parametrize("rebuild_in", ["this process", "another connection"])
def test_rows_changed_and_rebuilt_elsewhere_are_not_hidden_by_the_cache(
    path: Path, client: chatledger.Client, transport: ScriptedTransport, rebuild_in: str
) -> None:
    chat = conversation(client, transport)
    expected = client.chats.get(chat.id).get_history()  # cached
    # Another program changes a turn's contents without changing the summary: the next
    # get reads the rows again (what they now say; verify names the change).
    forged = msgspec.msgpack.encode(
        [
            {"role": "user", "parts": [{"text": "Forged"}]},
            {"role": "model", "parts": [{"text": "Forged."}]},
        ]
    )
    edit(path, "UPDATE chat_contents SET contents = ? WHERE span = 1", forged)
    statements = Statements(client.store)
    got = client.chats.get(chat.id).get_history()
    assert statements.contents_reads() == 1
    assert got[2].parts[0].text == "Forged"  # type: ignore[index]
    assert not chatledger.verify_log(client.store).ok
    # Rebuilt (here, or by `chatledger rebuild` elsewhere): the rebuilt rows are read.
    if rebuild_in == "this process":
        assert rebuild(client.store) == 1
    else:
        other = chatledger.Client(store=str(path))
        try:
            assert rebuild(other.store) == 1
        finally:
            other.close()
    statements.seen.clear()
    assert client.chats.get(chat.id).get_history() == expected
    assert statements.contents_reads() == 1
    assert chatledger.verify_log(client.store).ok


def test_an_erasure_leaves_nothing_erased_in_the_cache(
    client: chatledger.Client, transport: ScriptedTransport
) -> None:
    chat = conversation(client, transport)
    assert "Message 1" in str(client.chats.get(chat.id).get_history())  # cached
    client.erase(chat.id, reason="asked to")
    after = client.chats.get(chat.id).get_history()
    assert "Message 1" not in str(after) and "Reply 1." not in str(after)
    assert client.chats.get(chat.id).get_history() == after


def test_the_cache_is_bounded(
    client: chatledger.Client, transport: ScriptedTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conversations, "CACHE_CONVERSATIONS", 2)
    monkeypatch.setattr(conversations, "CACHE_CONTENTS", 10)
    chats = [conversation(client, transport, turns=2) for _ in range(3)]
    for chat in chats:
        client.chats.get(chat.id)
    cache = conversations._CACHES[client.store]
    assert list(cache) == [chats[1].id, chats[2].id]  # the least recently read went
    client.chats.get(chats[1].id)  # read again: now the most recent
    client.chats.get(chats[0].id)
    assert list(cache) == [chats[1].id, chats[0].id]
    long = conversation(client, transport, turns=6)  # 12 contents: more than the bound
    client.chats.get(long.id)
    assert long.id not in cache
    assert sum(len(entry.full) for entry in cache.values()) <= 10
    statements = Statements(client.store)
    assert client.chats.get(long.id).get_history() == long.get_history()
    assert statements.contents_reads() == 1


def test_reads_leave_the_garbage_collector_as_it_was(
    client: chatledger.Client, transport: ScriptedTransport
) -> None:
    chat = conversation(client, transport)
    was = gc.isenabled()
    try:
        gc.enable()
        assert load_state(client.store, chat.id) is not None
        assert load_state(client.store, "no-such-conversation") is None
        assert gc.isenabled()
        gc.disable()
        assert client.chats.get(chat.id).get_history() == chat.get_history()
        assert not gc.isenabled()
    finally:
        if was:
            gc.enable()
        else:
            gc.disable()


def test_closing_a_client_drops_what_its_store_kept(
    path: Path, transport: ScriptedTransport
) -> None:
    with chatledger.Client(store=str(path), transport=transport) as writer:
        chat = conversation(writer, transport)
    client = chatledger.Client(store=str(path), transport=transport)
    client.chats.get(chat.id)
    assert chat.id in conversations._CACHES[client.store]
    client.close()
    assert client.store not in conversations._CACHES
