"""Each conversation store behind the same few operations, one class per library.

Every class uses the library's own public calls at its own defaults (durability included):

- ``append_message(turn)``: the library's natural "add one message" call, one user message,
  one transaction;
- ``write_turn(turn)``: what a chat application writes per turn (user message and reply);
- ``add_turns(first, count)``: a fast way to build a long conversation (bulk calls where the
  library has them; a build is never timed);
- ``read_fresh()``: open the file with a new handle and get the messages (what a new process
  or request does to resume); ``read_warm()``: get them through the open handle;
- ``thread_writer()`` / ``async_writer()``: for many writers in one process, a function that
  appends one message (one transaction) to a conversation of its own, through the handle the
  library shares between threads or tasks (one per process where it has one, else its own).

A library that is not installed fails in its constructor; the runner records the error.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import uuid
import warnings
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

from . import corpus
from .measure import sqlite_durability

__all__ = ["PEERS", "ChatledgerStore", "Library", "turn_events"]

HOST = "bench-host/0"


class Library:
    """One store under test, writing one SQLite file."""

    key: ClassVar[str] = ""
    #: The distribution whose version is reported.
    distribution: ClassVar[str] = ""
    #: What is measured, in the library's words.
    api: ClassVar[str] = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        #: Handles opened by thread_writer / async_writer, closed with the library.
        self.writer_handles: list[Any] = []

    @classmethod
    def version(cls) -> str:
        return metadata.version(cls.distribution)

    def durability(self) -> dict[str, str]:
        raise NotImplementedError

    def new_conversation(self) -> None:
        raise NotImplementedError

    def append_message(self, turn: int) -> None:
        raise NotImplementedError

    def append_timed(self, turns: range) -> list[float]:
        """Append one message per turn; the seconds each call took."""
        import time

        samples = []
        for turn in turns:
            started = time.perf_counter()
            self.append_message(turn)
            samples.append(time.perf_counter() - started)
        return samples

    def write_turn(self, turn: int) -> None:
        raise NotImplementedError

    def thread_writer(self) -> Callable[[int], None]:
        """Called in a writer thread (untimed): start a conversation of its own and return
        a function that appends message ``turn`` to it, one transaction per call."""
        raise NotImplementedError

    async def async_writer(self) -> Callable[[int], Awaitable[None]]:
        """As :meth:`thread_writer`, for a task on an event loop. Libraries without an async
        API run their sync call in a worker thread, as an async application must."""
        append = await asyncio.to_thread(self.thread_writer)

        async def write(turn: int) -> None:
            await asyncio.to_thread(append, turn)

        return write

    def add_turns(self, first: int, count: int) -> None:
        for turn in range(first, first + count):
            self.write_turn(turn)

    def read_fresh(self) -> int:
        raise NotImplementedError

    def read_warm(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- chatledger


def turn_events(first: int, count: int) -> list[Any]:
    """The events of ``count`` complete turns from turn ``first`` (0-based), as a send
    writes them: user_message_added, model_call_started, model_responded. The request
    digests are placeholders: no projection reads them."""
    from chatledger.events import ModelCallStarted, ModelResponded, NewEvent, UserMessageAdded

    events = []
    for current in range(first, first + count):
        number = current + 1
        events.append(
            NewEvent(
                data=UserMessageAdded(turn=number, content=corpus.user_content(current)),
                metadata={"actor": "bench", "host": HOST, "pid": os.getpid()},
            )
        )
        events.append(
            NewEvent(
                data=ModelCallStarted(
                    turn=number,
                    model=corpus.MODEL,
                    contents_count=2 * current + 1,
                    contents_sha256=f"{number:064x}",
                    transport="gemini",
                ),
                metadata={"actor": "bench"},
            )
        )
        events.append(
            NewEvent(
                data=ModelResponded(
                    turn=number, response=corpus.model_response(current), latency_ms=850.0
                ),
                metadata={"actor": "bench"},
            )
        )
    return events


class ChatledgerStore(Library):
    """chatledger's SQLiteStore and Client (this checkout)."""

    key = "chatledger"
    distribution = "chatledger"
    api = "SQLiteStore.append / Client.chats.get().get_history()"

    def __init__(self, path: Path, *, synchronous: str | None = None, event: str = "user") -> None:
        super().__init__(path)
        from chatledger.events import SQLiteStore

        options = {"synchronous": synchronous} if synchronous else {}
        self.store = SQLiteStore(str(path), **options)
        self.event = event
        self.conversation_id = ""
        self.head = 0
        self._chat: Any = None
        self._transport: Any = None
        self._client: Any = None

    def durability(self) -> dict[str, str]:
        return sqlite_durability(self.store._conn)

    def new_conversation(self) -> None:
        from chatledger.events import ConversationStarted, NewEvent

        self.conversation_id = str(uuid.uuid4())
        started = NewEvent(
            data=ConversationStarted(model=corpus.MODEL),
            metadata={"actor": "bench", "library": "chatledger/bench"},
        )
        self.store.append(self.conversation_id, [started], expected_version=0)
        self.head = 1
        self._chat = None

    def _new_event(self, turn: int) -> Any:
        from chatledger.events import NewEvent, TurnRewound, UserMessageAdded

        if self.event == "rewind":
            return NewEvent(data=TurnRewound(turn=turn + 1), metadata={"actor": "bench"})
        return NewEvent(
            data=UserMessageAdded(turn=turn + 1, content=corpus.user_content(turn)),
            metadata={"actor": "bench", "host": HOST, "pid": os.getpid()},
        )

    def append_message(self, turn: int) -> None:
        self.store.append(self.conversation_id, [self._new_event(turn)], expected_version=self.head)
        self.head += 1

    def thread_writer(self) -> Callable[[int], None]:
        # One store per process, shared by every thread (as one Client is).
        from chatledger.events import ConversationStarted, NewEvent

        store, conversation_id = self.store, str(uuid.uuid4())
        started = NewEvent(
            data=ConversationStarted(model=corpus.MODEL), metadata={"actor": "bench"}
        )
        store.append(conversation_id, [started], expected_version=0)
        head = [1]

        def append(turn: int) -> None:
            store.append(conversation_id, [self._new_event(turn)], expected_version=head[0])
            head[0] += 1

        return append

    # A chat over the same store, answered by a ScriptedTransport with the canned replies.
    def chat(self) -> Any:
        import chatledger
        from chatledger.client.transports.scripted import ScriptedTransport

        if self._client is None:
            self._transport = ScriptedTransport()
            self._client = chatledger.Client(
                store=self.store, transport=self._transport, actor="bench"
            )
        if self._chat is None:
            if self.conversation_id:
                self._chat = self._client.chats.get(self.conversation_id)
            else:
                self._chat = self._client.chats.create(model=corpus.MODEL)
                self.conversation_id = self._chat.id
        return self._chat

    def write_turn(self, turn: int) -> None:
        chat = self.chat()
        self._transport.enqueue(corpus.model_response(turn))
        chat.send_message(corpus.user_text(turn))
        self.head = chat.version

    def append_turns_direct(self, first: int, count: int, *, batch: int = 300) -> None:
        """Append ``count`` complete turns straight to the store, as a send writes them
        (see :func:`turn_events`), ``batch`` turns per append."""
        if not self.conversation_id:
            self.new_conversation()
        turn = first
        end = first + count
        while turn < end:
            events = turn_events(turn, min(end, turn + batch) - turn)
            self.store.append(self.conversation_id, events, expected_version=self.head)
            self.head += len(events)
            turn += batch
        self._chat = None

    def add_turns(self, first: int, count: int) -> None:
        for turn in range(first, first + count):
            self.write_turn(turn)

    def read_fresh(self) -> int:
        import chatledger

        client = chatledger.Client(store=str(self.path))
        try:
            return len(client.chats.get(self.conversation_id).get_history())
        finally:
            client.close()

    def read_warm(self) -> int:
        return len(self.store.read(self.conversation_id))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self.store.close()


