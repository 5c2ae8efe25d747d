"""A transport with scripted replies, for tests (yours and ours): no network, no mocks.

    transport = ScriptedTransport()
    transport.enqueue("Hello!")                       # a text reply
    transport.enqueue(chunks=["Hel", "lo!"])          # a streamed reply
    transport.enqueue(error=ServerError(503, {...}))  # a failure
    client = chatledger.Client(transport=transport)

Every request is kept in ``transport.requests``. As every transport does, a stream
scripted with no chunk (and no error) fails with :class:`InvalidResponseError`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

from ...errors import InvalidInputError, InvalidResponseError
from .base import ModelRequest, Transport

__all__ = ["ScriptedTransport", "text_response"]


def text_response(
    text: str, *, finish_reason: str | None = "STOP", usage: dict[str, int] | None = None
) -> dict[str, Any]:
    """A wire response whose first candidate says ``text``."""
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}}
    if finish_reason:
        candidate["finishReason"] = finish_reason
    response: dict[str, Any] = {"candidates": [candidate]}
    if usage:
        response["usageMetadata"] = usage
    return response


class _Reply:
    __slots__ = ("chunks", "error", "response")

    def __init__(
        self,
        response: dict[str, Any] | None,
        chunks: list[dict[str, Any]] | None,
        error: BaseException | None,
    ) -> None:
        self.response = response
        self.chunks = chunks
        self.error = error


class ScriptedTransport(Transport):
    """Answers each request with the next enqueued reply, in order."""

    name = "scripted"

    def __init__(self) -> None:
        self._replies: deque[_Reply] = deque()
        self._lock = threading.Lock()
        self.requests: list[ModelRequest] = []

    def enqueue(
        self,
        reply: str | dict[str, Any] | None = None,
        *,
        chunks: list[str | dict[str, Any]] | None = None,
        error: BaseException | None = None,
    ) -> ScriptedTransport:
        """Queue a reply: text or a wire response; or stream ``chunks`` (text or wire
        chunks; text chunks get a ``STOP`` finish reason on the last); or raise ``error``
        (after the chunks, if both are given)."""
        response = text_response(reply) if isinstance(reply, str) else reply
        wire_chunks = None
        if chunks is not None:
            wire_chunks = []
            for index, chunk in enumerate(chunks):
                if isinstance(chunk, str):
                    last = index == len(chunks) - 1 and error is None
                    wire_chunks.append(text_response(chunk, finish_reason="STOP" if last else None))
                else:
                    wire_chunks.append(chunk)
        with self._lock:
            self._replies.append(_Reply(response, wire_chunks, error))
        return self

    def _next(self, request: ModelRequest) -> _Reply:
        with self._lock:
            self.requests.append(request)
            if not self._replies:
                raise InvalidInputError("ScriptedTransport has no reply queued for this request")
            return self._replies.popleft()

    def generate(self, request: ModelRequest) -> dict[str, Any]:
        reply = self._next(request)
        if reply.error is not None:
            raise reply.error
        if reply.response is not None:
            return reply.response
        merged: dict[str, Any] = {}
        for chunk in reply.chunks or []:
            merged = chunk
        return merged

    def stream(self, request: ModelRequest) -> Iterator[dict[str, Any]]:
        reply = self._next(request)
        if reply.chunks is not None:
            yield from reply.chunks
        elif reply.response is not None:
            yield reply.response
        if reply.error is not None:
            raise reply.error
        if not reply.chunks and reply.response is None:
            raise InvalidResponseError(
                "the scripted stream ended without any answer (no chunk was enqueued)"
            )

    @property
    def pending(self) -> int:
        """Replies not yet used."""
        return len(self._replies)
