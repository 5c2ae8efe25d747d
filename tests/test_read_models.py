"""The conversation read models (chat_summaries, chat_contents; docs/stores.md "Read
models"): written in each append's transaction, equal to a fold of the log after every
kind of change, used by resumes and listings, checked by verify, rebuilt by one command.

Each test runs on a real SQLite file and on a real PostgreSQL schema (``location``); the
model is a ScriptedTransport (no network)."""

from __future__ import annotations

import multiprocessing
import sqlite3
import uuid
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
from chatledger.events import ModelResponded, NewEvent, SQLiteStore, UserMessageAdded
from chatledger.events import sqlite as sqlite_module
from chatledger.events.kinds import ConversationStarted, HistoryReplaced
from chatledger.events.postgres import PostgresStore
from chatledger.events.postgres import schema as pg_schema
from chatledger.events.postgres import store as pg_store
from chatledger.events.postgres.connection import split_url
from chatledger.events.store import EventStore
from chatledger.projections.history import dump_state
from chatledger.readmodels import (
    Transaction,
    check_read_models,
    load_state,
    rebuild,
    rebuild_conversation,
)
from chatledger.readmodels.conversations import content_rows
from tests.support.postgres import connect, run_processes, scratch_database


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


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    with scratch_database() as url:
        yield url


