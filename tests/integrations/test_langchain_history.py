"""What the log adds to a LangChain message history: clear is an event, nothing is
deleted, messages come back equal (every type and field), forks, time travel, verify, bad
input, and a chain with a chat model reading and writing the history."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.tool import tool_call
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

import chatledger
from chatledger.errors import IntegrityError, InvalidInputError
from chatledger.events import NewEvent, SessionItemsAdded, open_store
from chatledger.integrations.agents import ChatledgerSession
from chatledger.integrations.langchain import ChatledgerMessageHistory

EVERY_KIND: list[BaseMessage] = [
    SystemMessage(content=[{"type": "text", "text": "Be brief."}], id="s1"),
    HumanMessage(content="Weather in Paris? 🌦", name="alice", id="h1"),
    AIMessage(
        content="",
        tool_calls=[tool_call(name="get_weather", args={"city": "Paris", "days": 2.0}, id="c1")],
        usage_metadata={"input_tokens": 12, "output_tokens": 3, "total_tokens": 15},
        response_metadata={"model_name": "gemini-2.5-flash", "finish_reason": "STOP"},
        additional_kwargs={"refusal": None},
        id="a1",
    ),
    ToolMessage(content="sunny", tool_call_id="c1", artifact={"raw": [1, 2, 3]}, status="success"),
    AIMessage(content=[{"type": "text", "text": "Sunny, then sunny."}], id="a2"),
    ChatMessage(content="A fine answer.", role="critic"),
    FunctionMessage(content='{"ok": true}', name="legacy_function"),
    AIMessageChunk(content="a streamed chunk", id="a3"),
]


def test_every_kind_of_message_comes_back_equal(store_location: str) -> None:
    history = ChatledgerMessageHistory("every-kind", store_location)
    history.add_messages(EVERY_KIND)
    again = ChatledgerMessageHistory("every-kind", store_location).messages
    assert again == EVERY_KIND
    assert [type(m) for m in again] == [type(m) for m in EVERY_KIND]
    assert again[2].tool_calls == EVERY_KIND[2].tool_calls  # type: ignore[attr-defined]
    history.close()


def test_clear_is_an_event_and_the_history_can_be_read_as_it_was(store_location: str) -> None:
    history = ChatledgerMessageHistory("cleared", store_location)
    history.add_user_message("first")
    history.add_ai_message("reply")
    history.clear()
    history.add_user_message("again")

    assert [m.content for m in history.messages] == ["again"]
    assert [event.type for event in history.events()] == [
        "conversation_started",
        "session_items_added",
        "session_items_added",
        "session_cleared",
        "session_items_added",
    ]
    assert [m.content for m in history.messages_as_of(3)] == ["first", "reply"]
    assert history.messages_as_of(4) == []
    assert history.verify().ok
    history.close()


def test_a_fork_starts_from_any_version(store_location: str) -> None:
    history = ChatledgerMessageHistory("trunk", store_location)
    history.add_user_message("Suggest a name for a cat.")
    history.add_ai_message("Whiskers.")
    history.add_user_message("Now one for a dog.")
    branch = history.fork(at=3)
    branch.add_user_message("Now one for a hamster.")
    assert [m.content for m in branch.messages] == [
        "Suggest a name for a cat.",
        "Whiskers.",
        "Now one for a hamster.",
    ]
    assert len(history.messages) == 3
    info = history.store.stream_info(branch.session_id)
    assert info is not None
    assert (info.parent_id, info.parent_version) == ("trunk", 3)
    history.close()


def test_actor_and_integration_are_recorded(tmp_path: Path) -> None:
    with chatledger.Client(store=tmp_path / "log.db", actor="carol") as client:
        history = ChatledgerMessageHistory("acted", client)
        history.add_user_message("hi")
        with chatledger.acting_as("dave"):
            history.clear()
        events = history.events()
        assert [event.actor for event in events] == ["carol", "carol", "dave"]
        assert events[0].metadata["integration"] == "langchain"
        assert events[0].data.model == "langchain"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        (HumanMessage(content="not in a list"), "a list of LangChain messages"),
        ([HumanMessage(content="ok"), "a plain string"], "message 1 is a str"),
        ([{"type": "human", "data": {"content": "a dict"}}], "message 0 is a dict"),
        ([AIMessage(content="x", additional_kwargs={"blob": b"\x00"})], "message 0 holds a bytes"),
        ([HumanMessage(content="\udcff")], "lone surrogate"),
    ],
)
def test_bad_messages_are_refused_and_the_log_is_unchanged(
    tmp_path: Path, messages: Any, message: str
) -> None:
    history = ChatledgerMessageHistory("strict", tmp_path / "log.db")
    history.add_user_message("kept")
    before = history.events()
    with pytest.raises(InvalidInputError, match=message):
        history.add_messages(messages)
    assert history.events() == before
    history.close()


async def test_an_agents_session_is_not_opened_as_a_langchain_history(tmp_path: Path) -> None:
    session = ChatledgerSession("shared-id", tmp_path / "log.db")
    await session.add_items([{"role": "user", "content": "hi"}])
    history = ChatledgerMessageHistory("shared-id", session.store)
    with pytest.raises(
        InvalidInputError, match="is an openai-agents session, not a langchain session"
    ):
        _ = history.messages
    with pytest.raises(InvalidInputError, match="openai-agents session"):
        history.add_user_message("x")
    session.close()


def test_an_item_that_is_no_message_is_named_on_read(tmp_path: Path) -> None:
    with open_store(tmp_path / "log.db") as store:
        history = ChatledgerMessageHistory("forged", store)
        history.add_user_message("real")
        store.append(
            "forged",
            [NewEvent(data=SessionItemsAdded(items=[{"not": "a message"}]))],
            expected_version=history.version,
        )
        with pytest.raises(IntegrityError, match="not a LangChain message"):
            _ = history.messages


def test_writers_in_parallel_lose_no_message(store_location: str) -> None:
    start = threading.Barrier(4)

    def writer(n: int) -> None:
        with open_store(store_location) as store:  # its own connection
            history = ChatledgerMessageHistory("parallel", store)
            start.wait()
            for i in range(5):
                history.add_messages([HumanMessage(content=f"{n}.{i}")])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    contents = [
        str(m.content) for m in ChatledgerMessageHistory("parallel", store_location).messages
    ]
    assert sorted(contents) == sorted(f"{n}.{i}" for n in range(4) for i in range(5))
    for n in range(4):  # each writer's messages in its order
        assert [c for c in contents if c.startswith(f"{n}.")] == [f"{n}.{i}" for i in range(5)]


def test_a_chain_with_a_chat_model_reads_and_writes_the_history(tmp_path: Path) -> None:
    model = GenericFakeChatModel(messages=iter(["Paris.", "Rome."]))
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer in one word."), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    chain = prompt | model
    history = ChatledgerMessageHistory("geography", tmp_path / "log.db")
    for question in ("Capital of France?", "And of Italy?"):
        answer = chain.invoke({"history": history.messages, "question": question})
        history.add_messages([HumanMessage(content=question), answer])

    assert [(m.type, m.content) for m in history.messages] == [
        ("human", "Capital of France?"),
        ("ai", "Paris."),
        ("human", "And of Italy?"),
        ("ai", "Rome."),
    ]
    history.close()
