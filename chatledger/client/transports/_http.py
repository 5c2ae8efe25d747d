"""What HTTP transports share: the request budget, bounded reading, SSE parsing, errors.

A request is opened with :func:`open_response` (or :func:`aopen_response`) and its body
read with :func:`read_body` or :func:`iter_sse_data` (or their ``a`` twins). Together they:

- translate httpx's exceptions into chatledger's, naming the host but never the URL's
  query or a header;
- hold a request to ``http_options.timeout`` as a budget for the *whole* request:
  connecting, waiting for the answer and reading all of it, every chunk of a stream
  included. httpx's own timeouts are per phase (each connect, each read), so without
  this a server trickling a keep-alive comment every few seconds keeps a stream open
  forever. When the budget runs out the request ends with :class:`ModelTimeoutError`;
- never buffer more than :data:`MAX_EVENT_BYTES` for one body, one SSE line or one SSE
  event: a larger one is refused with :class:`InvalidResponseError` as soon as it is
  seen to be too large, so a runaway server cannot exhaust memory.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
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
    register_secret,
)
from ...events.envelope import check_json

__all__ = [
    "MAX_EVENT_BYTES",
    "HttpResponseInfo",
    "RequestBudget",
    "aiter_sse_data",
    "aopen_response",
    "aread_body",
    "decode_json_object",
    "error_from_response",
    "iter_sse_data",
    "open_response",
    "read_body",
    "register_secret_headers",
    "translate_httpx_errors",
]

#: The largest response body, SSE line or SSE event accepted: a larger one is refused
#: (:class:`InvalidResponseError`) as soon as it passes this size, never buffered whole.
MAX_EVENT_BYTES = 64 * 1024 * 1024


#: A header is a credential when its name contains one of these (any case): its value
#: is then redacted from every error, log line and event. ``auth`` covers Authorization,
#: Proxy-Authorization and X-Auth-Token; ``key`` covers x-goog-api-key and api-key. Mark
#: the value of any other header secret with :func:`chatledger.errors.register_secret`.
SECRET_HEADER_WORDS = (
    "auth",
    "key",
    "token",
    "secret",
    "cookie",
    "password",
    "credential",
    "session",
)


def register_secret_headers(headers: dict[str, str] | None) -> None:
    """Treat the values of credential-like headers (see :data:`SECRET_HEADER_WORDS`) as
    secrets, redacted everywhere: the whole value, the token after a scheme ("Bearer
    <token>"), and each value of a cookie list ("a=1; b=2")."""
    for name, value in (headers or {}).items():
        if not isinstance(value, str) or not any(
            word in name.lower() for word in SECRET_HEADER_WORDS
        ):
            continue
        register_secret(value)
        register_secret(value.split(" ", 1)[-1])
        for pair in value.split(";"):
            register_secret(pair.partition("=")[2].strip())


class _RedactSecrets(logging.Filter):
    """Masks registered secrets in the records of httpx's and httpcore's loggers, which
    log response headers at DEBUG: a server that echoes a credential in a header must not
    put it in a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_REDACT_SECRETS = _RedactSecrets()
# Logger filters apply to records made on that very logger, so each one httpx and
# httpcore log on is named.
for _name in (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
):
    logging.getLogger(_name).addFilter(_REDACT_SECRETS)


class HttpResponseInfo(msgspec.Struct, frozen=True):
    """The parts of an HTTP response kept on an APIError: never the request or its headers."""

    status_code: int
    reason_phrase: str
    headers: dict[str, str]
    text: str


def _info(response: httpx.Response, text: str) -> HttpResponseInfo:
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
        body = {"message": text, "status": response.reason_phrase}
    return APIError.from_status(response.status_code, body, _info(response, text))


_SERVER_FAULT = (
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
            f"{what} is not valid JSON ({exc}), it starts {shown!r}; {_SERVER_FAULT}"
        ) from None
    if not isinstance(value, dict):
        raise InvalidResponseError(
            f"{what} is not a JSON object but a JSON {type(value).__name__}; {_SERVER_FAULT}"
        )
    return value


# --------------------------------------------------------------------------- the budget


class RequestBudget:
    """``http_options.timeout`` (milliseconds) as the budget of one whole request.

    Made when a request starts; ``None`` means no budget (httpx's per-phase timeouts
    only). :meth:`check` raises :class:`ModelTimeoutError` once the deadline has passed.
    """

    __slots__ = ("answered", "deadline", "host", "timeout_ms")

    def __init__(self, timeout_ms: int | None, host: str) -> None:
        self.host = host
        self.timeout_ms = timeout_ms
        self.deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms else None
        #: Whether the response's headers arrived (the error says which phase ran out).
        self.answered = False

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
                "ms): connecting or waiting for the answer took too long. Check the base URL "
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
            f"the answer from {host} could not be decoded ({name}: {exc}); {_SERVER_FAULT}"
        )
    return ModelConnectionError(
        f"cannot reach {host} ({name}: {exc}); check the base URL and that the server is running"
    )


# --------------------------------------------------------------------------- requests


@contextlib.contextmanager
def open_response(
    client: httpx.Client,
    url: str,
    *,
    content: bytes,
    headers: dict[str, str],
    budget: RequestBudget,
) -> Iterator[httpx.Response]:
    """POST; yield the response once its headers are in, its body still unread. Errors
    raised while the caller reads it are translated too; leaving the block closes it."""
    with translate_httpx_errors(budget.host, budget):
        request = client.build_request("POST", url, content=content, headers=headers)
        response = client.send(request, stream=True)
        budget.answered = True
        try:
            with _WATCHDOG.watching(response, budget):
                budget.check()
                yield response
        finally:
            response.close()


@contextlib.asynccontextmanager
async def aopen_response(
    client: httpx.AsyncClient,
    url: str,
    *,
    content: bytes,
    headers: dict[str, str],
    budget: RequestBudget,
) -> AsyncIterator[httpx.Response]:
    """As :func:`open_response`, for an async client."""
    with translate_httpx_errors(budget.host, budget):
        request = client.build_request("POST", url, content=content, headers=headers)
        with budget.scope():
            response = await client.send(request, stream=True)
        budget.answered = True
        try:
            yield response
        finally:
            await response.aclose()


def _too_large(what: str) -> InvalidResponseError:
    return InvalidResponseError(
        f"{what} is larger than {MAX_EVENT_BYTES} bytes; refusing it rather than holding it "
        f"in memory. {_SERVER_FAULT[0].upper()}{_SERVER_FAULT[1:]}"
    )


def _check_declared_length(response: httpx.Response) -> None:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_EVENT_BYTES:
        raise _too_large("the response body")


def read_body(response: httpx.Response, budget: RequestBudget) -> bytes:
    """The whole body of a response opened by :func:`open_response`, within the budget
    and :data:`MAX_EVENT_BYTES`."""
    _check_declared_length(response)
    body = bytearray()
    for piece in response.iter_bytes():
        body += piece
        if len(body) > MAX_EVENT_BYTES:
            raise _too_large("the response body")
        budget.check()
    # A body read to the end of the connection may have been ended by the watchdog.
    budget.check()
    return bytes(body)


async def _aiter_bytes(
    response: httpx.Response, budget: RequestBudget
) -> AsyncGenerator[bytes, None]:
    pieces = response.aiter_bytes()
    try:
        while True:
            with budget.scope():
                try:
                    piece = await pieces.__anext__()
                except StopAsyncIteration:
                    break
            budget.check()  # a piece that was ready at once is not cancelled by the scope
            yield piece
    finally:
        aclose = getattr(pieces, "aclose", None)
        if aclose is not None:
            await aclose()
    budget.check()


async def aread_body(response: httpx.Response, budget: RequestBudget) -> bytes:
    """As :func:`read_body`, for a response opened by :func:`aopen_response`."""
    _check_declared_length(response)
    body = bytearray()
    async with contextlib.aclosing(_aiter_bytes(response, budget)) as pieces:
        async for piece in pieces:
            body += piece
            if len(body) > MAX_EVENT_BYTES:
                raise _too_large("the response body")
    return bytes(body)


# --------------------------------------------------------------------------- SSE


class _LineSplitter:
    """Bytes in, SSE lines out, holding at most :data:`MAX_EVENT_BYTES` of a line.

    Lines end with CRLF, LF or CR (the text/event-stream format) and nothing else:
    httpx's ``iter_lines`` also splits on U+2028, U+2029 and U+0085, which JSON allows
    unescaped inside strings (and model output does contain them), so it would cut a
    data line in two.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[str]:
        buffer = self._buffer
        # What is already buffered holds no line end, except maybe a last "\r" whose
        # "\n" may come now: only that byte and the new ones are searched.
        position = max(0, len(buffer) - 1)
        buffer += data
        size = len(buffer)
        lines: list[str] = []
        start = 0
        while True:
            lf = buffer.find(b"\n", position)
            cr = buffer.find(b"\r", position, size if lf < 0 else lf)
            if cr >= 0:
                if cr + 1 == size:
                    break  # maybe the first half of "\r\n": wait for the next piece
                end, position = cr, cr + 2 if buffer[cr + 1] == 0x0A else cr + 1
            elif lf >= 0:
                end, position = lf, lf + 1
            else:
                break
            lines.append(buffer[start:end].decode("utf-8", "replace"))
            start = position
        if start:
            del buffer[:start]
        if len(buffer) > MAX_EVENT_BYTES:
            raise _too_large("a line of the stream")
        return lines

    def flush(self) -> list[str]:
        rest, self._buffer = self._buffer, bytearray()
        if rest.endswith(b"\r"):
            rest = rest[:-1]
        elif not rest:
            return []
        return [rest.decode("utf-8", "replace")]


class _SSEDecoder:
    """Collects ``data:`` lines into events (the text/event-stream format)."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._size = 0

    def feed(self, line: str) -> str | None:
        if not line:
            if not self._data:
                return None
            data = "\n".join(self._data)
            self._data, self._size = [], 0
            return data
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        if field == "data":
            value = value[1:] if value.startswith(" ") else value
            self._size += len(value)
            if self._size > MAX_EVENT_BYTES:
                raise _too_large("a stream event")
            self._data.append(value)
        return None

    def flush(self) -> str | None:
        return self.feed("")


class _EventReader:
    def __init__(self) -> None:
        self._lines = _LineSplitter()
        self._events = _SSEDecoder()

    def feed(self, piece: bytes) -> list[str]:
        events = []
        for line in self._lines.feed(piece):
            data = self._events.feed(line)
            if data is not None:
                events.append(data)
        return events

    def flush(self) -> list[str]:
        events = [
            data for line in self._lines.flush() if (data := self._events.feed(line)) is not None
        ]
        data = self._events.flush()
        return [*events, data] if data is not None else events


def iter_sse_data(response: httpx.Response, budget: RequestBudget) -> Iterator[str]:
    """The ``data`` of each event of an SSE response opened by :func:`open_response`."""
    reader = _EventReader()
    for piece in response.iter_bytes():
        budget.check()
        yield from reader.feed(piece)
    # A stream read to the end of the connection may have been ended by the watchdog.
    budget.check()
    yield from reader.flush()


async def aiter_sse_data(
    response: httpx.Response, budget: RequestBudget
) -> AsyncGenerator[str, None]:
    """As :func:`iter_sse_data`, for a response opened by :func:`aopen_response`."""
    reader = _EventReader()
    async with contextlib.aclosing(_aiter_bytes(response, budget)) as pieces:
        async for piece in pieces:
            for data in reader.feed(piece):
                yield data
    for data in reader.flush():
        yield data