def new_location(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> str:
    """A new log: a SQLite file, or a schema of its own in the module's PostgreSQL
    database."""
    if kind == "sqlite":
        return str(tmp_path / f"chats-{uuid.uuid4().hex[:6]}.db")
    url = request.getfixturevalue("pg_database")
    return f"{url}?schema=rm_{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def path(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the log is: the same tests on both stores that keep read models."""
    return new_location(request, tmp_path, str(request.param))


@pytest.fixture
def transport() -> ScriptedTransport:
    return ScriptedTransport()


@pytest.fixture
def client(path: str, transport: ScriptedTransport) -> Iterator[chatledger.Client]:
    with chatledger.Client(store=path, transport=transport) as client:
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
    path: str, client: chatledger.Client, transport: ScriptedTransport
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


def edit(path: str, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Change the read model's tables behind the store's back (SQL with ``?``)."""
    if path.startswith("postgresql://"):
        url, schema = split_url(path)
        with connect(url) as pg:
            pg.execute(f"SET search_path TO {schema}")
            assert pg.execute(sql.replace("?", "%s"), params).rowcount >= 1
        return
    with sqlite3.connect(path) as conn:
        assert conn.execute(sql, params).rowcount >= 1
    conn.close()


def is_postgres(path: str) -> bool:
    return path.startswith("postgresql://")


#: The edits whose SQL differs on PostgreSQL (bytea has no replace(): the same bytes are
#: overwritten in place, so the MessagePack stays valid).
POSTGRES_EDITS = {
    "UPDATE chat_contents SET contents = replace(contents, 'plan for today', 'forged') "
    "WHERE span = 1": "UPDATE chat_contents SET contents = overlay(contents placing "
    "'forged'::bytea from position('plan for today'::bytea in contents)) WHERE span = 1",
}


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
    path: str,
    client: chatledger.Client,
    transport: ScriptedTransport,
    sql: str,
    expected: str,
) -> None:
    chat = rich_conversation(client, transport)
    before = chat.get_history()
    assert chatledger.verify_log(client.store).ok
    edit(path, POSTGRES_EDITS.get(sql, sql) if is_postgres(path) else sql)
    report = chatledger.verify_log(client.store)
    assert len(report.problems) == 1
    problem = report.problems[0]
    assert expected in problem.reason and "chatledger rebuild" in problem.reason
    assert problem.conversation_id in (chat.id, "ghost")
    result = CliRunner().invoke(cli, ["--db", path, "verify"])
    assert result.exit_code == 1 and expected in result.output

    result = CliRunner().invoke(cli, ["--db", path, "rebuild"])
    assert result.exit_code == 0, result.output
    assert "Rebuilt the read models of 1 conversation" in result.output
    result = CliRunner().invoke(cli, ["--db", path, "verify"])
    assert result.exit_code == 0 and "No problems found." in result.output
    with chatledger.Client(store=path, transport=transport) as other:
        assert other.chats.get(chat.id).get_history() == before


def test_a_read_model_behind_its_stream_is_not_used(
    path: str, client: chatledger.Client, transport: ScriptedTransport
) -> None:
    chat = rich_conversation(client, transport)
    before = chat.get_history()
    edit(path, "UPDATE chat_summaries SET version = version - 1, head_hash = 'x'")
    assert load_state(client.store, chat.id) is None
    with chatledger.Client(store=path, transport=transport) as other:
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
        Transaction(connection).execute(
            "DELETE FROM chat_contents WHERE conversation_id = ?", (chat.id,)
        )
        return rebuild_conversation(connection, chat.id)

    assert client.store.run_in_transaction(work) is True
    assert_matches_the_log(client.store, chat.id)
    assert rebuild(client.store, [other.id]) == 1
    assert rebuild(client.store) == 2
    assert chatledger.verify_log(client.store).ok


def test_an_existing_log_is_filled_by_the_migration(
    path: str, transport: ScriptedTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        # The release before the read models: its migrations, its appends.
        old_store: EventStore
        if is_postgres(path):
            patch.setattr(pg_schema, "MIGRATIONS", pg_schema.MIGRATIONS[:-1])
            patch.setattr(pg_store, "INLINE_READ_MODELS", [])
            old_store = PostgresStore(path)
        else:
            patch.setattr(sqlite_module, "MIGRATIONS", sqlite_module.MIGRATIONS[:-1])
            old_store = SQLiteStore(path)
        with chatledger.Client(store=old_store, transport=transport) as old:
            chat = rich_conversation(old, transport)
            history = chat.get_history()
            assert load_state(old.store, chat.id) is None  # no tables yet
    with chatledger.Client(store=path, transport=transport) as client:
        assert isinstance(client.store, (SQLiteStore, PostgresStore))
        migration = "011" if is_postgres(path) else "010"
        assert f"{migration}_conversation_read_models" in client.store.applied_migrations()
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
    request: pytest.FixtureRequest,
    path: str,
    tmp_path: Path,
    client: chatledger.Client,
    transport: ScriptedTransport,
) -> None:
    chat = rich_conversation(client, transport)
    fork = chat.fork(at=5)
    transport.enqueue("On the fork.")
    fork.send_message("A fork's own message")
    source = client.store
    kind = "postgres" if is_postgres(path) else "sqlite"
    with chatledger.open_store(new_location(request, tmp_path, kind)) as target:
        target.import_stream(fork.id, source._read(fork.id, 0, None))
        assert load_state(target, fork.id) is None  # its parent is not there yet
        target.import_stream(chat.id, source._read(chat.id, 0, None))
        assert_matches_the_log(target, fork.id)
        assert_matches_the_log(target, chat.id)
        listed = [
            (s.conversation_id, s.turns) for s in chatledger.Client(store=target).chats.list()
        ]
        assert sorted(listed) == sorted((s.conversation_id, s.turns) for s in client.chats.list())


def test_an_erasure_rewrites_the_read_model_with_placeholders(
    path: str, client: chatledger.Client, transport: ScriptedTransport
) -> None:
    """The erased conversation's rows are written again from its erased events (not
    dropped: resumes keep reading them), and verify still checks them."""
    chat = rich_conversation(client, transport)
    client.erase(chat.id, reason="asked", vacuum=is_postgres(path))
    assert_matches_the_log(client.store, chat.id)
    history = load_state(client.store, chat.id)
    assert history is not None
    assert "plan for today" not in msgspec.json.encode(history[0].full).decode()
    edit(path, "UPDATE chat_summaries SET turns = turns + 1")
    assert "summary differs" in chatledger.verify_log(client.store).problems[0].reason


def test_turn_contents_are_packed_and_read_back_exactly() -> None:
    from chatledger.readmodels.conversations import _pack, _unpacked

    usual = [{"role": "user", "parts": [{"text": "héllo \u2028 [x]"}]}]
    assert _pack(usual)[:1] != b"[" and _unpacked(_pack(usual)) == usual
    # MessagePack holds integers of 64 bits at most: a bigger one is kept as JSON.
    huge = [{"role": "user", "parts": [{"functionResponse": {"response": {"n": 2**70}}}]}]
    assert _pack(huge)[:1] == b"[" and _unpacked(_pack(huge)) == huge


# ----------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return new_location(request, tmp_path, "postgres")


@pytest.mark.postgres
def test_postgres_appends_write_the_read_models_in_their_own_round_trip(
    pg_location: str, transport: ScriptedTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The usual append sends its rows with the events (chatledger_append_summarised);
    a fork or a rewind folds in the append's transaction (several round trips)."""
    folded: list[str] = []
    write_folded = PostgresStore._write_folded

    def counting(self: PostgresStore, conversation_id: str, *args: Any) -> Any:
        folded.append(conversation_id)
        return write_folded(self, conversation_id, *args)

    monkeypatch.setattr(PostgresStore, "_write_folded", counting)
    with chatledger.Client(store=pg_location, transport=transport) as client:
        chat = rich_conversation(client, transport)
        assert folded == []
        assert_matches_the_log(client.store, chat.id)
        chat.rewind()
        fork = chat.fork(at=3)
        assert folded == [chat.id, fork.id]
        transport.enqueue("On the fork.")
        fork.send_message("A fork's own message")
        assert folded == [chat.id, fork.id]
        assert_matches_the_log(client.store, chat.id)
        assert_matches_the_log(client.store, fork.id)


@pytest.mark.postgres
def test_a_summary_changed_behind_a_writer_is_folded_not_advanced(
    pg_location: str, transport: ScriptedTransport
) -> None:
    """A writer remembers the summary's state from its last append; an erasure (or a
    rebuild) through another store object replaces that state at the same head. The
    writer's next append must not write its remembered state (erased content) back."""
    secret = "my card number is 4111 1111 1111 1111"
    with (
        chatledger.Client(store=pg_location, transport=transport) as writer,
        chatledger.Client(store=pg_location, transport=transport) as admin,
    ):
        chat = writer.chats.create(model="m")
        transport.enqueue(f"Noted: {secret}")
        chat.send_message(secret)
        admin.erase(chat.id, reason="asked", vacuum=True)
        assert load_state(admin.store, chat.id) is not None  # rewritten, with placeholders
        transport.enqueue("welcome back")
        chat = writer.chats.get(chat.id)
        chat.send_message("again")
        assert_matches_the_log(writer.store, chat.id)
        url, schema = split_url(pg_location)
        with connect(url) as pg:
            stored = pg.execute(
                f"SELECT s.title || s.state || string_agg(encode(c.contents, 'escape'), '') "
                f"FROM {schema}.chat_summaries AS s JOIN {schema}.chat_contents AS c "
                "USING (conversation_id) GROUP BY s.title, s.state"
            ).fetchall()
        assert len(stored) == 1 and "welcome back" in stored[0][0]
        assert "4111" not in stored[0][0]


def append_one_turn_each(location: str, conversation_id: str, turns: int, start: Any) -> int:
    """A worker process: ``turns`` user messages and model replies to one conversation,
    retrying each append on a conflict; returns how many conflicts it met."""
    conflicts = 0
    with PostgresStore(location, pool_max=1) as store:
        start.wait()
        for turn in range(turns):
            for data in (
                UserMessageAdded(
                    turn=turn, content={"role": "user", "parts": [{"text": f"q{turn}"}]}
                ),
                ModelResponded(
                    turn=turn,
                    response={
                        "candidates": [
                            {"content": {"role": "model", "parts": [{"text": f"a{turn}"}]}}
                        ]
                    },
                ),
            ):
                while True:
                    info = store.stream_info(conversation_id)
                    version = info.version if info else 0
                    try:
                        store.append(
                            conversation_id, [NewEvent(data=data)], expected_version=version
                        )
                        break
                    except chatledger.ConcurrencyError:
                        conflicts += 1
    return conflicts


@pytest.mark.postgres
def test_many_writer_processes_keep_every_read_model_equal_to_a_fold(pg_location: str) -> None:
    """Eight processes: four on conversations of their own, four on one shared
    conversation (their appends collide and retry). Every summary is at its stream's
    head and equal to a fold of the log, and nothing deadlocked."""
    own = [f"own-{index}" for index in range(4)]
    with PostgresStore(pg_location) as store:
        for conversation_id in [*own, "shared"]:
            store.append(
                conversation_id,
                [NewEvent(data=ConversationStarted(model="m"))],
                expected_version=0,
            )
    start = multiprocessing.get_context("spawn").Barrier(8)
    arguments = [(pg_location, cid, 15, start) for cid in own]
    arguments += [(pg_location, "shared", 15, start)] * 4
    run_processes(append_one_turn_each, arguments)
    with PostgresStore(pg_location) as store:
        report = chatledger.verify_log(store)
        assert report.problems == [] and report.read_models_checked == 5
        for conversation_id in [*own, "shared"]:
            loaded = load_state(store, conversation_id)
            assert loaded is not None
            assert store.stream_info(conversation_id).version == 1 + (  # type: ignore[union-attr]
                30 if conversation_id != "shared" else 120
            )
            history, _usage, _ = fold_events(store, conversation_id, use_snapshot=False)
            assert dump_state(loaded[0]) == dump_state(history)


def test_a_model_name_holding_a_nul_is_stored_and_checked_on_every_store(
    client: chatledger.Client,
) -> None:
    """PostgreSQL's text cannot hold a NUL: the summary keeps U+FFFD for it, on SQLite too,
    and the append, the listing and verify all agree (the event keeps the text as given).
    Found by the store contract's property test, whose append of such a model failed."""
    store = client.store
    conversation_id = str(uuid.uuid4())
    store.append(
        conversation_id,
        [NewEvent(data=ConversationStarted(model="a\x00b"))],
        expected_version=0,
    )
    assert store.read(conversation_id)[0].data.model == "a\x00b"  # type: ignore[attr-defined]
    [summary] = [s for s in client.chats.list() if s.conversation_id == conversation_id]
    assert summary.model == "a\ufffdb"
    report = chatledger.verify_log(store, conversation_id)
    assert report.problems == [] and report.read_models_checked == 1
