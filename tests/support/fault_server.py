"""A loopback HTTP/1.1 server that answers badly on purpose, for the server-fault tests.

The scripted Gemini and OpenAI servers answer well-formed HTTP; this one writes raw bytes,
so a reply can do what a broken model server, proxy or network does: close the
connection mid-body, stall after the headers, trickle keep-alive comments forever, send
broken JSON or a 20 MB event. A reply is a script, a function given a :class:`Wire`::

    with FaultServer() as server:
        server.enqueue(lambda wire: wire.sse(['{"candidates": []}'], end=False) or wire.drop())
        server.enqueue(lambda wire: wire.json({"candidates": [...]}))

Every request is recorded (``server.requests``). Scripts that wait (``stall``, ``trickle``)
end when the client goes away or the server stops, so no test leaves a thread behind.

:func:`never_accepting_listener` gives an address whose connection attempts hang: the
way to test a connect timeout on loopback without depending on the network.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["FaultServer", "RecordedRequest", "Wire", "never_accepting_listener"]

Script = Callable[["Wire"], None]


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class ClientGone(Exception):
    """The client closed its end (or the server is stopping): the script ends here."""


class Wire:
    """One reply's connection: raw writes plus the HTTP pieces a script is made of."""

    def __init__(self, conn: socket.socket, stopping: threading.Event) -> None:
        self._conn = conn
        self._stopping = stopping
        self.closed = False

    # ----------------------------------------------------------------- raw

    def send(self, data: bytes) -> None:
        if self._stopping.is_set():
            raise ClientGone
        try:
            self._conn.sendall(data)
        except OSError:
            raise ClientGone from None

    def drop(self) -> None:
        """Close the connection abruptly, whatever was (not) sent."""
        self.closed = True
        with contextlib.suppress(OSError):
            self._conn.shutdown(socket.SHUT_RDWR)

    def wait(self, seconds: float) -> None:
        """Sleep, but notice the client leaving or the server stopping."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self._stopping.is_set():
                raise ClientGone
            readable, _, _ = select.select([self._conn], [], [], min(left, 0.05))
            if readable:
                try:
                    peeked = self._conn.recv(1, socket.MSG_PEEK)
                except OSError:
                    raise ClientGone from None
                if not peeked:
                    raise ClientGone
                # The client pipelined another request: only sleep on.
                time.sleep(min(left, 0.05))

    def stall(self) -> None:
        """Send nothing more, ever (until the client leaves or the server stops)."""
        while True:
            self.wait(3600)

    def trickle(self, piece: bytes, every: float = 0.1, *, chunked: bool = True) -> None:
        """Send ``piece`` every ``every`` seconds, forever."""
        while True:
            if chunked:
                self.chunk(piece)
            else:
                self.send(piece)
            self.wait(every)

    # ----------------------------------------------------------------- HTTP

    def head(
        self,
        status: int = 200,
        *,
        content_type: str = "application/json",
        length: int | None = None,
        chunked: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        lines = [
            f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}",
            f"Content-Type: {content_type}",
        ]
        lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
        if length is not None:
            lines.append(f"Content-Length: {length}")
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode())

    def chunk(self, data: bytes) -> None:
        self.send(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def end(self) -> None:
        self.send(b"0\r\n\r\n")

    def body(
        self,
        payload: bytes,
        status: int = 200,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.head(status, content_type=content_type, length=len(payload), headers=headers)
        self.send(payload)

    def json(self, body: Any, status: int = 200) -> None:
        self.body(json.dumps(body).encode(), status)

    def sse_head(self, headers: dict[str, str] | None = None) -> None:
        self.head(200, content_type="text/event-stream", chunked=True, headers=headers)

    def event(self, data: str | bytes) -> None:
        """One SSE event (``data: ...`` and a blank line) as one chunk."""
        raw = data.encode() if isinstance(data, str) else data
        self.chunk(b"data: " + raw + b"\r\n\r\n")

    def sse(self, events: list[str], *, end: bool = True) -> None:
        self.sse_head()
        for data in events:
            self.event(data)
        if end:
            self.end()


class FaultServer:
    """Scripted raw-HTTP server on 127.0.0.1 (an ephemeral port), one thread per connection."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._scripts: deque[Script] = deque()
        self._connections: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.requests: list[RecordedRequest] = []
        #: Exceptions a script raised (a test bug): checked when the server stops.
        self.errors: list[BaseException] = []

    @property
    def address(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FaultServer:
        thread = threading.Thread(target=self._accept_loop, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    def enqueue(self, *scripts: Script) -> FaultServer:
        with self._lock:
            self._scripts.extend(scripts)
        return self

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._scripts)

    # ----------------------------------------------------------------- serving

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self._lock:
                self._connections.append(conn)
                self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        reader = _Reader(conn)
        try:
            while not self._stopping.is_set():
                request = reader.request()
                if request is None:
                    return
                with self._lock:
                    self.requests.append(request)
                    script = self._scripts.popleft() if self._scripts else None
                wire = Wire(conn, self._stopping)
                if script is None:
                    wire.json(
                        {
                            "error": {
                                "code": 500,
                                "message": "no reply scripted",
                                "status": "INTERNAL",
                            }
                        },
                        500,
                    )
                    continue
                script(wire)
                if wire.closed:
                    return
        except (ClientGone, OSError):
            return
        except BaseException as exc:  # a test bug: reported by the fixture, not lost
            self.errors.append(exc)
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            with self._lock:
                if conn in self._connections:
                    self._connections.remove(conn)


class _Reader:
    """Reads HTTP/1.1 requests (Content-Length bodies) off one connection."""

    def __init__(self, conn: socket.socket) -> None:
        self._conn = conn
        self._buffer = bytearray()

    def _fill(self) -> bool:
        data = self._conn.recv(1 << 20)
        self._buffer += data
        return bool(data)

    def request(self) -> RecordedRequest | None:
        while b"\r\n\r\n" not in self._buffer:
            if not self._fill():
                return None
        end = self._buffer.index(b"\r\n\r\n")
        lines = self._buffer[:end].decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        while len(self._buffer) < length:
            if not self._fill():
                return None
        raw = bytes(self._buffer[:length])
        del self._buffer[:length]
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        return RecordedRequest(method=method, path=path, headers=headers, body=body)


@contextlib.contextmanager
def never_accepting_listener() -> Iterator[str]:
    """A loopback address (``http://127.0.0.1:<port>``) where connecting hangs.

    The listener's accept queue (backlog 0) is filled by a few connections that are
    never accepted; once it is full, the kernel drops new SYNs, so a client's connect
    waits until its own timeout, as with a server behind a black-holing firewall.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()[:2]
        for _ in range(64):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.settimeout(0.2)
            try:
                probe.connect(address)
            except TimeoutError:
                probe.close()
                break  # the queue is full: connecting now hangs
            fillers.append(probe)
        else:  # pragma: no cover - a kernel that never drops SYNs
            raise RuntimeError("could not fill the listener's accept queue")
        yield f"http://{address[0]}:{address[1]}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
