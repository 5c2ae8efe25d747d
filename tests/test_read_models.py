"""The conversation read models (chat_summaries, chat_contents; docs/stores.md "Read
models"): written in each append's transaction, equal to a fold of the log after every
kind of change, used by resumes and listings, checked by verify, rebuilt by one command.

Real SQLite files; the model is a ScriptedTransport (no network)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

import chatledger
from chatledger.cli import cli
from chatledger.client import _listing
from chatledger.client._fold import fold_events
from chatledger.client.transports.scripted import ScriptedTransport
from chatledger.events import NewEvent, SQLiteStore
from chatledger.events import sqlite as sqlite_module
from chatledger.events.kinds import HistoryReplaced
from chatledger.projections.history import dump_state
from chatledger.readmodels import check_read_models, load_state, rebuild, rebuild_conversation
from chatledger.readmodels.conversations import content_rows


def get_weather(city: str) -> dict[str, Any]:
    """The weather in a city."""
    return {"city": city, "sky": "sunny"}


def call(name: str, **args: Any) -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"functionCall": {"name": name, "args": args}}],
                },
                "finishReason": "STOP",
            }
        ]
    }


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


def assert_matches_the_log(store: Any, conversation_id: str) -> None:
    """The read model's state is the fold's, and verify finds nothing to report."""
    loaded = load_state(store, conversation_id)
    assert loaded is not None, "the read model was not used"
    history, usage, _ = fold_events(store, conversation_id, use_snapshot=False)
    assert dump_state(loaded[0]) == dump_state(history)
    assert msgspec.to_builtins(loaded[1]) == msgspec.to_builtins(usage)
    report = chatledger.verify_log(store, conversation_id)
    assert report.problems == [] and report.read_models_checked == 1


def rich_conversation(client: chatledger.Client, transport: ScriptedTransport) -> Any:
    """A conversation with every kind of change: a given history, text turns, a
    function-calling turn, a failed turn, a rewind, a config change."""
    chat = client.chats.create(
        model="gemini-2.5-flash",
        config={"tools": [get_weather]},
        history=[
            {"role": "user", "parts": [{"text": "Earlier: hello"}]},
            {"role": "model", "parts": [{"text": "Earlier: hi"}]},
        ],
    )
    transport.enqueue("First reply.")
    chat.send_message("What is the plan for today and tomorrow please")
    transport.enqueue(call("get_weather", city="Oslo"))
    transport.enqueue("It is sunny in Oslo.")
    chat.send_message("Weather in Oslo?")
    transport.enqueue(error=chatledger.ServerError(503, {"error": {"message": "down"}}))
    with pytest.raises(chatledger.ServerError):
        chat.send_message("This one fails")
    transport.enqueue("Thinking...")
    chat.send_message("Another question")
    return chat


def test_every_change_keeps_the_read_model_equal_to_a_fold(
    client: chatledger.Client, transport: ScriptedTransport
) -> None:
    chat = rich_conversation(client, transport)
    store = client.store
    assert_matches_the_log(store, chat.id)
    chat.rewind()
    assert_matches_the_log(store, chat.id)
    transport.enqueue("After the rewind.")
    chat.send_message("Again")
    assert_matches_the_log(store, chat.id)
    fork = chat.fork(at=5)
    assert_matches_the_log(store, fork.id)
    transport.enqueue("On the fork.")
    fork.send_message("A fork's own message")
    assert_matches_the_log(store, fork.id)
    store.append(
        chat.id,
        [NewEvent(data=HistoryReplaced(history=[{"role": "user", "parts": [{"text": "new"}]}]))],
        expected_version=chat.version,
    )
    assert_matches_the_log(store, chat.id)
    report = chatledger.verify_log(store)
    assert report.ok and report.read_models_checked == 2


def test_a_resume_reads_the_read_model_and_returns_the_same_objects(
    path: Path, client: chatledger.Client, transport: ScriptedTransport
) -> None:
    chat = rich_conversation(client, transport)
    with chatledger.Client(store=str(path), transport=transport) as other:
        resumed = other.chats.get(chat.id)
        assert load_state(other.store, chat.id) is not None
        assert resumed.get_history() == chat.get_history()
        assert resumed.get_history(curated=True) == chat.get_history(curated=True)
        assert resumed.get_context() == chat.get_context()
        assert [type(c) for c in resumed.get_history()] == [type(c) for c in chat.get_history()]
        assert resumed.usage == chat.usage
        transport.enqueue("Sent from the resumed chat.")
        resumed.send_message("Continue")
        assert transport.requests[-1].contents[:-1] == [
            content.to_wire() for content in chat.get_context()
        ]


def test_listing_reads_summaries_without_folding(
    client: chatledger.Client, transport: ScriptedTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    chats = []
    for index in range(3):
        chat = client.chats.create(model=f"model-{index}")
        transport.enqueue("reply")
        chat.send_message(f"Question number {index} is about nine words long in total")
        chats.append(chat)
    fork = chats[0].fork(at=1)

    def no_fold(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a listing folded a conversation")

    monkeypatch.setattr(_listing, "fold_events", no_fold)
    listed = client.chats.list()
    assert [s.conversation_id for s in listed] == [fork.id] + [c.id for c in reversed(chats)]
    newest = listed[1]
    assert (newest.model, newest.turns, newest.version) == ("model-2", 1, chats[2].version)
    assert newest.title == "Question number 2 is about nine words long ..."
    assert listed[0].title == "" and listed[0].parent_id == chats[0].id
    assert [s.conversation_id for s in client.chats.list(limit=2)] == [fork.id, chats[2].id]
    assert [s.conversation_id for s in client.chats.list(parent_id=chats[0].id)] == [fork.id]
    monkeypatch.undo()
    # The same summaries as a fold of each conversation gives.
    assert listed == [
        _listing.summarize_stream(client.store, info) for info in client.store.conversations()
    ]


def edit(path: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
    with sqlite3.connect(path) as conn:
        assert conn.execute(sql, params).rowcount >= 1
    conn.close()


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "UPDATE chat_contents SET contents = replace(contents, 'plan for today', 'forged') "
            "WHERE span = 1",
            "contents differ from the log (from turn 1: 4 turns stored, 4 in the log)",
        ),
        ("DELETE FROM chat_contents WHERE span = 2", "contents differ from the log (from turn 2"),
        ("UPDATE chat_contents SET flags = '00' WHERE span = 3", "contents differ"),
        ("UPDATE chat_summaries SET title = 'forged'", "summary differs from the log (title)"),
        ("UPDATE chat_summaries SET turns = turns + 1", "summary differs from the log (turns)"),
        ("UPDATE chat_summaries SET model = 'other'", "summary differs from the log (model)"),
        ("UPDATE chat_summaries SET state = replace(state, 'Thinking', 'Forged')", "state differs"),
        ("DELETE FROM chat_summaries", "is missing (no summary row)"),
        (
            "INSERT INTO chat_summaries SELECT 'ghost', model, title, turns, version, head_hash, "
            "created_at, updated_at, parent_id, parent_version, state FROM chat_summaries",
            "has read-model rows but no events in the log",
        ),
    ],
)
def test_verify_names_an_edited_read_model_and_rebuild_fixes_it(
    path: Path,
    client: chatledger.Client,
    transport: ScriptedTransport,
    sql: str,
    expected: str,
) -> None:
    chat = rich_conversation(client, transport)
    before = chat.get_history()
    assert chatledger.verify_log(client.store).ok
    edit(path, sql)
    report = chatledger.verify_log(client.store)
    assert len(report.problems) == 1
    problem = report.problems[0]
    assert expected in problem.reason and "chatledger rebuild" in problem.reason
    assert problem.conversation_id in (chat.id, "ghost")
    result = CliRunner().invoke(cli, ["--db", str(path), "verify"])
    assert result.exit_code == 1 and expected in result.output

    result = CliRunner().invoke(cli, ["--db", str(path), "rebuild"])
    assert result.exit_code == 0, result.output
    assert "Rebuilt the read models of 1 conversation" in result.output
    result = CliRunner().invoke(cli, ["--db", str(path), "verify"])
    assert result.exit_code == 0 and "No problems found." in result.output
    with chatledger.Client(store=str(path), transport=transport) as other:
        assert other.chats.get(chat.id).get_history() == before


def test_a_read_model_behind_its_stream_is_not_used(
    path: Path, client: chatledger.Client, transport: ScriptedTransport
) -> None:
    chat = rich_conversation(client, transport)
    before = chat.get_history()
    edit(path, "UPDATE chat_summaries SET version = version - 1, head_hash = 'x'")
    assert load_state(client.store, chat.id) is None
    with chatledger.Client(store=str(path), transport=transport) as other:
        assert other.chats.get(chat.id).get_history() == before  # folded from the log
        assert [s.turns for s in other.chats.list()] == [len(chat._conversation.history.turns)]
    # The next append notices and folds the conversation again.
    transport.enqueue("next")
    chat.send_message("next")
    assert_matches_the_log(client.store, chat.id)


def test_rebuild_conversation_rewrites_one_conversation(
    client: chatledger.Client, transport: ScriptedTransport
) -> None:
    chat = rich_conversation(client, transport)
    other = client.chats.create(model="m")

    def work(connection: Any) -> bool:
        connection.execute("DELETE FROM chat_contents WHERE conversation_id = ?", (chat.id,))
        return rebuild_conversation(connection, chat.id)

    assert client.store.run_in_transaction(work) is True
    assert_matches_the_log(client.store, chat.id)
    assert rebuild(client.store, [other.id]) == 1
    assert rebuild(client.store) == 2
    assert chatledger.verify_log(client.store).ok


def test_an_existing_log_is_filled_by_the_migration(
    path: Path, transport: ScriptedTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(sqlite_module, "MIGRATIONS", sqlite_module.MIGRATIONS[:-1])
        with chatledger.Client(store=SQLiteStore(path), transport=transport) as old:
            chat = rich_conversation(old, transport)
            history = chat.get_history()
            assert load_state(old.store, chat.id) is None  # no tables yet
    with chatledger.Client(store=str(path), transport=transport) as client:
        assert isinstance(client.store, SQLiteStore)
        assert "010_conversation_read_models" in client.store.applied_migrations()
        assert_matches_the_log(client.store, chat.id)
        assert client.chats.get(chat.id).get_history() == history
        assert client.chats.list()[0].title == "Earlier: hello"


def test_stores_without_read_models_fold(transport: ScriptedTransport) -> None:
    with chatledger.Client(store=chatledger.MemoryStore(), transport=transport) as client:
        chat = rich_conversation(client, transport)
        assert load_state(client.store, chat.id) is None
        assert check_read_models(client.store, None, chatledger.events.VerificationReport()) == 0
        assert client.chats.get(chat.id).get_history() == chat.get_history()
        assert client.chats.list()[0].title == "Earlier: hello"
        with pytest.raises(chatledger.StoreError, match="no database"):
            rebuild(client.store)


def test_content_rows_mark_context_and_curated(
    client: chatledger.Client, transport: ScriptedTransport
) -> None:
    chat = rich_conversation(client, transport)
    history, _usage, _ = fold_events(client.store, chat.id)
    rows = content_rows(history)
    assert [row.span for row in rows] == list(range(len(history.turns)))
    flags = "".join(row.flags for row in rows)
    assert len(flags) == len(history.full)
    assert len(flags) - flags.count("0") == len(history.context)
    assert flags.count("1") + flags.count("2") == len(history.curated)
    # The given history's turn, two text turns, then the function-calling turn, whose
    # call and response are in the context but not in the curated history.
    assert [row.flags for row in rows] == ["11", "11", "1331", "11"]
    assert [row.loaded for row in rows] == [1, 0, 0, 0]


def test_a_fork_imported_before_its_parent_is_folded_once_the_parent_is_in(
    tmp_path: Path, client: chatledger.Client, transport: ScriptedTransport
) -> None:
    chat = rich_conversation(client, transport)
    fork = chat.fork(at=5)
    transport.enqueue("On the fork.")
    fork.send_message("A fork's own message")
    source = client.store
    with SQLiteStore(tmp_path / "copy.db") as target:
        target.import_stream(fork.id, source._read(fork.id, 0, None))
        assert load_state(target, fork.id) is None  # its parent is not there yet
        target.import_stream(chat.id, source._read(chat.id, 0, None))
        assert_matches_the_log(target, fork.id)
        assert_matches_the_log(target, chat.id)
        listed = [
            (s.conversation_id, s.turns) for s in chatledger.Client(store=target).chats.list()
        ]
        assert sorted(listed) == sorted((s.conversation_id, s.turns) for s in client.chats.list())


def test_turn_contents_are_packed_and_read_back_exactly() -> None:
    from chatledger.readmodels.conversations import _pack, _unpacked

    usual = [{"role": "user", "parts": [{"text": "héllo \u2028 [x]"}]}]
    assert _pack(usual)[:1] != b"[" and _unpacked(_pack(usual)) == usual
    # MessagePack holds integers of 64 bits at most: a bigger one is kept as JSON.
    huge = [{"role": "user", "parts": [{"functionResponse": {"response": {"n": 2**70}}}]}]
    assert _pack(huge)[:1] == b"[" and _unpacked(_pack(huge)) == huge
