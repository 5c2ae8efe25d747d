"""LangChain's own tests for chat message histories, run against ChatledgerMessageHistory.

``langchain-tests`` (1.1.9) has standard tests for chat models, stores, caches, retrievers
and vector stores, but none for message histories; so these are LangChain's unit tests for
histories, ported with their inputs and expected values:

- langchain-core ``tests/unit_tests/chat_history/test_chat_history.py`` (the base class's
  ``add_message``/``add_messages`` and async interface) and
  ``test_file_chat_message_history.py`` (a persistent history: add, clear, reopen);
- langchain-core ``tests/unit_tests/test_chat_history.py`` (tool calls, invalid tool calls
  and message types survive serialisation: here, a round trip through the log);
- langchain-community ``tests/unit_tests/chat_message_histories/test_sql.py``
  (``SQLChatMessageHistory``: two sessions in one database, sync and async);
- langchain-core ``tests/unit_tests/runnables/test_history.py``
  (``RunnableWithMessageHistory`` with the history as its store, sync, async and
  streamed). Not ported from it: the tests of the runnable's input and output schemas and
  of its output validation, which do not involve the history.

Adapted: where a test compared LangChain's in-memory history objects (``store == {...:
ChatMessageHistory(messages=[...])}``) it compares the messages; the base-class tests that
define their own subclasses run the same calls on this one. Every test runs on SQLite and
PostgreSQL unless it needs a file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.messages.tool import invalid_tool_call as create_invalid_tool_call
from langchain_core.messages.tool import tool_call as create_tool_call
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables.base import RunnableLambda
from langchain_core.runnables.config import RunnableConfig
from langchain_core.runnables.history import RunnableWithMessageHistory
from langchain_core.runnables.utils import ConfigurableFieldSpec

from chatledger.events import EventStore, open_store
from chatledger.integrations.langchain import ChatledgerMessageHistory


@pytest.fixture
def store(store_location: str) -> Iterator[EventStore]:
    with open_store(store_location) as opened:
        yield opened


@pytest.fixture
def histories(store: EventStore) -> tuple[ChatledgerMessageHistory, ChatledgerMessageHistory]:
    """Two histories in one log, as test_sql.py's ``sql_histories`` fixture."""
    return ChatledgerMessageHistory("123", store), ChatledgerMessageHistory("456", store)


# langchain-core 1.x deprecates RunnableWithMessageHistory (for LangGraph's persistence) but
# still ships it; its tests run as they are, with that one warning allowed.
runnable_with_history = pytest.mark.filterwarnings(
    "ignore:RunnableWithMessageHistory is deprecated"
    ":langchain_core._api.deprecation.LangChainDeprecationWarning"
)


def session_factory(store: EventStore) -> Callable[..., ChatledgerMessageHistory]:
    def get_session_history(session_id: str, **kwargs: Any) -> ChatledgerMessageHistory:
        return ChatledgerMessageHistory(session_id, store)

    return get_session_history


# ----------------------------------------------------------------------------- chat_history/test_chat_history.py


def test_add_message_implementation_only(store: EventStore) -> None:
    chat_history = ChatledgerMessageHistory("sample", store)
    chat_history.add_message(HumanMessage(content="Hello"))
    assert len(chat_history.messages) == 1
    assert chat_history.messages[0] == HumanMessage(content="Hello")
    chat_history.add_message(HumanMessage(content="World"))
    assert len(chat_history.messages) == 2
    assert chat_history.messages[1] == HumanMessage(content="World")

    chat_history.add_messages([HumanMessage(content="Hello"), HumanMessage(content="World")])
    assert len(chat_history.messages) == 4
    assert chat_history.messages[2] == HumanMessage(content="Hello")
    assert chat_history.messages[3] == HumanMessage(content="World")


def test_bulk_message_implementation_only(store: EventStore) -> None:
    # Upstream runs the same calls on a subclass that only implements add_messages.
    chat_history = ChatledgerMessageHistory("bulk_only", store)
    chat_history.add_message(HumanMessage(content="Hello"))
    assert len(chat_history.messages) == 1
    assert chat_history.messages[0] == HumanMessage(content="Hello")
    chat_history.add_message(HumanMessage(content="World"))
    assert len(chat_history.messages) == 2
    assert chat_history.messages[1] == HumanMessage(content="World")

    chat_history.add_messages([HumanMessage(content="Hello"), HumanMessage(content="World")])
    assert len(chat_history.messages) == 4
    assert chat_history.messages[2] == HumanMessage(content="Hello")
    assert chat_history.messages[3] == HumanMessage(content="World")


