"""One base for the transports that speak HTTP (Gemini REST, OpenAI-compatible).

:class:`HttpTransport` does everything but the protocol: the base URL and the credentials,
the headers, the httpx clients, the request's budget of time and bytes (see
:mod:`._http`), reading a body or a stream of server-sent events, and checking what comes
back. A protocol supplies five things: the URL of a request, its body, how its API key
travels, how a whole answer becomes a wire ``GenerateContentResponse``, and a
:class:`StreamDecoder` that turns the data of each event into wire chunks.

What every HTTP transport guarantees, sync and async alike:

- an answer that is not a response (not JSON, not an object, an ``error`` object in a
  200 body or a stream event) is an error, streamed or not, never a recorded reply;
- a stream that ends without any chunk (an empty body, a body of something else than
  server-sent events) is :class:`~chatledger.errors.InvalidResponseError`, quoting
  how the body started;
- an answer larger than ``http_options.max_response_bytes`` (default 64 MiB: a body, or
  a whole stream) is refused as soon as it passes it;
- ``http_options.timeout`` bounds the whole request, streams included;
- a registered secret (the API key, credential headers, a password in the base URL) that
  the server echoes in its answer is masked as ``***`` before anyone sees or records it
  (:func:`chatledger.errors.mask_echoed_secrets`, see ``docs/security.md``);
- a redirect is never followed: it would carry the key's header to wherever it points.
"""

from __future__ import annotations

import abc
import contextlib
import os
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from typing import Any, ClassVar

import httpx
import msgspec

from ..._version import __version__
from ...errors import (
    APIError,
    InvalidInputError,
    InvalidResponseError,
    mask_echoed_secrets,
    redact,
    register_secret,
)
from ...types import HttpOptions
from ._credentials import check_header, parse_base_url, register_secret_headers
from ._http import (
    DEFAULT_MAX_RESPONSE_BYTES,
    SERVER_FAULT,
    HttpCall,
    HttpResponseInfo,
    RequestBudget,
    aopen_response,
    aread_body,
    decode_json_object,
    error_from_response,
    open_response,
    read_body,
    response_info,
)
from ._pool import async_client, sync_client
from ._sse import aiter_sse_data, iter_sse_data
from .base import ModelRequest, Transport

__all__ = ["HttpTransport", "StreamDecoder", "httpx_timeout", "max_response_bytes"]


def httpx_timeout(http_options: HttpOptions | None) -> httpx.Timeout:
    """``http_options.timeout`` (milliseconds) as httpx's per-phase timeouts: no single
    connect, read or write may take longer than the whole request's budget."""
    if http_options is not None and http_options.timeout is not None:
        if http_options.timeout <= 0:
            raise InvalidInputError(
                "http_options.timeout must be a positive number of milliseconds"
            )
        return httpx.Timeout(http_options.timeout / 1000)
    # No read limit by default (long generations are legitimate), but a bounded connect.
    return httpx.Timeout(None, connect=30.0)


def max_response_bytes(http_options: HttpOptions | None) -> int:
    """``http_options.max_response_bytes``, checked; the default when it is not set."""
    limit = http_options.max_response_bytes if http_options is not None else None
    if limit is None:
        return DEFAULT_MAX_RESPONSE_BYTES
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInputError(
            f"http_options.max_response_bytes must be a positive number of bytes, got {limit!r}"
        )
    return limit


