"""What the scripted loopback servers share: a real HTTP/1.1 server on 127.0.0.1 that
answers each POST with the next scripted :class:`Reply` and records every request.

:class:`~tests.support.gemini_server.GeminiServer` and
:class:`~tests.support.openai_server.OpenAIServer` add their protocol's URLs, bodies and
error shapes. Everything a test needs is public: ``enqueue`` / ``reply_*`` to script,
``requests`` to look at what was sent, ``pending`` and ``clear()`` for the replies no
request used. (:mod:`tests.support.fault_server` is the one that answers badly on purpose.)
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

__all__ = ["RecordedRequest", "Reply", "ScriptedServer"]


@dataclass
class RecordedRequest:
    """A request as the server received it: ``body`` is parsed JSON (or the raw bytes)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any

    @property
    def streamed(self) -> bool:
        """A streamed request: Gemini's ``:streamGenerateContent``, OpenAI's ``stream``."""
        return self.path.endswith(":streamGenerateContent") or (
            isinstance(self.body, dict) and bool(self.body.get("stream"))
        )

    @property
    def model(self) -> str:
        """The model a Gemini URL names (``.../models/NAME:method``)."""
        return self.path.rsplit("/", 1)[-1].split(":", 1)[0]


@dataclass
class Reply:
    """One scripted reply.

    ``kind``: "json" (status + body), "raw" (status + raw bytes), "echo" (a reply made
    from the request by the server's ``echo`` function), "sse" (``chunks``, each a dict
    or a raw data string; ``gates[i]`` is waited for before chunk i is sent;
    ``drop_after`` closes the connection abruptly after that many chunks). ``delay``
    seconds pass before anything is sent; ``headers`` are added to the answer.
    """

    kind: str
    status: int = 200
    body: Any = None
    raw: bytes = b""
    content_type: str = "application/json"
    chunks: list[Any] = field(default_factory=list)
    gates: dict[int, threading.Event] = field(default_factory=dict)
    drop_after: int | None = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle's algorithm and
    # delayed ACKs add ~40 ms to every reply.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silence the request log
        return

    def handle(self) -> None:
        # A client that goes away mid-reply (a killed writer, an abandoned stream) is
        # part of what the tests do, not a server error.
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_GET(self) -> None:
        status, body = self.server.owner.answer_get(self.path)
        self._send_bytes(status, json.dumps(body).encode(), "application/json")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw
        parts = urlsplit(self.path)
        request = RecordedRequest(
            method="POST",
            path=parts.path,
            query=parse_qs(parts.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        owner = self.server.owner
        reply = owner._take(request)
        if reply is None:
            status, unscripted = owner.unscripted()
            self._send_bytes(status, json.dumps(unscripted).encode(), "application/json")
            return
        if reply.delay:
            time.sleep(reply.delay)
        if reply.kind == "json":
            self._send_bytes(
                reply.status, json.dumps(reply.body).encode(), reply.content_type, reply.headers
            )
        elif reply.kind == "raw":
            self._send_bytes(reply.status, reply.raw, reply.content_type, reply.headers)
        elif reply.kind == "sse":
            self._send_sse(reply)
        elif reply.kind == "echo":
            self._send_bytes(200, json.dumps(owner.echo(request)).encode(), "application/json")
        else:  # pragma: no cover - test bug
            raise ValueError(reply.kind)

    def _send_bytes(
        self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _send_sse(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        for index, chunk in enumerate(reply.chunks):
            gate = reply.gates.get(index)
            if gate is not None and not gate.wait(timeout=30):
                break
            if reply.drop_after is not None and index >= reply.drop_after:
                break
            data = chunk if isinstance(chunk, str) else json.dumps(chunk)
            self._write_chunk(f"data: {data}\r\n\r\n".encode())
        if reply.drop_after is not None:
            # Close without the terminating chunk: the client sees a broken stream.
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # Many concurrent clients connect at once in the connection tests.
    request_queue_size = 128
    owner: ScriptedServer

    def get_request(self) -> tuple[Any, Any]:
        accepted = super().get_request()
        with self.owner._lock:
            self.owner.accepted += 1
        return accepted

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that closes a stream early makes the next write fail: expected here.
        return


Self = TypeVar("Self", bound="ScriptedServer")


class ScriptedServer:
    """A scripted server on 127.0.0.1 (an ephemeral port). Use it as a context manager,
    or ``start()`` and ``stop()``. Subclasses say how their protocol answers."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._lock = threading.Lock()
        self._replies: deque[Reply] = deque()
        #: Every request received, in order.
        self.requests: list[RecordedRequest] = []
        #: TCP connections accepted so far (a client reusing connections opens few).
        self.accepted = 0
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """``http://127.0.0.1:<port>``."""
        host, port = self._server.server_address[:2]
        assert isinstance(host, str)
        return f"http://{host}:{port}"

    def start(self: Self) -> Self:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self: Self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- the protocol

    def unscripted(self) -> tuple[int, Any]:
        """The answer to a request no reply was scripted for."""
        return 500, {"error": {"code": 500, "message": "no reply scripted"}}

    def echo(self, request: RecordedRequest) -> Any:  # pragma: no cover - per protocol
        """The body of an "echo" reply to ``request``."""
        raise NotImplementedError(f"{type(self).__name__} has no echo reply")

    def answer_get(self, path: str) -> tuple[int, Any]:
        """The answer to a GET."""
        return 404, {"error": {"code": 404, "message": f"no {path} here"}}

    # ----------------------------------------------------------------- scripting

    def _take(self, request: RecordedRequest) -> Reply | None:
        with self._lock:
            self.requests.append(request)
            return self._replies.popleft() if self._replies else None

    def enqueue(self: Self, reply: Reply) -> Self:
        with self._lock:
            self._replies.append(reply)
        return self

    def reply_json(
        self: Self,
        body: Any,
        status: int = 200,
        *,
        delay: float = 0.0,
        headers: dict[str, str] | None = None,
    ) -> Self:
        """Answer the next request with ``body`` as JSON, after ``delay`` seconds."""
        return self.enqueue(
            Reply("json", status=status, body=body, delay=delay, headers=dict(headers or {}))
        )

    def reply_raw(
        self: Self,
        raw: bytes,
        status: int = 200,
        content_type: str = "text/html",
        *,
        headers: dict[str, str] | None = None,
    ) -> Self:
        """Answer the next request with ``raw`` bytes as they are."""
        return self.enqueue(
            Reply(
                "raw",
                status=status,
                raw=raw,
                content_type=content_type,
                headers=dict(headers or {}),
            )
        )

    def reply_sse(self: Self, chunks: list[Any], **kwargs: Any) -> Self:
        """Stream ``chunks`` (dicts as JSON, strings as they are) as server-sent events;
        ``gates``, ``drop_after``, ``delay`` and ``headers`` as :class:`Reply` has them."""
        return self.enqueue(Reply("sse", chunks=list(chunks), **kwargs))

    def clear(self) -> int:
        """Drop the scripted replies no request has used (a send that failed before
        calling the model leaves its reply); return how many."""
        with self._lock:
            count = len(self._replies)
            self._replies.clear()
        return count

    @property
    def pending(self) -> int:
        """Scripted replies no request has used yet."""
        with self._lock:
            return len(self._replies)
