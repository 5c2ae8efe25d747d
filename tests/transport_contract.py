"""The transport contract: one suite, written once, that every transport must pass.

A test module subclasses :class:`TransportContract` (and :class:`HttpErrorContract` for
HTTP transports with a scripted server) and defines a ``harness`` fixture returning a
:class:`Harness`: the transport under test, and a way to make its next call answer. For a
scripted server, ``prepare`` scripts the reply (and says which text pieces it will stream);
for a real model it only builds a request the model will answer. The suite checks
structure, never the exact words of a real model, and never wall-clock times.

This module is not collected by itself (its name does not start with ``test_`` and its
classes do not start with ``Test``).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from chatledger.client._stream import StreamMerger
from chatledger.client.transports.base import ModelRequest, Transport
from chatledger.errors import (
    APIError,
    ClientError,
    InvalidResponseError,
    ModelConnectionError,
    ServerError,
)

__all__ = [
    "Harness",
    "HttpErrorContract",
    "HttpHarness",
    "Prepared",
    "TransportContract",
    "candidate",
    "response_text",
]


@dataclass
class Prepared:
    """A request whose answer is ready; ``pieces`` are the streamed texts when scripted."""

    request: ModelRequest
    pieces: list[str] | None = None


class Harness(abc.ABC):
    """The transport under test and a way to make its next call answer."""

    transport: Transport

    @abc.abstractmethod
    def prepare(self, *, stream: bool, max_output_tokens: int | None = None) -> Prepared:
        """Ready one reply and return the request that gets it. With
        ``max_output_tokens``, the request asks for a long reply and sets that limit."""


class HttpHarness(Harness):
    """A harness over a scripted HTTP server, which can also fail on request."""

    @abc.abstractmethod
    def script_error(self, status: int, message: str, *, stream: bool) -> ModelRequest:
        """The next call gets an HTTP error ``status`` with ``message``."""

    @abc.abstractmethod
    def script_broken_stream(self) -> ModelRequest:
        """The next stream delivers a chunk, then the connection drops."""

    @abc.abstractmethod
    def script_non_json(self, *, stream: bool) -> ModelRequest:
        """The next call gets a body (or stream event) that is not JSON."""


def candidate(response: dict[str, Any]) -> dict[str, Any]:
    candidates = response.get("candidates")
    assert isinstance(candidates, list) and candidates, response
    first = candidates[0]
    assert isinstance(first, dict)
    return first


def response_text(response: dict[str, Any]) -> str:
    """The visible text of the first candidate (thoughts left out)."""
    content = candidate(response).get("content") or {}
    return "".join(
        part["text"]
        for part in content.get("parts") or []
        if isinstance(part.get("text"), str) and not part.get("thought")
    )


def _chunk_text(chunk: dict[str, Any]) -> str:
    if not chunk.get("candidates"):
        return ""
    return response_text(chunk)


def _finish_reasons(chunks: list[dict[str, Any]]) -> list[Any]:
    return [
        c.get("finishReason")
        for chunk in chunks
        for c in chunk.get("candidates") or []
        if c.get("finishReason")
    ]


def _assert_usage(usage: Any, *, limit: int | None = None) -> None:
    assert isinstance(usage, dict), usage
    for name in ("promptTokenCount", "candidatesTokenCount", "totalTokenCount"):
        assert isinstance(usage.get(name), int) and usage[name] >= 0, usage
    assert usage["promptTokenCount"] > 0
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage[
        "candidatesTokenCount"
    ] + usage.get("thoughtsTokenCount", 0)
    if limit is not None:
        assert usage["candidatesTokenCount"] <= limit


def _assert_wire_response(response: dict[str, Any]) -> None:
    first = candidate(response)
    content = first.get("content")
    assert isinstance(content, dict) and content.get("role") == "model", first
    assert isinstance(content.get("parts"), list) and content["parts"], first
    assert first.get("finishReason") in ("STOP", "MAX_TOKENS"), first


def _assert_stream(chunks: list[dict[str, Any]], prepared: Prepared) -> None:
    assert len(chunks) >= 1
    for chunk in chunks:
        assert isinstance(chunk, dict)
    texts = [_chunk_text(chunk) for chunk in chunks]
    if prepared.pieces is not None:
        assert [text for text in texts if text] == prepared.pieces
    merger = StreamMerger()
    for chunk in chunks:
        merger.add(chunk)
    merged = merger.merged()
    assert response_text(merged) == "".join(texts)
    assert response_text(merged), "a stream with no text"
    # The finish reason comes once, on the last chunk.
    assert _finish_reasons(chunks[:-1]) == []
    assert candidate(chunks[-1]).get("finishReason") in ("STOP", "MAX_TOKENS")
    if "usageMetadata" in chunks[-1]:
        _assert_usage(chunks[-1]["usageMetadata"])


class TransportContract:
    """What every transport does. Subclasses define the ``harness`` fixture."""

    @pytest.fixture
    def harness(self) -> Iterator[Harness]:  # pragma: no cover - always overridden
        raise NotImplementedError("define a harness fixture")

    # ----------------------------------------------------------------- sync

    def test_generate_returns_a_wire_response(self, harness: Harness) -> None:
        prepared = harness.prepare(stream=False)
        response = harness.transport.generate(prepared.request)
        _assert_wire_response(response)
        assert response_text(response)
        _assert_usage(response.get("usageMetadata"))

    def test_stream_yields_text_in_order_and_finishes_last(self, harness: Harness) -> None:
        prepared = harness.prepare(stream=True)
        chunks = list(harness.transport.stream(prepared.request))
        _assert_stream(chunks, prepared)

    def test_stream_closed_after_first_chunk_leaves_the_transport_usable(
        self, harness: Harness
    ) -> None:
        prepared = harness.prepare(stream=True)
        chunks = harness.transport.stream(prepared.request)
        first = next(iter(chunks))
        assert isinstance(first, dict)
        close = getattr(chunks, "close", None)
        assert close is not None, "stream() must return a generator (closable)"
        close()
        again = harness.prepare(stream=False)
        _assert_wire_response(harness.transport.generate(again.request))
        prepared = harness.prepare(stream=True)
        _assert_stream(list(harness.transport.stream(prepared.request)), prepared)

    def test_max_output_tokens_limits_the_reply(self, harness: Harness) -> None:
        prepared = harness.prepare(stream=False, max_output_tokens=5)
        response = harness.transport.generate(prepared.request)
        assert candidate(response).get("finishReason") == "MAX_TOKENS"
        _assert_usage(response.get("usageMetadata"), limit=5)

    def test_max_output_tokens_limits_a_stream(self, harness: Harness) -> None:
        prepared = harness.prepare(stream=True, max_output_tokens=5)
        chunks = list(harness.transport.stream(prepared.request))
        assert candidate(chunks[-1]).get("finishReason") == "MAX_TOKENS"
        if "usageMetadata" in chunks[-1]:
            _assert_usage(chunks[-1]["usageMetadata"], limit=5)

    # ----------------------------------------------------------------- async

    async def test_agenerate_returns_a_wire_response(self, harness: Harness) -> None:
        try:
            prepared = harness.prepare(stream=False)
            response = await harness.transport.agenerate(prepared.request)
            _assert_wire_response(response)
            assert response_text(response)
            _assert_usage(response.get("usageMetadata"))
        finally:
            await harness.transport.aclose()

    async def test_astream_yields_text_in_order_and_finishes_last(self, harness: Harness) -> None:
        try:
            prepared = harness.prepare(stream=True)
            chunks = [chunk async for chunk in harness.transport.astream(prepared.request)]
            _assert_stream(chunks, prepared)
        finally:
            await harness.transport.aclose()

    async def test_astream_closed_after_first_chunk_leaves_the_transport_usable(
        self, harness: Harness
    ) -> None:
        try:
            prepared = harness.prepare(stream=True)
            chunks = harness.transport.astream(prepared.request)
            first = await chunks.__anext__()
            assert isinstance(first, dict)
            aclose = getattr(chunks, "aclose", None)
            assert aclose is not None, "astream() must return an async generator (closable)"
            await aclose()
            again = harness.prepare(stream=False)
            _assert_wire_response(await harness.transport.agenerate(again.request))
            prepared = harness.prepare(stream=True)
            _assert_stream([c async for c in harness.transport.astream(prepared.request)], prepared)
        finally:
            await harness.transport.aclose()

    async def test_amax_output_tokens_limits_the_reply(self, harness: Harness) -> None:
        try:
            prepared = harness.prepare(stream=False, max_output_tokens=5)
            response = await harness.transport.agenerate(prepared.request)
            assert candidate(response).get("finishReason") == "MAX_TOKENS"
            _assert_usage(response.get("usageMetadata"), limit=5)
        finally:
            await harness.transport.aclose()


_STATUSES = [(400, ClientError), (429, ClientError), (500, ServerError)]


class HttpErrorContract:
    """How an HTTP transport fails. Needs a ``harness`` fixture returning an HttpHarness."""

    @pytest.mark.parametrize(("status", "error_class"), _STATUSES)
    def test_http_error_from_generate(
        self, harness: HttpHarness, status: int, error_class: type[APIError]
    ) -> None:
        request = harness.script_error(status, "scripted failure", stream=False)
        with pytest.raises(error_class) as caught:
            harness.transport.generate(request)
        assert caught.value.code == status
        assert caught.value.error_message == "scripted failure"
        assert isinstance(caught.value.status, str) and caught.value.status

    @pytest.mark.parametrize(("status", "error_class"), _STATUSES)
    def test_http_error_from_stream(
        self, harness: HttpHarness, status: int, error_class: type[APIError]
    ) -> None:
        request = harness.script_error(status, "scripted failure", stream=True)
        with pytest.raises(error_class) as caught:
            list(harness.transport.stream(request))
        assert caught.value.code == status
        assert caught.value.error_message == "scripted failure"

    @pytest.mark.parametrize(("status", "error_class"), _STATUSES)
    async def test_http_error_from_async_calls(
        self, harness: HttpHarness, status: int, error_class: type[APIError]
    ) -> None:
        try:
            request = harness.script_error(status, "scripted failure", stream=False)
            with pytest.raises(error_class) as caught:
                await harness.transport.agenerate(request)
            assert caught.value.code == status
            request = harness.script_error(status, "scripted failure", stream=True)
            with pytest.raises(error_class) as caught:
                _ = [chunk async for chunk in harness.transport.astream(request)]
            assert caught.value.code == status
        finally:
            await harness.transport.aclose()

    def test_broken_stream(self, harness: HttpHarness) -> None:
        request = harness.script_broken_stream()
        received: list[dict[str, Any]] = []
        with pytest.raises((ModelConnectionError, InvalidResponseError)):
            for chunk in harness.transport.stream(request):
                received.append(chunk)
        assert _finish_reasons(received) == []

    async def test_broken_async_stream(self, harness: HttpHarness) -> None:
        try:
            request = harness.script_broken_stream()
            with pytest.raises((ModelConnectionError, InvalidResponseError)):
                _ = [chunk async for chunk in harness.transport.astream(request)]
        finally:
            await harness.transport.aclose()

    def test_non_json_body(self, harness: HttpHarness) -> None:
        request = harness.script_non_json(stream=False)
        with pytest.raises(InvalidResponseError):
            harness.transport.generate(request)

    def test_non_json_stream_event(self, harness: HttpHarness) -> None:
        request = harness.script_non_json(stream=True)
        with pytest.raises(InvalidResponseError):
            list(harness.transport.stream(request))

    async def test_non_json_async(self, harness: HttpHarness) -> None:
        try:
            request = harness.script_non_json(stream=False)
            with pytest.raises(InvalidResponseError):
                await harness.transport.agenerate(request)
            request = harness.script_non_json(stream=True)
            with pytest.raises(InvalidResponseError):
                _ = [chunk async for chunk in harness.transport.astream(request)]
        finally:
            await harness.transport.aclose()

    def test_the_transport_still_works_after_errors(self, harness: HttpHarness) -> None:
        with contextlib.suppress(APIError):
            harness.transport.generate(harness.script_error(500, "boom", stream=False))
        with contextlib.suppress(ModelConnectionError, InvalidResponseError):
            list(harness.transport.stream(harness.script_broken_stream()))
        prepared = harness.prepare(stream=False)
        _assert_wire_response(harness.transport.generate(prepared.request))
