"""The transport contract: one suite, written once, that every transport must pass.

A test module subclasses the contracts its transport keeps and defines a ``harness``
fixture returning a :class:`Harness`: the transport under test, and a way to make its
next call answer. For a scripted transport or server, ``prepare`` scripts the reply (and
says which text pieces it will stream); for a real model it only builds a request the
model will answer. The suite checks structure, never the exact words of a real model,
and never wall-clock times.

- :class:`TransportContract`: every transport (Gemini, OpenAI-compatible, local, scripted).
- :class:`TimeoutContract`: transports that honour ``http_options.timeout`` (all but the
  scripted one): a request over it ends with ModelTimeoutError, sync and async.
- :class:`EmptyStreamContract`: transports that can be made to stream nothing: a stream
  that ends without a chunk is an InvalidResponseError, never an empty answer.
- :class:`HttpContract`: HTTP transports against a scripted server: errors, broken and
  non-JSON answers, 200 answers that are no stream, error objects in 200 answers, the
  answer size limit, redirects, and secrets the server echoes.

This module is not collected by itself (its name does not start with ``test_`` and its
classes do not start with ``Test``).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import chatledger
from chatledger.client._stream import StreamMerger
from chatledger.client.transports.base import ModelRequest, Transport
from chatledger.errors import (
    APIError,
    ClientError,
    InvalidResponseError,
    ModelConnectionError,
    ModelTimeoutError,
    ServerError,
    register_secret,
)
from chatledger.types import HttpOptions
from tests.support.scripted_server import ScriptedServer

__all__ = [
    "EmptyStreamContract",
    "Harness",
    "HttpContract",
    "HttpHarness",
    "Prepared",
    "ScriptableHarness",
    "TimeoutContract",
    "TransportContract",
    "candidate",
    "check_a_chat",
    "response_text",
]

#: The timeout of :class:`TimeoutContract`'s requests (milliseconds); their answers take
#: far longer.
TIMEOUT_MS = 100


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

    def transport_with(self, **http_options: Any) -> Transport:
        """Another transport to the same model, with these ``http_options``."""
        raise NotImplementedError(f"{type(self).__name__} cannot make another transport")

    def slow_request(self, *, stream: bool) -> ModelRequest:
        """A request whose answer takes far longer than :data:`TIMEOUT_MS`."""
        raise NotImplementedError(f"{type(self).__name__} has no slow request")


class ScriptableHarness(Harness):
    """A harness that can script any answer."""

    @abc.abstractmethod
    def script_empty_stream(self) -> ModelRequest:
        """The next stream ends, cleanly, without a single chunk."""


class HttpHarness(ScriptableHarness):
    """A harness over a scripted HTTP server (:class:`ScriptedServer`), which can also
    fail on request. Concrete: a protocol supplies its bodies and its error shape."""

    #: The key every transport of the harness is made with.
    API_KEY = "contract-test-key-5a6b7c8d9e"

    def __init__(
        self, server: ScriptedServer, transport_class: type[Transport], base_url: str
    ) -> None:
        self.server = server
        self._transport_class = transport_class
        self._base_url = base_url
        self.transport = self.transport_with()

    def transport_with(self, **http_options: Any) -> Transport:
        options = HttpOptions(base_url=self._base_url, **http_options)
        return self._transport_class(self.API_KEY, options)  # type: ignore[call-arg]

    # ----------------------------------------------------------------- the protocol

    @abc.abstractmethod
    def request(self, max_output_tokens: int | None = None) -> ModelRequest:
        """A request (its answer is whatever is scripted next)."""

    @abc.abstractmethod
    def body(self, text: str, *, max_tokens: bool = False, tokens: int = 1) -> dict[str, Any]:
        """A whole answer saying ``text``; ``max_tokens``: cut at the limit."""

    @abc.abstractmethod
    def events(
        self, pieces: list[str], *, max_tokens: bool = False, finish: bool = True
    ) -> list[Any]:
        """A streamed answer (each event a dict or a raw data string), with usage."""

    @abc.abstractmethod
    def error_body(self, status: int, message: str) -> dict[str, Any]:
        """The protocol's error object."""

    # ----------------------------------------------------------------- scripting

    def prepare(self, *, stream: bool, max_output_tokens: int | None = None) -> Prepared:
        if max_output_tokens:
            pieces = ["Once", " upon", " a", " time", " there", " was"][:max_output_tokens]
        else:
            pieces = ["Hel", "lo, ", "world", "!"]
        cut = bool(max_output_tokens)
        if stream:
            self.server.reply_sse(self.events(pieces, max_tokens=cut))
        else:
            self.server.reply_json(self.body("".join(pieces), max_tokens=cut, tokens=len(pieces)))
        return Prepared(self.request(max_output_tokens), pieces if stream else None)

    def slow_request(self, *, stream: bool) -> ModelRequest:
        if stream:
            self.server.reply_sse(self.events(["late"]), delay=2.0)
        else:
            self.server.reply_json(self.body("late"), delay=2.0)
        return self.request()

    def script_empty_stream(self) -> ModelRequest:
        self.server.reply_sse([])
        return self.request()

    def script_error(self, status: int, message: str, *, stream: bool) -> ModelRequest:
        self.server.reply_json(self.error_body(status, message), status=status)
        return self.request()

    def script_error_object(self, status: int, message: str, *, stream: bool) -> ModelRequest:
        error = self.error_body(status, message)
        if stream:
            self.server.reply_sse([error])
        else:
            self.server.reply_json(error)
        return self.request()

    def script_broken_stream(self) -> ModelRequest:
        self.server.reply_sse(self.events(["Hel", "lo", " there"]), drop_after=2)
        return self.request()

    def script_non_json(self, *, stream: bool) -> ModelRequest:
        if stream:
            events = self.events(["Hi", "there"])
            self.server.reply_sse([*events[:-1], "{this is not json", events[-1]])
        else:
            self.server.reply_raw(b"<html><body>It works!</body></html>", status=200)
        return self.request()

    def script_text(self, text: str, *, stream: bool) -> ModelRequest:
        if stream:
            self.server.reply_sse(self.events([text]))
        else:
            self.server.reply_json(self.body(text))
        return self.request()

    def script_no_stream(self) -> ModelRequest:
        """The next stream gets a 200 answer that holds no server-sent event."""
        self.server.reply_raw(b"<html><body>It works!</body></html>", status=200)
        return self.request()

    def script_redirect(self, location: str, *, stream: bool) -> ModelRequest:
        """The next call gets a 307 redirect to ``location``."""
        self.server.reply_raw(b"", status=307, headers={"Location": location})
        return self.request()


