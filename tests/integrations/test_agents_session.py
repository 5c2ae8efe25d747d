"""What the log adds to an openai-agents session: pops and clears are events, nothing is
deleted, items come back exactly, forks, time travel, actors, verify, and bad input."""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, Runner, function_tool, set_tracing_disabled

import chatledger
from chatledger.errors import InvalidInputError
from chatledger.events import SessionCleared, SessionItemPopped, SessionItemsAdded
from chatledger.integrations.agents import ChatledgerSession
from tests.integrations.agents_support import FakeModel, function_call, text_message


@pytest.fixture(autouse=True)
def _no_tracing() -> None:
    set_tracing_disabled(True)


def texts(items: list[Any]) -> list[Any]:
    return [item.get("content") for item in items]


async def test_pop_and_clear_are_events_and_nothing_is_deleted(store_location: str) -> None:
    session = ChatledgerSession("audited", store_location)
    await session.add_items([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    await session.add_items([{"role": "user", "content": "c"}])
    assert (await session.pop_item()) == {"role": "user", "content": "c"}
    await session.clear_session()
    await session.add_items([{"role": "user", "content": "d"}])

    events = await session.events()
    assert [event.type for event in events] == [
        "conversation_started",
        "session_items_added",
        "session_items_added",
        "session_item_popped",
        "session_cleared",
        "session_items_added",
    ]
    popped = events[3].data
    assert isinstance(popped, SessionItemPopped)
    assert (popped.item_version, popped.item_index, popped.item_conversation_id) == (3, 0, None)
    cleared = events[4].data
    assert isinstance(cleared, SessionCleared)
    assert cleared.count == 2
    # Every item ever added is still in the log.
    added = [e.data.items for e in events if isinstance(e.data, SessionItemsAdded)]
    assert [texts(items) for items in added] == [["a", "b"], ["c"], ["d"]]

    assert texts(await session.get_items()) == ["d"]
    states = [texts(await session.get_items_as_of(v)) for v in range(1, 7)]
    assert states == [[], ["a", "b"], ["a", "b", "c"], ["a", "b"], [], ["d"]]
    with pytest.raises(InvalidInputError, match="no version 7"):
        await session.get_items_as_of(7)
    assert (await session.verify()).ok
    session.close()


async def test_items_come_back_exactly_as_stored(tmp_path: Path) -> None:
    item = {
        "type": "message",
        "role": "assistant",
        "id": "msg_1",
        "content": [
            {"type": "output_text", "text": "Ünïcødé 😊\n\ttabs \x00 and NUL", "annotations": []}
        ],
        "status": "completed",
        "zeta": 1.0,
        "alpha": 1,
        "big": 2**62,
        "tiny": 5e-324,
        "flags": [True, False, None],
        "nested": {"b": {"a": []}, "a": {}},
    }
    session = ChatledgerSession("exact", tmp_path / "log.db")
    await session.add_items([item])  # type: ignore[list-item]

    again = ChatledgerSession("exact", tmp_path / "log.db")  # a new connection reads it back
    (got,) = await again.get_items()
    back: Mapping[str, Any] = got  # arbitrary JSON, not one of the SDK's item TypedDicts
    assert back == item
    assert list(back) == list(item)  # the keys in the order given
    assert list(back["nested"]) == ["b", "a"]
    assert type(back["zeta"]) is float and type(back["alpha"]) is int
    # A caller changing what it got changes nothing stored.
    back["content"][0]["text"] = "changed"
    assert (await again.get_items())[0] == item
    session.close()
    again.close()


async def test_a_session_resumes_in_another_process(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    session = ChatledgerSession("shared", path)
    await session.add_items([{"role": "user", "content": "from the parent"}])
    code = (
        "import asyncio, json, sys\n"
        "from chatledger.integrations.agents import ChatledgerSession\n"
        "async def main():\n"
        "    s = ChatledgerSession('shared', sys.argv[1])\n"
        "    await s.add_items([{'role': 'assistant', 'content': 'from the child'}])\n"
        "    print(json.dumps(await s.get_items()))\n"
        "    s.close()\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert texts(json.loads(result.stdout)) == ["from the parent", "from the child"]
    # The first session sees the child's item without reopening.
    assert texts(await session.get_items()) == ["from the parent", "from the child"]
    session.close()


async def test_forks_start_from_the_parent_items_and_stay_apart(store_location: str) -> None:
    parent = ChatledgerSession("parent", store_location)
    await parent.add_items([{"role": "user", "content": "one"}])
    await parent.add_items([{"role": "user", "content": "two"}])
    branch = await parent.fork("branch", at=2)  # after "one" only
    assert texts(await branch.get_items()) == ["one"]
    await branch.add_items([{"role": "user", "content": "branch three"}])
    assert (await branch.pop_item()) == {"role": "user", "content": "branch three"}
    # Popping an item the fork took from its parent names the parent.
    assert (await branch.pop_item()) == {"role": "user", "content": "one"}
    popped = (await branch.events())[-1].data
    assert isinstance(popped, SessionItemPopped)
    assert (popped.item_conversation_id, popped.item_version, popped.item_index) == (
        "parent",
        2,
        0,
    )
    assert await branch.get_items() == []
    assert texts(await parent.get_items()) == ["one", "two"]
    # A fork of a fork, with a generated id.
    twig = await (await parent.fork()).fork()
    assert texts(await twig.get_items()) == ["one", "two"]
    with pytest.raises(InvalidInputError, match="already a conversation"):
        await parent.fork("branch")
    with pytest.raises(InvalidInputError, match="versions 1 to 3"):
        await parent.fork(at=4)
    assert parent.store.verify().ok
    parent.close()


async def test_events_record_the_actor(tmp_path: Path) -> None:
    with chatledger.Client(store=tmp_path / "log.db", actor="alice") as client:
        session = ChatledgerSession("acted", client)
        await session.add_items([{"role": "user", "content": "hi"}])
        with chatledger.acting_as("bob"):
            await session.pop_item()
        assert [event.actor for event in await session.events()] == ["alice", "alice", "bob"]
        first = (await session.events())[0]
        assert first.metadata["integration"] == "openai-agents"
        # The session is a conversation of the client's store, listed with the chats.
        (summary,) = client.chats.list()
        assert (summary.conversation_id, summary.model) == ("acted", "openai-agents")
        session.close()
        assert client.store.read("acted")  # the client's store stays open


async def test_a_chat_or_another_framework_is_not_opened_as_a_session(tmp_path: Path) -> None:
    from chatledger.client.transports import ScriptedTransport

    with chatledger.Client(store=tmp_path / "log.db", transport=ScriptedTransport()) as client:
        chat = client.chats.create(model="gemini-2.5-flash")
        session = ChatledgerSession(chat.id, client)
        with pytest.raises(InvalidInputError, match="is a chat conversation"):
            await session.get_items()
        with pytest.raises(InvalidInputError, match="is a chat conversation"):
            await session.add_items([{"role": "user", "content": "x"}])
        assert len(client.store.read(chat.id)) == 1


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ("hello", "a list of JSON objects"),
        ({"role": "user"}, "a list of JSON objects"),
        ([["role", "user"]], "item 0 is a list, not a JSON object"),
        ([{"role": "user", "content": "ok"}, 7], "item 1 is a int"),
        ([{"content": math.nan}], "nan"),
        ([{"content": "\ud800"}], "lone surrogate"),
        ([{1: "int key"}], "int key"),
        ([{"content": object()}], "is not JSON"),
    ],
)
async def test_bad_items_are_refused_and_the_log_is_unchanged(
    tmp_path: Path, items: Any, message: str
) -> None:
    session = ChatledgerSession("strict", tmp_path / "log.db")
    await session.add_items([{"role": "user", "content": "kept"}])
    before = await session.events()
    with pytest.raises(InvalidInputError, match=message):
        await session.add_items(items)
    assert await session.events() == before
    session.close()


async def test_deep_and_huge_adds_are_refused(tmp_path: Path) -> None:
    session = ChatledgerSession("bounded", tmp_path / "log.db")
    deep: Any = "x"
    for _ in range(200):
        deep = {"d": deep}
    with pytest.raises(InvalidInputError, match="nested more than"):
        await session.add_items([deep])
    with pytest.raises(InvalidInputError, match="at most 10000 at a time"):
        await session.add_items([{"n": n} for n in range(10_001)])  # type: ignore[misc]
    assert await session.events() == []
    session.close()


async def test_verify_finds_an_item_changed_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    session = ChatledgerSession("tampered", path)
    await session.add_items([{"role": "user", "content": "pay 10 EUR"}])
    assert (await session.verify()).ok
    with sqlite3.connect(path) as raw:
        raw.execute("DROP TRIGGER events_no_update")
        raw.execute(
            "UPDATE events SET data = replace(data, '10 EUR', '99 EUR') "
            "WHERE type = 'session_items_added'"
        )
    report = await session.verify()
    assert not report.ok
    assert "hash mismatch" in str(report.problems[0])
    session.close()


def test_writers_racing_to_pop_each_pop_a_different_item(store_location: str) -> None:
    async def fill() -> None:
        session = ChatledgerSession("race", store_location)
        await session.add_items([{"n": n} for n in range(40)])  # type: ignore[misc]
        session.close()

    asyncio.run(fill())
    popped: list[Any] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def popper() -> None:
        # Each writer has its own store connection, as separate processes would.
        session = ChatledgerSession("race", store_location)
        start.wait()
        for _ in range(10):
            item = asyncio.run(session.pop_item())
            with lock:
                popped.append(item)
        session.close()

    threads = [threading.Thread(target=popper) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(item["n"] for item in popped) == list(range(40))

    async def check() -> None:
        session = ChatledgerSession("race", store_location)
        assert await session.get_items() == []
        pops = [e for e in await session.events() if e.type == "session_item_popped"]
        assert len(pops) == 40
        session.close()

    asyncio.run(check())


async def test_an_agent_with_a_tool_keeps_every_step_in_the_log(tmp_path: Path) -> None:
    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    model = FakeModel()
    agent = Agent(name="weather", model=model, tools=[get_weather])
    session = ChatledgerSession("tools", tmp_path / "log.db")
    model.set_next_output([function_call("get_weather", json.dumps({"city": "Paris"}))])
    model.set_next_output([text_message("It is sunny in Paris.")])
    result = await Runner.run(agent, "Weather in Paris?", session=session)
    assert result.final_output == "It is sunny in Paris."

    items = await session.get_items()
    assert [item.get("type", "message") for item in items] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    assert items[2].get("output") == "sunny in Paris"

    # The next run sends back exactly what the log holds, then the new input.
    model.set_next_output([text_message("You're welcome.")])
    await Runner.run(agent, "Thanks!", session=session)
    assert model.last_turn_args["input"][:4] == items
    assert (await session.verify()).ok
    session.close()
