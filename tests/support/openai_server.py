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

The scripting API (``enqueue``, ``reply_json``, ``reply_raw``, ``reply_sse``, ``clear``,
``pending``, ``requests``) is :class:`~tests.support.scripted_server.ScriptedServer`'s.
"""

from __future__ import annotations

import json
from typing import Any

from tests.support.scripted_server import RecordedRequest, Reply, ScriptedServer

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
    usage: dict[str, Any] | None = None,
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


class OpenAIServer(ScriptedServer):
    """Scripted OpenAI-protocol server on 127.0.0.1 (an ephemeral port)."""

    @property
    def base_url(self) -> str:
        """The URL a client is given: ``http://127.0.0.1:<port>/v1``."""
        return self.address + "/v1"

    def unscripted(self) -> tuple[int, Any]:
        return 500, {"error": {"message": "no reply scripted", "type": "server_error"}}

    def answer_get(self, path: str) -> tuple[int, Any]:
        if path.rstrip("/").endswith("/models"):
            return 200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]}
        return 404, {"error": {"message": "not found", "type": "not_found_error"}}

    def reply_text(self, text: str, **kwargs: Any) -> OpenAIServer:
        """A ``chat.completion`` saying ``text`` (``completion``'s options)."""
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