# --------------------------------------------------------------------------- eventsourcing


class EventsourcingRecorder(Library):
    """eventsourcing's SQLite application recorder (what an Application uses with
    PERSISTENCE_MODULE=eventsourcing.sqlite): one stored event per message, JSON state."""

    key = "eventsourcing"
    distribution = "eventsourcing"
    api = "SQLiteApplicationRecorder.insert_events / select_events"
    topic = "chat:MessageAdded"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

        self._recorder_class = SQLiteApplicationRecorder
        self._datastore_class = SQLiteDatastore
        self.datastore = SQLiteDatastore(str(path))
        self.recorder = SQLiteApplicationRecorder(self.datastore)
        self.recorder.create_table()
        self.originator_id = uuid.uuid4()
        self.head = 0

    def durability(self) -> dict[str, str]:
        connection = self.datastore.pool.get_connection(is_writer=False)
        try:
            return sqlite_durability(connection._sqlite_conn)
        finally:
            self.datastore.pool.put_connection(connection)

    def new_conversation(self) -> None:
        self.originator_id = uuid.uuid4()
        self.head = 0

    def _event(self, originator_id: uuid.UUID, version: int, role: str, text: str) -> Any:
        from eventsourcing.persistence import StoredEvent

        state = json.dumps({"role": role, "text": text, "timestamp": "2026-01-01T00:00:00+00:00"})
        return StoredEvent(
            originator_id=originator_id,
            originator_version=version,
            topic=self.topic,
            state=state.encode(),
        )

    def _stored(self, role: str, text: str) -> Any:
        self.head += 1
        return self._event(self.originator_id, self.head, role, text)

    def append_message(self, turn: int) -> None:
        self.recorder.insert_events([self._stored("user", corpus.user_text(turn))])

    def thread_writer(self) -> Callable[[int], None]:
        # One recorder per application, shared by its threads (it pools connections).
        recorder, originator_id, head = self.recorder, uuid.uuid4(), [0]

        def append(turn: int) -> None:
            head[0] += 1
            recorder.insert_events(
                [self._event(originator_id, head[0], "user", corpus.user_text(turn))]
            )

        return append

    def write_turn(self, turn: int) -> None:
        self.recorder.insert_events(
            [
                self._stored("user", corpus.user_text(turn)),
                self._stored("model", corpus.model_text(turn)),
            ]
        )

    def add_turns(self, first: int, count: int) -> None:
        for start in range(first, first + count, 2000):
            events = []
            for turn in range(start, min(first + count, start + 2000)):
                events.append(self._stored("user", corpus.user_text(turn)))
                events.append(self._stored("model", corpus.model_text(turn)))
            self.recorder.insert_events(events)

    def _messages(self, recorder: Any) -> int:
        return len(
            [json.loads(event.state) for event in recorder.select_events(self.originator_id)]
        )

    def read_fresh(self) -> int:
        datastore = self._datastore_class(str(self.path))
        try:
            return self._messages(self._recorder_class(datastore))
        finally:
            datastore.close()

    def read_warm(self) -> int:
        return self._messages(self.recorder)

    def close(self) -> None:
        self.datastore.close()


