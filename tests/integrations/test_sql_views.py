"""The SQL views (chat_conversations, chat_messages): the exact schema their migration
creates, that they cost appends nothing and leave the file readable to an older
chatledger, and the rows they show for a real log on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from langchain_core.messages import AIMessage, HumanMessage

import chatledger
from chatledger.errors import ServerError
from chatledger.events import (
    ConversationStarted,
    ModelResponded,
    NewEvent,
    SQLiteStore,
    UserMessageAdded,
    open_store,
)
from chatledger.events import postgres as postgres_store
from chatledger.events import sqlite as sqlite_store
from chatledger.events.views import POSTGRES_VIEWS, SQLITE_VIEWS, SQLITE_VIEWS_007, VIEW_COLUMNS
from chatledger.integrations.agents import ChatledgerSession
from chatledger.integrations.langchain import ChatledgerMessageHistory
from tests.support.gemini_server import GeminiServer, text_response
from tests.support.legacy_log import write_legacy_events
from tests.support.postgres import scratch_database

# sha256 of each view's CREATE statement as migration 007 (SQLite) writes it. A change to
# a view is a new migration that replaces it: never an edit of what 007 created.
SQLITE_VIEW_SHA256 = {
    "chat_conversations": "dccf9829774f43599cc46e0cfa9c8e1d06f20b9b188f755b870449b601b55ef4",
    "chat_messages": "58af4761e97305a1f5fec4581cc8cdd6c393e5f6b7e749b3ae92a402ca856d95",
}


SQLITE_MIGRATION = "007_views_for_sql_readers"
POSTGRES_MIGRATION = "008_views_for_sql_readers"


def old_migrations() -> list[Any]:
    """The SQLite migrations an older chatledger (before the views) knew."""
    names = [name for name, _ in sqlite_store.MIGRATIONS]
    assert SQLITE_MIGRATION in names
    return sqlite_store.MIGRATIONS[: names.index(SQLITE_MIGRATION)]


def mine() -> Any:
    return next(m for m in sqlite_store.MIGRATIONS if m[0] == SQLITE_MIGRATION)


def schema(path: Path) -> set[tuple[str, str, str | None]]:
    with sqlite3.connect(path) as conn:
        return set(conn.execute("SELECT type, name, sql FROM sqlite_master"))


# ----------------------------------------------------------------------------- the migration


def test_the_sqlite_migration_creates_exactly_two_views(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "log.db"
    with monkeypatch.context() as patch:
        patch.setattr(sqlite_store, "MIGRATIONS", old_migrations())
        SQLiteStore(path).close()
    before = schema(path)
    with monkeypatch.context() as patch:  # this migration alone, whatever comes after it
        patch.setattr(sqlite_store, "MIGRATIONS", [*old_migrations(), mine()])
        with SQLiteStore(path) as store:
            assert store.applied_migrations()[-1] == SQLITE_MIGRATION
    added = schema(path) - before
    assert added == {("view", name, sql) for name, sql in SQLITE_VIEWS_007.items()}
    assert before - schema(path) == set()  # nothing else changed: no table, index, trigger
    for name, sql in SQLITE_VIEWS_007.items():
        assert hashlib.sha256(sql.encode()).hexdigest() == SQLITE_VIEW_SHA256[name], name
    # 008_erasable_content makes them again, reading parts only where they are arrays
    # (docs/erasure.md); the rest of each statement as 007 wrote it.
    for name, sql in SQLITE_VIEWS.items():
        assert sql != SQLITE_VIEWS_007[name]
        old = SQLITE_VIEWS_007[name]
        added_guards = sql.count("WHEN 'array' THEN") - old.count("WHEN 'array' THEN")
        assert added_guards == old.count("FROM json_each(") > 0
    with sqlite3.connect(path) as conn:
        for name, columns in VIEW_COLUMNS.items():
            found = tuple(row[1] for row in conn.execute(f"PRAGMA table_info({name})"))
            assert found == columns


def test_the_views_use_no_syntax_an_older_sqlite_cannot_parse() -> None:
    # SQLite parses every view of a file when it opens it: syntax newer than the oldest
    # SQLite Python ships with would make the whole file unreadable there.
    for sql in SQLITE_VIEWS.values():
        for newer in ("->", " OVER ", " FILTER ", "RETURNING", "NULLS FIRST", "NULLS LAST", "IIF("):
            assert newer not in sql.upper(), newer


def test_an_older_chatledger_still_reads_and_writes_a_file_with_the_views(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "log.db"
    with chatledger.Client(store=path, transport=_scripted("New reply")) as client:
        chat = client.chats.create(model="gemini-2.5-flash")
        chat.send_message("written by the new version")
    monkeypatch.setattr(sqlite_store, "MIGRATIONS", old_migrations())
    with SQLiteStore(path) as old:  # finds every migration it knows applied
        assert SQLITE_MIGRATION in old.applied_migrations()
        events = old.read(chat.id)
        assert len(events) == 4
        old.append(
            "from-the-old-version",
            [NewEvent(data=ConversationStarted(model="gemini-2.5-flash"))],
            expected_version=0,
        )
        assert old.verify().ok
    monkeypatch.undo()
    with sqlite3.connect(path) as conn:
        kinds = conn.execute(
            "SELECT conversation_id, kind FROM chat_conversations ORDER BY conversation_id"
        ).fetchall()
    assert ("from-the-old-version", "chat") in kinds


def test_a_file_written_before_the_views_gets_them_when_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "log.db"
    with monkeypatch.context() as patch:
        patch.setattr(sqlite_store, "MIGRATIONS", old_migrations())
        SQLiteStore(path).close()
    # Events as the chatledger of that schema wrote them (tests/support/legacy_log.py).
    write_legacy_events(
        path,
        "old",
        [
            ConversationStarted(model="gemini-2.5-flash"),
            UserMessageAdded(
                turn=1, content={"role": "user", "parts": [{"text": "An old question"}]}
            ),
            ModelResponded(turn=1, response=text_response("An old reply")),
        ],
    )
    with SQLiteStore(path):
        pass
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT role, text FROM chat_messages WHERE conversation_id = ? ORDER BY version",
            ("old",),
        ).fetchall()
    assert rows == [("user", "An old question"), ("model", "An old reply")]


def test_a_view_filtered_by_conversation_reads_only_that_conversation(tmp_path: Path) -> None:
    # Flattened into the query, so the (conversation_id, version) index is used: browsing
    # one conversation costs its own events, not the whole log's.
    with SQLiteStore(tmp_path / "log.db"), sqlite3.connect(tmp_path / "log.db") as conn:
        for view in ("chat_messages", "chat_conversations"):
            plan = [
                str(row[3])
                for row in conn.execute(
                    f"EXPLAIN QUERY PLAN SELECT * FROM {view} WHERE conversation_id = 'x'"
                )
            ]
            assert plan[0].startswith("SEARCH ") and "(conversation_id=?)" in plan[0], plan
            scans = [step for step in plan if step.startswith("SCAN ")]
            # Only the JSON arrays of one event and subqueries over them are scanned.
            assert all("VIRTUAL TABLE" in step or "(subquery-" in step for step in scans), plan


def test_the_postgres_migration_creates_exactly_two_views() -> None:
    assert POSTGRES_MIGRATION in [name for name, _ in postgres_store.MIGRATIONS]
    with scratch_database("chatledger_views") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA old")
        store = postgres_store.PostgresStore(url + "?schema=old")
        store.close()
        with psycopg.connect(url, autocommit=True) as conn:
            relations = conn.execute(
                "SELECT c.relname, c.relkind FROM pg_class AS c JOIN pg_namespace AS n "
                "ON n.oid = c.relnamespace WHERE n.nspname = 'old' AND c.relkind = 'v'"
            ).fetchall()
            assert sorted(relations) == [("chat_conversations", "v"), ("chat_messages", "v")]
            for name, columns in VIEW_COLUMNS.items():
                found = conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                    "'old' AND table_name = %s ORDER BY ordinal_position",
                    (name,),
                ).fetchall()
                assert tuple(row[0] for row in found) == columns
            triggers = conn.execute(
                "SELECT count(*) FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid "
                "JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE n.nspname = 'old' "
                "AND NOT t.tgisinternal"
            ).fetchone()
            assert triggers == (2,)  # the log's own two, no more
    assert set(POSTGRES_VIEWS) == set(VIEW_COLUMNS)


# ----------------------------------------------------------------------------- the rows


def _scripted(*replies: str) -> Any:
    from chatledger.client.transports import ScriptedTransport

    transport = ScriptedTransport()
    for reply in replies:
        transport.enqueue(reply)
    return transport


def get_weather(city: str) -> dict[str, str]:
    """The weather in a city.

    Args:
        city: The city's name.
    """
    return {"sky": f"sunny in {city}"}


def build_log(location: str, server: GeminiServer) -> dict[str, str]:
    """A log with a chat (initial history, a function call, a failed turn, a rewound
    turn), an openai-agents session (a pop) and a LangChain history (a clear)."""
    with chatledger.Client(
        api_key="views-test-key",
        http_options={"base_url": server.base_url},
        store=location,
        actor="alice",
    ) as client:
        chat = client.chats.create(
            model="gemini-2.5-flash",
            history=[
                {"role": "user", "parts": [{"text": "Earlier question"}]},
                {"role": "model", "parts": [{"text": "Earlier answer"}]},
            ],
            config={"tools": [get_weather]},
        )
        call = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
        server.reply_json(
            text_response(
                parts=[call],
                usage={"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15},
            )
        )
        server.reply_json(
            text_response(
                parts=[{"text": "Thinking...", "thought": True}, {"text": "Sunny in Paris."}],
                usage={"promptTokenCount": 20, "candidatesTokenCount": 4, "totalTokenCount": 24},
                modelVersion="gemini-2.5-flash-001",
            )
        )
        chat.send_message("Weather in Paris?")
        server.reply_error(500, "INTERNAL", "the model broke")
        with pytest.raises(ServerError):
            chat.send_message("And tomorrow?")
        server.reply_json(
            text_response(
                "Goodbye!",
                usage={"promptTokenCount": 30, "candidatesTokenCount": 2, "totalTokenCount": 32},
            )
        )
        with chatledger.acting_as("bob"):
            chat.send_message("Bye")
        chat.rewind()

        session = ChatledgerSession("agents-session", client)
        asyncio.run(
            session.add_items(
                [
                    {"role": "user", "content": "Book a table"},
                    {
                        "type": "message",
                        "id": "msg_1",
                        "role": "assistant",
                        "status": "completed",
                        "content": [
                            {"type": "output_text", "text": "For how many?", "annotations": []}
                        ],
                    },
                    {
                        "type": "function_call",
                        "call_id": "call_1",
                        "name": "book",
                        "arguments": '{"n":2}',
                    },
                ]
            )
        )
        asyncio.run(session.pop_item())

        history = ChatledgerMessageHistory("langchain-history", client)
        history.add_messages([HumanMessage(content="Forget this")])
        history.clear()
        history.add_messages(
            [
                HumanMessage(content="Capital of Peru?"),
                AIMessage(
                    content="Lima.",
                    usage_metadata={"input_tokens": 7, "output_tokens": 2, "total_tokens": 9},
                    response_metadata={"model_name": "gemini-2.5-flash", "finish_reason": "STOP"},
                ),
            ]
        )
        return {"chat": chat.id}


#: chat_messages for the chat: (version, item_index, turn, role, kind, text, model,
#: model_version, prompt, output, total tokens, finish_reason, current, actor, event_type)
CHAT_ROWS = [
    (1, 0, None, "user", "history", "Earlier question", None, None, None, None, None, None, 1, "alice", "conversation_started"),
    (1, 1, None, "model", "history", "Earlier answer", None, None, None, None, None, None, 1, "alice", "conversation_started"),
    (2, 0, 2, "user", "message", "Weather in Paris?", "gemini-2.5-flash", None, None, None, None, None, 1, "alice", "user_message_added"),
    (4, 0, 2, "model", "message", None, "gemini-2.5-flash", None, 10, 5, 15, "STOP", 1, "alice", "model_responded"),
    (5, 0, 2, "model", "function_call", 'get_weather({"city":"Paris"})', None, None, None, None, None, None, 1, "alice", "function_called"),
    (6, 0, 2, "user", "function_response", 'get_weather → {"result":{"sky":"sunny in Paris"}}', None, None, None, None, None, None, 1, "alice", "function_responded"),
    (8, 0, 2, "model", "message", "Sunny in Paris.", "gemini-2.5-flash", "gemini-2.5-flash-001", 20, 4, 24, "STOP", 1, "alice", "model_responded"),
    (9, 0, 3, "user", "message", "And tomorrow?", "gemini-2.5-flash", None, None, None, None, None, 0, "alice", "user_message_added"),
    (11, 0, 3, "model", "error", "ServerError: the model broke", "gemini-2.5-flash", None, None, None, None, None, 0, "alice", "model_call_failed"),
    (12, 0, 4, "user", "message", "Bye", "gemini-2.5-flash", None, None, None, None, None, 0, "bob", "user_message_added"),
    (14, 0, 4, "model", "message", "Goodbye!", "gemini-2.5-flash", None, 30, 2, 32, "STOP", 0, "bob", "model_responded"),
]  # fmt: skip

SESSION_ROWS = [
    ("agents-session", 2, 0, "user", "item", "Book a table", None, None, 1),
    ("agents-session", 2, 1, "assistant", "item", "For how many?", None, None, 1),
    ("agents-session", 2, 2, "function_call", "item", 'book({"n":2})', None, None, 0),
    ("langchain-history", 2, 0, "human", "item", "Forget this", None, None, 0),
    ("langchain-history", 4, 0, "human", "item", "Capital of Peru?", None, None, 1),
    ("langchain-history", 4, 1, "ai", "item", "Lima.", "gemini-2.5-flash", 9, 1),
]


def normalise(value: Any) -> Any:
    """PostgreSQL's numbers, booleans and jsonb text, as SQLite returns them."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, str):
        return value.replace('": ', '":').replace(", ", ",") if value.count("{") else value
    return value


