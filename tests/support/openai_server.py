"""A real HTTP server on loopback that speaks the OpenAI chat completions protocol, scripted.

It stands in for vLLM, llama.cpp's server, Ollama or OpenAI when a test needs a reply
it chooses (an error, a tool call, a broken stream); the real llama.cpp server is tested
too, in ``tests/test_transport_openai.py``.

    with OpenAIServer() as server:
        server.reply_text("Hello")                                    # a chat.completion
        server.reply_sse(text_events(["Hel", "lo"]))                  # a streamed one
        server.reply_error(429, "slow down", "rate_limit_exceeded")
        transport = OpenAITransport(None, HttpOptions(base_url=server.base_url))
        ...
        server.requests[0].body["messages"]
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "OpenAIServer",
    "RecordedRequest",
    "Reply",
    "completion",
    "text_events",
    "tool_call",
]

MODEL = "scripted-model"


def tool_call(name: str, arguments: Any, call_id: str | None = "call_1") -> dict[str, Any]:
    """A tool call as a ``chat.completion`` message carries it (arguments as a JSON string)."""
    call: dict[str, Any] = {
        "type": "function",
        "function": {
            "name": name,
            "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
        },
    }
    if call_id is not None:
        call["id"] = call_id
    return call


def completion(
    text: str | None = None,
    *,
    finish_reason: str | None = "stop",
    usage: dict[str, int] | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    choices: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``chat.completion`` body with one choice (or the given ``choices``)."""
    if choices is None:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if tool_calls:
            message["tool_calls"] = tool_calls
        choices = [{"index": 0, "message": message, "finish_reason": finish_reason}]
    body: dict[str, Any] = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": choices,
    }
    body["usage"] = (
        usage
        if usage is not None
        else {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
    )
    return body


def _event(
    delta: dict[str, Any], finish_reason: str | None = None, index: int = 0
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason}],
    }


def text_events(
    pieces: list[str],
    *,
    finish_reason: str = "stop",
    usage: dict[str, int] | None = None,
    include_usage: bool = True,
    tool_call_deltas: list[dict[str, Any]] | None = None,
    done: bool = True,
) -> list[Any]:
    """The SSE data of a streamed reply: a role delta, one event per text piece, optional
    tool-call deltas (each event's ``delta.tool_calls``), the finish event, a usage-only
    event (``stream_options.include_usage``) and ``[DONE]``."""
    events: list[Any] = [_event({"role": "assistant", "content": ""})]
    events.extend(_event({"content": piece}) for piece in pieces)
    events.extend(_event({"tool_calls": [delta]}) for delta in tool_call_deltas or [])
    events.append(_event({}, finish_reason))
    if include_usage:
        usage = usage or {
            "prompt_tokens": 7,
            "completion_tokens": len(pieces),
            "total_tokens": 7 + len(pieces),
        }
        events.append(
            {
                "id": "chatcmpl-scripted",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": MODEL,
                "choices": [],
                "usage": usage,
            }
        )
    if done:
        events.append("[DONE]")
    return events


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any

    @property
    def streamed(self) -> bool:
        return isinstance(self.body, dict) and bool(self.body.get("stream"))


@dataclass
class Reply:
    """One scripted reply.

    ``kind``: "json" (status + body), "raw" (status + raw bytes), "sse" (events, each a
    dict or a raw data string; ``gates[i]`` is waited for before event i is sent;
    ``drop_after`` closes the connection abruptly after that many events).
    """

    kind: str
    status: int = 200
    body: Any = None
    raw: bytes = b""
    content_type: str = "application/json"
    events: list[Any] = field(default_factory=list)
    gates: dict[int, threading.Event] = field(default_factory=dict)
    drop_after: int | None = None
    delay: float = 0.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle's algorithm and
    # delayed ACKs add ~40 ms to every reply.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silence the request log
        return

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._send_json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        else:
            self._send_json(404, {"error": {"message": "not found", "type": "not_found_error"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw
        request = RecordedRequest(
            method="POST",
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        owner = self.server.owner
        with owner._lock:
            owner.requests.append(request)
            reply = owner._replies.popleft() if owner._replies else None
        if reply is None:
            self._send_json(
                500, {"error": {"message": "no reply scripted", "type": "server_error"}}
            )
            return
        if reply.delay:
            time.sleep(reply.delay)
        if reply.kind == "json":
            self._send_json(reply.status, reply.body)
        elif reply.kind == "raw":
            self._send_bytes(reply.status, reply.raw, reply.content_type)
        elif reply.kind == "sse":
            self._send_sse(reply)
        else:  # pragma: no cover - test bug
            raise ValueError(reply.kind)

    def _send_json(self, status: int, body: Any) -> None:
        self._send_bytes(status, json.dumps(body).encode(), "application/json")

    def _send_bytes(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
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
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        for index, event in enumerate(reply.events):
            gate = reply.gates.get(index)
            if gate is not None and not gate.wait(timeout=30):
                break
            if reply.drop_after is not None and index >= reply.drop_after:
                break
            data = event if isinstance(event, str) else json.dumps(event)
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
    owner: OpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that closes a stream early makes the next write fail: expected here.
        return


class OpenAIServer:
    """Scripted OpenAI-protocol server on 127.0.0.1 (an ephemeral port)."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._lock = threading.Lock()
        self._replies: deque[Reply] = deque()
        self.requests: list[RecordedRequest] = []
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The URL a client is given: ``http://127.0.0.1:<port>/v1``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> OpenAIServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- scripting

    def enqueue(self, reply: Reply) -> OpenAIServer:
        with self._lock:
            self._replies.append(reply)
        return self

    def reply_json(self, body: Any, status: int = 200) -> OpenAIServer:
        return self.enqueue(Reply("json", status=status, body=body))

    def reply_text(self, text: str, **kwargs: Any) -> OpenAIServer:
        return self.reply_json(completion(text, **kwargs))

    def reply_error(
        self,
        status: int,
        message: str,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> OpenAIServer:
        """An error as OpenAI sends it: ``{"error": {"message", "type", "param", "code"}}``."""
        return self.reply_json(
            {"error": {"message": message, "type": kind, "param": None, "code": code}},
            status=status,
        )

    def reply_raw(
        self, raw: bytes, status: int = 200, content_type: str = "text/html"
    ) -> OpenAIServer:
        return self.enqueue(Reply("raw", status=status, raw=raw, content_type=content_type))

    def reply_sse(self, events: list[Any], **kwargs: Any) -> OpenAIServer:
        return self.enqueue(Reply("sse", events=list(events), **kwargs))

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._replies)