async def test_async_interface(store: EventStore) -> None:
    chat_history = ChatledgerMessageHistory("bulk", store)
    await chat_history.aadd_messages([HumanMessage(content="Hello"), HumanMessage(content="World")])
    assert await chat_history.aget_messages() == [
        HumanMessage(content="Hello"),
        HumanMessage(content="World"),
    ]
    await chat_history.aadd_messages([HumanMessage(content="!")])
    assert await chat_history.aget_messages() == [
        HumanMessage(content="Hello"),
        HumanMessage(content="World"),
        HumanMessage(content="!"),
    ]
    await chat_history.aclear()
    assert await chat_history.aget_messages() == []


# ----------------------------------------------------------------------------- chat_history/test_file_chat_message_history.py


def test_file_add_messages(tmp_path: Path) -> None:
    history = ChatledgerMessageHistory("file", tmp_path / "test_chat_history.db")
    history.add_user_message("Hello!")
    history.add_ai_message("Hi there!")

    messages = history.messages
    assert len(messages) == 2
    assert isinstance(messages[0], HumanMessage)
    assert isinstance(messages[1], AIMessage)
    assert messages[0].content == "Hello!"
    assert messages[1].content == "Hi there!"
    history.close()


def test_file_clear_messages(tmp_path: Path) -> None:
    history = ChatledgerMessageHistory("file", tmp_path / "test_chat_history.db")
    history.add_user_message("Hello!")
    history.add_ai_message("Hi there!")
    history.clear()
    assert len(history.messages) == 0
    history.close()


def test_file_multiple_sessions(tmp_path: Path) -> None:
    path = tmp_path / "test_chat_history.db"
    history = ChatledgerMessageHistory("file", path)
    history.add_user_message("Hello, AI!")
    history.add_ai_message("Hello, how can I help you?")
    history.add_user_message("Tell me a joke.")
    history.add_ai_message("Why did the chicken cross the road? To get to the other side!")

    expected = [
        "Hello, AI!",
        "Hello, how can I help you?",
        "Tell me a joke.",
        "Why did the chicken cross the road? To get to the other side!",
    ]
    assert [m.content for m in history.messages] == expected

    second_session_chat_message_history = ChatledgerMessageHistory("file", path)
    assert [m.content for m in second_session_chat_message_history.messages] == expected
    history.close()
    second_session_chat_message_history.close()


# ----------------------------------------------------------------------------- test_chat_history.py (serialisation)


def test_history_preserves_tool_calls(store: EventStore) -> None:
    history = ChatledgerMessageHistory("tools", store)
    history.add_message(
        AIMessage(
            content="I'll help you with that.",
            tool_calls=[create_tool_call(name="get_weather", args={"city": "NYC"}, id="1")],
        )
    )
    dumped = [m.model_dump() for m in ChatledgerMessageHistory("tools", store).messages]
    assert len(dumped) == 1
    assert "tool_calls" in dumped[0]
    assert len(dumped[0]["tool_calls"]) == 1
    assert dumped[0]["tool_calls"][0]["name"] == "get_weather"
    assert dumped[0]["tool_calls"][0]["args"] == {"city": "NYC"}
    assert dumped[0]["tool_calls"][0]["id"] == "1"


def test_history_preserves_tool_calls_as_json(store: EventStore) -> None:
    history = ChatledgerMessageHistory("tools_json", store)
    history.add_message(
        AIMessage(
            content="Let me search for that.",
            tool_calls=[create_tool_call(name="search", args={"query": "langchain"}, id="abc123")],
        )
    )
    parsed = [json.loads(m.model_dump_json()) for m in history.messages]
    assert len(parsed) == 1
    assert len(parsed[0]["tool_calls"]) == 1
    assert parsed[0]["tool_calls"][0]["name"] == "search"
    assert parsed[0]["tool_calls"][0]["args"] == {"query": "langchain"}