@pytest.fixture
def gemini_server() -> Iterator[GeminiServer]:
    with GeminiServer() as server:
        yield server


def query(location: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if location.startswith("postgresql://"):
        url, _, schema = location.partition("?schema=")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            rows = conn.execute(sql.replace("?", "%s"), params).fetchall()
    else:
        with sqlite3.connect(location) as conn:
            rows = conn.execute(sql, params).fetchall()
    return [tuple(normalise(value) for value in row) for row in rows]


def test_the_views_show_a_real_log(store_location: str, gemini_server: GeminiServer) -> None:
    ids = build_log(store_location, gemini_server)
    columns = (
        "version, item_index, turn, role, kind, text, model, model_version, prompt_tokens, "
        "output_tokens, total_tokens, finish_reason, current, actor, event_type"
    )
    rows = query(
        store_location,
        f"SELECT {columns} FROM chat_messages WHERE conversation_id = ? ORDER BY version, item_index",
        (ids["chat"],),
    )
    assert rows == CHAT_ROWS
    sessions = query(
        store_location,
        "SELECT conversation_id, version, item_index, role, kind, text, model, total_tokens, "
        "current FROM chat_messages WHERE kind = 'item' ORDER BY conversation_id, version, "
        "item_index",
    )
    assert sessions == SESSION_ROWS

    conversations = query(
        store_location,
        "SELECT conversation_id, kind, model, title, user_messages, total_tokens, events, actor, "
        "parent_id, parent_version FROM chat_conversations ORDER BY kind, conversation_id",
    )
    assert conversations == [
        (ids["chat"], "chat", "gemini-2.5-flash", "Earlier question", 3, 71, 15, "alice", None, None),
        ("langchain-history", "langchain", "langchain", "Forget this", 0, None, 4, "alice", None, None),
        ("agents-session", "openai-agents", "openai-agents", "Book a table", 0, None, 3, "alice", None, None),
    ]  # fmt: skip


def test_forks_and_config_changes_show_in_the_conversations_view(
    store_location: str, gemini_server: GeminiServer
) -> None:
    gemini_server.reply_text("One.")
    gemini_server.reply_text("Two.")
    with chatledger.Client(
        api_key="views-test-key",
        http_options={"base_url": gemini_server.base_url},
        store=store_location,
        actor="carol",
    ) as client:
        chat = client.chats.create(model="gemini-2.5-flash")
        chat.send_message("First")
        branch = chat.fork(turn=1)
        again = client.chats.get(branch.id, config={"temperature": 0.5})
        again.send_message("Second")
        with open_store(store_location) as store:
            store.append(
                branch.id,
                [NewEvent(data=chatledger.events.ConfigChanged(model="gemini-2.5-pro"))],
                expected_version=store.read(branch.id)[-1].version,
            )
    rows = query(
        store_location,
        "SELECT conversation_id, model, title, user_messages, parent_id, parent_version "
        "FROM chat_conversations ORDER BY created_at",
    )
    assert rows == [
        (chat.id, "gemini-2.5-flash", "First", 1, None, None),
        (branch.id, "gemini-2.5-pro", "Second", 1, chat.id, 4),
    ]


# ----------------------------------------------------------------------------- Datasette


@pytest.fixture
def datasette_log(tmp_path: Path, gemini_server: GeminiServer) -> Iterator[tuple[str, str]]:
    """``datasette serve`` of a real log with its metadata, on a loopback port: (base URL,
    the chat's id)."""
    path = tmp_path / "chatledger.db"
    ids = build_log(str(path), gemini_server)
    metadata = subprocess.run(
        [sys.executable, "-m", "chatledger.integrations.datasette", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    (tmp_path / "metadata.json").write_text(metadata)
    log = tmp_path / "datasette.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "datasette", "serve", str(path)),
                *("-h", "127.0.0.1", "-p", "0", "-m", str(tmp_path / "metadata.json")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 60
        base = None
        while base is None and time.monotonic() < deadline and process.poll() is None:
            found = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", log.read_text())
            base = found.group(1) if found else None
            time.sleep(0.05)
        assert base is not None, "datasette did not start: " + log.read_text()
        yield base, ids["chat"]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_datasette_serves_the_views(datasette_log: tuple[str, str]) -> None:
    base, chat_id = datasette_log
    with httpx.Client(base_url=base, timeout=30) as http:
        home = http.get("/chatledger")
        assert home.status_code == 200
        assert "chat_conversations" in home.text and "chat_messages" in home.text

        rows = http.get(
            "/chatledger/chat_messages.json",
            params={"conversation_id": chat_id, "_shape": "array"},
        ).json()
        assert [(r["version"], r["role"], r["kind"], r["text"], r["current"]) for r in rows] == [
            (row[0], row[3], row[4], row[5], row[12]) for row in CHAT_ROWS
        ]
        assert rows[6]["total_tokens"] == 24 and rows[6]["actor"] == "alice"

        page = http.get("/chatledger/chat_messages", params={"conversation_id": chat_id})
        assert page.status_code == 200
        assert "Sunny in Paris." in page.text
        assert "One row per message-like event" in page.text  # the metadata's description

        conversations = http.get(
            "/chatledger/chat_conversations.json", params={"_shape": "array", "kind": "chat"}
        ).json()
        assert [(c["conversation_id"], c["title"], c["total_tokens"]) for c in conversations] == [
            (chat_id, "Earlier question", 71)
        ]

        canned = http.get(
            "/chatledger/conversation.json",
            params={"conversation_id": chat_id, "_shape": "array"},
        ).json()
        assert [row["text"] for row in canned][:3] == [
            "Earlier question",
            "Earlier answer",
            "Weather in Paris?",
        ]
        tokens = http.get("/chatledger/tokens_by_model.json", params={"_shape": "array"}).json()
        assert tokens == [
            {
                "model": "gemini-2.5-flash",
                "responses": 3,
                "prompt_tokens": 60,
                "output_tokens": 11,
                "total_tokens": 71,
            }
        ]
