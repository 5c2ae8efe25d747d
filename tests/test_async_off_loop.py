"""The async client never runs store work on the event loop's thread (docs/chat-api.md,
docs/performance.md): ``client.aio.chats.create`` / ``get`` called from a running loop
record or fold in a worker thread, and every awaited call waits for that first.

Real parts: a SQLite file, the loopback Gemini server (HTTP), the real transport.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import chatledger
from chatledger import NotFoundError, SQLiteStore, StoreError, acting_as
from tests.support.gemini_server import GeminiServer, text_response

API_KEY = "test-key-off-loop"
MODEL = "gemini-2.5-flash"

#: The store's public methods a chat may call (wrapped to record their thread).
STORE_METHODS = (
    "append",
    "read",
    "read_all",
    "load_snapshot",
    "save_snapshot",
    "stream_info",
    "conversations",
    "verify",
)


class ThreadLog:
    """Records, per store method, the threads it was called on."""

    def __init__(self, store: SQLiteStore) -> None:
        self.calls: list[tuple[str, int]] = []
        for name in STORE_METHODS:
            setattr(store, name, self._wrap(name, getattr(store, name)))

    def _wrap(self, name: str, method: Any) -> Any:
        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, threading.get_ident()))
            return method(*args, **kwargs)

        return recorded

    def on(self, thread: int) -> list[str]:
        return [name for name, ident in self.calls if ident == thread]


@pytest.fixture
def store(db_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(db_path)
    yield store
    store.close()


def make_client(server: GeminiServer, store: Any) -> chatledger.Client:
    return chatledger.Client(
        api_key=API_KEY,
        http_options={"base_url": server.base_url, "api_version": "v1beta"},
        store=store,
        actor="tester",
    )


def test_no_store_call_runs_on_the_loop(gemini_server: GeminiServer, store: SQLiteStore) -> None:
    log = ThreadLog(store)
    client = make_client(gemini_server, store)
    gemini_server.reply_echo()
    gemini_server.reply_sse([text_response("Hel", finish_reason=None), text_response("lo")])
    gemini_server.reply_echo()

    async def main() -> tuple[int, str, list[str | None]]:
        loop_thread = threading.get_ident()
        chat = client.aio.chats.create(model=MODEL)
        first = await chat.send_message("one")
        assert first.text == "echo: one"
        texts = [chunk.text async for chunk in await chat.send_message_stream("two")]
        assert texts == ["Hel", "lo"]
        again = client.aio.chats.get(chat.id)
        reply = await again.send_message("three")
        assert reply.text == "echo: three"
        listed = await client.aio.chats.list()
        tree = await client.aio.chats.tree(chat.id)
        fork = await again.fork(turn=1)
        assert tree.summary.conversation_id == chat.id
        assert [node.summary.conversation_id for node in tree.children] == []
        assert len(await fork.events()) == 1
        assert (await again.verify()).ok
        await again.refresh()
        history = [content.parts[0].text for content in again.get_history() if content.parts]
        await client.aio.aclose()
        assert [summary.conversation_id for summary in listed] == [chat.id]
        return loop_thread, chat.id, history

    loop_thread, conversation_id, history = asyncio.run(main())
    assert history == ["one", "echo: one", "two", "Hello", "three", "echo: three"]
    # Every kind of store call happened, and none on the loop's thread.
    assert {"append", "read", "conversations", "verify"} <= {name for name, _ in log.calls}
    assert log.on(loop_thread) == []
    with SQLiteStore(store.path) as reopened:
        assert reopened.verify().ok
        assert [event.type for event in reopened.read(conversation_id)][:2] == [
            "conversation_started",
            "user_message_added",
        ]


def test_create_records_in_the_callers_context(
    gemini_server: GeminiServer, store: SQLiteStore
) -> None:
    """``acting_as`` around ``create`` names the actor of the event recorded in a thread."""
    client = make_client(gemini_server, store)

    async def main() -> str:
        with acting_as("alice"):
            chat = client.aio.chats.create(model=MODEL)
        await chat.refresh()
        await client.aio.aclose()
        return chat.id

    conversation_id = asyncio.run(main())
    (started,) = store.read(conversation_id)
    assert started.metadata["actor"] == "alice"


def test_a_failed_start_is_raised_by_the_first_awaited_call(
    gemini_server: GeminiServer, db_path: Path
) -> None:
    store = SQLiteStore(db_path)
    client = make_client(gemini_server, store)
    store.close()  # every append now fails

    async def main() -> chatledger.AsyncChat:
        chat = client.aio.chats.create(model=MODEL)  # returns at once, nothing raised yet
        with pytest.raises(StoreError, match="is closed"):
            await chat.send_message("hello")
        with pytest.raises(StoreError, match="is closed"):  # and again, not a stale chat
            await chat.refresh()
        await client.aio.aclose()
        return chat

    chat = asyncio.run(main())
    with pytest.raises(StoreError, match="is closed"):
        _ = chat.model
    assert gemini_server.requests == []  # the model was never called
    with SQLiteStore(db_path) as reopened:
        assert reopened.conversations() == []


def test_an_unknown_id_is_raised_by_the_first_awaited_call(
    gemini_server: GeminiServer, store: SQLiteStore
) -> None:
    client = make_client(gemini_server, store)
    missing = "00000000-0000-4000-8000-000000000000"

    async def main() -> None:
        chat = client.aio.chats.get(missing)
        assert chat.id == missing
        with pytest.raises(NotFoundError, match=missing):
            await chat.send_message("hello")
        await client.aio.aclose()

    asyncio.run(main())
    assert gemini_server.requests == []
    # Without a running loop, get raises at once, as the sync chats do.
    with pytest.raises(NotFoundError):
        make_client(gemini_server, store).aio.chats.get(missing)


def test_a_cancelled_wait_leaves_the_chat_usable(
    gemini_server: GeminiServer, store: SQLiteStore
) -> None:
    """A caller cancelled while the chat is still opening does not cancel the opening."""
    client = make_client(gemini_server, store)
    gemini_server.reply_echo()

    async def main() -> tuple[str, str | None]:
        with store._lock:  # the store is busy: the start cannot be recorded yet
            chat = client.aio.chats.create(model=MODEL)
            waiting = asyncio.create_task(chat.send_message("first"))
            await asyncio.sleep(0.05)
            assert not waiting.done()
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        reply = await chat.send_message("second")
        await client.aio.aclose()
        return chat.id, reply.text

    conversation_id, text = asyncio.run(main())
    assert text == "echo: second"
    assert [event.type for event in store.read(conversation_id)] == [
        "conversation_started",
        "user_message_added",
        "model_call_started",
        "model_responded",
    ]
    assert store.verify().ok


def test_close_waits_for_chats_still_opening(gemini_server: GeminiServer, db_path: Path) -> None:
    """A client closed right after ``create`` records the start before closing its store."""

    async def main() -> list[str]:
        client = make_client(gemini_server, str(db_path))
        ids = [client.aio.chats.create(model=MODEL).id for _ in range(20)]
        await client.aio.aclose()
        return ids

    ids = asyncio.run(main())
    with SQLiteStore(db_path) as reopened:
        assert sorted(info.conversation_id for info in reopened.conversations()) == sorted(ids)


def test_an_abandoned_stream_is_recorded_off_the_loop(
    gemini_server: GeminiServer, store: SQLiteStore
) -> None:
    """A caller that stops reading a stream (a client gone) closes it: the turn's failure
    is recorded in a worker thread too."""
    log = ThreadLog(store)
    client = make_client(gemini_server, store)
    gemini_server.reply_sse(
        [
            text_response("Hel", finish_reason=None),
            text_response("lo", finish_reason=None),
            text_response("!"),
        ]
    )

    async def main() -> tuple[int, str]:
        chat = client.aio.chats.create(model=MODEL)
        stream = await chat.send_message_stream("hi")
        async for chunk in stream:
            assert chunk.text == "Hel"
            break
        await stream.aclose()  # type: ignore[attr-defined]
        await client.aio.aclose()
        return threading.get_ident(), chat.id

    loop_thread, conversation_id = asyncio.run(main())
    assert log.on(loop_thread) == []
    last = store.read(conversation_id)[-1]
    assert last.type == "model_call_failed"
    assert last.data.error.kind == "abandoned"  # type: ignore[attr-defined]