def test_history_preserves_multiple_tool_calls(store: EventStore) -> None:
    history = ChatledgerMessageHistory("multi", store)
    history.add_message(
        AIMessage(
            content="I'll get the weather and search for restaurants.",
            tool_calls=[
                create_tool_call(name="get_weather", args={"city": "NYC"}, id="1"),
                create_tool_call(name="search_restaurants", args={"cuisine": "italian"}, id="2"),
            ],
        )
    )
    dumped = history.messages[0].model_dump()
    assert len(dumped["tool_calls"]) == 2
    assert dumped["tool_calls"][0]["name"] == "get_weather"
    assert dumped["tool_calls"][1]["name"] == "search_restaurants"


def test_history_serializes_mixed_message_types(store: EventStore) -> None:
    history = ChatledgerMessageHistory("mixed", store)
    history.add_message(SystemMessage(content="You are a helpful assistant."))
    history.add_message(HumanMessage(content="What's the weather in NYC?"))
    history.add_message(
        AIMessage(
            content="Let me check that for you.",
            tool_calls=[create_tool_call(name="get_weather", args={"city": "NYC"}, id="tool_1")],
        )
    )
    dumped = [json.loads(m.model_dump_json()) for m in history.messages]
    assert len(dumped) == 3
    assert dumped[0]["type"] == "system"
    assert dumped[1]["type"] == "human"
    assert dumped[2]["type"] == "ai"
    assert len(dumped[2]["tool_calls"]) == 1
    assert dumped[2]["tool_calls"][0]["name"] == "get_weather"
    assert dumped[2]["tool_calls"][0]["args"] == {"city": "NYC"}


def test_history_preserves_invalid_tool_calls(store: EventStore) -> None:
    history = ChatledgerMessageHistory("invalid", store)
    history.add_message(
        AIMessage(
            content="",
            tool_calls=[create_tool_call(name="valid_tool", args={"key": "value"}, id="1")],
            invalid_tool_calls=[
                create_invalid_tool_call(
                    name="invalid_tool", args="not valid json", id="2", error="parse error"
                )
            ],
        )
    )
    dumped = history.messages[0].model_dump()
    assert len(dumped["tool_calls"]) == 1
    assert len(dumped["invalid_tool_calls"]) == 1
    assert dumped["invalid_tool_calls"][0]["name"] == "invalid_tool"
    assert dumped["invalid_tool_calls"][0]["error"] == "parse error"


def test_history_empty_tool_calls(store: EventStore) -> None:
    history = ChatledgerMessageHistory("empty_tools", store)
    history.add_message(AIMessage(content="Hello! How can I help you today?"))
    dumped = history.messages[0].model_dump()
    assert dumped["tool_calls"] == []
    assert dumped["content"] == "Hello! How can I help you today?"


# ----------------------------------------------------------------------------- langchain-community test_sql.py


def test_add_messages(
    histories: tuple[ChatledgerMessageHistory, ChatledgerMessageHistory],
) -> None:
    sql_history, _other_history = histories
    sql_history.add_user_message("Hello!")
    sql_history.add_ai_message("Hi there!")

    messages = sql_history.messages
    assert len(messages) == 2
    assert isinstance(messages[0], HumanMessage)
    assert isinstance(messages[1], AIMessage)
    assert messages[0].content == "Hello!"
    assert messages[1].content == "Hi there!"


async def test_async_add_messages(
    histories: tuple[ChatledgerMessageHistory, ChatledgerMessageHistory],
) -> None:
    sql_history, _other_history = histories
    await sql_history.aadd_messages([HumanMessage(content="Hello!")])
    await sql_history.aadd_messages([AIMessage(content="Hi there!")])

    messages = await sql_history.aget_messages()
    assert len(messages) == 2
    assert isinstance(messages[0], HumanMessage)
    assert isinstance(messages[1], AIMessage)
    assert messages[0].content == "Hello!"
    assert messages[1].content == "Hi there!"