# --------------------------------------------------------------------------- openai-agents


class AgentsSQLiteSession(Library):
    """The OpenAI Agents SDK's SQLiteSession (async API; items as the Runner stores them)."""

    key = "openai-agents"
    distribution = "openai-agents"
    api = "SQLiteSession.add_items / get_items"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        from agents import SQLiteSession

        self._session_class = SQLiteSession
        self.loop = asyncio.new_event_loop()
        self.session: Any = None
        self.new_conversation()

    def durability(self) -> dict[str, str]:
        session = self.session

        async def read() -> dict[str, str]:
            return await asyncio.to_thread(lambda: sqlite_durability(session._get_connection()))

        return self.loop.run_until_complete(read())

    def new_conversation(self) -> None:
        if self.session is not None:
            self.session.close()
        self.session = self._session_class(str(uuid.uuid4()), str(self.path))

    @staticmethod
    def _user(turn: int) -> dict[str, Any]:
        return {"role": "user", "content": corpus.user_text(turn)}

    @staticmethod
    def _assistant(turn: int) -> dict[str, Any]:
        return {
            "id": f"msg_{turn:024x}",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [
                {
                    "type": "output_text",
                    "text": corpus.model_text(turn),
                    "annotations": [],
                    "logprobs": [],
                }
            ],
        }

    def append_message(self, turn: int) -> None:
        self.loop.run_until_complete(self.session.add_items([self._user(turn)]))

    def append_timed(self, turns: range) -> list[float]:
        import time

        session = self.session

        async def run() -> list[float]:
            samples = []
            for turn in turns:
                item = self._user(turn)
                started = time.perf_counter()
                await session.add_items([item])
                samples.append(time.perf_counter() - started)
            return samples

        return self.loop.run_until_complete(run())

    def write_turn(self, turn: int) -> None:
        self.loop.run_until_complete(
            self.session.add_items([self._user(turn), self._assistant(turn)])
        )

    def thread_writer(self) -> Callable[[int], None]:
        # A session per conversation; a sync caller drives it with an event loop of its own.
        session = self._session_class(str(uuid.uuid4()), str(self.path))
        loop = asyncio.new_event_loop()
        self.writer_handles += [session, loop]

        def append(turn: int) -> None:
            loop.run_until_complete(session.add_items([self._user(turn)]))

        return append

    async def async_writer(self) -> Callable[[int], Awaitable[None]]:
        session = self._session_class(str(uuid.uuid4()), str(self.path))
        self.writer_handles.append(session)

        async def write(turn: int) -> None:
            await session.add_items([self._user(turn)])

        return write

    def add_turns(self, first: int, count: int) -> None:
        for start in range(first, first + count, 2000):
            items = []
            for turn in range(start, min(first + count, start + 2000)):
                items += [self._user(turn), self._assistant(turn)]
            self.loop.run_until_complete(self.session.add_items(items))

    def read_fresh(self) -> int:
        session = self._session_class(self.session.session_id, str(self.path))
        try:
            return len(self.loop.run_until_complete(session.get_items()))
        finally:
            session.close()

    def read_warm(self) -> int:
        return len(self.loop.run_until_complete(self.session.get_items()))

    def close(self) -> None:
        for handle in self.writer_handles:
            handle.close()
        self.session.close()
        self.loop.close()


