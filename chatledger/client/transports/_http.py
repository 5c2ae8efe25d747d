"""What HTTP transports share: error translation, SSE parsing, safe response summaries."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import msgspec

from ...errors import (
    APIError,
    InvalidResponseError,
    ModelConnectionError,
    ModelTimeoutError,
    redact,
    register_secret,
)

__all__ = [
    "MAX_EVENT_BYTES",
    "HttpResponseInfo",
    "aiter_sse_data",
    "decode_json_object",
    "error_from_response",
    "iter_sse_data",
    "register_secret_headers",
    "translate_httpx_errors",
]

#: The largest SSE event or response body accepted (a larger one is refused, not buffered).
MAX_EVENT_BYTES = 64 * 1024 * 1024


_SECRET_HEADER_WORDS = ("authorization", "key", "token", "secret", "cookie", "password")


def register_secret_headers(headers: dict[str, str] | None) -> None:
    """Treat the values of credential-like headers as secrets (redacted everywhere)."""
    for name, value in (headers or {}).items():
        if any(word in name.lower() for word in _SECRET_HEADER_WORDS):
            register_secret(value)
            # "Bearer <token>": the token alone must not leak either.
            register_secret(value.split(" ", 1)[-1])


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
        headers=dict(response.headers),
        text=redact(text[:10_000]),
    )


def error_from_response(response: httpx.Response, content: bytes) -> APIError:
    """The APIError for a non-2xx response whose body has been read."""
    text = content.decode("utf-8", "replace")
    try:
        body: Any = msgspec.json.decode(content)
    except msgspec.DecodeError:
        body = {"message": text, "status": response.reason_phrase}
    return APIError.from_status(response.status_code, body, _info(response, text))


def decode_json_object(content: bytes | str, what: str) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(content)
    except msgspec.DecodeError as exc:
        shown = content[:200] if isinstance(content, str) else content[:200].decode("utf-8", "replace")
        raise InvalidResponseError(f"{what} is not valid JSON ({exc}): {shown!r}") from None
    if not isinstance(value, dict):
        raise InvalidResponseError(f"{what} is not a JSON object: {type(value).__name__}")
    return value


@contextlib.contextmanager
def translate_httpx_errors(host: str) -> Iterator[None]:
    """httpx's exceptions as chatledger's, naming the host but never the URL's query."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise ModelTimeoutError(
            f"{host} did not answer in time ({type(exc).__name__}); raise "
            "http_options.timeout (milliseconds) or retry"
        ) from None
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        raise ModelConnectionError(
            f"the connection to {host} dropped before the answer was complete "
            f"({type(exc).__name__}: {exc})"
        ) from None
    except httpx.TransportError as exc:
        raise ModelConnectionError(
            f"cannot reach {host} ({type(exc).__name__}: {exc}); check the base URL and "
            "that the server is running"
        ) from None


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
                raise InvalidResponseError(
                    f"a stream event is larger than {MAX_EVENT_BYTES} bytes; refusing it"
                )
            self._data.append(value)
        return None

    def flush(self) -> str | None:
        return self.feed("")


def iter_sse_data(lines: Iterator[str]) -> Iterator[str]:
    decoder = _SSEDecoder()
    for line in lines:
        data = decoder.feed(line.rstrip("\r"))
        if data is not None:
            yield data
    data = decoder.flush()
    if data is not None:
        yield data


async def aiter_sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    decoder = _SSEDecoder()
    async for line in lines:
        data = decoder.feed(line.rstrip("\r"))
        if data is not None:
            yield data
    data = decoder.flush()
    if data is not None:
        yield data
