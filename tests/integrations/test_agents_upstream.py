"""openai-agents' own session tests, run against ChatledgerSession.

Ported from ``tests/memory/test_session.py`` and ``tests/memory/test_session_limit.py`` of
openai/openai-agents-python (the tests of ``SQLiteSession`` and of the session protocol
with a real ``Runner``): each test keeps its inputs and expected values, with
``SQLiteSession(session_id, db_path)`` replaced by ``ChatledgerSession(session_id, db_path)``
and the SDK's ``FakeModel`` by ``tests/integrations/agents_support.py``. The tests that do
not touch the Runner also run on PostgreSQL. Adapted, each saying how:

- ``test_sqlite_session_close_closes_worker_thread_connections`` checks SQLiteSession's
  per-thread connections: here, that ``close`` closes the store it opened.
- ``test_sqlite_session_file_lock_is_shared_across_instances`` checks SQLiteSession's
  process-wide lock table: here, that two sessions on one file written at once each keep
  their own items (the log's optimistic concurrency replaces the lock).
- Not ported: ``test_session_memory_disabled_parametrized`` (runs without a session) and
  ``test_session_settings_resolve`` (``SessionSettings`` alone): neither touches a session.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, RunConfig, Runner, TResponseInputItem, set_tracing_disabled
from agents.memory import Session, SessionSettings

from chatledger.errors import ChatStateError, StoreError
from chatledger.integrations.agents import ChatledgerSession
from tests.integrations.agents_support import FakeModel, run_agent, text_message

RUNNERS = ["run", "run_sync", "run_streamed"]


@pytest.fixture(autouse=True)
def _no_tracing() -> None:
    # The SDK exports traces to OpenAI by default: never from tests.
    set_tracing_disabled(True)


def test_it_is_a_session_of_the_sdk(tmp_path: Path) -> None:
    session = ChatledgerSession("protocol", tmp_path / "log.db")
    assert isinstance(session, Session)
    session.close()


@pytest.mark.parametrize("runner_method", RUNNERS)
async def test_session_memory_basic_functionality_parametrized(
    runner_method: str, tmp_path: Path
) -> None:
    session = ChatledgerSession("test_session_123", tmp_path / "test_memory.db")
    model = FakeModel()
    agent = Agent(name="test", model=model)

    model.set_next_output([text_message("San Francisco")])
    result1 = await run_agent(
        runner_method, agent, "What city is the Golden Gate Bridge in?", session=session
    )
    assert result1.final_output == "San Francisco"

    model.set_next_output([text_message("California")])
    result2 = await run_agent(runner_method, agent, "What state is it in?", session=session)
    assert result2.final_output == "California"

    last_input = model.last_turn_args["input"]
    assert len(last_input) > 1
    session.close()


@pytest.mark.parametrize("runner_method", RUNNERS)
async def test_session_memory_with_explicit_instance_parametrized(
    runner_method: str, tmp_path: Path
) -> None:
    session = ChatledgerSession("test_session_456", tmp_path / "test_memory.db")
    model = FakeModel()
    agent = Agent(name="test", model=model)

    model.set_next_output([text_message("Hello")])
    result1 = await run_agent(runner_method, agent, "Hi there", session=session)
    assert result1.final_output == "Hello"

    model.set_next_output([text_message("I remember you said hi")])
    result2 = await run_agent(runner_method, agent, "Do you remember what I said?", session=session)
    assert result2.final_output == "I remember you said hi"
    session.close()


@pytest.mark.parametrize("runner_method", RUNNERS)
async def test_session_memory_different_sessions_parametrized(
    runner_method: str, tmp_path: Path
) -> None:
    db_path = tmp_path / "test_memory.db"
    model = FakeModel()
    agent = Agent(name="test", model=model)

    session_1 = ChatledgerSession("session_1", db_path)
    model.set_next_output([text_message("I like cats")])
    result1 = await run_agent(runner_method, agent, "I like cats", session=session_1)
    assert result1.final_output == "I like cats"

    session_2 = ChatledgerSession("session_2", db_path)
    model.set_next_output([text_message("I like dogs")])
    result2 = await run_agent(runner_method, agent, "I like dogs", session=session_2)
    assert result2.final_output == "I like dogs"

    model.set_next_output([text_message("Yes, you mentioned cats")])
    result3 = await run_agent(runner_method, agent, "What did I say I like?", session=session_1)
    assert result3.final_output == "Yes, you mentioned cats"
    # What the model was sent: session 1's history, not session 2's.
    sent = [item.get("content") for item in model.last_turn_args["input"]]
    assert sent[0] == "I like cats"
    assert "I like dogs" not in sent

    session_1.close()
    session_2.close()


async def test_sqlite_session_memory_direct(store_location: str) -> None:
    session = ChatledgerSession("direct_test", store_location)
    items: list[TResponseInputItem] = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi there!"},
    ]
    await session.add_items(items)
    retrieved = await session.get_items()

    assert len(retrieved) == 2
    assert retrieved[0].get("role") == "user"
    assert retrieved[0].get("content") == "Hello"
    assert retrieved[1].get("role") == "assistant"
    assert retrieved[1].get("content") == "Hi there!"

    await session.clear_session()
    assert len(await session.get_items()) == 0
    session.close()


async def test_sqlite_session_close_closes_worker_thread_connections(tmp_path: Path) -> None:
    # Adapted: the store a session opened from a path is closed with it.
    session = ChatledgerSession("worker_thread_close", tmp_path / "test_worker_thread_close.db")
    await session.add_items([{"role": "user", "content": "Hello"}])
    store = session.store

    session.close()

    with pytest.raises(StoreError, match="closed"):
        store.read("worker_thread_close")
    with pytest.raises(ChatStateError, match="closed"):
        await session.get_items()


async def test_sqlite_session_memory_pop_item(store_location: str) -> None:
    session = ChatledgerSession("pop_test", store_location)
    assert await session.pop_item() is None

    items: list[TResponseInputItem] = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi there!"},
        {"role": "user", "content": "How are you?"},
    ]
    await session.add_items(items)
    assert len(await session.get_items()) == 3

    popped = await session.pop_item()
    assert popped is not None
    assert popped.get("role") == "user"
    assert popped.get("content") == "How are you?"

    retrieved_after_pop = await session.get_items()
    assert len(retrieved_after_pop) == 2
    assert retrieved_after_pop[-1].get("content") == "Hi there!"

    popped2 = await session.pop_item()
    assert popped2 is not None
    assert popped2.get("role") == "assistant"
    assert popped2.get("content") == "Hi there!"

    popped3 = await session.pop_item()
    assert popped3 is not None
    assert popped3.get("role") == "user"
    assert popped3.get("content") == "Hello"

    assert await session.pop_item() is None
    assert len(await session.get_items()) == 0
    session.close()


async def test_session_memory_pop_different_sessions(store_location: str) -> None:
    session_1 = ChatledgerSession("session_1", store_location)
    session_2 = ChatledgerSession("session_2", store_location)
    items_1: list[TResponseInputItem] = [{"role": "user", "content": "Session 1 message"}]
    items_2: list[TResponseInputItem] = [
        {"role": "user", "content": "Session 2 message 1"},
        {"role": "user", "content": "Session 2 message 2"},
    ]
    await session_1.add_items(items_1)
    await session_2.add_items(items_2)

    popped = await session_2.pop_item()
    assert popped is not None
    assert popped.get("content") == "Session 2 message 2"

    session_1_items = await session_1.get_items()
    assert len(session_1_items) == 1
    assert session_1_items[0].get("content") == "Session 1 message"

    session_2_items = await session_2.get_items()
    assert len(session_2_items) == 1
    assert session_2_items[0].get("content") == "Session 2 message 1"
    session_1.close()
    session_2.close()


async def test_sqlite_session_get_items_with_limit(store_location: str) -> None:
    session = ChatledgerSession("count_test", store_location)
    items: list[TResponseInputItem] = [
        {"role": "user", "content": "Message 1"},
        {"role": "assistant", "content": "Response 1"},
        {"role": "user", "content": "Message 2"},
        {"role": "assistant", "content": "Response 2"},
        {"role": "user", "content": "Message 3"},
        {"role": "assistant", "content": "Response 3"},
    ]
    await session.add_items(items)

    all_items = await session.get_items()
    assert len(all_items) == 6
    assert all_items[0].get("content") == "Message 1"
    assert all_items[-1].get("content") == "Response 3"

    latest_2 = await session.get_items(limit=2)
    assert len(latest_2) == 2
    assert latest_2[0].get("content") == "Message 3"
    assert latest_2[1].get("content") == "Response 3"

    latest_4 = await session.get_items(limit=4)
    assert [item.get("content") for item in latest_4] == [
        "Message 2",
        "Response 2",
        "Message 3",
        "Response 3",
    ]

    latest_10 = await session.get_items(limit=10)
    assert len(latest_10) == 6
    assert latest_10[0].get("content") == "Message 1"
    assert latest_10[-1].get("content") == "Response 3"

    assert len(await session.get_items(limit=0)) == 0
    session.close()


@pytest.mark.parametrize("runner_method", RUNNERS)
async def test_session_memory_appends_list_input_by_default(
    runner_method: str, tmp_path: Path
) -> None:
    session = ChatledgerSession("test_validation_parametrized", tmp_path / "test_validation.db")
    model = FakeModel()
    agent = Agent(name="test", model=model)

    initial_history: list[TResponseInputItem] = [
        {"role": "user", "content": "Earlier message"},
        {"role": "assistant", "content": "Saved reply"},
    ]
    await session.add_items(initial_history)
    list_input: list[TResponseInputItem] = [{"role": "user", "content": "Test message"}]

    model.set_next_output([text_message("This should run")])
    await run_agent(runner_method, agent, list_input, session=session)

    assert model.last_turn_args["input"] == initial_history + list_input
    session.close()


@pytest.mark.parametrize("runner_method", RUNNERS)
async def test_session_callback_prepared_input(runner_method: str, tmp_path: Path) -> None:
    model = FakeModel()
    agent = Agent(name="test", model=model)
    session = ChatledgerSession("session_1", tmp_path / "test_memory.db")

    initial_history: list[TResponseInputItem] = [
        {"role": "user", "content": "Hello there."},
        {"role": "assistant", "content": "Hi, I'm here to assist you."},
    ]
    try:
        await session.add_items(initial_history)

        def filter_assistant_messages(history: list[Any], new_input: list[Any]) -> list[Any]:
            return [item for item in history if item["role"] == "user"] + new_input

        new_turn_input: list[TResponseInputItem] = [{"role": "user", "content": "What your name?"}]
        model.set_next_output([text_message("I'm gpt-4o")])
        await run_agent(
            runner_method,
            agent,
            new_turn_input,
            session=session,
            run_config=RunConfig(session_input_callback=filter_assistant_messages),
        )

        expected_model_input = [initial_history[0], new_turn_input[0]]
        assert len(model.last_turn_args["input"]) == 2
        assert model.last_turn_args["input"] == expected_model_input
    finally:
        session.close()


async def test_sqlite_session_unicode_content(store_location: str) -> None:
    session = ChatledgerSession("unicode_test", store_location)
    items: list[TResponseInputItem] = [
        {"role": "user", "content": "こんにちは"},
        {"role": "assistant", "content": "😊👍"},
        {"role": "user", "content": "Привет"},
    ]
    await session.add_items(items)
    retrieved = await session.get_items()
    assert retrieved[0].get("content") == "こんにちは"
    assert retrieved[1].get("content") == "😊👍"
    assert retrieved[2].get("content") == "Привет"
    session.close()


async def test_sqlite_session_special_characters_and_sql_injection(store_location: str) -> None:
    session = ChatledgerSession("special_chars_test", store_location)
    items: list[TResponseInputItem] = [
        {"role": "user", "content": "O'Reilly"},
        {"role": "assistant", "content": "DROP TABLE sessions;"},
        {"role": "user", "content": '"SELECT * FROM users WHERE name = "admin";"'},
        {"role": "assistant", "content": "Robert'); DROP TABLE students;--"},
        {"role": "user", "content": "Normal message"},
    ]
    await session.add_items(items)
    retrieved = await session.get_items()
    assert len(retrieved) == len(items)
    assert retrieved[0].get("content") == "O'Reilly"
    assert retrieved[1].get("content") == "DROP TABLE sessions;"
    assert retrieved[2].get("content") == '"SELECT * FROM users WHERE name = "admin";"'
    assert retrieved[3].get("content") == "Robert'); DROP TABLE students;--"
    assert retrieved[4].get("content") == "Normal message"
    session.close()


async def test_sqlite_session_concurrent_access(store_location: str) -> None:
    session = ChatledgerSession("concurrent_test", store_location)
    items: list[TResponseInputItem] = [
        {"role": "user", "content": f"Message {i}"} for i in range(10)
    ]

    def add_item(item: TResponseInputItem) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(session.add_items([item]))
        asyncio.set_event_loop(None)
        loop.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=5) as executor:
        list(executor.map(add_item, items))

    retrieved = await session.get_items()
    contents = {item.get("content") for item in retrieved}
    assert contents == {f"Message {i}" for i in range(10)}
    assert len(retrieved) == 10
    session.close()


async def test_sqlite_session_file_lock_is_shared_across_instances(tmp_path: Path) -> None:
    # Adapted: no lock table to inspect; two sessions on one file written at once.
    db_path = tmp_path / "test_shared_lock.db"
    session_1 = ChatledgerSession("session_1", db_path)
    session_2 = ChatledgerSession("session_2", db_path)

    await asyncio.gather(
        session_1.add_items([{"role": "user", "content": "session_1"}]),
        session_2.add_items([{"role": "user", "content": "session_2"}]),
    )

    assert [item.get("content") for item in await session_1.get_items()] == ["session_1"]
    assert [item.get("content") for item in await session_2.get_items()] == ["session_2"]
    session_1.close()
    session_2.close()


async def test_session_add_items_exception_propagates_in_streamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = ChatledgerSession("test_exception_session", tmp_path / "log.db")

    async def _failing_add_items(_items: Any) -> None:
        raise RuntimeError("Simulated session.add_items failure")

    monkeypatch.setattr(session, "add_items", _failing_add_items)

    model = FakeModel()
    agent = Agent(name="test", model=model)
    model.set_next_output([text_message("This should not be reached")])

    result = Runner.run_streamed(agent, "Hello", session=session)

    async def consume_stream() -> None:
        async for _event in result.stream_events():
            pass

    with pytest.raises(RuntimeError, match=r"Simulated session\.add_items failure"):
        await asyncio.wait_for(consume_stream(), timeout=30.0)
    session.close()


async def test_session_settings_default(tmp_path: Path) -> None:
    session = ChatledgerSession("default_settings_test", tmp_path / "log.db")
    assert isinstance(session.session_settings, SessionSettings)
    assert session.session_settings.limit is None
    session.close()


async def test_session_settings_constructor(tmp_path: Path) -> None:
    session = ChatledgerSession(
        "constructor_settings_test",
        tmp_path / "log.db",
        session_settings=SessionSettings(limit=5),
    )
    assert session.session_settings is not None
    assert session.session_settings.limit == 5
    session.close()


async def test_get_items_uses_session_settings_limit(store_location: str) -> None:
    session = ChatledgerSession(
        "uses_settings_limit_test", store_location, session_settings=SessionSettings(limit=3)
    )
    items: list[TResponseInputItem] = [
        {"role": "user", "content": f"Message {i}"} for i in range(5)
    ]
    await session.add_items(items)

    retrieved = await session.get_items()
    assert len(retrieved) == 3
    assert retrieved[0].get("content") == "Message 2"
    assert retrieved[1].get("content") == "Message 3"
    assert retrieved[2].get("content") == "Message 4"
    session.close()


async def test_get_items_explicit_limit_overrides_session_settings(store_location: str) -> None:
    session = ChatledgerSession(
        "explicit_override_test", store_location, session_settings=SessionSettings(limit=5)
    )
    items: list[TResponseInputItem] = [
        {"role": "user", "content": f"Message {i}"} for i in range(10)
    ]
    await session.add_items(items)

    retrieved = await session.get_items(limit=2)
    assert len(retrieved) == 2
    assert retrieved[0].get("content") == "Message 8"
    assert retrieved[1].get("content") == "Message 9"
    session.close()


async def test_runner_with_session_settings_override(tmp_path: Path) -> None:
    session = ChatledgerSession(
        "runner_override_test",
        tmp_path / "test_runner_override.db",
        session_settings=SessionSettings(limit=100),
    )
    items: list[TResponseInputItem] = [{"role": "user", "content": f"Turn {i}"} for i in range(10)]
    await session.add_items(items)

    model = FakeModel()
    agent = Agent(name="test", model=model)
    model.set_next_output([text_message("Got it")])

    await Runner.run(
        agent,
        "New question",
        session=session,
        run_config=RunConfig(session_settings=SessionSettings(limit=2)),
    )

    last_input = model.last_turn_args["input"]
    history_items = [item for item in last_input if item.get("content") != "New question"]
    assert len(history_items) == 2
    session.close()


# ----------------------------------------------------------------------------- test_session_limit.py


@pytest.mark.parametrize("runner_method", RUNNERS)
async def test_session_limit_parameter(runner_method: str, tmp_path: Path) -> None:
    session = ChatledgerSession("limit_test", tmp_path / "test_limit.db")
    model = FakeModel()
    agent = Agent(name="test", model=model)

    for n in (1, 2, 3):
        model.set_next_output([text_message(f"Reply {n}")])
        await run_agent(runner_method, agent, f"Message {n}", session=session)

    assert len(await session.get_items()) == 6

    model.set_next_output([text_message("Reply 4")])
    await run_agent(
        runner_method,
        agent,
        "Message 4",
        session=session,
        run_config=RunConfig(session_settings=SessionSettings(limit=2)),
    )

    last_input = model.last_turn_args["input"]
    assert len(last_input) == 3
    assert last_input[0].get("content") == "Message 3"
    assert last_input[1].get("content")[0]["text"] == "Reply 3"
    assert last_input[2].get("content") == "Message 4"
    session.close()


@pytest.mark.parametrize("runner_method", RUNNERS)
async def test_session_limit_zero(runner_method: str, tmp_path: Path) -> None:
    session = ChatledgerSession("limit_zero_test", tmp_path / "test_limit_zero.db")
    model = FakeModel()
    agent = Agent(name="test", model=model)

    model.set_next_output([text_message("Reply 1")])
    await run_agent(runner_method, agent, "Message 1", session=session)
    model.set_next_output([text_message("Reply 2")])
    await run_agent(runner_method, agent, "Message 2", session=session)

    model.set_next_output([text_message("Reply 3")])
    await run_agent(
        runner_method,
        agent,
        "Message 3",
        session=session,
        run_config=RunConfig(session_settings=SessionSettings(limit=0)),
    )

    last_input = model.last_turn_args["input"]
    assert len(last_input) == 1
    assert last_input[0].get("content") == "Message 3"
    session.close()


@pytest.mark.parametrize("runner_method", RUNNERS)
async def test_session_limit_none_gets_all_history(runner_method: str, tmp_path: Path) -> None:
    session = ChatledgerSession("limit_none_test", tmp_path / "test_limit_none.db")
    model = FakeModel()
    agent = Agent(name="test", model=model)

    for i in range(1, 6):
        model.set_next_output([text_message(f"Reply {i}")])
        await run_agent(runner_method, agent, f"Message {i}", session=session)

    assert len(await session.get_items()) == 10

    model.set_next_output([text_message("Reply 6")])
    await run_agent(
        runner_method,
        agent,
        "Message 6",
        session=session,
        run_config=RunConfig(session_settings=SessionSettings(limit=None)),
    )

    last_input = model.last_turn_args["input"]
    assert len(last_input) == 11
    assert last_input[0].get("content") == "Message 1"
    assert last_input[-1].get("content") == "Message 6"
    session.close()


@pytest.mark.parametrize("runner_method", RUNNERS)
async def test_session_limit_larger_than_history(runner_method: str, tmp_path: Path) -> None:
    session = ChatledgerSession("limit_large_test", tmp_path / "test_limit_large.db")
    model = FakeModel()
    agent = Agent(name="test", model=model)

    model.set_next_output([text_message("Reply 1")])
    await run_agent(runner_method, agent, "Message 1", session=session)

    model.set_next_output([text_message("Reply 2")])
    await run_agent(
        runner_method,
        agent,
        "Message 2",
        session=session,
        run_config=RunConfig(session_settings=SessionSettings(limit=100)),
    )

    last_input = model.last_turn_args["input"]
    assert len(last_input) == 3
    assert last_input[0].get("content") == "Message 1"
    assert last_input[1].get("content")[0]["text"] == "Reply 1"
    assert last_input[2].get("content") == "Message 2"
    session.close()


async def test_session_limit_negative_returns_empty(store_location: str) -> None:
    session = ChatledgerSession("limit_negative_test", store_location)
    await session.add_items(
        [{"role": "user", "content": "1"}, {"role": "assistant", "content": "2"}]
    )
    assert await session.get_items(limit=-1) == []
    assert await session.get_items(limit=0) == []
    assert len(await session.get_items(limit=1)) == 1
    assert len(await session.get_items()) == 2
    session.close()