# --------------------------------------------------------------------------- llm


class LLMLogStore(Library):
    """Simon Willison's ``llm``: its SQLite log (``LogStore``, the content-addressed
    threads/messages/parts tables that llm 0.36 writes; the older conversations/responses
    tables are no longer written). A chat turn is logged with ``Response.log_to_db`` of
    a response from a fake in-process model; single messages with ``LogStore.append``."""

    key = "llm"
    distribution = "llm"
    api = "LogStore.append / Response.log_to_db / LogStore.thread_messages"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        import llm
        import sqlite_utils
        from llm.logs import LogStore
        from llm.parts import Message, TextPart

        class CannedModel(llm.Model):
            """Answers each prompt with the corpus reply of the turn in its first words."""

            model_id = corpus.MODEL
            can_stream = False

            def execute(self, prompt: Any, stream: Any, response: Any, conversation: Any) -> Any:
                turn = int(prompt.prompt.split("]", 1)[0].lstrip("["))
                yield corpus.model_text(turn)

        self._database = sqlite_utils.Database
        self._log_store = LogStore
        self._message = Message
        self._text = TextPart
        self.db = sqlite_utils.Database(str(path))
        self.store = LogStore(self.db)
        self.model = CannedModel()
        self.conversation: Any = None
        self.thread_id = ""
        self.new_conversation()

    def durability(self) -> dict[str, str]:
        return sqlite_durability(self.db.conn)

    def new_conversation(self) -> None:
        self.conversation = self.model.conversation()
        self.thread_id = self.store.create_thread()

    def _messages(self, turn: int, roles: tuple[str, ...]) -> list[Any]:
        texts = {"user": corpus.user_text(turn), "assistant": corpus.model_text(turn)}
        return [self._message(role=role, parts=[self._text(text=texts[role])]) for role in roles]

    def append_message(self, turn: int) -> None:
        self.store.append(self.thread_id, self._messages(turn, ("user",)))

    def thread_writer(self) -> Callable[[int], None]:
        # A connection per writer (sqlite-utils' Database is one connection), usable from
        # any thread; sqlite3's defaults, as Database(path) opens it.
        db = self._database(sqlite3.connect(str(self.path), check_same_thread=False))
        self.writer_handles.append(db)
        store = self._log_store(db)
        thread_id = store.create_thread()

        def append(turn: int) -> None:
            store.append(thread_id, self._messages(turn, ("user",)))

        return append

    def write_turn(self, turn: int) -> None:
        response = self.conversation.prompt(corpus.user_text(turn))
        response.text()
        response.log_to_db(self.db)
        self.thread_id = self.conversation.id

    def add_turns(self, first: int, count: int) -> None:
        # A build connection without fsync (the file's format is the same): llm commits
        # every message on its own, which would make long builds take minutes.
        db = self._database(str(self.path))
        db.execute("PRAGMA synchronous = OFF")
        store = self._log_store(db)
        for start in range(first, first + count, 500):
            messages = []
            for turn in range(start, min(first + count, start + 500)):
                messages += self._messages(turn, ("user", "assistant"))
            store.append(self.thread_id, messages)
        db.close()

    def read_fresh(self) -> int:
        db = self._database(str(self.path))
        try:
            return len(self._log_store(db).thread_messages(self.thread_id))
        finally:
            db.close()

    def read_warm(self) -> int:
        return len(self.store.thread_messages(self.thread_id))

    def close(self) -> None:
        for db in self.writer_handles:
            db.close()
        self.db.close()