class StreamDecoder(abc.ABC):
    """Turns the ``data`` of a stream's server-sent events into wire chunks.

    :meth:`feed` takes one event's data and returns the chunks it makes (maybe none);
    setting ``done`` ends the stream there (OpenAI's ``[DONE]``). :meth:`finish` returns
    what is still held when the events end, and refuses a stream that answered nothing.
    """

    def __init__(self, budget: RequestBudget) -> None:
        self.budget = budget
        self.done = False
        #: Chunks made so far.
        self.chunks = 0
        #: Events seen so far.
        self.events = 0

    @abc.abstractmethod
    def feed(self, data: str) -> list[dict[str, Any]]:
        """The wire chunks one event's ``data`` makes."""

    def finish(self) -> list[dict[str, Any]]:
        """The wire chunks still held when the events end; raises when there were none."""
        if not self.chunks:
            raise self.no_answer()
        return []

    def no_answer(self) -> InvalidResponseError:
        """The error for a stream that ended without any answer."""
        if self.events:
            what = f"{self.events} event(s), none of them an answer"
        elif self.budget.preview:
            what = f"no server-sent event; it starts {self.budget.shown_preview()}"
        else:
            what = "nothing at all"
        return InvalidResponseError(
            f"the stream from {self.budget.host} ended without any answer ({what}); "
            f"the answer is not in the history. {SERVER_FAULT[0].upper()}{SERVER_FAULT[1:]}"
        )

    def _out(self, chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.chunks += len(chunks)
        return [mask_echoed_secrets(chunk) for chunk in chunks]

    def iter(self, events: Generator[str, None, None]) -> Iterator[dict[str, Any]]:
        """The chunks of a stream, from the data of its events."""
        with contextlib.closing(events):
            for data in events:
                self.events += 1
                yield from self._out(self.feed(data))
                if self.done:
                    break
        yield from self._out(self.finish())

    async def aiter(
        self, events: AsyncGenerator[str, None]
    ) -> AsyncGenerator[dict[str, Any], None]:
        """As :meth:`iter`, for an async stream of event data."""
        async with contextlib.aclosing(events):
            async for data in events:
                self.events += 1
                for chunk in self._out(self.feed(data)):
                    yield chunk
                if self.done:
                    break
        for chunk in self._out(self.finish()):
            yield chunk


def _is_json(response: httpx.Response) -> bool:
    content_type = str(response.headers.get("content-type", ""))
    return content_type.split(";")[0].strip().lower() == "application/json"


class HttpTransport(Transport):
    """A model server over HTTP, sync and async, with everything the module docstring
    lists. Subclasses name their defaults and implement the protocol's hooks.

    ``http_options``: ``base_url`` (else the environment variable
    :attr:`base_url_env`, else :attr:`default_base_url`), extra ``headers`` (sent last,
    so they may replace any other), ``timeout`` (milliseconds, the budget of the whole
    request) and ``max_response_bytes``. ``http_client`` / ``async_http_client`` are
    httpx clients to use instead of the transport's own.
    """

    #: Where requests go when neither ``http_options.base_url`` nor the environment say.
    default_base_url: ClassVar[str]
    #: The environment variable that may name the base URL.
    base_url_env: ClassVar[str]

    def __init__(
        self,
        api_key: str | None = None,
        http_options: HttpOptions | None = None,
        *,
        http_client: httpx.Client | None = None,
        async_http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._api_key = api_key or None
        register_secret(api_key)
        self._options = http_options or HttpOptions()
        register_secret_headers(self._options.headers)
        if self._api_key is not None:
            check_header("Authorization", self._api_key, what="the API key")
        if self._options.base_url:
            self.endpoint = parse_base_url(self._options.base_url)
        elif os.environ.get(self.base_url_env):
            self.endpoint = parse_base_url(os.environ[self.base_url_env], setting=self.base_url_env)
        else:
            self.endpoint = parse_base_url(self.default_base_url)
        #: ``host[:port]`` of the server, as messages name it.
        self.host = self.endpoint.host
        self._timeout = httpx_timeout(self._options)
        self.max_response_bytes = max_response_bytes(self._options)
        self._client = http_client
        self._async_client = async_http_client
        # Threads sending at once must share one client (one pool), not make one each.
        self._client_lock = threading.Lock()
        self.setup()

    def setup(self) -> None:
        """What a protocol sets up once the options are read (the end of ``__init__``)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.endpoint.shown!r})"

    # ----------------------------------------------------------------- the protocol

    @abc.abstractmethod
    def request_url(self, request: ModelRequest, *, stream: bool) -> str:
        """Where ``request`` is POSTed."""

    @abc.abstractmethod
    def request_body(self, request: ModelRequest, *, stream: bool) -> dict[str, Any]:
        """The JSON body of ``request``."""

    @abc.abstractmethod
    def key_headers(self) -> dict[str, str]:
        """The headers that carry the API key (raise when the protocol needs one)."""

    @abc.abstractmethod
    def response_from_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """A whole 200 answer as a wire response; raises the APIError it may carry."""

    @abc.abstractmethod
    def stream_decoder(self, budget: RequestBudget) -> StreamDecoder:
        """A decoder for one streamed answer."""

    def error_from_response(self, response: httpx.Response, content: bytes) -> APIError:
        """The APIError for a non-2xx answer whose (possibly cut) body is ``content``."""
        return error_from_response(response, content)

    # ----------------------------------------------------------------- plumbing

    def headers(self, *, stream: bool) -> dict[str, str]:
        """Every header of a request: JSON in, SSE or JSON out, the credentials of the
        base URL, the API key, then ``http_options.headers``."""
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
            "User-Agent": f"chatledger/{__version__}",
        }
        if self.endpoint.basic_auth:
            headers["Authorization"] = self.endpoint.basic_auth
        headers.update(self.key_headers())
        headers.update(self._options.headers or {})
        return headers

    def _sync(self) -> httpx.Client:
        client = self._client
        if client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = sync_client(self._timeout)
                client = self._client
        return client

    def _async(self) -> httpx.AsyncClient:
        if self._async_client is None:
            self._async_client = async_client(self._timeout)
        return self._async_client

    def _prepare(self, request: ModelRequest, *, stream: bool) -> HttpCall:
        """The POST for ``request``, with a fresh budget. Called once the httpx client
        exists: making one (its TLS context) can take longer than a short timeout, and is
        not the server's time."""
        return HttpCall(
            url=self.request_url(request, stream=stream),
            content=msgspec.json.encode(self.request_body(request, stream=stream)),
            headers=self.headers(stream=stream),
            budget=RequestBudget(self._options.timeout, self.host, self.max_response_bytes),
        )

    def _whole(self, response: httpx.Response, content: bytes) -> dict[str, Any]:
        """A whole answer (a body read by :func:`read_body`) as a checked wire response."""
        if response.is_redirect:
            raise self._redirect(response, content)
        if response.status_code != 200:
            raise self.error_from_response(response, content)
        body = decode_json_object(content, f"the response body from {self.host}")
        answer: dict[str, Any] = mask_echoed_secrets(self.response_from_body(body))
        return answer

    def _redirect(self, response: httpx.Response, content: bytes) -> APIError:
        location = redact(response.headers.get("location", "(no Location header)"))
        message = (
            f"{self.host} answered with a redirect ({response.status_code}) to {location}; "
            "chatledger does not follow redirects, which could carry the API key to another "
            "host: set base_url to where the server really is"
        )
        text = content.decode("utf-8", "replace")
        info: HttpResponseInfo = response_info(response, text)
        body = {"error": {"code": response.status_code, "message": message, "status": "REDIRECT"}}
        return APIError(response.status_code, body, info)

    def _streams(self, response: httpx.Response) -> bool:
        """Whether an answer to a streamed request is a stream: not an error, and not a
        whole JSON answer (a server that does not stream answers in one piece)."""
        return response.status_code == 200 and not _is_json(response)

    # ----------------------------------------------------------------- sync

    def generate(self, request: ModelRequest) -> dict[str, Any]:
        client = self._sync()
        call = self._prepare(request, stream=False)
        with open_response(client, call) as response:
            content = read_body(response, call.budget)
        return self._whole(response, content)

    def stream(self, request: ModelRequest) -> Iterator[dict[str, Any]]:
        client = self._sync()
        call = self._prepare(request, stream=True)
        budget = call.budget
        with open_response(client, call) as response:
            if not self._streams(response):
                yield self._whole(response, read_body(response, budget))
                return
            yield from self.stream_decoder(budget).iter(iter_sse_data(response, budget))

    # ----------------------------------------------------------------- async

    async def agenerate(self, request: ModelRequest) -> dict[str, Any]:
        client = self._async()
        call = self._prepare(request, stream=False)
        async with aopen_response(client, call) as response:
            content = await aread_body(response, call.budget)
        return self._whole(response, content)

    async def astream(self, request: ModelRequest) -> AsyncIterator[dict[str, Any]]:
        client = self._async()
        call = self._prepare(request, stream=True)
        budget = call.budget
        async with aopen_response(client, call) as response:
            if not self._streams(response):
                yield self._whole(response, await aread_body(response, budget))
                return
            chunks = self.stream_decoder(budget).aiter(aiter_sse_data(response, budget))
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    yield chunk

    # ----------------------------------------------------------------- closing

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        self.close()
        if self._async_client is not None:
            await self._async_client.aclose()
            self._async_client = None
