"""The HTTP plumbing the model transports share: the request budget, bounded reading and
errors. (Credentials and base URLs are :mod:`._credentials`; server-sent events
:mod:`._sse`.)

A request is opened with :func:`open_response` (or :func:`aopen_response`) and its body
read with :func:`read_body` or :func:`._sse.iter_sse_data` (or their ``a`` twins).
Together they:

- translate httpx's exceptions into chatledger's, naming the host but never the URL's
  credentials, its query or a header;
- hold a request to ``http_options.timeout`` as a budget for the *whole* request:
  connecting, waiting for the answer and reading all of it, every chunk of a stream
  included. httpx's own timeouts are per phase (each connect, each read), so without
  this a server trickling a keep-alive comment every few seconds keeps a stream open
  forever. When the budget runs out the request ends with :class:`ModelTimeoutError`;
- hold an answer to ``http_options.max_response_bytes`` (default
  :data:`DEFAULT_MAX_RESPONSE_BYTES`, 64 MiB): every byte of a body, or of a whole
  stream, counts, so no body, line, event or merged streamed reply can grow past it. A
  larger answer is refused with :class:`InvalidResponseError` as soon as it is seen to
  be too large, never buffered whole; an error body is read to :data:`ERROR_BODY_BYTES`
  at most;
- never follow a redirect (it could carry the API key header to another host).
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import msgspec

from ...errors import (
    APIError,
    ChatledgerError,
    InvalidInputError,
    InvalidResponseError,
    ModelConnectionError,
    ModelTimeoutError,
    redact,
)
from ...events.envelope import check_json
from ._credentials import Endpoint, check_header, parse_base_url, register_secret_headers

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "ERROR_BODY_BYTES",
    "SERVER_FAULT",
    "Endpoint",
    "HttpCall",
    "HttpResponseInfo",
    "RequestBudget",
    "aiter_bytes",
    "aopen_response",
    "aread_body",
    "check_header",
    "decode_json_object",
    "error_from_response",
    "open_response",
    "parse_base_url",
    "read_body",
    "register_secret_headers",
    "response_info",
    "translate_httpx_errors",
]

#: The largest answer accepted by default (``http_options.max_response_bytes``): a
#: whole body, or every byte of a stream together. A larger one is refused
#: (:class:`InvalidResponseError`) as soon as it passes this size, never buffered whole.
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024

#: How much of an error body (a non-2xx answer) is read: the rest is not needed to say
#: what went wrong, and is not read at all (nor kept on the error and its event).
ERROR_BODY_BYTES = 64 * 1024

#: How much of the start of an answer is kept, to quote in an error about it.
_PREVIEW_BYTES = 200


class HttpResponseInfo(msgspec.Struct, frozen=True):
    """The parts of an HTTP response kept on an APIError: never the request or its headers."""

    status_code: int
    reason_phrase: str
    headers: dict[str, str]
    text: str


def response_info(response: httpx.Response, text: str) -> HttpResponseInfo:
    return HttpResponseInfo(
        status_code=response.status_code,
        reason_phrase=response.reason_phrase,
        # A server may echo a credential in a header too.
        headers={name: redact(value) for name, value in response.headers.items()},
        text=redact(text[:10_000]),
    )


def error_from_response(response: httpx.Response, content: bytes) -> APIError:
    """The APIError for a non-2xx response whose body has been read."""
    text = content.decode("utf-8", "replace")
    try:
        body: Any = msgspec.json.decode(content)
        # The error keeps the parsed body: it must be JSON that can be shown and redacted
        # (not nested deeper than the stack allows).
        check_json(body, "the error body")
    except (msgspec.DecodeError, RecursionError, InvalidInputError):
        body = {"message": text.strip()[:2000], "status": response.reason_phrase}
    return APIError.from_status(response.status_code, body, response_info(response, text))


SERVER_FAULT = (
    "the server (or a proxy in front of it) is at fault: send the message again, and if "
    "it keeps happening check that base_url points at the right kind of server"
)


def decode_json_object(content: bytes | str, what: str) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(content)
    except (msgspec.DecodeError, RecursionError) as exc:
        # RecursionError: nested deeper than the stack allows (a hostile server).
        shown = (
            content[:200] if isinstance(content, str) else content[:200].decode("utf-8", "replace")
        )
        raise InvalidResponseError(
            f"{what} is not valid JSON ({exc}), it starts {shown!r}; {SERVER_FAULT}"
        ) from None
    if not isinstance(value, dict):
        raise InvalidResponseError(
            f"{what} is not a JSON object but a JSON {type(value).__name__}; {SERVER_FAULT}"
        )
    return value


# --------------------------------------------------------------------------- the budget


class RequestBudget:
    """What one whole request may spend: time (``http_options.timeout``, milliseconds)
    and bytes (``http_options.max_response_bytes``).

    Made when a request starts. ``timeout_ms`` None means no deadline (httpx's per-phase
    timeouts only): :meth:`check` raises :class:`ModelTimeoutError` once the deadline
    has passed. Every byte of the answer is counted by :meth:`take`, which raises
    :class:`InvalidResponseError` past ``max_bytes`` and keeps the answer's first bytes
    (``preview``) to quote when it turns out not to be an answer at all.
    """

    __slots__ = (
        "answered",
        "deadline",
        "host",
        "max_bytes",
        "preview",
        "received",
        "timeout_ms",
    )

    def __init__(
        self, timeout_ms: int | None, host: str, max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    ) -> None:
        self.host = host
        self.timeout_ms = timeout_ms
        self.deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms else None
        #: Whether the response's headers arrived (the error says which phase ran out).
        self.answered = False
        self.max_bytes = max_bytes
        self.received = 0
        self.preview = b""

    def take(self, piece: bytes) -> None:
        """Count ``piece`` of the answer against the budget (bytes, then time)."""
        self.received += len(piece)
        if self.received > self.max_bytes:
            raise self.too_large()
        if len(self.preview) < _PREVIEW_BYTES:
            self.preview += piece[: _PREVIEW_BYTES - len(self.preview)]
        self.check()

    def too_large(self) -> InvalidResponseError:
        return InvalidResponseError(
            f"the answer from {self.host} is larger than http_options.max_response_bytes "
            f"({self.max_bytes} bytes); refusing it rather than holding it in memory. "
            f"{SERVER_FAULT[0].upper()}{SERVER_FAULT[1:]}; raise max_response_bytes if "
            "answers this long are expected"
        )

    def shown_preview(self) -> str:
        """The start of the answer, for a message."""
        return repr(self.preview.decode("utf-8", "replace"))

    def remaining(self) -> float | None:
        """Seconds left (never negative), or None without a budget."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def check(self) -> None:
        if self.expired():
            raise self.error()

    def error(self) -> ModelTimeoutError:
        if not self.answered:
            return ModelTimeoutError(
                f"{self.host} did not answer within http_options.timeout ({self.timeout_ms} "
                "ms), which bounds the whole request: connecting or waiting for the answer "
                "took too long. Check the base URL "
                "and that the server is up, then send the message again, raise "
                "http_options.timeout, or turn on retries (http_options.retry_options)"
            )
        return ModelTimeoutError(
            f"{self.host} did not finish answering within http_options.timeout "
            f"({self.timeout_ms} ms), which bounds the whole request, a streamed answer "
            "included; the answer is not in the history. Send the message again, raise "
            "http_options.timeout, or turn on retries (http_options.retry_options)"
        )

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Cancel the awaits inside when the deadline passes (async code only)."""
        remaining = self.remaining()
        if remaining is None:
            yield
            return
        try:
            with anyio.fail_after(remaining):
                yield
        except TimeoutError:
            raise self.error() from None


class _Watch:
    __slots__ = ("done", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.done = False


class _Watchdog:
    """Ends sync reads that outlive their request's budget.

    A blocking read cannot be told about a deadline after it started, so one daemon
    thread (started on first use) shuts down the socket of a response still open at its
    deadline: the read blocked on it returns at once, and the budget turns the broken
    connection into :class:`ModelTimeoutError`. A watch is cancelled (under the lock)
    before its response is closed, so a socket back in the connection pool is never
    touched.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start afresh (also in a forked child, where the thread and the lock are gone)."""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, _Watch]] = []
        self._live = 0
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watching(self, response: httpx.Response, budget: RequestBudget) -> Iterator[None]:
        sock = _socket_of(response)
        if budget.deadline is None or sock is None:
            yield
            return
        watch = _Watch(sock)
        with self._lock:
            heapq.heappush(self._heap, (budget.deadline, next(self._order), watch))
            self._live += 1
            if len(self._heap) > 2 * self._live + 64:  # drop finished watches
                self._heap = [entry for entry in self._heap if not entry[2].done]
                heapq.heapify(self._heap)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="chatledger-request-deadlines", daemon=True
                )
                self._thread.start()
            self._wake.notify()
        try:
            yield
        finally:
            with self._lock:
                if not watch.done:
                    watch.done = True
                    self._live -= 1

    def _run(self) -> None:
        with self._lock:
            while True:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wake.wait(timeout=60)
                    if not self._heap:
                        self._thread = None  # idle: let the thread go; the next watch starts one
                        return
                    continue
                deadline, _, watch = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._wake.wait(timeout=delay)
                    continue
                heapq.heappop(self._heap)
                watch.done = True
                self._live -= 1
                with contextlib.suppress(OSError):
                    # The plain socket's shutdown, also for an SSLSocket: it wakes a
                    # read blocked in another thread, which close() would not.
                    socket.socket.shutdown(watch.sock, socket.SHUT_RDWR)


def _socket_of(response: httpx.Response) -> socket.socket | None:
    stream = response.extensions.get("network_stream")
    get_extra_info = getattr(stream, "get_extra_info", None)
    sock = get_extra_info("socket") if get_extra_info is not None else None
    return sock if isinstance(sock, socket.socket) else None


_WATCHDOG = _Watchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WATCHDOG.reset)


# --------------------------------------------------------------------------- errors


@contextlib.contextmanager
def translate_httpx_errors(host: str, budget: RequestBudget | None = None) -> Iterator[None]:
    """httpx's exceptions as chatledger's, naming the host but never the URL's query.

    With a ``budget``, any failure after its deadline is the budget's timeout: that is
    how a read the watchdog cut short, or one cancelled at the deadline, ends.
    """
    try:
        yield
    except httpx.HTTPError as exc:
        if budget is not None and budget.expired() and not isinstance(exc, httpx.ConnectTimeout):
            raise budget.error() from None
        raise _translate(host, exc) from None


def _translate(host: str, exc: httpx.HTTPError) -> ChatledgerError:
    name = type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout):
        return ModelTimeoutError(
            f"could not connect to {host} in time ({name}); check the base URL and that the "
            "server is up, then send the message again, or raise http_options.timeout "
            "(milliseconds)"
        )
    if isinstance(exc, httpx.TimeoutException):
        return ModelTimeoutError(
            f"{host} did not answer in time ({name}); the answer is not in the history. Send "
            "the message again, raise http_options.timeout (milliseconds), or turn on "
            "retries (http_options.retry_options)"
        )
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return ModelConnectionError(
            f"the connection to {host} broke before the answer was complete ({name}: {exc}); "
            "the answer is not in the history. Send the message again, or turn on retries "
            "(http_options.retry_options)"
        )
    if isinstance(exc, httpx.DecodingError):
        return InvalidResponseError(
            f"the answer from {host} could not be decoded ({name}: {exc}); {SERVER_FAULT}"
        )
    return ModelConnectionError(
        f"cannot reach {host} ({name}: {exc}); check the base URL and that the server is running"
    )


# --------------------------------------------------------------------------- requests


@dataclasses.dataclass(frozen=True)
class HttpCall:
    """One POST: where, what, with which headers, and its budget."""

    url: str
    content: bytes
    headers: dict[str, str]
    budget: RequestBudget


@contextlib.contextmanager
def open_response(client: httpx.Client, call: HttpCall) -> Iterator[httpx.Response]:
    """POST; yield the response once its headers are in, its body still unread. Errors
    raised while the caller reads it are translated too; leaving the block closes it.
    A redirect is never followed (even by an ``http_client`` that would): it is an
    answer like any other status."""
    budget = call.budget
    with translate_httpx_errors(budget.host, budget):
        request = client.build_request("POST", call.url, content=call.content, headers=call.headers)
        response = client.send(request, stream=True, follow_redirects=False)
        budget.answered = True
        try:
            with _WATCHDOG.watching(response, budget):
                budget.check()
                yield response
        finally:
            response.close()


@contextlib.asynccontextmanager
async def aopen_response(
    client: httpx.AsyncClient, call: HttpCall
) -> AsyncIterator[httpx.Response]:
    """As :func:`open_response`, for an async client."""
    budget = call.budget
    with translate_httpx_errors(budget.host, budget):
        request = client.build_request("POST", call.url, content=call.content, headers=call.headers)
        with budget.scope():
            response = await client.send(request, stream=True, follow_redirects=False)
        budget.answered = True
        try:
            yield response
        finally:
            await response.aclose()


def _body_limit(response: httpx.Response, budget: RequestBudget) -> int | None:
    """How much of the body to read: an error body is cut at :data:`ERROR_BODY_BYTES`
    (returned); an answer must fit the budget (None: read it all, or refuse it now if
    its declared length is too large)."""
    if not response.is_success:
        return ERROR_BODY_BYTES
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > budget.max_bytes:
        raise budget.too_large()
    return None


def read_body(response: httpx.Response, budget: RequestBudget) -> bytes:
    """The body of a response opened by :func:`open_response`, within the budget: the
    whole of an answer, the first :data:`ERROR_BODY_BYTES` of an error."""
    limit = _body_limit(response, budget)
    body = bytearray()
    for piece in response.iter_bytes():
        budget.take(piece)
        body += piece
        if limit is not None and len(body) >= limit:
            return bytes(body[:limit])
    # A body read to the end of the connection may have been ended by the watchdog.
    budget.check()
    return bytes(body)


async def aiter_bytes(
    response: httpx.Response, budget: RequestBudget
) -> AsyncGenerator[bytes, None]:
    """The pieces of a body opened by :func:`aopen_response`, each counted against the
    budget, every await cancelled at its deadline."""
    pieces = response.aiter_bytes()
    try:
        while True:
            with budget.scope():
                try:
                    piece = await pieces.__anext__()
                except StopAsyncIteration:
                    break
            # Also checks the deadline: a piece that was ready at once is not cancelled
            # by the scope.
            budget.take(piece)
            yield piece
    finally:
        aclose = getattr(pieces, "aclose", None)
        if aclose is not None:
            await aclose()
    budget.check()


async def aread_body(response: httpx.Response, budget: RequestBudget) -> bytes:
    """As :func:`read_body`, for a response opened by :func:`aopen_response`."""
    limit = _body_limit(response, budget)
    body = bytearray()
    async with contextlib.aclosing(aiter_bytes(response, budget)) as pieces:
        async for piece in pieces:
            body += piece
            if limit is not None and len(body) >= limit:
                return bytes(body[:limit])
    return bytes(body)