def test_multiple_sessions(
    histories: tuple[ChatledgerMessageHistory, ChatledgerMessageHistory],
) -> None:
    sql_history, other_history = histories
    sql_history.add_user_message("Hello!")
    sql_history.add_ai_message("Hi there!")
    sql_history.add_user_message("Whats cracking?")

    messages = sql_history.messages
    assert len(messages) == 3, "waat"
    assert messages[0].content == "Hello!"
    assert messages[1].content == "Hi there!"
    assert messages[2].content == "Whats cracking?"

    other_history.add_user_message("Hellox")
    assert len(other_history.messages) == 1
    messages = sql_history.messages
    assert len(messages) == 3
    assert other_history.messages[0].content == "Hellox"
    assert messages[0].content == "Hello!"
    assert messages[1].content == "Hi there!"
    assert messages[2].content == "Whats cracking?"


async def test_async_multiple_sessions(
    histories: tuple[ChatledgerMessageHistory, ChatledgerMessageHistory],
) -> None:
    sql_history, other_history = histories
    await sql_history.aadd_messages([HumanMessage(content="Hello!")])
    await sql_history.aadd_messages([AIMessage(content="Hi there!")])
    await sql_history.aadd_messages([HumanMessage(content="Whats cracking?")])

    messages = await sql_history.aget_messages()
    assert len(messages) == 3, "waat"
    assert [m.content for m in messages] == ["Hello!", "Hi there!", "Whats cracking?"]

    await other_history.aadd_messages([HumanMessage(content="Hellox")])
    messages = await sql_history.aget_messages()
    assert len(await other_history.aget_messages()) == 1
    assert len(messages) == 3
    assert (await other_history.aget_messages())[0].content == "Hellox"
    assert [m.content for m in messages] == ["Hello!", "Hi there!", "Whats cracking?"]


def test_clear_messages(
    histories: tuple[ChatledgerMessageHistory, ChatledgerMessageHistory],
) -> None:
    sql_history, other_history = histories
    sql_history.add_user_message("Hello!")
    sql_history.add_ai_message("Hi there!")
    assert len(sql_history.messages) == 2
    other_history.add_user_message("Hellox")
    assert len(other_history.messages) == 1
    assert len(sql_history.messages) == 2
    sql_history.clear()
    assert len(sql_history.messages) == 0
    assert len(other_history.messages) == 1


async def test_async_clear_messages(
    histories: tuple[ChatledgerMessageHistory, ChatledgerMessageHistory],
) -> None:
    sql_history, other_history = histories
    await sql_history.aadd_messages([HumanMessage(content="Hello!")])
    await sql_history.aadd_messages([AIMessage(content="Hi there!")])
    assert len(await sql_history.aget_messages()) == 2
    await other_history.aadd_messages([HumanMessage(content="Hellox")])
    assert len(await other_history.aget_messages()) == 1
    assert len(await sql_history.aget_messages()) == 2
    await sql_history.aclear()
    assert len(await sql_history.aget_messages()) == 0
    assert len(await other_history.aget_messages()) == 1


# ----------------------------------------------------------------------------- runnables/test_history.py


def test_interfaces(store: EventStore) -> None:
    history = ChatledgerMessageHistory("interfaces", store)
    history.add_message(SystemMessage(content="system"))
    history.add_message(HumanMessage(content="human 1"))
    history.add_message(AIMessage(content="ai"))
    assert str(history) == "System: system\nHuman: human 1\nAI: ai"


def _you_said(messages: Sequence[BaseMessage], *extra: str) -> str:
    said = [str(m.content) for m in messages if isinstance(m, HumanMessage)]
    return "you said: " + "\n".join([*said, *extra])


def _history_of(store: EventStore, session_id: str) -> list[BaseMessage]:
    return ChatledgerMessageHistory(session_id, store).messages


THREE_TURNS = [
    HumanMessage(content="hello"),
    AIMessage(content="you said: hello"),
    HumanMessage(content="good bye"),
    AIMessage(content="you said: hello\ngood bye"),
    HumanMessage(content="hi again"),
    AIMessage(content="you said: hello\ngood bye\nhi again"),
]