# --------------------------------------------------------------------------- checks


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


async def _collect(chunks: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [chunk async for chunk in chunks]


@contextlib.contextmanager
def _closing(transport: Transport) -> Iterator[Transport]:
    try:
        yield transport
    finally:
        transport.close()


def _text(content: Any) -> str:
    return "".join(part.text or "" for part in content.parts or [])


def check_a_chat(
    client: chatledger.Client, model: str, config: dict[str, Any], transport: str
) -> Any:
    """A whole chat through a real model: a reply, then a streamed one. The history holds
    both turns as the caller saw them; the log holds each step, made by ``transport``,
    and verifies. Returns the chat."""
    chat = client.chats.create(model=model, config=config)
    reply = chat.send_message("Say hello to me.")
    assert reply.text
    assert reply.usage_metadata is not None and reply.usage_metadata.candidates_token_count
    chunks = list(chat.send_message_stream("Now say goodbye."))
    streamed_text = "".join(chunk.text or "" for chunk in chunks)
    assert chunks and streamed_text

    history = chat.get_history()
    assert [content.role for content in history] == ["user", "model", "user", "model"]
    assert [_text(content) for content in history] == [
        "Say hello to me.",
        reply.text,
        "Now say goodbye.",
        streamed_text,
    ]
    events = chat.events()
    assert [event.type for event in events] == [
        "conversation_started",
        *["user_message_added", "model_call_started", "model_responded"] * 2,
    ]
    started = [event.data for event in events if event.type == "model_call_started"]
    assert [(data.transport, data.streamed) for data in started] == [  # type: ignore[attr-defined]
        (transport, False),
        (transport, True),
    ]
    responded = [event.data for event in events if event.type == "model_responded"]
    assert [data.streamed for data in responded] == [False, True]  # type: ignore[attr-defined]
    assert responded[1].chunks == len(chunks)  # type: ignore[attr-defined]
    assert chat.verify().ok
    return chat


# --------------------------------------------------------------------------- contracts


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
            chunks = await _collect(harness.transport.astream(prepared.request))
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
            _assert_stream(await _collect(harness.transport.astream(prepared.request)), prepared)
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


class TimeoutContract:
    """``http_options.timeout`` bounds a whole request, streamed or not, sync or async;
    the transport works again afterwards. The harness makes the transports."""

    @pytest.mark.parametrize("stream", [False, True], ids=["generate", "stream"])
    def test_a_request_over_its_timeout_fails(self, harness: Harness, stream: bool) -> None:
        with _closing(harness.transport_with(timeout=TIMEOUT_MS)) as impatient:
            request = harness.slow_request(stream=stream)
            with pytest.raises(ModelTimeoutError, match=r"http_options\.timeout"):
                if stream:
                    list(impatient.stream(request))
                else:
                    impatient.generate(request)
        prepared = harness.prepare(stream=False)
        _assert_wire_response(harness.transport.generate(prepared.request))

    @pytest.mark.parametrize("stream", [False, True], ids=["generate", "stream"])
    async def test_an_async_request_over_its_timeout_fails(
        self, harness: Harness, stream: bool
    ) -> None:
        impatient = harness.transport_with(timeout=TIMEOUT_MS)
        try:
            request = harness.slow_request(stream=stream)
            with pytest.raises(ModelTimeoutError, match=r"http_options\.timeout"):
                if stream:
                    await _collect(impatient.astream(request))
                else:
                    await impatient.agenerate(request)
        finally:
            await impatient.aclose()


class EmptyStreamContract:
    """A stream that ends without a single chunk is no answer: InvalidResponseError,
    sync and async, never an empty reply for the chat to record."""

    def test_a_stream_without_a_chunk_is_an_invalid_response(
        self, harness: ScriptableHarness
    ) -> None:
        with pytest.raises(InvalidResponseError, match="ended without any answer"):
            list(harness.transport.stream(harness.script_empty_stream()))

    async def test_an_async_stream_without_a_chunk_is_an_invalid_response(
        self, harness: ScriptableHarness
    ) -> None:
        try:
            with pytest.raises(InvalidResponseError, match="ended without any answer"):
                await _collect(harness.transport.astream(harness.script_empty_stream()))
        finally:
            await harness.transport.aclose()


_STATUSES = [(400, ClientError), (429, ClientError), (500, ServerError)]


class HttpContract(EmptyStreamContract, TimeoutContract):
    """How an HTTP transport answers a scripted server that misbehaves. Needs a
    ``harness`` fixture returning an :class:`HttpHarness`."""

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
                await _collect(harness.transport.astream(request))
            assert caught.value.code == status
        finally:
            await harness.transport.aclose()

    @pytest.mark.parametrize("stream", [False, True], ids=["generate", "stream"])
    def test_an_error_object_in_a_200_answer_is_that_error(
        self, harness: HttpHarness, stream: bool
    ) -> None:
        request = harness.script_error_object(503, "overloaded", stream=stream)
        with pytest.raises(ServerError, match="overloaded") as caught:
            if stream:
                list(harness.transport.stream(request))
            else:
                harness.transport.generate(request)
        assert caught.value.code == 503

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
                await _collect(harness.transport.astream(request))
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
                await _collect(harness.transport.astream(request))
        finally:
            await harness.transport.aclose()

    def test_a_200_answer_that_is_no_stream_is_an_invalid_response(
        self, harness: HttpHarness
    ) -> None:
        request = harness.script_no_stream()
        with pytest.raises(InvalidResponseError, match="it starts '<html>"):
            list(harness.transport.stream(request))

    async def test_an_async_200_answer_that_is_no_stream_is_an_invalid_response(
        self, harness: HttpHarness
    ) -> None:
        try:
            request = harness.script_no_stream()
            with pytest.raises(InvalidResponseError, match="it starts '<html>"):
                await _collect(harness.transport.astream(request))
        finally:
            await harness.transport.aclose()

    @pytest.mark.parametrize("stream", [False, True], ids=["generate", "stream"])
    def test_an_answer_over_max_response_bytes_is_refused(
        self, harness: HttpHarness, stream: bool
    ) -> None:
        with _closing(harness.transport_with(max_response_bytes=4096)) as limited:
            request = harness.script_text("many words " * 1000, stream=stream)
            with pytest.raises(InvalidResponseError, match=r"max_response_bytes \(4096 bytes\)"):
                if stream:
                    list(limited.stream(request))
                else:
                    limited.generate(request)
            request = harness.script_text("few words", stream=stream)
            answer = list(limited.stream(request)) if stream else [limited.generate(request)]
            assert "".join(_chunk_text(chunk) for chunk in answer) == "few words"

    @pytest.mark.parametrize("stream", [False, True], ids=["generate", "stream"])
    def test_a_secret_the_server_echoes_is_masked(self, harness: HttpHarness, stream: bool) -> None:
        secret = "echoed-SECRET-value-0c1d2e3f"
        register_secret(secret)
        request = harness.script_text(f"your key is {secret}, keep it safe", stream=stream)
        answer = (
            list(harness.transport.stream(request))
            if stream
            else [harness.transport.generate(request)]
        )
        assert "".join(_chunk_text(chunk) for chunk in answer) == "your key is ***, keep it safe"
        assert secret not in repr(answer)

    @pytest.mark.parametrize("stream", [False, True], ids=["generate", "stream"])
    def test_an_error_that_echoes_the_key_is_masked(
        self, harness: HttpHarness, stream: bool
    ) -> None:
        """A server that echoes the API key in an error's body and headers: the error,
        its details and the response kept on it show ``***``."""
        key = HttpHarness.API_KEY
        harness.server.reply_json(
            harness.error_body(401, f"bad key {key}"), status=401, headers={"X-Echo": key}
        )
        with pytest.raises(ClientError) as caught:
            if stream:
                list(harness.transport.stream(harness.request()))
            else:
                harness.transport.generate(harness.request())
        error = caught.value
        assert error.error_message == "bad key ***"
        assert error.response.headers["x-echo"] == "***"
        for text in (str(error), repr(error.details), repr(error.response)):
            assert key not in text, text

    @pytest.mark.parametrize("stream", [False, True], ids=["generate", "stream"])
    def test_a_redirect_is_not_followed(self, harness: HttpHarness, stream: bool) -> None:
        sent = len(harness.server.requests)
        request = harness.script_redirect("http://127.0.0.1:9/elsewhere", stream=stream)
        with pytest.raises(APIError, match="does not follow redirects") as caught:
            if stream:
                list(harness.transport.stream(request))
            else:
                harness.transport.generate(request)
        assert caught.value.code == 307
        assert "127.0.0.1:9/elsewhere" in str(caught.value)
        assert len(harness.server.requests) == sent + 1

    def test_the_transport_still_works_after_errors(self, harness: HttpHarness) -> None:
        with contextlib.suppress(APIError):
            harness.transport.generate(harness.script_error(500, "boom", stream=False))
        with contextlib.suppress(ModelConnectionError, InvalidResponseError):
            list(harness.transport.stream(harness.script_broken_stream()))
        with contextlib.suppress(InvalidResponseError):
            list(harness.transport.stream(harness.script_no_stream()))
        prepared = harness.prepare(stream=False)
        _assert_wire_response(harness.transport.generate(prepared.request))