# --------------------------------------------------------------------------- LangChain


def _langchain_messages(turn: int, *, reply: bool = True) -> list[Any]:
    from langchain_core.messages import AIMessage, HumanMessage

    messages: list[Any] = [HumanMessage(content=corpus.user_text(turn))]
    if reply:
        messages.append(
            AIMessage(
                content=corpus.model_text(turn),
                id=f"run-{turn:08d}",
                response_metadata={"finish_reason": "STOP", "model_name": corpus.MODEL},
                usage_metadata={
                    "input_tokens": 20 + turn * 375,
                    "output_tokens": 300,
                    "total_tokens": 320 + turn * 375,
                },
            )
        )
    return messages


class LangChainSQLHistory(Library):
    """langchain-community's SQLChatMessageHistory on a SQLite URL (SQLAlchemy)."""

    key = "langchain"
    distribution = "langchain-community"
    api = "SQLChatMessageHistory.add_message / .messages"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from langchain_community.chat_message_histories import SQLChatMessageHistory
        self._history_class = SQLChatMessageHistory
        self.url = f"sqlite:///{path}"
        self.history: Any = None
        self.new_conversation()

    def durability(self) -> dict[str, str]:
        with self.history.engine.connect() as connection:
            return sqlite_durability(connection.connection.driver_connection)

    def new_conversation(self) -> None:
        if self.history is not None:
            self.history.engine.dispose()
        self.history = self._history_class(session_id=str(uuid.uuid4()), connection=self.url)

    def append_message(self, turn: int) -> None:
        self.history.add_message(_langchain_messages(turn, reply=False)[0])

    def thread_writer(self) -> Callable[[int], None]:
        # A history object per session, as the library is used.
        history = self._history_class(session_id=str(uuid.uuid4()), connection=self.url)
        self.writer_handles.append(history)

        def append(turn: int) -> None:
            history.add_message(_langchain_messages(turn, reply=False)[0])

        return append

    def write_turn(self, turn: int) -> None:
        self.history.add_messages(_langchain_messages(turn))

    def add_turns(self, first: int, count: int) -> None:
        for start in range(first, first + count, 2000):
            messages = []
            for turn in range(start, min(first + count, start + 2000)):
                messages += _langchain_messages(turn)
            self.history.add_messages(messages)

    def read_fresh(self) -> int:
        history = self._history_class(session_id=self.history.session_id, connection=self.url)
        try:
            return len(history.messages)
        finally:
            history.engine.dispose()

    def read_warm(self) -> int:
        return len(self.history.messages)

    def close(self) -> None:
        for history in self.writer_handles:
            history.engine.dispose()
        self.history.engine.dispose()


