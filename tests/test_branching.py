"""Forks, branches, time travel, re-runs and actors: the API, on a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import chatledger
from chatledger.client.transports.scripted import ScriptedTransport
from chatledger.errors import InvalidInputError


@pytest.fixture
def transport() -> ScriptedTransport:
    return ScriptedTransport()


@pytest.fixture
def client(transport: ScriptedTransport, db_path: Path) -> Iterator[chatledger.Client]:
    with chatledger.Client(store=str(db_path), transport=transport) as client:
        yield client


def texts(contents: list[Any]) -> list[str]:
    return [content.parts[0].text if content.parts else "" for content in contents]


def converse(chat: chatledger.Chat, transport: ScriptedTransport, *questions: str) -> None:
    for question in questions:
        transport.enqueue(f"re:{question}")
        chat.send_message(question)


def test_a_fork_shares_the_prefix_and_goes_its_own_way(
    client: chatledger.Client, transport: ScriptedTransport
) -> None:
    chat = client.chats.create(model="m", config={"system_instruction": "be kind"})
    converse(chat, transport, "one", "two", "three")
    fork = chat.fork(turn=2)
    assert texts(fork.get_history()) == ["one", "re:one", "two", "re:two"]
    assert fork.parent is not None and fork.parent.conversation_id == chat.id
    converse(fork, transport, "alternative")
    assert transport.requests[-1].contents[-1] == {
        "role": "user",
        "parts": [{"text": "alternative"}],
    }
    assert transport.requests[-1].config["systemInstruction"]["parts"] == [{"text": "be kind"}]
    assert texts(chat.get_history()) == ["one", "re:one", "two", "re:two", "three", "re:three"]
    assert texts(fork.get_history())[-2:] == ["alternative", "re:alternative"]
    # The fork's own log starts with one event naming its parent.
    first = fork.events()[0]
    assert first.type == "conversation_started"
    assert first.data.parent.version == fork.parent.version  # type: ignore[attr-defined]
    assert first.data.parent.hash == chat.events()[fork.parent.version - 1].hash  # type: ignore[attr-defined]


def test_fork_points(client: chatledger.Client, transport: ScriptedTransport) -> None:
    chat = client.chats.create(model="m", history=[{"role": "user", "parts": [{"text": "seed"}]}])
    converse(chat, transport, "a", "b")
    assert texts(chat.fork().get_history()) == texts(chat.get_history())
    assert texts(chat.fork(turn=0).get_history()) == ["seed"]  # the start, initial history included
    assert texts(chat.fork(at=1).get_history()) == ["seed"]
    assert texts(chat.fork(at=4).get_history()) == ["seed", "a", "re:a"]
    assert texts(chat.fork(at=3).get_history()) == ["seed"]  # inside turn 2: not in history yet
    for bad in (
        {"at": 0},
        {"at": 99},
        {"turn": 5},
        {"turn": -1},
        {"at": 2, "turn": 1},
        {"at": "3"},
    ):
        with pytest.raises(InvalidInputError):
            chat.fork(**bad)


def test_forks_of_forks_tree_and_branches(
    client: chatledger.Client, transport: ScriptedTransport
) -> None:
    root = client.chats.create(model="m")
    converse(root, transport, "start here")
    left = root.fork()
    converse(left, transport, "go left now")
    right = root.fork()
    converse(right, transport, "go right instead please")
    deeper = left.fork()
    converse(deeper, transport, "even deeper")
    assert texts(deeper.get_history()) == [
        "start here",
        "re:start here",
        "go left now",
        "re:go left now",
        "even deeper",
        "re:even deeper",
    ]
    assert {summary.conversation_id for summary in root.branches()} == {left.id, right.id}
    assert [summary.conversation_id for summary in left.branches()] == [deeper.id]
    tree = client.chats.tree(deeper.id)  # from any member: the whole tree, from its root
    nodes = {node.conversation_id: (depth, node) for depth, node in tree.walk()}
    assert tree.conversation_id == root.id
    assert nodes[deeper.id][0] == 2
    assert nodes[right.id][1].divergence == "go right instead please"
    assert nodes[left.id][1].summary.turns == 2


def test_a_fork_costs_a_constant_number_of_rows(
    client: chatledger.Client, transport: ScriptedTransport, db_path: Path
) -> None:
    def rows() -> tuple[int, int]:
        with sqlite3.connect(db_path) as conn:
            return (
                conn.execute("SELECT count(*) FROM events").fetchone()[0],
                conn.execute("SELECT count(*) FROM streams").fetchone()[0],
            )

    added = []
    for length in (2, 40):
        chat = client.chats.create(model="m")
        converse(chat, transport, *[f"q{i}" for i in range(length)])
        before = rows()
        fork = chat.fork()
        after = rows()
        added.append((after[0] - before[0], after[1] - before[1]))
        assert len(fork.get_history()) == 2 * length
    assert added == [(1, 1), (1, 1)]


def test_time_travel(client: chatledger.Client, transport: ScriptedTransport) -> None:
    chat = client.chats.create(model="m")
    converse(chat, transport, "a", "b")
    chat.rewind()
    converse(chat, transport, "c")
    versions = {event.version: event.type for event in chat.events()}
    assert versions[4] == "model_responded" and versions[8] == "turn_rewound"
    assert texts(chat.get_history(as_of=1)) == []
    assert texts(chat.get_history(as_of=4)) == ["a", "re:a"]
    assert texts(chat.get_history(as_of=7)) == ["a", "re:a", "b", "re:b"]
    assert texts(chat.get_history(as_of=8)) == ["a", "re:a"]
    assert texts(chat.get_context(as_of=7)) == ["a", "re:a", "b", "re:b"]
    assert texts(chat.get_history()) == ["a", "re:a", "c", "re:c"]
    with pytest.raises(InvalidInputError, match="as_of=99"):
        chat.get_history(as_of=99)
    # Time travel calls no model.
    assert len(transport.requests) == 3


def test_rerun_resends_the_messages_to_another_model_as_a_fork(
    client: chatledger.Client, transport: ScriptedTransport
) -> None:
    chat = client.chats.create(
        model="first-model",
        history=[
            {"role": "user", "parts": [{"text": "seed"}]},
            {"role": "model", "parts": [{"text": "ok"}]},
        ],
    )
    converse(chat, transport, "question one", "question two")
    transport.enqueue("other one")
    transport.enqueue("other two")
    rerun = chat.rerun(model="second-model", config={"temperature": 0.0})
    assert rerun.model == "second-model"
    assert texts(rerun.get_history()) == [
        "seed",
        "ok",
        "question one",
        "other one",
        "question two",
        "other two",
    ]
    assert [request.model for request in transport.requests[-2:]] == [
        "second-model",
        "second-model",
    ]
    assert transport.requests[-1].config == {"generationConfig": {"temperature": 0.0}}
    assert rerun.parent is not None and rerun.parent.version == 1


def test_acting_as_sets_the_actor_per_call(
    client: chatledger.Client, transport: ScriptedTransport
) -> None:
    chat = client.chats.create(model="m")
    converse(chat, transport, "default actor")
    with chatledger.acting_as("alice@example.com"):
        converse(chat, transport, "as alice")
    actors = [event.actor for event in chat.events() if event.type == "user_message_added"]
    assert actors == [client.actor, "alice@example.com"]
    with pytest.raises(InvalidInputError), chatledger.acting_as(""):
        pass


def test_async_fork_and_rerun(transport: ScriptedTransport, db_path: Path) -> None:
    async def scenario() -> None:
        client = chatledger.Client(store=str(db_path), transport=transport)
        chat = client.aio.chats.create(model="m")
        transport.enqueue("a1")
        await chat.send_message("q1")
        fork = await chat.fork()
        transport.enqueue("a2")
        await fork.send_message("q2")
        assert texts(fork.get_history()) == ["q1", "a1", "q2", "a2"]
        assert [s.conversation_id for s in await chat.branches()] == [fork.id]
        transport.enqueue("b1")
        rerun = await chat.rerun(model="n")
        assert texts(rerun.get_history()) == ["q1", "b1"]
        await client.aclose()

    asyncio.run(scenario())


def test_a_fork_resumes_in_a_new_process_state(
    client: chatledger.Client, transport: ScriptedTransport, db_path: Path
) -> None:
    chat = client.chats.create(model="m")
    converse(chat, transport, "a", "b")
    fork = chat.fork(turn=1)
    converse(fork, transport, "c")
    with chatledger.Client(store=str(db_path), transport=transport) as other:
        resumed = other.chats.get(fork.id)
        assert texts(resumed.get_history()) == ["a", "re:a", "c", "re:c"]
        assert resumed.parent == fork.parent
        assert other.store.verify().ok


def test_a_chat_or_fork_that_could_never_send_is_refused_before_it_is_written(
    db_path: Path,
) -> None:
    # The Gemini transport refuses this base_url; the local model's does not need one.
    with chatledger.Client(
        api_key="k", http_options={"base_url": "ftp://example.com/"}, store=str(db_path)
    ) as client:
        with pytest.raises(InvalidInputError, match="start with http:// or https://"):
            client.chats.create(model="gemini-2.5-flash")
        assert client.chats.list() == []

        chat = client.chats.create(model="local")  # the model itself loads on first send
        with pytest.raises(InvalidInputError, match="start with http:// or https://"):
            chat.fork(model="gemini-2.5-flash")
        with pytest.raises(InvalidInputError, match="start with http:// or https://"):
            chat.rerun(model="gemini-2.5-flash")
        assert [summary.conversation_id for summary in client.chats.list()] == [chat.id]
        assert len(chat.events()) == 1
