"""The Gemini REST transport over httpx: ``generateContent`` and ``streamGenerateContent``.

The API key travels only in the ``x-goog-api-key`` header; it is never put in a URL, a
log line, an event or an error. ``http_options``: ``base_url`` (else the
``GOOGLE_GEMINI_BASE_URL`` environment variable, else Google's endpoint),
``api_version`` (default ``v1beta``), extra ``headers``, and ``timeout`` in milliseconds.

``timeout`` is, as google-genai documents it, the timeout of the request: the budget of
the whole request, from connecting to the last byte of the answer (every chunk of a
stream included), not of each network read. A request still running when it is spent
ends with :class:`~chatledger.errors.ModelTimeoutError` (retried like any timeout when
``retry_options`` are given; each attempt has the whole budget). Without a ``timeout``
a request may take as long as the server does (connecting is limited to 30 s).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import msgspec

from ..._version import __version__
from ...errors import APIError, InvalidInputError, register_secret
from ...types import HttpOptions
from ._http import (
    RequestBudget,
    aiter_sse_data,
    aopen_response,
    aread_body,
    decode_json_object,
    error_from_response,
    iter_sse_data,
    open_response,
    read_body,
    register_secret_headers,
)
from .base import ModelRequest, Transport

__all__ = ["DEFAULT_BASE_URL", "GeminiTransport", "httpx_timeout"]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/"
DEFAULT_API_VERSION = "v1beta"
_encode = msgspec.json.encode


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


def _raise_stream_error(chunk: dict[str, Any]) -> None:
    error = chunk.get("error")
    if error is not None:
        code = error.get("code") if isinstance(error, dict) else None
        raise APIError.from_status(code if isinstance(code, int) else 500, chunk)


def check_model_name(model: str) -> str:
    """``model``, if the Gemini API's URL can carry it (it becomes part of the path)."""
    if not model or any(bad in model for bad in ("..", "?", "&", "#")):
        raise InvalidInputError(
            f"invalid model name {model!r}: a Gemini model name cannot hold '..', '?', '&' "
            "or '#' (for example gemini-2.5-flash or models/gemini-2.5-flash)"
        )
    return model


class GeminiTransport(Transport):
    """Google's Gemini API (or any server speaking its REST protocol)."""

    name = "gemini"

    def __init__(
        self,
        api_key: str | None,
        http_options: HttpOptions | None = None,
        *,
        http_client: httpx.Client | None = None,
        async_http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._api_key = api_key
        register_secret(api_key)
        self._options = http_options or HttpOptions()
        base_url = (
            self._options.base_url or os.environ.get("GOOGLE_GEMINI_BASE_URL") or DEFAULT_BASE_URL
        )
        if not base_url.startswith(("http://", "https://")):
            raise InvalidInputError(
                f"base_url must start with http:// or https://, got {base_url!r}"
            )
        self.base_url = base_url.rstrip("/") + "/"
        env_version = os.environ.get("GOOGLE_GENAI_API_VERSION")
        if env_version == "beta":
            env_version = "v1beta"
        self.api_version = self._options.api_version or env_version or DEFAULT_API_VERSION
        self.host = urlsplit(self.base_url).netloc
        register_secret_headers(self._options.headers)
        self._timeout = httpx_timeout(self._options)
        self._client = http_client
        self._async_client = async_http_client

    def __repr__(self) -> str:
        return f"GeminiTransport(base_url={self.base_url!r}, api_version={self.api_version!r})"

    # ----------------------------------------------------------------- plumbing

    def _headers(self) -> dict[str, str]:
        if not self._api_key:
            raise InvalidInputError(
                "no API key for the Gemini API: pass Client(api_key=...) or set "
                "GEMINI_API_KEY (or GOOGLE_API_KEY); for an offline chat use model='local'"
            )
        headers = {
            "Content-Type": "application/json",
            "user-agent": f"chatledger/{__version__}",
            "x-goog-api-key": self._api_key,
        }
        headers.update(self._options.headers or {})
        return headers

    def url(self, model: str, method: str) -> str:
        check_model_name(model)
        path = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
        return f"{self.base_url}{self.api_version}/{quote(path, safe='/')}:{method}"

    def _sync(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=self._timeout)
        return self._client

    def _async(self) -> httpx.AsyncClient:
        if self._async_client is None:
            self._async_client = httpx.AsyncClient(timeout=self._timeout)
        return self._async_client

    def _budget(self) -> RequestBudget:
        return RequestBudget(self._options.timeout, self.host)

    # ----------------------------------------------------------------- sync

    def generate(self, request: ModelRequest) -> dict[str, Any]:
        url = self.url(request.model, "generateContent")
        body, headers, budget = _encode(request.body()), self._headers(), self._budget()
        with open_response(
            self._sync(), url, content=body, headers=headers, budget=budget
        ) as response:
            content = read_body(response, budget)
        if response.status_code != 200:
            raise error_from_response(response, content)
        return decode_json_object(content, f"the response body from {self.host}")

    def stream(self, request: ModelRequest) -> Iterator[dict[str, Any]]:
        url = self.url(request.model, "streamGenerateContent") + "?alt=sse"
        body, headers, budget = _encode(request.body()), self._headers(), self._budget()
        with open_response(
            self._sync(), url, content=body, headers=headers, budget=budget
        ) as response:
            if response.status_code != 200:
                raise error_from_response(response, read_body(response, budget))
            for data in iter_sse_data(response, budget):
                chunk = decode_json_object(data, f"a stream event from {self.host}")
                _raise_stream_error(chunk)
                yield chunk

    # ----------------------------------------------------------------- async

    async def agenerate(self, request: ModelRequest) -> dict[str, Any]:
        url = self.url(request.model, "generateContent")
        body, headers, budget = _encode(request.body()), self._headers(), self._budget()
        async with aopen_response(
            self._async(), url, content=body, headers=headers, budget=budget
        ) as response:
            content = await aread_body(response, budget)
        if response.status_code != 200:
            raise error_from_response(response, content)
        return decode_json_object(content, f"the response body from {self.host}")

    async def astream(self, request: ModelRequest) -> AsyncIterator[dict[str, Any]]:
        url = self.url(request.model, "streamGenerateContent") + "?alt=sse"
        body, headers, budget = _encode(request.body()), self._headers(), self._budget()
        async with aopen_response(
            self._async(), url, content=body, headers=headers, budget=budget
        ) as response:
            if response.status_code != 200:
                raise error_from_response(response, await aread_body(response, budget))
            async with contextlib.aclosing(aiter_sse_data(response, budget)) as events:
                async for data in events:
                    chunk = decode_json_object(data, f"a stream event from {self.host}")
                    _raise_stream_error(chunk)
                    yield chunk

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        self.close()
        if self._async_client is not None:
            await self._async_client.aclose()
            self._async_client = None