# --------------------------------------------------------------------------- LangGraph


class LangGraphSqliteSaver(Library):
    """LangGraph's SqliteSaver checkpointer under a one-node chat graph (MessagesState).
    A turn is ``graph.invoke`` with the user message (the node answers); one message is
    ``graph.update_state``; reading is ``graph.get_state(...).values["messages"]``."""

    key = "langgraph"
    distribution = "langgraph-checkpoint-sqlite"
    api = "graph.update_state / invoke / get_state (SqliteSaver)"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        from langgraph.checkpoint.sqlite import SqliteSaver
        from langgraph.graph import END, START, MessagesState, StateGraph

        def model(state: MessagesState) -> dict[str, Any]:
            turn = len(state["messages"]) // 2
            return {"messages": _langchain_messages(turn)[1:]}

        builder = StateGraph(MessagesState)
        builder.add_node("model", model)
        builder.add_edge(START, "model")
        builder.add_edge("model", END)
        self._builder = builder
        self._saver_class = SqliteSaver
        self.conn = sqlite3.connect(str(path), check_same_thread=False)
        self.saver = SqliteSaver(self.conn)
        self.saver.setup()
        self.graph = builder.compile(checkpointer=self.saver)
        self.config: dict[str, Any] = {}
        self.new_conversation()

    @classmethod
    def version(cls) -> str:
        return f"{metadata.version('langgraph')} (checkpoint-sqlite {metadata.version(cls.distribution)})"

    def durability(self) -> dict[str, str]:
        return sqlite_durability(self.conn)

    def new_conversation(self) -> None:
        self.config = {"configurable": {"thread_id": str(uuid.uuid4())}}

    def append_message(self, turn: int) -> None:
        self.graph.update_state(self.config, {"messages": _langchain_messages(turn, reply=False)})

    def thread_writer(self) -> Callable[[int], None]:
        # One compiled graph and checkpointer shared by every thread (it holds a lock).
        graph, config = self.graph, {"configurable": {"thread_id": str(uuid.uuid4())}}

        def append(turn: int) -> None:
            graph.update_state(config, {"messages": _langchain_messages(turn, reply=False)})

        return append

    def write_turn(self, turn: int) -> None:
        self.graph.invoke({"messages": _langchain_messages(turn, reply=False)}, self.config)

    def add_turns(self, first: int, count: int) -> None:
        messages = []
        for turn in range(first, first + count):
            messages += _langchain_messages(turn)
        self.graph.update_state(self.config, {"messages": messages})

    def read_fresh(self) -> int:
        conn = sqlite3.connect(str(self.path), check_same_thread=False)
        try:
            graph = self._builder.compile(checkpointer=self._saver_class(conn))
            return len(graph.get_state(self.config).values["messages"])
        finally:
            conn.close()

    def read_warm(self) -> int:
        return len(self.graph.get_state(self.config).values["messages"])

    def close(self) -> None:
        self.conn.close()


#: The peers, in table order.
PEERS: list[type[Library]] = [
    EventsourcingRecorder,
    AgentsSQLiteSession,
    LLMLogStore,
    LangChainSQLHistory,
    LangGraphSqliteSaver,
]
