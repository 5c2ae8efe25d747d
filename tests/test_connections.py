"""The HTTP transports reuse their connections (chatledger/client/transports/_pool.py):
streamed turns, one after another or many at once, open no more TCP connections than
there are requests in flight, counted by the real loopback server that accepts them.

httpcore 1.0's own pool closes every connection that falls idle once more than 20
exist; these tests fail with it (the concurrent ones open several times more).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest

import chatledger
from chatledger.client.transports._pool import LIMITS, _assign, async_client
from tests.support.gemini_server import GeminiServer, text_response

API_KEY = "test-key-connections"
MODEL = "gemini-2.5-flash"


def make_client(server: GeminiServer, db_path: Path) -> chatledger.Client:
    return chatledger.Client(
        api_key=API_KEY,
        http_options={"base_url": server.base_url, "api_version": "v1beta"},
        store=str(db_path),
    )


def script_streams(server: GeminiServer, count: int, delay: float = 0.0) -> None:
    for _ in range(count):
        server.reply_sse(
            [text_response("Hel", finish_reason=None), text_response("lo")], delay=delay
        )


def test_sequential_async_streams_use_one_connection(
    gemini_server: GeminiServer, db_path: Path
) -> None:
    script_streams(gemini_server, 12)

    async def main() -> list[str]:
        client = make_client(gemini_server, db_path)
        texts = []
        for _ in range(3):
            chat = client.aio.chats.create(model=MODEL)
            for turn in range(4):
                stream = await chat.send_message_stream(f"turn {turn}")
                texts.append("".join([chunk.text or "" async for chunk in stream]))
        await client.aio.aclose()
        return texts

    assert asyncio.run(main()) == ["Hello"] * 12
    assert len(gemini_server.requests) == 12
    assert gemini_server.accepted == 1


def test_sequential_sync_streams_use_one_connection(
    gemini_server: GeminiServer, db_path: Path
) -> None:
    script_streams(gemini_server, 8)
    with make_client(gemini_server, db_path) as client:
        chat = client.chats.create(model=MODEL)
        texts = ["".join(c.text or "" for c in chat.send_message_stream(str(i))) for i in range(8)]
    assert texts == ["Hello"] * 8
    assert gemini_server.accepted == 1


@pytest.mark.parametrize("chats", [30, 80])
def test_concurrent_async_streams_reuse_connections(
    gemini_server: GeminiServer, db_path: Path, chats: int
) -> None:
    """More concurrent chats than httpcore's default keep-alive limit (20): each turn's
    connection is reused by a later turn, so no more connections than chats open."""
    turns = 3
    # Each reply waits a little, so that the chats' requests overlap.
    script_streams(gemini_server, chats * turns, delay=0.1)

    async def main() -> list[str]:
        client = make_client(gemini_server, db_path)

        async def one(index: int) -> list[str]:
            chat = client.aio.chats.create(model=MODEL)
            texts = []
            for turn in range(turns):
                stream = await chat.send_message_stream(f"{index}/{turn}")
                texts.append("".join([chunk.text or "" async for chunk in stream]))
            return texts

        results = await asyncio.gather(*(one(index) for index in range(chats)))
        await client.aio.aclose()
        return [text for texts in results for text in texts]

    assert asyncio.run(main()) == ["Hello"] * (chats * turns)
    assert len(gemini_server.requests) == chats * turns
    assert gemini_server.accepted <= chats


def test_concurrent_sync_streams_from_threads_reuse_connections(
    gemini_server: GeminiServer, db_path: Path
) -> None:
    threads, turns = 24, 3
    script_streams(gemini_server, threads * turns, delay=0.1)
    texts: list[str] = []
    with make_client(gemini_server, db_path) as client:

        def one(index: int) -> None:
            chat = client.chats.create(model=MODEL)
            for turn in range(turns):
                texts.append("".join(c.text or "" for c in chat.send_message_stream(f"{turn}")))

        workers = [threading.Thread(target=one, args=(index,)) for index in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    assert texts == ["Hello"] * (threads * turns)
    assert gemini_server.accepted <= threads


def test_the_async_client_has_the_fixed_pool_and_limits() -> None:
    client = async_client(httpx.Timeout(5.0))
    pool: Any = client._transport._pool  # type: ignore[attr-defined]
    assert type(pool).__name__ == "_FixedAsyncPool"
    assert isinstance(pool, httpcore.AsyncConnectionPool)
    assert pool._max_keepalive_connections == LIMITS.max_keepalive_connections
    asyncio.run(client.aclose())


class FakeConnection:
    """A connection as the pool sees it: its state, and the origin it serves."""

    def __init__(self, state: str, origin: object = "a") -> None:
        self.state = state
        self.origin = origin
        self.expired = False

    def is_closed(self) -> bool:
        return self.state == "closed"

    def is_idle(self) -> bool:
        return self.state == "idle"

    def is_available(self) -> bool:
        return self.state == "idle"

    def has_expired(self) -> bool:
        return self.expired

    def can_handle_request(self, origin: object) -> bool:
        return origin == self.origin


class FakeRequest:
    def __init__(self, origin: object = "a", connection: FakeConnection | None = None) -> None:
        self.connection = connection
        self.request = type("R", (), {"url": type("U", (), {"origin": origin})()})()

    def is_queued(self) -> bool:
        return self.connection is None

    def assign_to_connection(self, connection: FakeConnection) -> None:
        self.connection = connection


class FakePool:
    def __init__(self, connections: list[FakeConnection], requests: list[FakeRequest]) -> None:
        self._connections = connections
        self._requests = requests
        self._max_connections = 4
        self._max_keepalive_connections = 2

    def create_connection(self, origin: object) -> FakeConnection:
        return FakeConnection("new", origin)


def test_assign_keeps_idle_connections_up_to_the_limit() -> None:
    """httpcore 1.0 counts every connection as idle: with 3 busy and 1 idle it closes the
    idle one at a keep-alive limit of 2. Only the surplus of idle ones is closed here."""
    busy = [FakeConnection("active") for _ in range(3)]
    idle = FakeConnection("idle")
    pool = FakePool([*busy, idle], [FakeRequest(connection=c) for c in busy])
    assert _assign(pool) == []
    assert pool._connections == [*busy, idle]
    idle_ones = [FakeConnection("idle") for _ in range(3)]
    pool = FakePool(list(idle_ones), [])
    assert _assign(pool) == idle_ones[:1]
    assert pool._connections == idle_ones[1:]


def test_assign_reuses_each_idle_connection_once_then_creates_then_replaces() -> None:
    idle = FakeConnection("idle")
    other = FakeConnection("idle", origin="b")
    queued = [FakeRequest() for _ in range(4)]
    pool = FakePool([idle, other], queued)
    closing = _assign(pool)
    # One request on the idle connection, two on new ones (the limit is 4), and the
    # last replaces the idle connection to the other origin.
    assert queued[0].connection is idle
    assert all(r.connection is not None and r.connection.state == "new" for r in queued[1:])
    assert closing == [other]
    assert len(pool._connections) == 4
    # A second pass leaves everything as it is: an assigned idle connection is reserved.
    assert _assign(pool) == []
    assert queued[0].connection is idle and len(pool._connections) == 4


def test_assign_drops_expired_and_orphaned_connections() -> None:
    expired = FakeConnection("idle")
    expired.expired = True
    orphan = FakeConnection("new")  # its request was cancelled before it connected
    closed = FakeConnection("closed")
    pool = FakePool([expired, orphan, closed], [])
    assert _assign(pool) == [expired, orphan]
    assert pool._connections == []


def test_assign_asks_idle_connections_whether_they_expired_once_per_sweep() -> None:
    """Between sweeps a pass asks no connection whether it expired (a poll() and a
    getpeername() each on a real one) unless it is about to be given a request."""
    asked: list[FakeConnection] = []

    class Watched(FakeConnection):
        def has_expired(self) -> bool:
            asked.append(self)
            return self.expired

    kept, spare = Watched("idle"), Watched("idle")
    pool = FakePool([kept, spare], [])
    assert _assign(pool) == []
    assert asked == [kept, spare]  # the first pass sweeps
    asked.clear()
    spare.expired = True
    assert _assign(pool) == [] and asked == []  # within SWEEP_S: nobody is asked
    pool._chatledger_sweep_at = 0.0  # type: ignore[attr-defined]
    assert _assign(pool) == [spare]  # the next sweep drops the expired one
    assert pool._connections == [kept]


def test_assign_never_gives_a_request_an_expired_connection_between_sweeps() -> None:
    dead, alive = FakeConnection("idle"), FakeConnection("idle")
    pool = FakePool([dead, alive], [])
    assert _assign(pool) == []  # swept: both fine
    dead.expired = True  # the server closed it since
    first, second = FakeRequest(), FakeRequest()
    pool._requests = [first, second]
    closing = _assign(pool)
    assert closing == [dead]
    assert first.connection is alive
    assert second.connection is not None and second.connection.state == "new"
    assert dead not in pool._connections and len(pool._connections) == 2


def test_a_connection_the_server_closed_is_not_reused() -> None:
    """A real server that closes each connection after its answer (keep-alive offered):
    the next request, within the same sweep interval, gets a new connection instead of
    failing on the closed one."""

    async def main() -> tuple[list[int], int]:
        accepted = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
            )
            await writer.drain()
            writer.close()  # no "Connection: close": the client thinks it may keep it

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = async_client(httpx.Timeout(5.0))
        statuses = []
        try:
            for _ in range(3):
                response = await client.post(f"http://127.0.0.1:{port}/", content=b"{}")
                statuses.append(response.status_code)
                await asyncio.sleep(0.05)  # the server's close reaches the client
        finally:
            await client.aclose()
            server.close()
            await server.wait_closed()
        return statuses, accepted

    statuses, accepted = asyncio.run(main())
    assert statuses == [200, 200, 200]
    assert accepted == 3
