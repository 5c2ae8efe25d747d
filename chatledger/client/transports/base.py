"""The transport interface: a request (contents + config) in, a response or chunks out.

A transport knows nothing of the log. Every transport speaks the same currency, the
Gemini wire form: requests carry wire contents and request fields (``systemInstruction``,
``generationConfig``, ``tools`` ...); responses and stream chunks are wire
``GenerateContentResponse`` dicts. Errors are raised as chatledger's own classes.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec

__all__ = ["ModelRequest", "Transport"]


class ModelRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What goes to the model: the model name, the contents, and the request fields."""

    model: str
    contents: list[dict[str, Any]]
    config: dict[str, Any] = {}

    def body(self) -> dict[str, Any]:
        """The generateContent request body."""
        return {"contents": self.contents, **self.config}


class Transport(abc.ABC):
    """Turns a :class:`ModelRequest` into a wire response, or a stream of wire chunks.

    Sync and async pairs share names: ``generate``/``agenerate``, ``stream``/``astream``,
    ``close``/``aclose``. ``stream`` returns a generator: closing it (or leaving its
    loop) releases the connection. The async defaults run the sync methods in a thread,
    for transports that have no native async I/O.
    """

    #: Recorded in each model call event.
    name: str = "transport"
    #: Which kind of Google endpoint serves the calls ("gemini": the Gemini Developer
    #: API, "vertex": Vertex AI), recorded as ``endpoint`` in each model call event;
    #: empty for other servers (docs/events.md).
    endpoint_kind: str = ""

    @abc.abstractmethod
    def generate(self, request: ModelRequest) -> dict[str, Any]: ...

    @abc.abstractmethod
    def stream(self, request: ModelRequest) -> Iterator[dict[str, Any]]: ...

    async def agenerate(self, request: ModelRequest) -> dict[str, Any]:
        return await asyncio.to_thread(self.generate, request)

    async def astream(self, request: ModelRequest) -> AsyncIterator[dict[str, Any]]:
        chunks = self.stream(request)
        done = object()
        try:
            while True:
                chunk = await asyncio.to_thread(next, chunks, done)
                if chunk is done:
                    return
                yield chunk  # type: ignore[misc]
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def close(self) -> None:  # noqa: B027 - optional
        """Release connections and resources."""

    async def aclose(self) -> None:
        self.close()
