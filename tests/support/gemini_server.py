"""A real HTTP server on loopback that speaks the Gemini REST protocol with scripted replies.

It stands in for Google's service only: chatledger and google-genai are both pointed at
it in the same tests, and every request either makes is recorded for comparison.

    with GeminiServer() as server:
        server.reply_text("Hello")                          # generateContent
        server.reply_sse([chunk1, chunk2])                  # streamGenerateContent
        server.reply_error(429, "RESOURCE_EXHAUSTED", "slow down")
        client = chatledger.Client(api_key="k", http_options={"base_url": server.base_url})
        ...
        server.requests[0].body["contents"]
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["GeminiServer", "RecordedRequest", "Reply", "text_response"]


def text_response(
    text: str | None = None,
    *,
    finish_reason: str | None = "STOP",
    usage: dict[str, int] | None = None,
    parts: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A wire GenerateContentResponse with one candidate."""
    candidate: dict[str, Any] = {}
    if parts is not None or text is not None:
        candidate["content"] = {
            "role": "model",
            "parts": parts if parts is not None else [{"text": text}],
        }
    if finish_reason:
        candidate["finishReason"] = finish_reason
    body: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        body["usageMetadata"] = usage
    body.update(extra)
    return body


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any

    @property
    def streamed(self) -> bool:
        return self.path.endswith(":streamGenerateContent")

    @property
    def model(self) -> str:
        return self.path.rsplit("/", 1)[-1].split(":", 1)[0]


@dataclass
class Reply:
    """One scripted reply.

    ``kind``: "json" (status + body), "raw" (status + raw bytes), "echo" (a text reply
    repeating the request's last user text), "sse" (chunks, each a
    dict or a raw data string; ``gates[i]`` is waited for before chunk i is sent;
    ``drop_after`` closes the connection abruptly after that many chunks).
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


def _last_user_text(body: Any) -> str:
    for content in reversed((body or {}).get("contents") or []):
        if content.get("role") == "user":
            return "".join(part.get("text", "") for part in content.get("parts") or [])
    return ""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
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
        with owner._lock:
            owner.requests.append(request)
            reply = owner._replies.popleft() if owner._replies else None
        if reply is None:
            self._send_json(
                500, {"error": {"code": 500, "message": "no reply scripted", "status": "INTERNAL"}}
            )
            return
        if reply.delay:
            time.sleep(reply.delay)
        if reply.kind == "json":
            self._send_json(reply.status, reply.body, reply.headers)
        elif reply.kind == "raw":
            self._send_bytes(reply.status, reply.raw, reply.content_type, reply.headers)
        elif reply.kind == "sse":
            self._send_sse(reply)
        elif reply.kind == "echo":
            self._send_json(200, text_response(f"echo: {_last_user_text(request.body)}"))
        else:  # pragma: no cover - test bug
            raise ValueError(reply.kind)

    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(body).encode(), "application/json", headers)

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
        self.send_header("Content-Type", "text/event-stream")
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
    owner: GeminiServer


class GeminiServer:
    """Scripted Gemini-protocol server on 127.0.0.1 (an ephemeral port)."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._lock = threading.Lock()
        self._replies: deque[Reply] = deque()
        self.requests: list[RecordedRequest] = []
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> GeminiServer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> GeminiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- scripting

    def enqueue(self, reply: Reply) -> GeminiServer:
        with self._lock:
            self._replies.append(reply)
        return self

    def reply_json(self, body: Any, status: int = 200) -> GeminiServer:
        return self.enqueue(Reply("json", status=status, body=body))

    def reply_text(self, text: str, **kwargs: Any) -> GeminiServer:
        return self.reply_json(text_response(text, **kwargs))

    def reply_error(self, code: int, status: str, message: str) -> GeminiServer:
        return self.reply_json(
            {"error": {"code": code, "message": message, "status": status}}, status=code
        )

    def reply_raw(
        self, raw: bytes, status: int = 200, content_type: str = "text/html"
    ) -> GeminiServer:
        return self.enqueue(Reply("raw", status=status, raw=raw, content_type=content_type))

    def reply_echo(self, count: int = 1, delay: float = 0.0) -> GeminiServer:
        """Answer ``count`` requests with "echo: <the last user text>"."""
        for _ in range(count):
            self.enqueue(Reply("echo", delay=delay))
        return self

    def reply_sse(self, chunks: list[Any], **kwargs: Any) -> GeminiServer:
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
        with self._lock:
            return len(self._replies)