@runnable_with_history
def test_input_messages(store: EventStore) -> None:
    runnable: RunnableLambda[Sequence[BaseMessage], str] = RunnableLambda(
        lambda messages: _you_said(messages)
    )
    with_history = RunnableWithMessageHistory(runnable, session_factory(store))
    config: RunnableConfig = {"configurable": {"session_id": "1"}}
    output = with_history.invoke([HumanMessage(content="hello")], config)
    assert output == "you said: hello"
    output = with_history.invoke([HumanMessage(content="good bye")], config)
    assert output == "you said: hello\ngood bye"
    output = [*with_history.stream([HumanMessage(content="hi again")], config)]
    assert output == ["you said: hello\ngood bye\nhi again"]
    assert _history_of(store, "1") == THREE_TURNS


@runnable_with_history
async def test_input_messages_async(store: EventStore) -> None:
    runnable: RunnableLambda[Sequence[BaseMessage], str] = RunnableLambda(
        lambda messages: _you_said(messages)
    )
    with_history = RunnableWithMessageHistory(runnable, session_factory(store))
    config: RunnableConfig = {"configurable": {"session_id": "1_async"}}
    output = await with_history.ainvoke([HumanMessage(content="hello")], config)
    assert output == "you said: hello"
    output = await with_history.ainvoke([HumanMessage(content="good bye")], config)
    assert output == "you said: hello\ngood bye"
    output = [c async for c in with_history.astream([HumanMessage(content="hi again")], config)]
    assert output == ["you said: hello\ngood bye\nhi again"]
    assert _history_of(store, "1_async") == THREE_TURNS


def _input_dict(store: EventStore) -> RunnableWithMessageHistory:
    runnable: RunnableLambda[dict[str, Any], str] = RunnableLambda(
        lambda params: _you_said(params["messages"])
    )
    return RunnableWithMessageHistory(
        runnable,
        session_factory(store),
        input_messages_key="messages",
    )


@runnable_with_history
def test_input_dict(store: EventStore) -> None:
    with_history = _input_dict(store)
    config: RunnableConfig = {"configurable": {"session_id": "2"}}
    output = with_history.invoke({"messages": [HumanMessage(content="hello")]}, config)
    assert output == "you said: hello"
    output = with_history.invoke({"messages": [HumanMessage(content="good bye")]}, config)
    assert output == "you said: hello\ngood bye"


@runnable_with_history
async def test_input_dict_async(store: EventStore) -> None:
    with_history = _input_dict(store)
    config: RunnableConfig = {"configurable": {"session_id": "2_async"}}
    output = await with_history.ainvoke({"messages": [HumanMessage(content="hello")]}, config)
    assert output == "you said: hello"
    output = await with_history.ainvoke({"messages": [HumanMessage(content="good bye")]}, config)
    assert output == "you said: hello\ngood bye"


def _with_history_key(store: EventStore, body: Callable[[dict[str, Any]], Any], **keys: str) -> Any:
    return RunnableWithMessageHistory(
        RunnableLambda(body),
        session_factory(store),
        input_messages_key="input",
        history_messages_key="history",
        **keys,  # type: ignore[arg-type]
    )


def _said(params: dict[str, Any]) -> str:
    return _you_said(params["history"], params["input"])


@runnable_with_history
def test_input_dict_with_history_key(store: EventStore) -> None:
    with_history = _with_history_key(store, _said)
    config: RunnableConfig = {"configurable": {"session_id": "3"}}
    assert with_history.invoke({"input": "hello"}, config) == "you said: hello"
    assert with_history.invoke({"input": "good bye"}, config) == "you said: hello\ngood bye"


@runnable_with_history
async def test_input_dict_with_history_key_async(store: EventStore) -> None:
    with_history = _with_history_key(store, _said)
    config: RunnableConfig = {"configurable": {"session_id": "3_async"}}
    assert await with_history.ainvoke({"input": "hello"}, config) == "you said: hello"
    output = await with_history.ainvoke({"input": "good bye"}, config)
    assert output == "you said: hello\ngood bye"


@runnable_with_history
def test_output_message(store: EventStore) -> None:
    with_history = _with_history_key(store, lambda params: AIMessage(content=_said(params)))
    config: RunnableConfig = {"configurable": {"session_id": "4"}}
    output = with_history.invoke({"input": "hello"}, config)
    assert output == AIMessage(content="you said: hello")
    output = with_history.invoke({"input": "good bye"}, config)
    assert output == AIMessage(content="you said: hello\ngood bye")
    # What the log holds: each turn's input and output, in order.
    assert _history_of(store, "4") == THREE_TURNS[:4]


@runnable_with_history
async def test_output_message_async(store: EventStore) -> None:
    with_history = _with_history_key(store, lambda params: AIMessage(content=_said(params)))
    config: RunnableConfig = {"configurable": {"session_id": "4_async"}}
    output = await with_history.ainvoke({"input": "hello"}, config)
    assert output == AIMessage(content="you said: hello")
    output = await with_history.ainvoke({"input": "good bye"}, config)
    assert output == AIMessage(content="you said: hello\ngood bye")


class LengthChatModel(BaseChatModel):
    """A fake chat model that returns the length of the messages passed in."""

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(
            generations=[ChatGeneration(message=AIMessage(content=str(len(messages))))]
        )

    @property
    def _llm_type(self) -> str:
        return "length-fake-chat-model"


@runnable_with_history
def test_input_messages_output_message(store: EventStore) -> None:
    with_history = RunnableWithMessageHistory(LengthChatModel(), session_factory(store))
    config: RunnableConfig = {"configurable": {"session_id": "5"}}
    output = with_history.invoke([HumanMessage(content="hi")], config)
    assert output.content == "1"
    output = with_history.invoke([HumanMessage(content="hi")], config)
    assert output.content == "3"


@runnable_with_history
async def test_input_messages_output_message_async(store: EventStore) -> None:
    with_history = RunnableWithMessageHistory(LengthChatModel(), session_factory(store))
    config: RunnableConfig = {"configurable": {"session_id": "5_async"}}
    output = await with_history.ainvoke([HumanMessage(content="hi")], config)
    assert output.content == "1"
    output = await with_history.ainvoke([HumanMessage(content="hi")], config)
    assert output.content == "3"


@runnable_with_history
def test_output_messages(store: EventStore) -> None:
    with_history = _with_history_key(store, lambda params: [AIMessage(content=_said(params))])
    config: RunnableConfig = {"configurable": {"session_id": "6"}}
    output = with_history.invoke({"input": "hello"}, config)
    assert output == [AIMessage(content="you said: hello")]
    output = with_history.invoke({"input": "good bye"}, config)
    assert output == [AIMessage(content="you said: hello\ngood bye")]


@runnable_with_history
async def test_output_messages_async(store: EventStore) -> None:
    with_history = _with_history_key(store, lambda params: [AIMessage(content=_said(params))])
    config: RunnableConfig = {"configurable": {"session_id": "6_async"}}
    output = await with_history.ainvoke({"input": "hello"}, config)
    assert output == [AIMessage(content="you said: hello")]
    output = await with_history.ainvoke({"input": "good bye"}, config)
    assert output == [AIMessage(content="you said: hello\ngood bye")]


def _output_dict(params: dict[str, Any]) -> dict[str, Any]:
    return {"output": [AIMessage(content=_said(params))]}


@runnable_with_history
def test_output_dict(store: EventStore) -> None:
    with_history = _with_history_key(store, _output_dict, output_messages_key="output")
    config: RunnableConfig = {"configurable": {"session_id": "7"}}
    output = with_history.invoke({"input": "hello"}, config)
    assert output == {"output": [AIMessage(content="you said: hello")]}
    output = with_history.invoke({"input": "good bye"}, config)
    assert output == {"output": [AIMessage(content="you said: hello\ngood bye")]}


@runnable_with_history
async def test_output_dict_async(store: EventStore) -> None:
    with_history = _with_history_key(store, _output_dict, output_messages_key="output")
    config: RunnableConfig = {"configurable": {"session_id": "7_async"}}
    output = await with_history.ainvoke({"input": "hello"}, config)
    assert output == {"output": [AIMessage(content="you said: hello")]}
    output = await with_history.ainvoke({"input": "good bye"}, config)
    assert output == {"output": [AIMessage(content="you said: hello\ngood bye")]}


def _custom_config_specs(
    store: EventStore,
) -> tuple[RunnableWithMessageHistory, Callable[[], dict[tuple[str, str], list[BaseMessage]]]]:
    def _fake_llm(params: dict[str, Any]) -> list[BaseMessage]:
        return [AIMessage(content=_you_said(params["messages"]))]

    opened: dict[tuple[str, str], ChatledgerMessageHistory] = {}

    def get_session_history(user_id: str, conversation_id: str) -> ChatledgerMessageHistory:
        opened[(user_id, conversation_id)] = ChatledgerMessageHistory(
            f"{user_id}/{conversation_id}", store
        )
        return opened[(user_id, conversation_id)]

    with_message_history = RunnableWithMessageHistory(
        RunnableLambda(_fake_llm),
        get_session_history=get_session_history,
        input_messages_key="messages",
        history_messages_key="history",
        history_factory_config=[
            ConfigurableFieldSpec(
                id="user_id",
                annotation=str,
                name="User ID",
                description="Unique identifier for the user.",
                default="",
                is_shared=True,
            ),
            ConfigurableFieldSpec(
                id="conversation_id",
                annotation=str,
                name="Conversation ID",
                description="Unique identifier for the conversation.",
                default=None,
                is_shared=True,
            ),
        ],
    )

    def stored() -> dict[tuple[str, str], list[BaseMessage]]:
        # Adapted: upstream compares its in-memory histories; here, what the log holds.
        return {key: history.messages for key, history in opened.items()}

    return with_message_history, stored


@runnable_with_history
def test_using_custom_config_specs(store: EventStore) -> None:
    with_message_history, stored = _custom_config_specs(store)

    def send(text: str, user: str) -> Any:
        return with_message_history.invoke(
            {"messages": [HumanMessage(content=text)]},
            {"configurable": {"user_id": user, "conversation_id": "1"}},
        )

    assert send("hello", "user1") == [AIMessage(content="you said: hello")]
    assert stored() == {
        ("user1", "1"): [HumanMessage(content="hello"), AIMessage(content="you said: hello")]
    }
    assert send("goodbye", "user1") == [AIMessage(content="you said: goodbye")]
    user1 = [
        HumanMessage(content="hello"),
        AIMessage(content="you said: hello"),
        HumanMessage(content="goodbye"),
        AIMessage(content="you said: goodbye"),
    ]
    assert stored() == {("user1", "1"): user1}
    assert send("meow", "user2") == [AIMessage(content="you said: meow")]
    assert stored() == {
        ("user1", "1"): user1,
        ("user2", "1"): [HumanMessage(content="meow"), AIMessage(content="you said: meow")],
    }


@runnable_with_history
async def test_using_custom_config_specs_async(store: EventStore) -> None:
    with_message_history, stored = _custom_config_specs(store)

    async def send(text: str, user: str) -> Any:
        return await with_message_history.ainvoke(
            {"messages": [HumanMessage(content=text)]},
            {"configurable": {"user_id": user, "conversation_id": "1_async"}},
        )

    assert await send("hello", "user1_async") == [AIMessage(content="you said: hello")]
    assert stored() == {
        ("user1_async", "1_async"): [
            HumanMessage(content="hello"),
            AIMessage(content="you said: hello"),
        ]
    }
    assert await send("goodbye", "user1_async") == [AIMessage(content="you said: goodbye")]
    user1 = [
        HumanMessage(content="hello"),
        AIMessage(content="you said: hello"),
        HumanMessage(content="goodbye"),
        AIMessage(content="you said: goodbye"),
    ]
    assert stored() == {("user1_async", "1_async"): user1}
    assert await send("meow", "user2_async") == [AIMessage(content="you said: meow")]
    assert stored() == {
        ("user1_async", "1_async"): user1,
        ("user2_async", "1_async"): [
            HumanMessage(content="meow"),
            AIMessage(content="you said: meow"),
        ],
    }


@runnable_with_history
def test_ignore_session_id(store: EventStore) -> None:
    def _fake_llm(messages: list[BaseMessage]) -> list[BaseMessage]:
        return [AIMessage(content=_you_said(messages))]

    history = ChatledgerMessageHistory("no-session-id", store)
    with_message_history = RunnableWithMessageHistory(
        RunnableLambda(_fake_llm),
        lambda: history,
    )
    _ = with_message_history.invoke("hello")
    _ = with_message_history.invoke("hello again")
    assert len(history.messages) == 4
